//! How much of the host's CPU is idle: sampled from `/proc/stat` by a thread of its own
//! (`spawn_sampler`), read by the data-plane cores (`HostCpu::saturated`).
//!
//! `--scale-out adaptive` uses it to tell a load that more instances would serve faster from one
//! they cannot: when no CPU of the host is idle, a new instance of a CPU-bound function adds no
//! throughput (it only shares the same CPUs among more processes, each invocation longer), and
//! under a closed loop the longer invocations made each instance's share of the waiting smaller
//! and called for more instances still (issue 11; docs/scheduler.md, "CPU-saturated hosts").

use std::io::Read;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

/// How often the sampler reads `/proc/stat`.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often the sampler reads `/proc/loadavg`'s count of runnable tasks (an instant's figure,
/// so read more often and averaged over the same window as the idle figure).
const RUNNABLE_EVERY: Duration = Duration::from_millis(20);
/// `RUNNABLE_EVERY` readings per `SAMPLE_EVERY`.
const RUNNABLE_PER_SAMPLE: usize = (SAMPLE_EVERY.as_millis() / RUNNABLE_EVERY.as_millis()) as usize;
/// How many sampling periods the figures span: 300 ms, long enough for the kernel's tick
/// accounting (100 ticks a second per CPU) to say "idle" to within 2 % of a CPU on two CPUs, short
/// enough that a load that leaves CPUs idle is seen within a few hundred milliseconds.
const WINDOW_SAMPLES: usize = 3;
/// How many sampling periods the lowest runnable figure (`HostCpu::runnable_low_milli`) spans:
/// one second.
const LOW_SPAN_SAMPLES: usize = 10;
/// Below this much idle CPU (thousandths of one CPU, summed over all CPUs) the host counts as
/// saturated: half a CPU. A new instance needs at least that to add anything.
pub const SATURATED_BELOW_MILLI_CPUS: u32 = 500;
/// Stored while the idle figure is unknown (no `/proc/stat`, or not sampled yet).
const UNKNOWN: u32 = u32::MAX;
/// The first line of `/proc/stat` is at most this long (ten 20-digit counters and their
/// separators); only that much is copied out (the kernel still formats the whole file: per-CPU
/// lines and interrupt counts, some tens of microseconds on a large host, ten times a second).
const FIRST_LINE_MAX: usize = 512;

/// The host's idle CPU, and how many tasks compete for each CPU, over the last `WINDOW_SAMPLES`
/// sampling periods.
pub struct HostCpu {
    /// Idle CPU in thousandths of one CPU, summed over the host's CPUs; `UNKNOWN` when not known.
    idle_milli_cpus: AtomicU32,
    /// Runnable tasks on the host (other than the sampler), in thousandths, averaged over the
    /// window; `UNKNOWN` when not known.
    runnable_milli: AtomicU32,
    /// The lowest of the `runnable_milli` figures of the last `LOW_SPAN_SAMPLES` sampling
    /// periods; `UNKNOWN` when not known.
    runnable_low_milli: AtomicU32,
    /// The CPUs the figures are of (the host's online CPUs).
    cpus: AtomicU32,
    /// Adaptive starts not made because the host was saturated (`lah_scale_out_held_total`).
    pub starts_held: AtomicU64,
}

impl Default for HostCpu {
    fn default() -> HostCpu {
        HostCpu {
            idle_milli_cpus: AtomicU32::new(UNKNOWN),
            runnable_milli: AtomicU32::new(UNKNOWN),
            runnable_low_milli: AtomicU32::new(UNKNOWN),
            cpus: AtomicU32::new(1),
            starts_held: AtomicU64::new(0),
        }
    }
}

impl HostCpu {
    /// Idle CPU in thousandths of one CPU (1000: one CPU idle), or `None` before the first full
    /// window or where `/proc/stat` cannot be read.
    pub fn idle_milli_cpus(&self) -> Option<u32> {
        match self.idle_milli_cpus.load(Ordering::Relaxed) {
            UNKNOWN => None,
            v => Some(v),
        }
    }

    /// Whether less than half a CPU of the host was idle over the last window. `false` while
    /// unknown: without the figure, adaptive scale-out behaves as it did without it.
    pub fn saturated(&self) -> bool {
        self.idle_below(SATURATED_BELOW_MILLI_CPUS)
    }

    /// Whether less than `milli` thousandths of a CPU were idle over the last window; `false`
    /// while unknown.
    pub fn idle_below(&self, milli: u32) -> bool {
        self.idle_milli_cpus().is_some_and(|v| v < milli)
    }

    /// How many runnable tasks share each CPU of the host, in thousandths, never below 1000 (one
    /// task per CPU or fewer: no contention). A process that needs the CPU (a runtime's start, an
    /// invocation of a CPU-bound function) takes about this many thousandths of the time it
    /// takes on an uncontended host. 1000 while unknown.
    pub fn contention_milli(&self) -> u32 {
        match self.runnable_milli() {
            Some(r) => (r / self.cpus.load(Ordering::Relaxed).max(1)).max(1000),
            None => 1000,
        }
    }

    /// Runnable tasks on the host, in thousandths, averaged over the last window; `None` while
    /// unknown.
    pub fn runnable_milli(&self) -> Option<u32> {
        match self.runnable_milli.load(Ordering::Relaxed) {
            UNKNOWN => None,
            v => Some(v),
        }
    }

    /// The lowest runnable-task figure (thousandths, a window's average each) of the last
    /// second; `None` while unknown. What a load has kept up for a second, where a burst (a stall
    /// of the machine, kernel threads catching up) raises `runnable_milli` for one window.
    pub fn runnable_low_milli(&self) -> Option<u32> {
        match self.runnable_low_milli.load(Ordering::Relaxed) {
            UNKNOWN => None,
            v => Some(v),
        }
    }

    /// Sets the runnable-task figure and the host's CPU count, and the lowest figure of the last
    /// second to the same (tests; the sampler sets the lowest after, `set_runnable_low_milli`).
    pub fn set_runnable_milli(&self, v: Option<u32>, cpus: u32) {
        self.cpus.store(cpus.max(1), Ordering::Relaxed);
        let v = v.map_or(UNKNOWN, |v| v.min(UNKNOWN - 1));
        self.runnable_milli.store(v, Ordering::Relaxed);
        self.runnable_low_milli.store(v, Ordering::Relaxed);
    }

    /// Sets the lowest runnable-task figure of the last second (the sampler; tests).
    pub fn set_runnable_low_milli(&self, v: Option<u32>) {
        self.runnable_low_milli
            .store(v.map_or(UNKNOWN, |v| v.min(UNKNOWN - 1)), Ordering::Relaxed);
    }

    /// Sets the figure (the sampler; tests).
    pub fn set_idle_milli_cpus(&self, v: Option<u32>) {
        self.idle_milli_cpus
            .store(v.map_or(UNKNOWN, |v| v.min(UNKNOWN - 1)), Ordering::Relaxed);
    }
}

/// One reading of `/proc/stat`'s first line: idle and total time summed over all CPUs, in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reading {
    idle: u64,
    total: u64,
}

/// Parses the aggregate line, `cpu  user nice system idle iowait irq softirq steal guest
/// guest_nice`. Idle counts `idle` and `iowait` (a CPU waiting for I/O runs nothing); `steal`
/// (time the hypervisor gave another guest) counts as busy: it is not there to be had. `guest`
/// time is already inside `user`, so it is not added again.
fn parse_first_line(text: &str) -> Option<Reading> {
    let line = text.lines().next()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let total = v.iter().sum();
    Some(Reading { idle, total })
}

/// Idle CPU between two readings, in thousandths of one CPU, for a host of `cpus` CPUs; `None`
/// when no time passed (or the counters went backwards: a CPU went offline).
fn idle_between(then: Reading, now: Reading, cpus: u32) -> Option<u32> {
    let total = now.total.checked_sub(then.total)?;
    let idle = now.idle.checked_sub(then.idle)?;
    if total == 0 {
        return None;
    }
    let milli = idle.min(total) as u128 * cpus as u128 * 1000 / total as u128;
    Some(milli.min((UNKNOWN - 1) as u128) as u32)
}

/// Runnable tasks on the host now, from `/proc/loadavg` (`0.24 1.16 1.51 3/456 12345`: the
/// fourth field's numerator), less the sampler itself, which is running as it reads.
fn parse_runnable(text: &str) -> Option<u32> {
    let field = text.split_ascii_whitespace().nth(3)?;
    let (running, _) = field.split_once('/')?;
    Some(running.parse::<u32>().ok()?.saturating_sub(1))
}

/// Runnable tasks in thousandths, on average, from `sum` runnable tasks over `readings`
/// readings; `None` without readings.
fn runnable_of(sum: u64, readings: u64) -> Option<u32> {
    if readings == 0 {
        return None;
    }
    Some((sum * 1000 / readings).min((UNKNOWN - 1) as u64) as u32)
}

/// Adds this period's runnable figure to the last `LOW_SPAN_SAMPLES` and returns their lowest;
/// an unknown figure forgets the others (nothing is held on figures from before a gap).
fn lowest_recent(recent: &mut std::collections::VecDeque<u32>, figure: Option<u32>) -> Option<u32> {
    match figure {
        Some(f) => {
            recent.push_back(f);
            if recent.len() > LOW_SPAN_SAMPLES {
                recent.pop_front();
            }
        }
        None => recent.clear(),
    }
    recent.iter().copied().min()
}

/// Reads `file` from its start into `buf` (as much as fits) and returns the text.
fn read_start<'a>(file: &mut std::fs::File, buf: &'a mut [u8]) -> Option<&'a str> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0)).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    std::str::from_utf8(&buf[..n]).ok()
}

/// Starts the sampling thread: it reads `/proc/loadavg` every `RUNNABLE_EVERY` and `/proc/stat`
/// every `SAMPLE_EVERY`, and stores the idle CPU and the contention of the last window in `cpu`.
/// It ends once `cpu` is dropped (the server's `Switchboard` with it). Where `/proc/stat` cannot
/// be opened the figures stay unknown and no thread runs; a reading that fails later makes them
/// unknown again (nothing is held on a stale figure) until readings succeed for a whole window.
pub fn spawn_sampler(cpu: Weak<HostCpu>) -> Option<std::thread::JoinHandle<()>> {
    let Ok(mut stat) = std::fs::File::open("/proc/stat") else {
        return None;
    };
    let mut loadavg = std::fs::File::open("/proc/loadavg").ok();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    // The CPUs the counters sum over are the host's online ones; the affinity mask the server
    // runs under may be narrower, so they are counted from the file's per-CPU lines when it can.
    let cpus = count_cpu_lines().unwrap_or(cpus).max(1);
    let spawned = std::thread::Builder::new()
        .name("lah-hostcpu".into())
        .spawn(move || {
            let mut buf = [0u8; FIRST_LINE_MAX];
            // (reading of /proc/stat, runnable tasks summed and readings since the one before).
            let mut window: std::collections::VecDeque<(Reading, u64, u64)> =
                std::collections::VecDeque::with_capacity(WINDOW_SAMPLES + 1);
            let (mut runnable, mut readings) = (0u64, 0u64);
            // The runnable figures of the last `LOW_SPAN_SAMPLES` periods, for the lowest.
            let mut recent: std::collections::VecDeque<u32> =
                std::collections::VecDeque::with_capacity(LOW_SPAN_SAMPLES + 1);
            let mut turn = 0usize;
            loop {
                std::thread::sleep(RUNNABLE_EVERY);
                turn = turn.wrapping_add(1);
                if let Some(r) = loadavg
                    .as_mut()
                    .and_then(|f| read_start(f, &mut buf))
                    .and_then(parse_runnable)
                {
                    runnable += r as u64;
                    readings += 1;
                }
                if turn % RUNNABLE_PER_SAMPLE != 0 {
                    continue;
                }
                let Some(owner) = cpu.upgrade() else {
                    return;
                };
                let Some(r) = read_start(&mut stat, &mut buf).and_then(parse_first_line) else {
                    window.clear();
                    recent.clear();
                    owner.set_idle_milli_cpus(None);
                    owner.set_runnable_milli(None, cpus);
                    continue;
                };
                window.push_back((r, runnable, readings));
                (runnable, readings) = (0, 0);
                if window.len() > WINDOW_SAMPLES + 1 {
                    window.pop_front();
                }
                if window.len() == WINDOW_SAMPLES + 1 {
                    owner.set_idle_milli_cpus(idle_between(window[0].0, r, cpus));
                    let (sum, n) = window
                        .iter()
                        .skip(1)
                        .fold((0, 0), |(s, n), w| (s + w.1, n + w.2));
                    let figure = runnable_of(sum, n);
                    owner.set_runnable_milli(figure, cpus);
                    owner.set_runnable_low_milli(lowest_recent(&mut recent, figure));
                }
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the host CPU sampler; adaptive scale-out will not see CPU saturation");
            None
        }
    }
}

/// How many `cpuN` lines `/proc/stat` has (the CPUs its first line sums over).
fn count_cpu_lines() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let n = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u32;
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn parses_the_aggregate_line_and_counts_iowait_as_idle_and_steal_as_busy() {
        let text = "cpu  100 5 50 800 20 3 2 20 7 0\ncpu0 50 2 25 400 10 1 1 10 3 0\nintr 1 2 3\n";
        let r = parse_first_line(text).unwrap();
        assert_eq!(r.idle, 820);
        assert_eq!(
            r.total,
            100 + 5 + 50 + 800 + 20 + 3 + 2 + 20,
            "guest not added twice"
        );
    }

    #[test]
    fn the_lowest_runnable_figure_spans_a_second_and_forgets_across_a_gap() {
        let mut recent = std::collections::VecDeque::new();
        assert_eq!(lowest_recent(&mut recent, Some(3900)), Some(3900));
        // A burst of one window does not raise it.
        assert_eq!(lowest_recent(&mut recent, Some(7500)), Some(3900));
        // A load that lasts a whole second does: the 3900 is a second old after eight more.
        for _ in 0..LOW_SPAN_SAMPLES - 2 {
            assert_eq!(lowest_recent(&mut recent, Some(8000)), Some(3900));
        }
        assert_eq!(lowest_recent(&mut recent, Some(8000)), Some(7500));
        assert_eq!(lowest_recent(&mut recent, Some(8000)), Some(8000));
        assert_eq!(lowest_recent(&mut recent, None), None);
        assert_eq!(lowest_recent(&mut recent, Some(9000)), Some(9000));
    }

    #[test]
    fn refuses_what_is_not_the_aggregate_line() {
        assert_eq!(parse_first_line("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_first_line("cpu 1 2 x 4\n"), None);
        assert_eq!(parse_first_line("cpu 1 2\n"), None);
        assert_eq!(parse_first_line(""), None);
    }

    #[test]
    fn idle_between_two_readings_is_in_thousandths_of_a_cpu() {
        let a = Reading {
            idle: 100,
            total: 1000,
        };
        // 60 ticks of 2 CPUs pass, 15 idle: a quarter of two CPUs, half a CPU.
        let b = Reading {
            idle: 115,
            total: 1060,
        };
        assert_eq!(idle_between(a, b, 2), Some(500));
        assert_eq!(idle_between(a, a, 2), None, "no time passed");
        assert_eq!(idle_between(b, a, 2), None, "counters went backwards");
    }

    #[test]
    fn saturated_only_below_half_a_cpu_and_never_while_unknown() {
        let cpu = HostCpu::default();
        assert!(!cpu.saturated(), "unknown");
        cpu.set_idle_milli_cpus(Some(499));
        assert!(cpu.saturated());
        cpu.set_idle_milli_cpus(Some(500));
        assert!(!cpu.saturated());
        cpu.set_idle_milli_cpus(None);
        assert_eq!(cpu.idle_milli_cpus(), None);
    }

    #[test]
    fn runnable_tasks_come_from_loadavg_less_the_reader() {
        assert_eq!(parse_runnable("0.24 1.16 1.51 3/456 12345\n"), Some(2));
        assert_eq!(parse_runnable("0.24 1.16 1.51 0/456 12345\n"), Some(0));
        assert_eq!(parse_runnable("0.24 1.16 1.51 x/456 12345\n"), None);
        assert_eq!(parse_runnable("0.24 1.16"), None);
    }

    #[test]
    fn contention_is_runnable_tasks_per_cpu_and_never_below_one() {
        // 15 readings of 6 runnable tasks on 2 CPUs: three per CPU.
        assert_eq!(runnable_of(90, 15), Some(6000));
        assert_eq!(runnable_of(0, 0), None, "no readings");
        let cpu = HostCpu::default();
        assert_eq!(cpu.contention_milli(), 1000, "unknown");
        cpu.set_runnable_milli(Some(6000), 2);
        assert_eq!(cpu.contention_milli(), 3000);
        cpu.set_runnable_milli(Some(1000), 2);
        assert_eq!(cpu.contention_milli(), 1000, "fewer tasks than CPUs");
        cpu.set_runnable_milli(None, 2);
        assert_eq!(cpu.runnable_milli(), None);
    }

    #[test]
    fn the_sampler_reads_this_host_and_ends_with_its_owner() {
        if !std::path::Path::new("/proc/stat").exists() {
            return;
        }
        let cpu = Arc::new(HostCpu::default());
        let sampler = spawn_sampler(Arc::downgrade(&cpu)).expect("/proc/stat opens");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cpu.idle_milli_cpus().is_none() {
            assert!(std::time::Instant::now() < deadline, "no figure within 5 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let cpus = count_cpu_lines().unwrap();
        assert!(cpu.idle_milli_cpus().unwrap() <= cpus * 1000);
        assert!(cpu.runnable_milli().is_some());
        drop(cpu);
        // It notices within one sampling period; `join` would hang if it never did.
        let ends = std::time::Instant::now() + Duration::from_secs(5);
        while !sampler.is_finished() {
            assert!(
                std::time::Instant::now() < ends,
                "the sampler outlived its owner"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sampler.join().unwrap();
    }
}
