//! What the kernel reports about a process, read from /proc: CPU time per thread (so the engine's
//! runtime threads can be told from the simulated fleet's in one process) and the time they
//! waited for a CPU, CPU time of another process (a peer server), resident memory, the whole
//! machine's CPU time, and the system's UDP receive-buffer drops. Linux only, like the rest of
//! the harness.

use std::fs;
use std::ops::{AddAssign, Sub};
use std::time::Duration;

use anyhow::Context;

/// Scheduler times of a set of threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadTimes {
    /// Time on a CPU.
    pub cpu: Duration,
    /// Time runnable but waiting for a CPU (on a shared machine: other programs' time).
    pub waiting: Duration,
}

impl Sub for ThreadTimes {
    type Output = ThreadTimes;

    fn sub(self, earlier: ThreadTimes) -> ThreadTimes {
        ThreadTimes {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            waiting: self.waiting.saturating_sub(earlier.waiting),
        }
    }
}

impl AddAssign for ThreadTimes {
    fn add_assign(&mut self, other: ThreadTimes) {
        self.cpu += other.cpu;
        self.waiting += other.waiting;
    }
}

/// Scheduler times of the threads of process `pid` ("self" or a number) whose name `pick`
/// accepts, from each thread's schedstat (nanoseconds). Threads that already exited are not
/// counted: the harness only reads threads that live for the whole measurement.
pub fn threads_times(pid: &str, pick: impl Fn(&str) -> bool) -> anyhow::Result<ThreadTimes> {
    let tasks = format!("/proc/{pid}/task");
    let mut total = ThreadTimes::default();
    for task in fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
        let dir = task?.path();
        // A thread may exit between listing and reading: it is then skipped.
        let Ok(name) = fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !pick(name.trim_end()) {
            continue;
        }
        if let Ok(schedstat) = fs::read_to_string(dir.join("schedstat")) {
            total += parse_schedstat(&schedstat)
                .with_context(|| format!("parsing {}", dir.display()))?;
        }
    }
    Ok(total)
}

/// Scheduler times of every live thread of process `pid`.
pub fn process_times(pid: &str) -> anyhow::Result<ThreadTimes> {
    threads_times(pid, |_| true)
}

/// `schedstat`: nanoseconds on a CPU, nanoseconds waiting for one, timeslices.
fn parse_schedstat(text: &str) -> anyhow::Result<ThreadTimes> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let mut next = || -> anyhow::Result<Duration> {
        Ok(Duration::from_nanos(
            fields.next().context("short schedstat")??,
        ))
    };
    Ok(ThreadTimes {
        cpu: next()?,
        waiting: next()?,
    })
}

/// Resident memory of this process, in bytes.
pub fn resident_bytes() -> anyhow::Result<u64> {
    let statm = fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("short /proc/self/statm")?
        .parse()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page).context("page size")?)
}

/// The whole machine's CPU time since boot, summed over every CPU, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTimes {
    /// Ticks the CPUs ran something (stolen by a hypervisor included: not ours to use).
    pub busy: u64,
    /// Every tick, idle and waiting for I/O included.
    pub total: u64,
}

impl MachineTimes {
    /// The share of the CPUs' time they were busy between `earlier` and this reading; 0 when
    /// no tick passed.
    pub fn busy_share_since(self, earlier: MachineTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        let busy = self.busy.saturating_sub(earlier.busy);
        if total == 0 {
            return 0.0;
        }
        busy as f64 / total as f64
    }
}

/// The machine's CPU time now, from /proc/stat.
pub fn machine_times() -> anyhow::Result<MachineTimes> {
    parse_stat(&fs::read_to_string("/proc/stat")?)
}

/// The `cpu` line of /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal (the
/// guest columns after them are counted in user and nice already).
fn parse_stat(text: &str) -> anyhow::Result<MachineTimes> {
    let line = (text.lines())
        .find(|line| line.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks = line.split_whitespace().skip(1).take(8);
    let ticks: Vec<u64> = ticks.map(str::parse).collect::<Result<_, _>>()?;
    anyhow::ensure!(ticks.len() == 8, "short cpu line in /proc/stat: {line}");
    let total = ticks.iter().sum();
    Ok(MachineTimes {
        busy: total - ticks[3] - ticks[4],
        total,
    })
}

/// Datagrams the kernel dropped because a UDP socket's receive buffer was full (RcvbufErrors in
/// /proc/net/snmp), summed over the whole machine: other programs' drops count too.
pub fn udp_receive_buffer_drops() -> anyhow::Result<u64> {
    let snmp = fs::read_to_string("/proc/net/snmp")?;
    let mut udp = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let (names, values) = (udp.next(), udp.next());
    let (Some(names), Some(values)) = (names, values) else {
        anyhow::bail!("no Udp lines in /proc/net/snmp");
    };
    let column = names
        .split_whitespace()
        .position(|name| name == "RcvbufErrors")
        .context("no RcvbufErrors in /proc/net/snmp")?;
    let value = values
        .split_whitespace()
        .nth(column)
        .context("short Udp line")?;
    Ok(value.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {}
        assert!(process_times("self").unwrap().cpu >= Duration::from_millis(10));
        assert!(resident_bytes().unwrap() > 0);
        udp_receive_buffer_drops().unwrap();
        let (before, after) = (machine_times().unwrap(), machine_times().unwrap());
        assert!(after.total >= before.total && after.busy >= before.busy);
    }

    #[test]
    fn the_machine_is_busy_for_every_tick_but_idle_and_io_wait() {
        let stat = "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 3 0\n";
        let earlier = parse_stat(stat).unwrap();
        assert_eq!(
            earlier,
            MachineTimes {
                busy: 170,
                total: 990
            }
        );
        let later = MachineTimes {
            busy: earlier.busy + 190,
            total: earlier.total + 200,
        };
        assert_eq!(later.busy_share_since(earlier), 0.95);
        assert_eq!(earlier.busy_share_since(earlier), 0.0);
        assert!(parse_stat("cpu  1 2 3\n").is_err(), "a short line");
        assert!(parse_stat("intr 5\n").is_err(), "no cpu line");
    }
}
