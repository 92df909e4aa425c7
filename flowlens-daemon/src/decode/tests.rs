//! Cross-protocol decoder tests.
