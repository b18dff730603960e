//! What an IO backend drives: the shard's core plus its command queue, wake-up eventfd,
//! timers, events and metrics. A backend receives and sends; after each sweep it calls
//! `after_sweep`, and it blocks at most `next_wait`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::outbox::Queued;
use crate::shard::{Command, Event, ShardCore};
use crate::stats::{DropReason, ShardMetrics};
use crate::wake::Waker;
use ringcast_types::route::Router;

/// Receives shard events on the shard's thread; must not block.
pub type EventSink = Arc<dyn Fn(u16, Event) + Send + Sync>;

/// A shard's state as its IO loop sees it.
pub(crate) struct ShardLoop<R: Router> {
    pub(crate) core: ShardCore<R>,
    pub(crate) metrics: ShardMetrics,
    index: u16,
    commands: Receiver<Command<R::Command>>,
    /// Written when a command is queued; the loop waits on it beside the socket.
    pub(crate) waker: Arc<Waker>,
    events: EventSink,
    stop: Arc<AtomicBool>,
    next_timer: Instant,
    next_publish: Instant,
    /// Drops since the last warning, and when the next warning may be logged.
    drops_unreported: [u64; DropReason::ALL.len()],
    next_drop_warning: Instant,
    /// Reused each sweep for the datagrams to send.
    pub(crate) queued: Vec<Queued>,
}

impl<R: Router> ShardLoop<R> {
    pub(crate) fn new(
        core: ShardCore<R>,
        metrics: ShardMetrics,
        index: u16,
        commands: Receiver<Command<R::Command>>,
        waker: Arc<Waker>,
        events: EventSink,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let now = Instant::now();
        let slots = core.outbox.slots();
        ShardLoop {
            core,
            metrics,
            index,
            commands,
            waker,
            events,
            stop,
            next_timer: now,
            next_publish: now,
            drops_unreported: [0; DropReason::ALL.len()],
            next_drop_warning: now,
            queued: Vec::with_capacity(slots),
        }
    }

    pub(crate) fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// How long the loop may block: until the next timer or pacer release, at most 10 ms (a
    /// queued command wakes it sooner, see `wake`).
    pub(crate) fn next_wait(&self, now: Instant) -> Duration {
        let pacer = self
            .core
            .next_release()
            .map_or(Duration::MAX, |t| t.saturating_duration_since(now));
        self.next_timer
            .saturating_duration_since(now)
            .min(pacer)
            .min(Duration::from_millis(10))
    }

    /// Commands, timers, events and metrics after each sweep.
    pub(crate) fn after_sweep(&mut self, now: Instant) {
        self.waker.clear();
        while let Ok(cmd) = self.commands.try_recv() {
            self.core.handle_command(cmd, now);
        }
        // The sweep's packets may have made router work due sooner (a gap to NACK now).
        if let Some(wake) = self.core.router().wake_at() {
            self.next_timer = self.next_timer.min(wake);
        }
        if now >= self.next_timer {
            self.core.handle_timeout(now);
            self.next_timer = now + self.core.poll_timeout(now);
        }
        for ev in self.core.take_events() {
            (self.events)(self.index, ev);
        }
        if now >= self.next_publish {
            self.warn_drops(now);
            let transports = self.core.transport_count();
            self.metrics.publish(&mut self.core.stats, transports);
            // The send slots' pages a past burst touched go back after an interval without it.
            self.core.outbox.trim(now);
            self.metrics
                .record_send_slots(self.core.outbox.touched_slots(), self.core.outbox.slots());
            self.core.router_mut().publish_metrics(self.index);
            self.next_publish = now + Duration::from_millis(250);
        }
    }
}

/// Drop warnings: at most one log line per shard per this period, however many packets drop.
const DROP_WARNING_PERIOD: Duration = Duration::from_secs(10);

impl<R: Router> ShardLoop<R> {
    fn warn_drops(&mut self, now: Instant) {
        for (acc, n) in self.drops_unreported.iter_mut().zip(self.core.stats.drops) {
            *acc += n;
        }
        if now < self.next_drop_warning || self.drops_unreported.iter().all(|n| *n == 0) {
            return;
        }
        let mut summary = String::new();
        for (reason, n) in DropReason::ALL.iter().zip(self.drops_unreported) {
            if n > 0 {
                use std::fmt::Write;
                let _ = write!(summary, "{}={n} ", reason.as_str());
            }
        }
        tracing::warn!(
            shard = self.index,
            drops = summary.trim_end(),
            "datagrams dropped in the last period"
        );
        self.drops_unreported = [0; DropReason::ALL.len()];
        self.next_drop_warning = now + DROP_WARNING_PERIOD;
    }
}
