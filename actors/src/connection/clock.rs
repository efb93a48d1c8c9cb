//! The connection clock: one timer wheel per worker thread (and broker) for all the
//! Connections on it.
//!
//! A Connection needs three kinds of timer: the CONNECT timeout, keep alive, and the broker's
//! shutdown. Spawned per connection (an interval, a timer and a watch future in the actor's
//! context) they cost about 500 bytes for every idle connection. Here a connection is instead
//! one slot in a member list (which shutdown walks) and at most one entry in a wheel of
//! `TICK`-long slots. When its entry comes due the connection gets a `Tick` and decides for
//! itself: close, or ask to be woken again at its next deadline. An entry that is no longer
//! the connection's current one is ignored when it fires, so rescheduling never has to find
//! and remove the old entry.
//!
//! The wheel is driven by one task per clock, ticking every `TICK`; it lives until the broker
//! shuts down (or is dropped), after which a new connection on the thread finds no clock and
//! is closed at once.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::WeakAddr;
use tokio::sync::watch;

use super::Connection;
use crate::broker::BrokerContext;

/// The wheel's resolution: a deadline fires at most this late.
const TICK: Duration = Duration::from_millis(100);
/// Slots in the wheel (one turn is `SLOTS * TICK`); later deadlines wait for their turn.
const SLOTS: usize = 512;

/// A connection's timer came due: the deadline it was set for (a stale one is ignored).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct Tick(pub(super) Instant);

/// The broker is shutting down.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct ShutDown;

thread_local! {
    /// The clocks of this thread, one per running broker.
    static CLOCKS: RefCell<Vec<Rc<Clock>>> = const { RefCell::new(Vec::new()) };
}

/// One broker's timer wheel on one worker thread; see the module docs.
#[derive(Debug)]
pub(super) struct Clock {
    /// Whose clock this is (a weak pointer keeps the identity unique while the clock lives).
    broker: Weak<BrokerContext>,
    wheel: RefCell<Wheel>,
}

#[derive(Debug)]
struct Wheel {
    origin: Instant,
    /// The last tick processed.
    now: u64,
    /// Every connection on this clock, for shutdown; `None` marks a free slot.
    members: Vec<Option<WeakAddr<Connection>>>,
    free: Vec<u32>,
    /// Pending deadlines: (tick it is due at, its instant, whom to tell).
    slots: Vec<Vec<(u64, Instant, WeakAddr<Connection>)>>,
    /// Shutdown has begun: members were told, new ones are refused.
    shut: bool,
}

/// A connection's place on its clock, to leave it when the connection stops.
#[derive(Debug)]
pub(super) struct Membership {
    clock: Rc<Clock>,
    slot: u32,
}

impl Clock {
    /// Joins `addr` to this thread's clock for `broker` (starting the clock on first use).
    /// `None` when the broker is shutting down.
    pub(super) fn join(
        broker: &Arc<BrokerContext>,
        addr: WeakAddr<Connection>,
    ) -> Option<Membership> {
        let clock = Clock::for_broker(broker)?;
        let slot = {
            let mut wheel = clock.wheel.borrow_mut();
            if wheel.shut {
                return None;
            }
            match wheel.free.pop() {
                Some(slot) => {
                    wheel.members[slot as usize] = Some(addr);
                    slot
                }
                None => {
                    wheel.members.push(Some(addr));
                    u32::try_from(wheel.members.len() - 1).ok()?
                }
            }
        };
        Some(Membership { clock, slot })
    }

    fn for_broker(broker: &Arc<BrokerContext>) -> Option<Rc<Clock>> {
        CLOCKS.with(|clocks| {
            let mut clocks = clocks.borrow_mut();
            if let Some(clock) = clocks
                .iter()
                .find(|c| std::ptr::eq(c.broker.as_ptr(), Arc::as_ptr(broker)))
            {
                return Some(Rc::clone(clock));
            }
            if *broker.shutdown.borrow() {
                return None;
            }
            let clock = Rc::new(Clock {
                broker: Arc::downgrade(broker),
                wheel: RefCell::new(Wheel {
                    origin: Instant::now(),
                    now: 0,
                    members: Vec::new(),
                    free: Vec::new(),
                    slots: (0..SLOTS).map(|_| Vec::new()).collect(),
                    shut: false,
                }),
            });
            clocks.push(Rc::clone(&clock));
            actix_rt::spawn(run(Rc::clone(&clock), broker.shutdown.clone()));
            Some(clock)
        })
    }

    /// Fires every entry due by now.
    fn advance(&self) {
        let mut due = Vec::new();
        {
            let mut wheel = self.wheel.borrow_mut();
            let target = wheel.tick_of(Instant::now());
            while wheel.now < target {
                wheel.now += 1;
                let now = wheel.now;
                let slot = &mut wheel.slots[(now % SLOTS as u64) as usize];
                let mut i = 0;
                while i < slot.len() {
                    if slot[i].0 <= now {
                        due.push(slot.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
        }
        // Sent outside the borrow: a mailbox that is full or gone is not the clock's problem.
        for (_, at, addr) in due {
            if let Some(addr) = addr.upgrade() {
                addr.do_send(Tick(at));
            }
        }
    }

    /// Tells every member the broker is going away; refuses new members from now on.
    fn shut_down(&self) {
        let members = {
            let mut wheel = self.wheel.borrow_mut();
            wheel.shut = true;
            for slot in &mut wheel.slots {
                slot.clear();
            }
            std::mem::take(&mut wheel.members)
        };
        for addr in members.into_iter().flatten() {
            if let Some(addr) = addr.upgrade() {
                addr.do_send(ShutDown);
            }
        }
    }
}

impl Wheel {
    /// The first tick at or after `at`.
    fn tick_of(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        let tick = TICK.as_nanos();
        u64::try_from(nanos.div_ceil(tick)).unwrap_or(u64::MAX)
    }
}

impl Membership {
    /// Sends this member a `Tick(at)` once `at` has passed (up to one `TICK` late).
    pub(super) fn wake_at(&self, at: Instant) {
        let mut wheel = self.clock.wheel.borrow_mut();
        let Some(Some(addr)) = wheel.members.get(self.slot as usize).cloned() else {
            return;
        };
        // Never in the past: the next tick at the earliest.
        let tick = wheel.tick_of(at).max(wheel.now + 1);
        wheel.slots[(tick % SLOTS as u64) as usize].push((tick, at, addr));
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut wheel = self.clock.wheel.borrow_mut();
        if wheel.shut {
            return;
        }
        if let Some(member) = wheel.members.get_mut(self.slot as usize) {
            *member = None;
            wheel.free.push(self.slot);
        }
    }
}

/// Drives one clock until its broker shuts down (or is gone).
async fn run(clock: Rc<Clock>, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => clock.advance(),
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow_and_update() {
                    break;
                }
            }
        }
    }
    clock.shut_down();
    CLOCKS.with(|clocks| clocks.borrow_mut().retain(|c| !Rc::ptr_eq(c, &clock)));
}
