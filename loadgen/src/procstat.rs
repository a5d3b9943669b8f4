//! CPU time and memory of the server under test, its runtime processes and the load generator
//! itself, read from `/proc` (Linux only) at the start and end of each measured phase.
//!
//! CPU time is the sum over threads of `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on CPU,
//! and nanoseconds spent runnable but waiting for a CPU); `stat` ticks (10 ms) would be too coarse
//! for a 1,000-invoke phase. Runtime processes are the server's descendants; those that exit during
//! a phase are counted through the server's `cutime + cstime` (tick resolution), so a retired
//! instance's CPU is not lost. A sample scans all of `/proc`: take it off the hot path.

use std::collections::HashMap;
use std::fs;
use std::time::Instant;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("no process listens on TCP port {0} (checked /proc/net/tcp and tcp6)")]
    NoListener(u16),
    #[error("port {0} is listening but no readable /proc/*/fd holds its socket (another user's process?)")]
    NotOurs(u16),
    #[error("process {0} is gone")]
    Gone(u32),
}

/// Kernel constants read once.
#[derive(Clone, Copy, Debug)]
struct Units {
    tick_ns: u64,
    page_bytes: u64,
}

impl Units {
    fn read() -> Units {
        // SAFETY: sysconf has no preconditions; it only reads configuration values.
        let (ticks_per_s, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Units {
            tick_ns: 1_000_000_000 / u64::try_from(ticks_per_s).unwrap_or(100).max(1),
            page_bytes: u64::try_from(page).unwrap_or(4096),
        }
    }
}

/// The fields of `/proc/<pid>/stat` we use (`man 5 proc`).
#[derive(Clone, Copy, Debug, Default)]
struct Stat {
    ppid: u32,
    cutime: u64,
    cstime: u64,
    rss_pages: u64,
}

fn parse_stat(text: &str) -> Option<Stat> {
    // comm may contain spaces and parentheses; the fields after the last ')' are well formed.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state), so field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(num(4)?).ok()?,
        cutime: num(16)?,
        cstime: num(17)?,
        rss_pages: num(24)?,
    })
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Nanoseconds on CPU and waiting for a CPU, summed over the threads of `pid`.
fn thread_times_ns(pid: u32) -> Option<(u64, u64)> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut run = 0;
    let mut wait = 0;
    for task in tasks.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread exited between listing and reading
        };
        let mut fields = text
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        run += fields.next().unwrap_or(0);
        wait += fields.next().unwrap_or(0);
    }
    Some((run, wait))
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// All live processes as pid → stat.
fn all_processes() -> HashMap<u32, Stat> {
    let mut out = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(stat) = read_stat(pid) {
            out.insert(pid, stat);
        }
    }
    out
}

fn descendants(root: u32, procs: &HashMap<u32, Stat>) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, stat) in procs {
        children.entry(stat.ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Some(kids) = children.get(&pid) {
            out.extend_from_slice(kids);
            stack.extend_from_slice(kids);
        }
    }
    out
}

/// One reading of everything we track.
#[derive(Clone, Debug)]
pub struct Sample {
    at: Instant,
    server: Option<ServerSample>,
    /// Our own CPU time before and after taking this sample: the window between two samples
    /// runs from the first's `end` to the second's `start`, so scanning `/proc` is not in it.
    self_run_ns_start: u64,
    self_run_ns_end: u64,
}

#[derive(Clone, Debug)]
struct ServerSample {
    run_ns: u64,
    wait_ns: u64,
    /// CPU of reaped children (ticks), where exited runtime processes end up.
    reaped_ticks: u64,
    runtimes_run_ns: u64,
    runtimes_rss_bytes: u64,
    runtimes: usize,
    rss_kb: u64,
    rss_peak_kb: u64,
}

/// Reads samples of one server process (or only of ourselves when the server is remote).
#[derive(Clone, Debug)]
pub struct Watch {
    pid: Option<u32>,
    units: Units,
}

impl Watch {
    pub fn new(pid: Option<u32>) -> Watch {
        Watch {
            pid,
            units: Units::read(),
        }
    }

    pub fn sample(&self) -> Sample {
        let own = || thread_times_ns(std::process::id()).map_or(0, |t| t.0);
        let self_run_ns_start = own();
        let at = Instant::now();
        let server = self.pid.and_then(|pid| self.sample_server(pid));
        Sample {
            at,
            server,
            self_run_ns_start,
            self_run_ns_end: own(),
        }
    }

    fn sample_server(&self, pid: u32) -> Option<ServerSample> {
        let stat = read_stat(pid)?;
        let (run_ns, wait_ns) = thread_times_ns(pid)?;
        let procs = all_processes();
        let mut runtimes_run_ns = 0;
        let mut runtimes_rss_pages = 0;
        let kids = descendants(pid, &procs);
        for kid in &kids {
            runtimes_run_ns += thread_times_ns(*kid).map_or(0, |t| t.0);
            runtimes_rss_pages += procs.get(kid).map_or(0, |s| s.rss_pages);
        }
        Some(ServerSample {
            run_ns,
            wait_ns,
            reaped_ticks: stat.cutime + stat.cstime,
            runtimes_run_ns,
            runtimes_rss_bytes: runtimes_rss_pages * self.units.page_bytes,
            runtimes: kids.len(),
            rss_kb: status_kb(pid, "VmRSS"),
            rss_peak_kb: status_kb(pid, "VmHWM"),
        })
    }

    /// What happened between two samples; `invokes` is the number of completed invocations.
    pub fn usage(&self, before: &Sample, after: &Sample, invokes: u64) -> Usage {
        let per = |ns: u64| (invokes > 0).then(|| ns as f64 / 1e3 / invokes as f64);
        let loadgen_ns = after
            .self_run_ns_start
            .saturating_sub(before.self_run_ns_end);
        let mut usage = Usage {
            wall_ms: after.at.duration_since(before.at).as_secs_f64() * 1e3,
            loadgen_cpu_ms: loadgen_ns as f64 / 1e6,
            loadgen_cpu_us_per_invoke: per(loadgen_ns),
            ..Usage::default()
        };
        if let (Some(b), Some(a)) = (&before.server, &after.server) {
            let server_ns = a.run_ns.saturating_sub(b.run_ns);
            let runtimes_ns = (a.runtimes_run_ns + a.reaped_ticks * self.units.tick_ns)
                .saturating_sub(b.runtimes_run_ns + b.reaped_ticks * self.units.tick_ns);
            let wait_ns = a.wait_ns.saturating_sub(b.wait_ns);
            usage.server_cpu_ms = Some(server_ns as f64 / 1e6);
            usage.server_cpu_us_per_invoke = per(server_ns);
            usage.server_runqueue_wait_ms = Some(wait_ns as f64 / 1e6);
            usage.runtime_cpu_ms = Some(runtimes_ns as f64 / 1e6);
            usage.runtime_cpu_us_per_invoke = per(runtimes_ns);
            usage.server_rss_mb = Some(a.rss_kb as f64 / 1024.0);
            usage.server_rss_peak_mb = Some(a.rss_peak_kb as f64 / 1024.0);
            usage.runtime_rss_mb = Some(a.runtimes_rss_bytes as f64 / (1024.0 * 1024.0));
            usage.runtime_processes = Some(a.runtimes);
        }
        usage
    }
}

/// CPU and memory over one phase. Server fields are `None` when the server is not local.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    pub wall_ms: f64,
    pub loadgen_cpu_ms: f64,
    pub loadgen_cpu_us_per_invoke: Option<f64>,
    pub server_cpu_ms: Option<f64>,
    pub server_cpu_us_per_invoke: Option<f64>,
    /// Time the server's threads were runnable but waiting for a CPU: how contended it was.
    pub server_runqueue_wait_ms: Option<f64>,
    pub runtime_cpu_ms: Option<f64>,
    pub runtime_cpu_us_per_invoke: Option<f64>,
    pub server_rss_mb: Option<f64>,
    pub server_rss_peak_mb: Option<f64>,
    pub runtime_rss_mb: Option<f64>,
    pub runtime_processes: Option<usize>,
}

/// The pid of the process listening on `port` (IPv4 or IPv6), found by matching the listening
/// socket's inode in `/proc/net/tcp*` against the sockets in `/proc/*/fd`.
pub fn find_listener_pid(port: u16) -> Result<u32, ProcError> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        inodes.extend(listening_inodes(&text, port));
    }
    if inodes.is_empty() {
        return Err(ProcError::NoListener(port));
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let entries = fs::read_dir("/proc").map_err(|_| ProcError::NotOurs(port))?;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = fs::read_link(fd.path()) else {
                continue;
            };
            if wanted.iter().any(|w| link.as_os_str() == w.as_str()) {
                return Ok(pid);
            }
        }
    }
    Err(ProcError::NotOurs(port))
}

/// Inodes of sockets in LISTEN state (`0A`) on `port` in one `/proc/net/tcp*` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            let listening = *f.get(3)? == "0A";
            let matches = u16::from_str_radix(local_port, 16).ok()? == port;
            (listening && matches).then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// The command line of `pid`, arguments joined by spaces (reports scrub `cmdline_args` instead).
#[cfg(test)]
pub fn cmdline(pid: u32) -> Result<String, ProcError> {
    Ok(cmdline_args(pid)?.join(" "))
}

/// The arguments of `pid`'s command line.
pub fn cmdline_args(pid: u32) -> Result<Vec<String>, ProcError> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).map_err(|_| ProcError::Gone(pid))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_names() {
        let line = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 30 5 6 20 0 3 0 100 \
                    123456 789 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.ppid, s.cutime, s.cstime), (7, 5, 6));
        assert_eq!(s.rss_pages, 789);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn listening_inode_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 555 1 0 100 0 0 10 0\n\
   1: 0100007F:2328 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 556 1 0 100 0 0 10 0\n\
   2: 0100007F:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 557 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 9000), vec![555]);
        assert_eq!(listening_inodes(table, 9001), vec![557]);
        assert!(listening_inodes(table, 80).is_empty());
    }

    #[test]
    fn finds_our_own_listener_and_counts_our_cpu() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(find_listener_pid(port).unwrap(), std::process::id());
        drop(listener);
        assert!(matches!(
            find_listener_pid(port),
            Err(ProcError::NoListener(_))
        ));

        let watch = Watch::new(Some(std::process::id()));
        let before = watch.sample();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = watch.sample();
        let usage = watch.usage(&before, &after, 1000);
        assert!(usage.loadgen_cpu_ms > 1.0, "{usage:?}");
        assert!(usage.server_cpu_ms.unwrap() > 1.0, "{usage:?}");
        assert!(usage.server_rss_mb.unwrap() > 0.5, "{usage:?}");
        assert!(cmdline(std::process::id()).unwrap().contains("loadgen"));
    }
}
