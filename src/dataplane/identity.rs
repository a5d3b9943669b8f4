//! Who may use a connection, as the kernel says: checked once per connection, right after accept
//! (and for a WebSocket on the shared Runtime API port, once its register names the instance).
//!
//! Runs on the core that owns the connection, with that core's netlink socket (`peer`). A
//! connection on instance X's own address is served only if the kernel says its peer socket is
//! owned by X's uid; a User API connection is refused when its peer socket is owned by any
//! instance uid. An instance the executor could not give a uid (`Instance::uid` is `None`) has
//! unverified connections, as before: that case is counted and logged where it arises
//! (`lah_instances_unverified_total`). A peer socket that is already closed has no owner the
//! kernel can name (it reports uid 0): refused on both APIs. A peer socket the kernel does not
//! know (ENOENT) is refused on the Runtime API; on the User API it is served when its address is
//! not this host's (a remote client of a server bound beyond loopback, where SigV4 is on by
//! default), refused otherwise.
//!
//! Cost: one `sock_diag` request and answer per connection (measured in docs/isolation.md); warm
//! invocations on kept-alive connections pay nothing.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use super::conn::Response;
use super::core::{ConnKind, Core};
use crate::model::error::{ApiError, ErrorKind};
use crate::model::types::{function_error_body, InstanceId};

/// The uid owning the other end of the TCP connection on `fd`; for a Unix socket (an instance's
/// `LAMBDA_RUNTIME_API_SOCKET`), the uid of the process that connected it.
pub fn peer_uid(core: &Core, fd: RawFd) -> io::Result<u32> {
    if let Some(uid) = unix_peer_uid(fd)? {
        return Ok(uid);
    }
    let (local, peer) = addresses(fd)?;
    lookup(core, local, peer)
}

/// For a Unix socket, the uid of the process that connected it (`SO_PEERCRED`: recorded by the
/// kernel at `connect`, so a peer that has closed since is still named); `None` for any other
/// family.
fn unix_peer_uid(fd: RawFd) -> io::Result<Option<u32>> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the caller's connection owns `fd`; `domain` and `len` are valid for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if domain != libc::AF_UNIX {
        return Ok(None);
    }
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: as above; `cred` and `len` are valid for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(cred.uid))
}

fn lookup(core: &Core, local: SocketAddr, peer: SocketAddr) -> io::Result<u32> {
    let Some(lookup) = &core.peer else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no sock_diag socket on this core",
        ));
    };
    lookup.peer_uid(local, peer)
}

/// Whether a User API connection may be served: not from an instance uid, and not from a local
/// socket whose owner the kernel cannot name (an instance could send a request and close at once,
/// so that its socket has no owner by the time it is looked up). A peer the kernel does not know
/// at all is remote, unless its address says it is this host's (loopback, or the address it
/// connected to); with no sock_diag socket the check is off (warned at start).
fn user_allowed(core: &Core, fd: RawFd) -> Result<(), String> {
    if core.peer.is_none() {
        return Ok(());
    }
    let (local, peer) = addresses(fd).map_err(|e| format!("no addresses ({e})"))?;
    match lookup(core, local, peer) {
        Ok(uid) if core.shared.config.is_instance_uid(uid) => Err(format!(
            "the connecting socket belongs to instance uid {uid}"
        )),
        Ok(_) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::ENOENT)
                && !peer.ip().is_loopback()
                && peer.ip() != local.ip() =>
        {
            Ok(())
        }
        Err(e) => Err(format!("the kernel cannot say who is connecting ({e})")),
    }
}

/// Whether the connection on `fd`, of `kind`, may be served; the refusal to send otherwise.
pub fn admit(core: &Core, fd: RawFd, kind: ConnKind) -> Result<(), Response> {
    match kind {
        ConnKind::Runtime(id) => check_instance(core, fd, id).map_err(|why| {
            refused(core);
            tracing::warn!(instance = %id, "Runtime API connection refused: {why}");
            runtime_refusal(&why)
        }),
        ConnKind::User if core.shared.config.instance_uids > 0 => {
            user_allowed(core, fd).map_err(|why| {
                refused(core);
                tracing::warn!("User API connection refused: {why}");
                let e = ApiError::new(
                    ErrorKind::AccessDenied,
                    "Function code may not call this server's User API",
                );
                super::user_api::error_response(&e, None)
            })
        }
        _ => Ok(()),
    }
}

/// Whether the connection on `fd` comes from instance `id`'s uid (always, for an instance that
/// has none: it is unverified). The reason otherwise.
pub fn check_instance(core: &Core, fd: RawFd, id: InstanceId) -> Result<(), String> {
    let Some(&expected) = core.identities.borrow().get(&id) else {
        return Ok(());
    };
    match peer_uid(core, fd) {
        Ok(uid) if uid == expected => Ok(()),
        Ok(uid) => Err(format!(
            "the connecting socket belongs to uid {uid}, not to this instance"
        )),
        Err(e) => Err(format!("the kernel cannot say who is connecting ({e})")),
    }
}

/// Counts a refused connection.
pub fn refused(core: &Core) {
    core.shared
        .metrics
        .identity_refusals
        .fetch_add(1, Ordering::Relaxed);
}

/// The Runtime API's refusal: 403 in the shape of its other errors, and the connection closes.
fn runtime_refusal(why: &str) -> Response {
    let message = format!("This address belongs to another instance: {why}");
    let mut resp = Response::json(403, function_error_body("AccessDenied", &message, None));
    resp.close = true;
    resp
}

/// This end's and the peer's address of the socket `fd`.
fn addresses(fd: RawFd) -> io::Result<(SocketAddr, SocketAddr)> {
    // SAFETY: the caller's connection owns `fd` and keeps it open for this call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&borrowed);
    let as_inet = |a: socket2::SockAddr| {
        a.as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an inet socket"))
    };
    Ok((as_inet(sock.local_addr()?)?, as_inet(sock.peer_addr()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_unix_peer_is_named_by_its_credentials_and_survives_its_close() {
        let (server, client) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        assert_eq!(unix_peer_uid(server.as_raw_fd()).unwrap(), Some(me));
        // sock_diag cannot name the owner of a closed TCP peer; SO_PEERCRED still can.
        drop(client);
        assert_eq!(unix_peer_uid(server.as_raw_fd()).unwrap(), Some(me));
    }

    #[test]
    fn a_tcp_socket_is_not_taken_for_a_unix_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(unix_peer_uid(client.as_raw_fd()).unwrap(), None);
    }
}
