//! What the kernel reports about a process, read from /proc: CPU time per thread (so the engine's
//! runtime threads can be told from the simulated fleet's in one process) and the time they
//! waited for a CPU, CPU time of another process (a peer server), resident memory, and the
//! system's UDP receive-buffer drops. Linux only, like the rest of the harness.

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
    }
}
