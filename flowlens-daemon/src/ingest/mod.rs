//! EDGE: where datagrams come from: the XDP fast path (`xdp`, `ring`) or UDP sockets
//! (`udp`). Both hand [`datagram::RawDatagram`]s to a [`datagram::Dispatcher`], which
//! shards them by exporter onto the decode workers, so one exporter's template state
//! always lives in one worker.

pub mod datagram;
pub mod ring;
pub mod udp;
pub mod xdp;
