//! Types shared by the FlowLens XDP program (`flowlens-ebpf`) and the daemon's loader.
//!
//! This crate will own the `#[repr(C)]` ring-buffer record header, the per-CPU counter
//! indices, the map names and the ABI version that the loader checks before attaching.
//! It must stay `no_std` and allocation-free so the BPF target can build it. It is
//! filled by the ingestion issue (XDP fast path); today it only fixes the ABI version.
#![no_std]

/// ABI version of the ring record layout; bumped whenever a shared type changes so a
/// daemon never reads rings written by a program built from different sources.
pub const ABI_VERSION: u32 = 1;
