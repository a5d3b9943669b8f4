//! The real server binary as a child process, for what an in-process server cannot show: its
//! own memory (with its allocator), `kill -9`, signals. Ports are ephemeral; the child's
//! "listening" log line says which.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the child may take to say it listens.
const START_WAIT: Duration = Duration::from_secs(30);

pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Starts `lambda-at-home-server` on `data_dir` with ephemeral ports, the process executor
    /// and `args`; waits until it listens.
    pub fn start(data_dir: &Path, args: &[&str]) -> ChildServer {
        Self::start_with_env(data_dir, args, &[])
    }

    /// `start`, with `env` added to the child's environment (after the defaults, so it wins).
    pub fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> ChildServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lambda-at-home-server"))
            .args([
                "--user-api-port",
                "0",
                "--runtime-api-port",
                "0",
                "--executor",
                "process",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            // As `Config::for_tests`: tests play runtimes and share files with functions, which
            // instance identities forbid; e2e_isolation tests those.
            .env("LAH_INSTANCE_UIDS", "0")
            .envs(env.iter().copied())
            // The server logs to stdout (tracing's default writer).
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lambda-at-home-server");
        let log = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log for the address, then keeps draining it so the child never blocks.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(log).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = listening_addr(&line) {
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let deadline = Instant::now() + START_WAIT;
        let addr = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the server did not say it listens within {START_WAIT:?}")
            });
        ChildServer { child, addr }
    }

    /// The child's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the child's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// `kill -9`, then reaps it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The User API address in "Lambda@Home listening: User API http://ADDR, ...".
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("User API http://").nth(1)?;
    rest.split([',', ' ']).next()?.parse().ok()
}
