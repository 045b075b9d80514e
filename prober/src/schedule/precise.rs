//! The last stretch before a tick, waited for with sub-millisecond precision.
//!
//! tokio's timer has a resolution of 1 ms: it rounds a deadline up to its next
//! millisecond, and its driver's `epoll_wait` timeout is rounded up to whole
//! milliseconds again, so a tick on tokio's timer alone starts ≈ 1 ms late at
//! the median (BENCHMARKS.md, "lateness floor"), half the p99 budget of 2 ms.
//! So the wait for a tick goes to one timer thread: a heap of deadlines under
//! a mutex and a condition variable's timed wait, a futex wait with a
//! nanosecond timeout (an hrtimer); a waiter wakes the thread only when its
//! deadline comes before every other. A
//! deadline more than [`FAR`] away is first slept on tokio's timer until
//! [`HANDOVER`] before it, so the heap holds only the ticks of the next minute;
//! a nearer one goes to the thread at once, so the waiting task is woken once.
//!
//! The thread asks the kernel for a timer slack of 1 ns: a timed wait of a
//! normal thread may otherwise end up to 50 µs late (Linux's default slack,
//! `/proc/<pid>/timerslack_ns`), which was nearly half the lateness p50 at
//! 5,000/s (112–125 µs; 66–68 µs with it, BENCHMARKS.md).
//!
//! Only for the system clock: with paused tokio time (tests) the scheduler
//! uses tokio's timer alone. If the thread cannot start, tokio's timer is used.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU8, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// How long before a far deadline tokio's timer hands over to the timer
/// thread: more than tokio's own lateness (≈ 1–2 ms), so it happens in time.
pub const HANDOVER: Duration = Duration::from_millis(3);
/// Deadlines further than this are slept on tokio's timer first.
pub const FAR: Duration = Duration::from_secs(60);

/// The deadlines waited for, shared by the timer thread and the waiters. A
/// waiter wakes the thread only when its deadline comes before every other:
/// at 5,000 ticks a second, a wake-up for every request (a channel's) was
/// half the thread's wake-ups, and the senders' wakes were 3.4 % of the
/// workers' CPU samples (perf; the timer thread had 10.4 % of all samples).
struct Timer {
    heap: Mutex<Heap>,
    earlier: Condvar,
}

#[derive(Default)]
struct Heap {
    entries: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    /// The thread has ended (a panic): waiters fall back to tokio's timer.
    ended: bool,
}

impl Timer {
    /// Adds a deadline; wakes the thread if it now comes first.
    fn add(&self, at: Instant, done: oneshot::Sender<()>) {
        let mut heap = self.heap.lock();
        if heap.ended {
            // `done` dropped: the waiter sleeps on tokio's timer instead.
            return;
        }
        let first = heap.entries.peek().is_none_or(|Reverse(e)| at < e.at);
        heap.seq += 1;
        let seq = heap.seq;
        heap.entries.push(Reverse(Entry { at, seq, done }));
        drop(heap);
        if first {
            self.earlier.notify_one();
        }
    }
}

static TIMER: OnceLock<Option<Arc<Timer>>> = OnceLock::new();

/// The timer thread's priority as it found it: [`UNKNOWN`] until it starts.
static PRIORITY: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const NORMAL: u8 = 1;
const REALTIME: u8 = 2;

/// Whether the timer thread runs at real-time priority; `None` until it has
/// started (the first tick due within a minute starts it).
pub fn timer_realtime() -> Option<bool> {
    match PRIORITY.load(AtomicOrdering::Relaxed) {
        NORMAL => Some(false),
        REALTIME => Some(true),
        _ => None,
    }
}

fn timer() -> Option<&'static Timer> {
    TIMER
        .get_or_init(|| {
            let timer = Arc::new(Timer {
                heap: Mutex::new(Heap::default()),
                earlier: Condvar::new(),
            });
            let thread = timer.clone();
            match std::thread::Builder::new()
                .name("prober-timer".into())
                .spawn(move || run(&thread))
            {
                Ok(_) => Some(timer),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the timer thread; ticks use tokio's 1 ms timer");
                    None
                }
            }
        })
        .as_deref()
}

/// Waits until `at` on the timer thread (on tokio's timer first if it is far).
pub async fn sleep_until(at: tokio::time::Instant) {
    let now = tokio::time::Instant::now();
    if at >= now + FAR {
        tokio::time::sleep_until(at.checked_sub(HANDOVER).unwrap_or(at)).await;
    }
    if tokio::time::Instant::now() >= at {
        return;
    }
    let Some(timer) = timer() else {
        return tokio::time::sleep_until(at).await;
    };
    let (done, wait) = oneshot::channel();
    timer.add(at.into_std(), done);
    if wait.await.is_err() {
        tokio::time::sleep_until(at).await;
    }
}

/// A deadline in the heap; ordered by time, then by arrival.
struct Entry {
    at: Instant,
    seq: u64,
    done: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The timer thread: fires every due deadline (outside the lock, so no
/// waiter waits on it), then waits for the first one or an earlier one.
fn run(timer: &Timer) {
    let _ended = Ended(timer);
    precise_wakes();
    let mut due = Vec::new();
    let mut heap = timer.heap.lock();
    loop {
        let now = Instant::now();
        while heap.entries.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = heap.entries.pop() {
                due.push(e.done);
            }
        }
        if !due.is_empty() {
            MutexGuard::unlocked(&mut heap, || {
                for done in due.drain(..) {
                    // The waiter may be gone (its probe stopped): nothing to tell.
                    let _ = done.send(());
                }
            });
            continue;
        }
        match heap.entries.peek().map(|Reverse(e)| e.at) {
            Some(at) => {
                timer.earlier.wait_until(&mut heap, at);
            }
            None => timer.earlier.wait(&mut heap),
        }
    }
}

/// Asks for a timer slack of 1 ns for this thread (the least Linux allows;
/// 0 would mean the process default) and for the lowest real-time priority.
/// The slack cannot fail for the calling thread; if it ever did, the ticks
/// would only be ≈ 50 µs later, so it is logged.
fn precise_wakes() {
    PRIORITY.store(NORMAL, AtomicOrdering::Relaxed);
    #[cfg(target_os = "linux")]
    {
        if let Err(e) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
            tracing::warn!(error = %e, "cannot set the timer thread's timer slack; ticks may start up to 50 µs later");
        }
        // Read back by the thread itself: another thread may read its
        // `/proc/<tid>/timerslack_ns` only with CAP_SYS_NICE.
        #[cfg(test)]
        if let Ok(ns) = rustix::thread::current_timer_slack() {
            tests::TIMER_SLACK_NS.store(ns, std::sync::atomic::Ordering::Relaxed);
        }
        // After the slack: Linux gives a real-time thread no slack at all
        // (set after the priority, it read back 0 on Linux 6.18).
        realtime();
    }
}

/// Asks for `SCHED_FIFO` at the lowest real-time priority (1) for this
/// thread, so that its wake at a deadline preempts any normal thread at once
/// instead of waiting for a CPU: at 5,000 ticks a second on two cores, start
/// lateness p99 2.18–2.19 ms without it, 1.69–1.74 ms with it (BENCHMARKS.md,
/// "The timer thread's real-time priority"). The thread runs for
/// microseconds a wake and never spins, and Linux holds real-time threads to
/// 95 % of a CPU whatever they do (`sched_rt_runtime_us`). It needs
/// `CAP_SYS_NICE` or a `RLIMIT_RTPRIO` of at least 1; without either the
/// thread stays a normal one, and that is said once.
#[cfg(target_os = "linux")]
fn realtime() {
    match ask_for_fifo() {
        Ok(()) => {
            PRIORITY.store(REALTIME, AtomicOrdering::Relaxed);
            tracing::debug!("the timer thread runs at real-time priority (SCHED_FIFO 1)");
        }
        Err(e) => tracing::info!(
            error = ?e,
            "the timer thread runs at normal priority: under load, ticks may start about 0.5 ms later at the p99; \
             to let it ask for real-time priority, give the process CAP_SYS_NICE or a RLIMIT_RTPRIO of 1 \
             (systemd: LimitRTPRIO=1; docker run: --ulimit rtprio=1)"
        ),
    }
    #[cfg(test)]
    {
        use thread_priority::{thread_native_id, thread_schedule_policy_param};
        if let Ok((policy, _)) = thread_schedule_policy_param(thread_native_id()) {
            *tests::TIMER_POLICY.lock() = Some(policy == FIFO);
        }
    }
}

#[cfg(target_os = "linux")]
const FIFO: thread_priority::ThreadSchedulePolicy = thread_priority::ThreadSchedulePolicy::Realtime(
    thread_priority::RealtimeThreadSchedulePolicy::Fifo,
);

/// Puts the calling thread at `SCHED_FIFO` 1, if the process may.
#[cfg(target_os = "linux")]
fn ask_for_fifo() -> Result<(), thread_priority::Error> {
    use thread_priority::{set_thread_priority_and_policy, thread_native_id, ThreadPriority};
    set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, FIFO)
}

/// Marks the timer ended and lets go of every waiter when the thread ends
/// (only by a panic), so no probe waits forever for a tick.
struct Ended<'a>(&'a Timer);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let mut heap = self.0.heap.lock();
        heap.ended = true;
        heap.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleep_never_ends_before_its_deadline() {
        let start = tokio::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for ms in [5u64, 1, 4, 0, 2] {
            let at = start + Duration::from_millis(ms);
            set.spawn(async move {
                sleep_until(at).await;
                tokio::time::Instant::now() >= at
            });
        }
        let mut ended_after = Vec::new();
        while let Some(r) = set.join_next().await {
            ended_after.push(r.expect("the sleep does not panic"));
        }
        assert_eq!(ended_after, vec![true; 5]);
    }

    /// The timer slack the timer thread read back after setting it (0: not yet).
    #[cfg(target_os = "linux")]
    pub(super) static TIMER_SLACK_NS: std::sync::atomic::AtomicU64 =
        std::sync::atomic::AtomicU64::new(0);

    /// The timer thread runs with a timer slack of 1 ns, not the 50 µs default.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_timer_thread_asks_for_the_least_timer_slack() {
        sleep_until(tokio::time::Instant::now() + Duration::from_millis(1)).await;
        let ns = TIMER_SLACK_NS.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(ns, 1, "the timer thread's timer slack, in ns");
    }

    /// Whether the timer thread found itself at `SCHED_FIFO` (None: not yet).
    #[cfg(target_os = "linux")]
    pub(super) static TIMER_POLICY: Mutex<Option<bool>> = Mutex::new(None);

    /// The timer thread runs at real-time priority wherever the process may
    /// ask for it (root, `CAP_SYS_NICE`, `RLIMIT_RTPRIO`), and stays a normal
    /// thread where it may not.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_timer_thread_runs_at_real_time_priority_where_allowed() {
        sleep_until(tokio::time::Instant::now() + Duration::from_millis(1)).await;
        // Whether this process may: asked by a thread of its own that ends at once.
        let may = std::thread::spawn(|| ask_for_fifo().is_ok())
            .join()
            .expect("the asking thread does not panic");
        assert_eq!(
            *TIMER_POLICY.lock(),
            Some(may),
            "the timer thread at SCHED_FIFO"
        );
        assert_eq!(timer_realtime(), Some(may), "what /metrics is told");
    }

    /// The thread waits for its first deadline; one added later but due
    /// sooner wakes it, and is not kept waiting for the first.
    #[tokio::test]
    async fn an_earlier_deadline_wakes_the_thread() {
        let start = tokio::time::Instant::now();
        let late = tokio::spawn(sleep_until(start + Duration::from_secs(2)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        tokio::select! {
            _ = sleep_until(start + Duration::from_millis(40)) => {}
            _ = late => panic!("the later deadline fired first"),
        }
        let woken = tokio::time::Instant::now() - start;
        assert!(woken >= Duration::from_millis(40), "{woken:?}");
        assert!(
            woken < Duration::from_secs(1),
            "kept waiting for the first deadline: {woken:?}"
        );
    }
}
