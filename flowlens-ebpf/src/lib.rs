//! The FlowLens XDP program.
//!
//! It will parse Ethernet/VLAN/IPv4/IPv6/UDP, steer datagrams whose destination port is
//! in the userspace-filled port map into a per-CPU ring buffer, pre-sample 1:N under
//! pressure, and pass every other packet untouched. It is built for
//! `bpfel-unknown-none` by `cargo xtask build-ebpf` (nightly + build-std + bpf-linker,
//! see ../shared/docs/TOOLCHAIN.md), never by the stable workspace build, which is why
//! the workspace excludes it. Filled by the ingestion issue.
#![no_std]
