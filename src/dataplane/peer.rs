//! Who is on the other end of a loopback TCP connection, as the kernel says: the uid that owns
//! the peer's socket, looked up through `NETLINK_SOCK_DIAG` (`inet_diag`, exact 4-tuple lookup).
//!
//! Runs on the core that accepted the connection, once per connection: one netlink request and
//! its answer (a few microseconds; `lookup_cost_is_printed` prints the figure, docs/isolation.md
//! records it). TCP has no `SO_PEERCRED`, and an
//! address is not an identity (any local process can connect to any address and list them in
//! `/proc/net/tcp`), so this is how an instance's Runtime API connection is bound to the instance
//! that owns it: each instance runs under its own uid.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_ESTABLISHED` in the kernel's TCP state numbering.
const TCP_ESTABLISHED: u32 = 1;
/// `INET_DIAG_NOCOOKIE`: match by address and ports only.
const NO_COOKIE: u32 = !0;
/// Room for one answer (header + `inet_diag_msg` + attributes we do not ask for).
const ANSWER_BYTES: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagSockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: InetDiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

#[repr(C)]
struct Request {
    header: libc::nlmsghdr,
    body: InetDiagReqV2,
}

/// A netlink socket for sock_diag lookups; one per core, reused for every connection.
pub struct PeerLookup {
    fd: OwnedFd,
}

impl PeerLookup {
    pub fn new() -> io::Result<PeerLookup> {
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PeerLookup { fd })
    }

    /// The uid owning the socket at `peer` that is connected to our socket at `local` (both
    /// IPv4 or both IPv6). `NotFound` (ENOENT) when the kernel knows no such connection;
    /// `ConnectionAborted` when the peer socket is closed already (no process holds it any more,
    /// so the kernel reports no owner: uid 0, which must not be taken for root).
    pub fn peer_uid(&self, local: SocketAddr, peer: SocketAddr) -> io::Result<u32> {
        let mut id = InetDiagSockId {
            sport: peer.port().to_be_bytes(),
            dport: local.port().to_be_bytes(),
            cookie: [NO_COOKIE, NO_COOKIE],
            ..Default::default()
        };
        let family = match (peer.ip(), local.ip()) {
            (IpAddr::V4(p), IpAddr::V4(l)) => {
                id.src[..4].copy_from_slice(&p.octets());
                id.dst[..4].copy_from_slice(&l.octets());
                libc::AF_INET
            }
            (IpAddr::V6(p), IpAddr::V6(l)) => {
                id.src = p.octets();
                id.dst = l.octets();
                libc::AF_INET6
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "mixed families",
                ))
            }
        };
        let request = Request {
            header: libc::nlmsghdr {
                nlmsg_len: size_of::<Request>() as u32,
                nlmsg_type: SOCK_DIAG_BY_FAMILY,
                nlmsg_flags: libc::NLM_F_REQUEST as u16,
                nlmsg_seq: 1,
                nlmsg_pid: 0,
            },
            body: InetDiagReqV2 {
                family: family as u8,
                protocol: libc::IPPROTO_TCP as u8,
                states: 1 << TCP_ESTABLISHED,
                id,
                ..Default::default()
            },
        };
        // SAFETY: `request` is a plain #[repr(C)] value alive for the call; the kernel reads
        // exactly its size.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                (&request as *const Request).cast(),
                size_of::<Request>(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut answer = [0u8; ANSWER_BYTES];
        // SAFETY: the buffer is ours and `ANSWER_BYTES` long; the kernel writes at most that.
        let got = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                answer.as_mut_ptr().cast(),
                ANSWER_BYTES,
                0,
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        parse_answer(&answer[..got as usize])
    }
}

/// The uid in a sock_diag answer, or the kernel's error.
fn parse_answer(answer: &[u8]) -> io::Result<u32> {
    let header_len = size_of::<libc::nlmsghdr>();
    if answer.len() < header_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short netlink answer",
        ));
    }
    // SAFETY: at least a header's bytes are present; read_unaligned copes with any alignment.
    let header: libc::nlmsghdr = unsafe { std::ptr::read_unaligned(answer.as_ptr().cast()) };
    let body = &answer[header_len..];
    match header.nlmsg_type as i32 {
        libc::NLMSG_ERROR => {
            // An nlmsgerr: a negative errno (ENOENT when there is no such socket).
            let errno = body
                .get(..4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(-libc::EIO);
            Err(io::Error::from_raw_os_error(-errno))
        }
        t if t == SOCK_DIAG_BY_FAMILY as i32 && body.len() >= size_of::<InetDiagMsg>() => {
            // SAFETY: enough bytes for the struct; read_unaligned copes with any alignment.
            let msg: InetDiagMsg = unsafe { std::ptr::read_unaligned(body.as_ptr().cast()) };
            // A socket no file refers to (closed, orphaned, in TIME_WAIT) has inode 0 and is
            // reported as owned by uid 0 whoever owned it: its owner is unknown.
            if msg.inode == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the peer socket is closed; its owner is no longer known",
                ));
            }
            Ok(msg.uid)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected netlink answer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn finds_the_uid_of_a_loopback_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        let lookup = PeerLookup::new().unwrap();
        let uid = lookup
            .peer_uid(server_side.local_addr().unwrap(), peer)
            .unwrap();
        // SAFETY: geteuid has no preconditions.
        assert_eq!(uid, unsafe { libc::geteuid() });
        assert_eq!(peer, client.local_addr().unwrap());
        // No such connection: the kernel says so.
        let stranger: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let e = lookup
            .peer_uid(server_side.local_addr().unwrap(), stranger)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    }

    #[test]
    fn a_closed_peer_has_no_owner() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        drop(client);
        let lookup = PeerLookup::new().unwrap();
        let local = server_side.local_addr().unwrap();
        // The close takes effect at once on loopback; allow the kernel a moment anyway.
        let mut last = lookup.peer_uid(local, peer);
        for _ in 0..100 {
            if last.is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            last = lookup.peer_uid(local, peer);
        }
        let e = last.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
    }

    /// The per-connection cost of the identity check: prints the lookup time over many loopback
    /// connections (a figure for docs/isolation.md, not an assertion: timing depends on the
    /// machine and its load).
    #[test]
    fn lookup_cost_is_printed() {
        const CONNECTIONS: usize = 200;
        const ROUNDS: usize = 10;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pairs: Vec<(TcpStream, TcpStream, SocketAddr)> = (0..CONNECTIONS)
            .map(|_| {
                let client = TcpStream::connect(addr).unwrap();
                let (server_side, peer) = listener.accept().unwrap();
                (client, server_side, peer)
            })
            .collect();
        let lookup = PeerLookup::new().unwrap();
        let mut took_ns = Vec::with_capacity(CONNECTIONS * ROUNDS);
        for _ in 0..ROUNDS {
            for (_, server_side, peer) in &pairs {
                let local = server_side.local_addr().unwrap();
                let started = std::time::Instant::now();
                lookup.peer_uid(local, *peer).unwrap();
                took_ns.push(started.elapsed().as_nanos() as u64);
            }
        }
        took_ns.sort_unstable();
        let at = |q: f64| took_ns[((took_ns.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        println!(
            "sock_diag peer lookup over {} lookups ({CONNECTIONS} open connections): \
             p50 {:.1} us, p99 {:.1} us, max {:.1} us",
            took_ns.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }

    #[test]
    fn a_different_uid_is_reported_as_such() {
        use std::os::unix::process::CommandExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // Only root can make a socket owned by another uid.
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        // A child under uid 4242 connects (bash's /dev/tcp: nothing to load after the switch).
        let mut child = std::process::Command::new("/bin/bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; sleep 5")])
            .uid(4242)
            .gid(4242)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let accepted = loop {
            match listener.accept() {
                Ok(pair) => break Some(pair),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(_) => break None,
            }
        };
        // Looked up while the child still holds its socket: a closed socket has no owner.
        let looked_up = accepted.map(|(server_side, peer)| {
            PeerLookup::new()
                .unwrap()
                .peer_uid(server_side.local_addr().unwrap(), peer)
        });
        let _ = child.kill();
        let _ = child.wait();
        let uid = looked_up.expect("the uid-4242 child connected").unwrap();
        assert_eq!(uid, 4242);
    }
}
