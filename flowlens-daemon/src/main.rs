//! flowlens-daemon binary entry point.
fn main() {}
