//! EDGE: systemd's service notification protocol (`sd_notify(3)`), without libsystemd:
//! one datagram to the Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace). A unit with `Type=notify` counts the daemon started only at
//! `READY=1`, which the daemon sends once it really receives; `STOPPING=1` tells it the
//! daemon is shutting down on purpose. Without `$NOTIFY_SOCKET` (not under systemd)
//! nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to systemd when it listens; an error only when it
/// listens and the datagram could not be sent.
///
/// # Errors
/// The socket named by `$NOTIFY_SOCKET` could not be reached.
pub fn notify(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), &path)?;
    }
    Ok(())
}
