//! Busy polling: a worker under load keeps polling its sockets for a moment before it sleeps.
//!
//! A worker thread that runs out of work sleeps in `epoll_wait`, and whatever arrives next
//! must wake it. On loopback and in virtual machines the wake-up is paid by the sender (the
//! kernel runs the receive path in its context: `sock_def_readable`, the scheduler's wake-up
//! and an inter-processor interrupt). Under a connect burst a Starling worker slept a third of
//! a time per connection where Mosquitto's single busy thread hardly ever did, and the
//! connecting clients paid ~2 µs more per connection for it.
//!
//! So a worker whose sockets bring new work often (on average at least once per
//! `core.busy_poll` microseconds: see [`Rate`]) does not sleep as soon as it is idle: a poller
//! task on it yields to the runtime, which polls the sockets without blocking, and once a window
//! gives the CPU to any other runnable thread (`sched_yield`), until nothing has arrived for
//! `busy_poll` microseconds. An idle worker never polls, and one whose events are sparse on
//! average does not either: a gap counts as at most eight windows, so only a burst of a dozen
//! or more events close together starts a polling spell there, which ends one window after
//! the burst. This is the trade HAProxy's `busy-polling` and Go's spinning threads make;
//! here it is adaptive, so it only spends CPU where the worker is busy already.
//!
//! [`touch`] is called where work arrives from outside: the accept loops and every socket
//! read. It costs a clock read and a few thread-local cells. [`run`] is the poller, one per
//! worker (`Broker::start`). The time workers spent polling is the `busy_poll_us` metric.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::metrics::{count, Metrics};

/// A long polling spell shows in `busy_poll_us` at least this often, not only when it ends.
const METRIC_STEP: Duration = Duration::from_millis(1);

/// How often work arrives on a worker: the average gap between events (exponentially
/// weighted, 1/8 per event). The worker counts as busy while the average gap is shorter than
/// the polling window. A gap is counted as at most eight windows, so that after a quiet spell
/// a burst makes the worker busy again within a few dozen events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    window_ns: u64,
    average_gap_ns: u64,
}

impl Rate {
    /// A rate that starts out quiet.
    pub fn new(window: Duration) -> Rate {
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Rate {
            window_ns,
            average_gap_ns: window_ns.saturating_mul(8),
        }
    }

    /// Counts one event, `gap` after the one before.
    pub fn record(&mut self, gap: Duration) {
        let gap = u64::try_from(gap.as_nanos())
            .unwrap_or(u64::MAX)
            .min(self.window_ns.saturating_mul(8));
        let average = self.average_gap_ns;
        self.average_gap_ns = if gap >= average {
            average + (gap - average) / 8
        } else {
            average - (average - gap) / 8
        };
    }

    /// Whether events come often enough to be worth polling for.
    pub fn busy(&self) -> bool {
        self.average_gap_ns < self.window_ns
    }
}

/// The poller's state, on its worker's thread.
struct Poller {
    rate: Cell<Rate>,
    last_event: Cell<Instant>,
    /// True while the poller waits for a busy worker (and the thread may sleep).
    dormant: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

thread_local! {
    /// This worker's poller; `None` on threads without one (busy polling off, or not a worker).
    static POLLER: RefCell<Option<Rc<Poller>>> = const { RefCell::new(None) };
}

/// Work arrived from outside the worker (a connection accepted, bytes read). Wakes the poller
/// when the worker is busy; a no-op on a thread without one.
pub fn touch() {
    let _ = POLLER.try_with(|poller| {
        let Some(poller) = &*poller.borrow() else {
            return;
        };
        let now = Instant::now();
        let mut rate = poller.rate.get();
        rate.record(now.saturating_duration_since(poller.last_event.replace(now)));
        poller.rate.set(rate);
        if poller.dormant.get() && rate.busy() {
            poller.dormant.set(false);
            if let Some(waker) = poller.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    });
}

/// Clears the thread's poller when the task ends (its worker stops), unless another poller
/// (of a broker started on the same worker since) has taken the slot.
struct Registered(Rc<Poller>);

impl Drop for Registered {
    fn drop(&mut self) {
        // `try_with`: the task may be dropped while the thread's locals are torn down.
        let _ = POLLER.try_with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.as_ref().is_some_and(|p| Rc::ptr_eq(p, &self.0)) {
                *slot = None;
            }
        });
    }
}

/// The poller of the current worker: waits until the worker is busy, then keeps the thread
/// polling until nothing has arrived for `window`, and again. Runs until its worker stops.
pub async fn run(window: Duration, metrics: Arc<Metrics>) {
    let poller = Rc::new(Poller {
        rate: Cell::new(Rate::new(window)),
        last_event: Cell::new(Instant::now()),
        dormant: Cell::new(true),
        waker: RefCell::new(None),
    });
    POLLER.with(|slot| *slot.borrow_mut() = Some(Rc::clone(&poller)));
    let _registered = Registered(Rc::clone(&poller));
    loop {
        poll_fn(|task| {
            if poller.dormant.get() {
                *poller.waker.borrow_mut() = Some(task.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        let mut counted_until = Instant::now();
        let mut yielded = counted_until;
        let account = |since: Instant, now: Instant| {
            let polled = now.saturating_duration_since(since);
            count(
                &metrics.local().busy_poll_us,
                u64::try_from(polled.as_micros()).unwrap_or(u64::MAX),
            );
            now
        };
        loop {
            // Back of the run queue: the runtime polls the sockets (without blocking, as a
            // task is ready) and runs what they woke before this task again.
            tokio::task::yield_now().await;
            let now = Instant::now();
            if now.saturating_duration_since(poller.last_event.get()) >= window {
                account(counted_until, now);
                break;
            }
            if now.saturating_duration_since(counted_until) >= METRIC_STEP {
                counted_until = account(counted_until, now);
            }
            // Another thread that wants this CPU gets it, once a window: each yield to a
            // waiting thread is a context switch. Under the connect-rate bench, unpinned,
            // yielding on every turn switched each worker out about 28 000 times a second,
            // once a window about 11 000.
            if now.saturating_duration_since(yielded) >= window {
                std::thread::yield_now();
                yielded = now;
            }
        }
        poller.dormant.set(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(50);

    #[test]
    fn a_new_worker_is_quiet() {
        assert!(!Rate::new(WINDOW).busy());
    }

    #[test]
    fn events_closer_than_the_window_make_the_worker_busy() {
        let mut rate = Rate::new(WINDOW);
        let mut events = 0;
        while !rate.busy() {
            rate.record(Duration::from_micros(10));
            events += 1;
            assert!(events < 100, "never became busy");
        }
        // From the quiet start (eight windows) a burst counts within a few dozen events.
        assert!(events > 5, "busy after {events} events");
    }

    #[test]
    fn a_zero_window_is_never_busy() {
        let mut rate = Rate::new(Duration::ZERO);
        for _ in 0..1000 {
            rate.record(Duration::ZERO);
            assert!(!rate.busy());
        }
    }

    #[test]
    fn events_further_apart_than_the_window_never_make_the_worker_busy() {
        let mut rate = Rate::new(WINDOW);
        for _ in 0..10_000 {
            rate.record(Duration::from_micros(60));
            assert!(!rate.busy());
        }
    }

    #[test]
    fn a_quiet_spell_ends_busy_polling_and_a_long_one_costs_no_more_than_a_short_one() {
        let mut busy = Rate::new(WINDOW);
        for _ in 0..100 {
            busy.record(Duration::from_micros(5));
        }
        assert!(busy.busy());
        let (mut short_pause, mut long_pause) = (busy, busy);
        short_pause.record(WINDOW * 20);
        long_pause.record(Duration::from_secs(3600));
        assert_eq!(
            short_pause, long_pause,
            "a gap counts as at most eight windows"
        );
        // The quiet worker becomes busy again within a short burst.
        let mut events = 0;
        long_pause.record(Duration::from_secs(3600));
        while !long_pause.busy() {
            long_pause.record(Duration::from_micros(5));
            events += 1;
        }
        assert!(events < 40, "busy again after {events} events");
    }
}
