//! `Airtime`: the package bytes per second a cell's downlink may carry. An NB-IoT cell gives
//! roughly 200 kbit/s down in good coverage, shared with everything else it carries; firmware
//! takes a stated share: a rate per cell over every task (the platform's), and optionally a
//! lower one for one task in a cell (the task's). Each is a token bucket holding at most a
//! second of its rate; a push takes its payload's bytes from the device's cell's buckets
//! before each block (or Q-Block1 payload) goes out, and waits while they are in debt.
//! Retransmissions by the CoAP layer are not counted (about a tenth more at 10 % loss), nor
//! are pulls (the device paces a Block2 download by asking), nor devices whose cell is not
//! known.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::coap::blockwise::Pacer;
use crate::sync::lock;

/// Buckets are looked over for idle ones every this many takes.
const SWEEP_EVERY: u64 = 1024;

/// Whose budget a bucket holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Budget {
    /// A cell's, over every task.
    Cell(u32),
    /// One task's in a cell.
    TaskInCell(String, u32),
}

/// A token bucket: bytes that may go out now, refilled at `rate` up to a second of it, and
/// below zero while takers wait for bytes they already took.
#[derive(Debug)]
struct Bucket {
    /// Bytes per second.
    rate: f64,
    /// Bytes available (negative: owed) as of `refilled`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        Bucket {
            rate,
            tokens: rate,
            refilled: now,
        }
    }

    /// Takes `bytes` at `now`; how long the taker waits before sending them.
    fn take(&mut self, bytes: usize, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= bytes as f64;
        match self.tokens < 0.0 {
            true => Duration::from_secs_f64(-self.tokens / self.rate),
            false => Duration::ZERO,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
    }

    /// Full again: nobody took from it for a while, and forgetting it loses nothing.
    fn idle(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.rate
    }
}

/// The buckets of every cell and task, at the platform's rate per cell.
#[derive(Debug)]
pub struct Airtime {
    /// Package bytes per second per cell over every task; `None`: no cap.
    per_cell: Option<u32>,
    /// The buckets taken from lately.
    buckets: Mutex<HashMap<Budget, Bucket>>,
    /// Takes so far, and the bytes and waits they came to.
    taken: Mutex<Taken>,
}

/// What the buckets gave.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Taken {
    /// Takes (payloads paced).
    pub takes: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The time takers were told to wait, summed.
    pub waited: Duration,
}

impl Airtime {
    /// Buckets of `per_cell` bytes per second for each cell (`None`: cells are not capped,
    /// tasks may still cap themselves).
    pub fn new(per_cell: Option<u32>) -> Arc<Self> {
        Arc::new(Airtime {
            per_cell,
            buckets: Mutex::new(HashMap::new()),
            taken: Mutex::default(),
        })
    }

    /// The pacer of a push to a device in `cell` for a task capped at `task_rate` bytes per
    /// second there; `None` when neither the cell nor the task has a cap.
    pub fn pacer(self: &Arc<Self>, cell: u32, task: Option<(&str, u32)>) -> Option<Pacer> {
        let mut budgets = Vec::new();
        if let Some(rate) = self.per_cell {
            budgets.push((Budget::Cell(cell), rate));
        }
        if let Some((task, rate)) = task {
            budgets.push((Budget::TaskInCell(task.to_string(), cell), rate));
        }
        if budgets.is_empty() {
            return None;
        }
        let airtime = self.clone();
        Some(Pacer::new(move |bytes| {
            let wait = airtime.take(&budgets, bytes, Instant::now());
            Box::pin(tokio::time::sleep(wait))
        }))
    }

    /// What was taken so far.
    pub fn taken(&self) -> Taken {
        *lock(&self.taken)
    }

    /// Takes `bytes` from each of `budgets` at `now`; the longest wait of them.
    fn take(&self, budgets: &[(Budget, u32)], bytes: usize, now: Instant) -> Duration {
        let mut buckets = lock(&self.buckets);
        let wait = budgets
            .iter()
            .map(|(budget, rate)| {
                buckets
                    .entry(budget.clone())
                    .or_insert_with(|| Bucket::new(*rate, now))
                    .take(bytes, now)
            })
            .max()
            .unwrap_or_default();
        let mut taken = lock(&self.taken);
        taken.takes += 1;
        taken.bytes += bytes as u64;
        taken.waited += wait;
        if taken.takes.is_multiple_of(SWEEP_EVERY) {
            buckets.retain(|_, bucket| !bucket.idle(now));
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes each of `pacers` sends, one payload of `payload` bytes after another, for
    /// `span` of (paused) time.
    async fn sent_within(pacers: Vec<Pacer>, payload: usize, span: Duration) -> Vec<usize> {
        let start = Instant::now();
        let senders = pacers.into_iter().map(|pacer| {
            tokio::spawn(async move {
                let mut sent = 0;
                loop {
                    pacer.before(payload).await;
                    if start.elapsed() >= span {
                        return sent;
                    }
                    sent += payload;
                }
            })
        });
        let mut totals = Vec::new();
        for sender in senders.collect::<Vec<_>>() {
            totals.push(sender.await.unwrap());
        }
        totals
    }

    #[tokio::test(start_paused = true)]
    async fn a_cell_carries_its_rate_over_every_sender_and_cells_apart_do_not_share() {
        let airtime = Airtime::new(Some(10_000));
        let cell_7: Vec<Pacer> = (0..5).map(|_| airtime.pacer(7, None).unwrap()).collect();
        let mut pacers = cell_7;
        pacers.push(airtime.pacer(8, None).unwrap());
        let sent = sent_within(pacers, 1_000, Duration::from_secs(60)).await;
        let in_cell_7: usize = sent[..5].iter().sum();
        // A second's burst, then the rate: 10 KB + 60 s × 10 KB/s, within a payload.
        assert!((600_000..=611_000).contains(&in_cell_7), "{sent:?}");
        assert!(
            (600_000..=611_000).contains(&sent[5]),
            "cell 8 alone: {sent:?}"
        );
        // The five senders of cell 7 shared it about evenly.
        for each in &sent[..5] {
            assert!((100_000..=140_000).contains(each), "{sent:?}");
        }
        assert!(airtime.taken().waited > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_keeps_its_own_lower_rate_within_the_cells() {
        let airtime = Airtime::new(Some(10_000));
        let capped = airtime.pacer(7, Some(("t1", 2_000))).unwrap();
        let other = airtime.pacer(7, None).unwrap();
        let sent = sent_within(vec![capped, other], 500, Duration::from_secs(60)).await;
        assert!((120_000..=123_000).contains(&sent[0]), "{sent:?}");
        assert!(sent[0] + sent[1] <= 611_000, "{sent:?}");
        assert!(sent[1] >= 480_000, "the rest of the cell: {sent:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_capped_without_rates_and_idle_buckets_are_forgotten() {
        assert!(Airtime::new(None).pacer(7, None).is_none());
        let airtime = Airtime::new(Some(1_000_000));
        for cell in 0..SWEEP_EVERY as u32 - 1 {
            airtime.pacer(cell, None).unwrap().before(1).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        airtime.pacer(0, None).unwrap().before(1).await;
        assert!(lock(&airtime.buckets).len() <= 1);
    }
}
