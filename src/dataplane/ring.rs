//! How each data-plane core's io_uring is set up: its size and the setup flags that decide how
//! the kernel tells the core about completions.
//!
//! Runs once per core, on the core's own thread, before its runtime starts (`core::run`). By
//! default the kernel interrupts the ring's thread whenever a completion's task work is queued
//! (`TWA_SIGNAL`): an inter-processor interrupt if the thread is running on another CPU, which
//! on a virtual machine is an exit to the hypervisor. `IORING_SETUP_COOP_TASKRUN` drops that
//! interrupt: the work runs at the thread's next kernel entry (a core enters the kernel at
//! least once per loop turn: its park flushes the ring, then waits in `epoll_wait`), and a
//! sleeping thread is still woken as before. `IORING_SETUP_SINGLE_ISSUER` holds because only the
//! core's thread ever submits to its ring; the kernel uses the hint for optimisations and
//! enforces it (a submission from another thread would fail with `EEXIST`). Measured effect:
//! results/2026-12-01-server-cpu.md.
//!
//! Not used: `IORING_SETUP_DEFER_TASKRUN`. It runs completion work only inside an
//! `io_uring_enter` with `IORING_ENTER_GETEVENTS`, and tokio-uring 0.5 never asks for events
//! (it submits with `submit()` and learns of completions from the ring fd's readiness in
//! epoll, which deferred work does not signal): a ring set up so never completed an accept
//! (Linux 6.18). `IORING_SETUP_TASKRUN_FLAG` neither: it only publishes pending work in the
//! ring's flags for a driver that peeks at them, and tokio-uring does not.
//!
//! Limits: the flags need Linux 5.19 (`COOP_TASKRUN`) and 6.0 (`SINGLE_ISSUER`); on an older
//! kernel the probe ring is refused and every core falls back to a plain ring, as before.

use std::sync::OnceLock;

/// Submission queue entries of each core's io_uring: enough for every connection's read and
/// write to be queued in one batch without the ring pushing back.
pub const RING_ENTRIES: u32 = 1024;

/// Entries of the one-off ring that checks whether the kernel takes the setup flags.
const PROBE_ENTRIES: u32 = 2;

/// The ring settings for a core's runtime: the completion flags when the kernel takes them.
pub fn builder() -> tokio_uring::Builder {
    let mut builder = tokio_uring::builder();
    builder.entries(RING_ENTRIES);
    let mut flagged = tokio_uring::uring_builder();
    flagged.setup_coop_taskrun().setup_single_issuer();
    if flags_supported(|| flagged.build(PROBE_ENTRIES).map(drop)) {
        builder.uring_builder(&flagged);
    }
    builder
}

/// Whether this kernel accepts the flags: `probe` builds a tiny ring with them, once per
/// process.
fn flags_supported(probe: impl FnOnce() -> std::io::Result<()>) -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| match probe() {
        Ok(()) => true,
        Err(e) => {
            tracing::info!("io_uring completion flags not available ({e}): plain rings");
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    /// A ring set up as the cores' delivers completions to tokio-uring: an accept and a read
    /// that arrives while the thread waits (a setup flag that defers completion work, such as
    /// `DEFER_TASKRUN`, hangs here).
    #[test]
    fn a_core_ring_completes_an_accept_and_a_read() {
        let got = super::builder().start(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let writer = std::thread::spawn(move || {
                let mut peer = std::net::TcpStream::connect(addr).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                peer.write_all(b"ping").unwrap();
                peer
            });
            let listener = tokio_uring::net::TcpListener::from_std(listener);
            let read = async {
                let (stream, _) = listener.accept().await.unwrap();
                let (n, buf) = stream.read(vec![0u8; 16]).await;
                buf[..n.unwrap()].to_vec()
            };
            let got = tokio::time::timeout(Duration::from_secs(5), read).await;
            drop(writer.join());
            got
        });
        assert_eq!(
            got.expect("the ring delivered no completion in 5 s"),
            b"ping"
        );
    }
}
