//! Rebuild when a migration is added or changed: `sqlx::migrate!` embeds the
//! `migrations/` directory at compile time, and cargo does not watch it by itself.
//! And the Kafka records' Rust types from `proto/flowlens.proto`, compiled with protox
//! (pure Rust), so a build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-changed=proto/flowlens.proto");
    let descriptors = protox::compile(["flowlens.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
