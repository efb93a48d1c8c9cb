//! The future that drives a Connection's socket, polled inside the actor's own context.
//!
//! Because it runs as an item of the actor's context, it gets `&mut Connection` when polled:
//! the read buffer, write buffer and transport are plain fields, with no locks, channels or
//! shared cells. Actix polls it after every mailbox drain, so all packets queued while handling
//! a batch of messages leave in one socket write.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::prelude::*;
use bytes::{Buf, BytesMut};
use slog::debug;
use starling_proto::decode;
use tokio::io::ReadBuf;
use tokio_util::io::poll_read_buf;

use super::{Connection, State};
use crate::metrics::count;

/// Reads and decodes at most this many times per poll, then yields to the actor's mailbox.
const READ_BUDGET: usize = 32;
/// Smallest free space worth reading into (and the size of a read into an idle connection's
/// stack, see `poll_fill`); the buffer grows by `READ_CHUNK`.
const MIN_READ_SPACE: usize = 512;
const READ_CHUNK: usize = 4096;
/// Buffers larger than this are released once empty instead of kept for the next packet.
const KEEP_CAPACITY: usize = 16 * 1024;

/// The io future of a Connection; see the module docs.
#[derive(Debug)]
pub(super) struct IoDriver;

impl ActorFuture<Connection> for IoDriver {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Connection,
        ctx: &mut Context<Connection>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        if act
            .io_waker
            .as_ref()
            .is_none_or(|w| !w.will_wake(task.waker()))
        {
            act.io_waker = Some(task.waker().clone());
        }
        act.read_some(ctx, task);
        act.flush(ctx, task)
    }
}

impl Connection {
    fn reading(&self) -> bool {
        match self.state {
            // A taken-over connection still routes what it reads (see `on_packet`).
            // Packets of one connection take effect in the order they were read: after a
            // SUBSCRIBE or UNSUBSCRIBE, reading waits for its acknowledgement.
            State::Connected => {
                self.routes_pending < super::ROUTE_WINDOW && !self.subscribe_pending
            }
            State::AwaitingConnect | State::Authenticating | State::TakenOver => {
                self.routes_pending < super::ROUTE_WINDOW
            }
            State::Connecting | State::Closing => false,
        }
    }

    /// Decodes what is buffered and reads more, within a budget.
    fn read_some(&mut self, ctx: &mut Context<Self>, task: &mut TaskContext<'_>) {
        let mut budget = READ_BUDGET;
        while self.reading() {
            if budget == 0 {
                // More may be waiting: come back after the mailbox had its turn.
                task.waker().wake_by_ref();
                return;
            }
            budget -= 1;
            match decode(&mut self.inbuf, &self.limits) {
                Ok(Some(packet)) => {
                    self.last_read = std::time::Instant::now();
                    crate::protocol::packet_in(&self.log, &packet);
                    self.on_packet(packet, ctx);
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    self.on_decode_error(error, ctx);
                    return;
                }
            }
            if self.inbuf.capacity() - self.inbuf.len() < MIN_READ_SPACE {
                if self.inbuf.is_empty() {
                    // Too small to read into: the next read goes to the stack (`poll_fill`).
                    self.inbuf = BytesMut::new();
                } else {
                    self.inbuf.reserve(READ_CHUNK);
                }
            }
            match self.poll_fill(task) {
                Poll::Ready(Ok(0)) => {
                    debug!(self.log, "peer closed the connection");
                    // Stops once what it published is routed (see `flush`).
                    self.close(None, ctx);
                    return;
                }
                Poll::Ready(Ok(n)) => {
                    crate::busy_poll::touch();
                    count(&self.broker.metrics.local().bytes_in, n as u64);
                }
                Poll::Ready(Err(e)) => {
                    debug!(self.log, "read failed"; "error" => %e);
                    self.close(None, ctx);
                    return;
                }
                Poll::Pending => {
                    if self.inbuf.is_empty() && self.inbuf.capacity() > 0 {
                        self.inbuf = BytesMut::new();
                    }
                    return;
                }
            }
        }
    }

    /// Reads what the socket has into `inbuf`. A released (idle) buffer is not allocated up
    /// front: the read goes to the stack, and the buffer is made the size of what came. So a
    /// read that finds nothing costs no allocation, and the small packets of a quiet client
    /// (or a CONNECT in a connect burst) take their own size, not a whole chunk.
    fn poll_fill(&mut self, task: &mut TaskContext<'_>) -> Poll<std::io::Result<usize>> {
        if self.inbuf.capacity() > 0 {
            return poll_read_buf(self.io.as_mut(), task, &mut self.inbuf);
        }
        let mut stack = [0u8; MIN_READ_SPACE];
        let mut read = ReadBuf::new(&mut stack);
        match self.io.as_mut().poll_read(task, &mut read) {
            Poll::Ready(Ok(())) => {
                self.inbuf.extend_from_slice(read.filled());
                Poll::Ready(Ok(read.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The socket cannot be written: nothing more goes out. The connection stops now, or once
    /// the publishes it holds are routed (`routes_held`).
    fn socket_failed(&mut self, ctx: &mut Context<Self>) -> Poll<()> {
        self.outbuf.clear();
        if self.routes_held == 0 {
            ctx.stop();
            return Poll::Ready(());
        }
        self.close(None, ctx);
        Poll::Pending
    }

    /// Writes out the buffer; once closing and flushed, shuts the socket and stops.
    fn flush(&mut self, ctx: &mut Context<Self>, task: &mut TaskContext<'_>) -> Poll<()> {
        let mut wrote = false;
        while !self.outbuf.is_empty() {
            match self.io.as_mut().poll_write(task, &self.outbuf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    debug!(self.log, "write failed");
                    return self.socket_failed(ctx);
                }
                Poll::Ready(Ok(n)) => {
                    self.outbuf.advance(n);
                    self.written_total += n as u64;
                    count(&self.broker.metrics.local().bytes_out, n as u64);
                    wrote = true;
                }
                Poll::Pending => {
                    if wrote {
                        self.report_flushed();
                    }
                    return Poll::Pending;
                }
            }
        }
        if wrote {
            self.report_flushed();
        }
        if self.outbuf.capacity() > KEEP_CAPACITY {
            self.outbuf = BytesMut::new();
        }
        if wrote {
            // TLS and WebSocket transports hold bytes until flushed.
            if let Poll::Ready(Err(_)) = self.io.as_mut().poll_flush(task) {
                debug!(self.log, "flush failed");
                return self.socket_failed(ctx);
            }
        }
        // A publish read before the close is routed before the connection goes: a route that
        // met a full shard mailbox is still held by this actor (bounded by the close grace).
        if self.state == State::Closing && self.routes_held == 0 {
            match self.io.as_mut().poll_shutdown(task) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(_) => {
                    ctx.stop();
                    return Poll::Ready(());
                }
            }
        }
        Poll::Pending
    }
}
