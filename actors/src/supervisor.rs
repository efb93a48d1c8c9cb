//! Supervision: failed actors come back with their state; past a budget, the broker gives up.
//!
//! An actor fails by panicking, or by calling [`fail`] (failure as a value: it stops with a
//! cause). Every supervised actor runs inside [`Supervised`], a future that polls the actor's
//! context and catches both. On a failure it restarts the actor in place: the mailbox, and so
//! every `Addr` to it, stays valid; spawned futures and timers are dropped;
//! `Supervised::restarting` rebuilds the actor's state (TopicNodes from the Sessions'
//! subscription tables, the RetainStore and Sessions from the store), then `started` runs
//! again. A message being handled when the actor failed is lost to it, and its sender sees the
//! reply channel close (a publisher is then disconnected without an acknowledgement).
//!
//! The [`Supervisor`] actor is told of every restart: it logs it (actor, cause, restart
//! count), counts it in the `restarts` metric, and when more than `max_restarts` happen within
//! `restart_window` it reports the broker as failed (`BrokerHandle::failed`): the daemon then
//! exits with code 3 so that the service manager starts it afresh.
//!
//! Connections are not supervised: a failed connection is a closed socket, and the client
//! reconnects.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use actix::dev::ContextFut;
use actix::prelude::*;
use slog::{crit, error, o, warn, Logger};
use tokio::sync::watch;

use crate::config::SupervisionConfig;
use crate::metrics::{count, Metrics};

thread_local! {
    /// The cause an actor gave to `fail` during the current poll.
    static FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Fails the current actor with `cause`: it stops, and its supervisor restarts it.
pub fn fail<A: Actor<Context = Context<A>>>(ctx: &mut Context<A>, cause: impl Into<String>) {
    let cause = cause.into();
    FAILURE.with(|f| *f.borrow_mut() = Some(cause));
    ctx.stop();
}

/// A supervised actor failed and was restarted, or was not because nothing could reach it any
/// more (no address to it was left).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Restarted {
    /// The kind of actor (`topic_node`, `retain_store`, `registry`, `session`).
    pub kind: &'static str,
    /// Which one (shard number, client id).
    pub name: String,
    /// Why it failed (the panic message, or the cause given to `fail`).
    pub cause: String,
    /// False when it was not restarted (nobody held an address to it).
    pub restarted: bool,
}

/// Counts restarts against the budget, logs them, and gives up past it.
#[derive(Debug)]
pub struct Supervisor {
    config: SupervisionConfig,
    metrics: Arc<Metrics>,
    recent: VecDeque<Instant>,
    total: u64,
    failed: Arc<watch::Sender<Option<String>>>,
    log: Logger,
}

impl Supervisor {
    /// A supervisor with this budget, saying on `failed` when it gives up (the broker's one
    /// channel for that: the store reports there too).
    pub fn new(
        config: SupervisionConfig,
        metrics: Arc<Metrics>,
        failed: Arc<watch::Sender<Option<String>>>,
        log: &Logger,
    ) -> Supervisor {
        Supervisor {
            config,
            metrics,
            recent: VecDeque::new(),
            total: 0,
            failed,
            log: log.new(o!("actor" => "supervisor")),
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<Restarted> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Restarted, _: &mut Self::Context) {
        if !msg.restarted {
            // Nothing can send to it any more: there is nothing to restart, and nothing to
            // count against the budget.
            warn!(self.log, "actor failed; nothing holds its address, so it was not restarted";
                "kind" => msg.kind, "name" => &msg.name, "cause" => &msg.cause);
            return;
        }
        let now = Instant::now();
        self.total += 1;
        count(&self.metrics.local().restarts, 1);
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) > self.config.restart_window)
        {
            self.recent.pop_front();
        }
        error!(self.log, "actor failed and was restarted";
            "kind" => msg.kind, "name" => &msg.name, "cause" => &msg.cause,
            "restarts" => self.total, "recent" => self.recent.len());
        if self.recent.len() > self.config.max_restarts as usize {
            let why = format!(
                "{} restarts within {} s (the last: {} {}: {})",
                self.recent.len(),
                self.config.restart_window.as_secs(),
                msg.kind,
                msg.name,
                msg.cause
            );
            crit!(self.log, "restart budget exceeded; the broker gives up"; "why" => &why);
            let _ = self.failed.send(Some(why));
        }
    }
}

/// Where a supervised actor reports its restarts, and what it is called there.
#[derive(Debug, Clone)]
pub struct Supervision {
    /// Shared by every supervised actor: an `Addr` clone would allocate per actor.
    supervisor: Arc<Addr<Supervisor>>,
}

impl Supervision {
    /// Reports to `supervisor`.
    pub fn new(supervisor: Addr<Supervisor>) -> Supervision {
        Supervision {
            supervisor: Arc::new(supervisor),
        }
    }

    /// An address and the mailbox behind it, for an actor that must know its own address
    /// before it is started (see `start_with`).
    pub fn mailbox<A: Actor<Context = Context<A>>>() -> (Addr<A>, Mailbox<A>) {
        let (tx, rx) = actix::dev::channel::channel(16);
        (Addr::new(tx), Mailbox(rx))
    }

    /// Starts `f`'s actor supervised, on `arbiter` (or the current one).
    pub fn start<A, F>(
        &self,
        arbiter: Option<&ArbiterHandle>,
        kind: &'static str,
        name: Arc<str>,
        f: F,
    ) -> Addr<A>
    where
        A: actix::Supervised + Actor<Context = Context<A>>,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        let (addr, mailbox) = Supervision::mailbox();
        self.start_with(mailbox, arbiter, kind, name, f);
        addr
    }

    /// Like `start`, behind a mailbox made beforehand with `mailbox`.
    pub fn start_with<A, F>(
        &self,
        mailbox: Mailbox<A>,
        arbiter: Option<&ArbiterHandle>,
        kind: &'static str,
        name: Arc<str>,
        f: F,
    ) where
        A: actix::Supervised + Actor<Context = Context<A>>,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        let supervisor = Arc::clone(&self.supervisor);
        let run = move || {
            let mut ctx = Context::with_receiver(mailbox.0);
            let act = f(&mut ctx);
            let fut = ctx.into_future(act);
            actix_rt::spawn(Supervised {
                fut,
                kind,
                name,
                failure: None,
                supervisor,
            });
        };
        match arbiter {
            Some(arbiter) => {
                arbiter.spawn_fn(run);
            }
            None => run(),
        }
    }
}

/// The receiving end of an actor's address, before the actor exists.
pub struct Mailbox<A: Actor>(actix::dev::channel::AddressReceiver<A>);

impl<A: Actor> std::fmt::Debug for Mailbox<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox")
    }
}

/// The future a supervised actor runs in (see the module documentation).
struct Supervised<A: actix::Supervised + Actor<Context = Context<A>>> {
    fut: ContextFut<A, Context<A>>,
    kind: &'static str,
    /// Which one of its kind (a session's client id, a shard's number).
    name: Arc<str>,
    /// A cause given to `fail`, kept until the actor has stopped.
    failure: Option<Box<str>>,
    supervisor: Arc<Addr<Supervisor>>,
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".to_owned()
    }
}

impl<A: actix::Supervised + Actor<Context = Context<A>>> Future for Supervised<A> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            FAILURE.with(|f| f.borrow_mut().take());
            let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.fut).poll(cx)));
            if let Some(cause) = FAILURE.with(|f| f.borrow_mut().take()) {
                this.failure = Some(cause.into_boxed_str());
            }
            let cause = match polled {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(())) => match this.failure.take() {
                    Some(cause) => cause.into_string(),
                    // A normal stop: done.
                    None => return Poll::Ready(()),
                },
                Err(panic) => panic_message(panic.as_ref()),
            };
            // Nobody holds an address any more: nothing to restart for.
            let restarted = this.fut.restart();
            this.supervisor.do_send(Restarted {
                kind: this.kind,
                name: this.name.to_string(),
                cause,
                restarted,
            });
            if !restarted {
                return Poll::Ready(());
            }
        }
    }
}

/// A test-only request that an actor fail (see `[supervisor] fault_injection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum InjectFault {
    /// Panic in the handler.
    Panic,
    /// Fail as a value (`fail`).
    Fail,
}

/// Carries out an injected fault in an actor's handler.
pub fn inject<A: Actor<Context = Context<A>>>(fault: InjectFault, ctx: &mut Context<A>) {
    match fault {
        InjectFault::Panic => panic!("injected fault"),
        InjectFault::Fail => fail(ctx, "injected fault"),
    }
}
