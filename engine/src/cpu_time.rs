//! The CPU time of the calling thread: what a plugin call's time limit counts (a call
//! preempted on a busy machine is not charged for the time other threads took), and what the
//! benchmarks report per operation.

use std::time::Duration;

/// CPU time the calling thread has used so far.
pub fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; the clock id is a constant Linux knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_work_done_on_this_thread_only() {
        let before = thread_cpu();
        let mut spun = 0u64;
        while thread_cpu() - before < Duration::from_millis(5) {
            spun = std::hint::black_box(spun + 1);
        }
        let other = std::thread::spawn(thread_cpu)
            .join()
            .expect("the other thread");
        assert!(
            other < Duration::from_millis(5),
            "a new thread starts near zero: {other:?}"
        );
    }
}
