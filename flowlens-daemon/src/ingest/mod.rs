//! EDGE: where datagrams come from: the XDP fast path (`xdp`, `ring`) or UDP sockets
//! (`udp`). Both hand [`datagram::RawDatagram`]s to the [`crate::seam::Handoff`]: in
//! process, a [`datagram::Dispatcher`] that shards them by exporter onto the decode
//! workers (so one exporter's template state always lives in one worker); in the
//! `ingest` role, the raw Kafka topic.

pub mod datagram;
pub mod pin;
pub mod ring;
pub mod udp;
pub mod xdp;
