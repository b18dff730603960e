//! A participant's pending `Events`: at most one per subject (a participant, a track, a track's
//! mute state, the subscriber offer, a transport, the speaker list), the latest one.
//!
//! The registry pushes from sync code and never waits; the `Events` stream reads at its own
//! pace. A reader that lags, or has not opened the stream yet, finds each subject's latest state
//! rather than its history, so a backlog grows with the room (its participants and tracks), not
//! with the number of changes, and nothing is ever cut off for being slow. The coalescing core
//! (`Backlog`) does no IO and never blocks; the only async piece is the `Notify` that wakes
//! the reader.

use std::collections::{BTreeMap, HashMap};
use std::ops::AddAssign;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::Stream;
use tokio::sync::Notify;

use crate::ids::{Identity, TrackSid};
use crate::plane::TransportRole;

mod message;
pub use message::{LeaveReason, ParticipantEvent, ParticipantInfo, Speaker, TrackInfo};

/// Events a backlog holds before it drops its oldest participant and track entries.
///
/// Coalescing bounds a backlog by the subjects its reader has not caught up on: the room's
/// participants and tracks, plus those that left since. Only that second term is unbounded (a
/// reader that never reads while a large room churns), so the cap sits well above what a large
/// room has live: 1,000 participants with a microphone, a camera and a screen share are about
/// 4,000 subjects. What the cap drops is counted in [`EventCounts::dropped`].
pub const MAX_BACKLOG: usize = 8192;

/// An empty backlog whose subject index has grown beyond this gives the memory back.
const IDLE_INDEX_CAPACITY: usize = 16;

/// What an event is about. A newer event about the same subject replaces the pending one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    /// Joined and Left, by the participant's identity.
    Participant(Identity),
    /// Published and Unpublished.
    Track(TrackSid),
    /// Muted, apart from `Track` so that a mute does not hide the track's publication.
    Mute(TrackSid),
    /// Only the latest offer version matters.
    SubscriberOffer,
    Transport(TransportRole),
    ActiveSpeakers,
    /// Only a subscription's latest quality matters.
    Quality(TrackSid),
    /// Only the latest layers wanted of a published track matter.
    Layers(TrackSid),
}

impl Subject {
    fn of(ev: &ParticipantEvent) -> Subject {
        match ev {
            ParticipantEvent::Joined(p) => Subject::Participant(p.identity.clone()),
            ParticipantEvent::Left { identity, .. } => Subject::Participant(identity.clone()),
            ParticipantEvent::TrackPublished(t) => Subject::Track(t.sid.clone()),
            ParticipantEvent::TrackUnpublished { track, .. } => Subject::Track(track.clone()),
            ParticipantEvent::TrackMuted { track, .. } => Subject::Mute(track.clone()),
            ParticipantEvent::SubscriberOfferReady { .. } => Subject::SubscriberOffer,
            ParticipantEvent::TransportState { role, .. } => Subject::Transport(*role),
            ParticipantEvent::ActiveSpeakers(_) => Subject::ActiveSpeakers,
            ParticipantEvent::SubscriptionQuality { track, .. } => Subject::Quality(track.clone()),
            ParticipantEvent::LayersWanted { track, .. } => Subject::Layers(track.clone()),
        }
    }
}

/// The subjects a room has many of, and so the only ones the cap drops (the others are four
/// at most): the roster, and what each subscription is sent.
fn is_roster(ev: &ParticipantEvent) -> bool {
    matches!(
        ev,
        ParticipantEvent::Joined(_)
            | ParticipantEvent::Left { .. }
            | ParticipantEvent::TrackPublished(_)
            | ParticipantEvent::TrackUnpublished { .. }
            | ParticipantEvent::TrackMuted { .. }
            | ParticipantEvent::SubscriptionQuality { .. }
            | ParticipantEvent::LayersWanted { .. }
    )
}

/// What backlogs did to the events they were given, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Events replaced by a newer one about the same subject before they were read.
    pub coalesced: u64,
    /// Events dropped at the cap ([`MAX_BACKLOG`]).
    pub dropped: u64,
}

impl AddAssign for EventCounts {
    fn add_assign(&mut self, o: EventCounts) {
        self.coalesced += o.coalesced;
        self.dropped += o.dropped;
    }
}

/// The events a reader has yet to read, one per subject, in the order of their last update:
/// per subject that is the order things happened, and across subjects it keeps cause before
/// effect (a participant's tracks go before it does).
#[derive(Debug)]
struct Backlog {
    /// Pending events by the sequence number of their last update.
    queue: BTreeMap<u64, ParticipantEvent>,
    /// Where each subject's pending event sits in `queue`.
    index: HashMap<Subject, u64>,
    next: u64,
    cap: usize,
    counts: EventCounts,
}

impl Backlog {
    fn with_cap(cap: usize) -> Self {
        Backlog {
            queue: BTreeMap::new(),
            index: HashMap::new(),
            next: 0,
            cap,
            counts: EventCounts::default(),
        }
    }

    fn push(&mut self, ev: ParticipantEvent) {
        if let ParticipantEvent::TrackUnpublished { track, .. } = &ev
            && self.remove(&Subject::Mute(track.clone()))
        {
            // A track that is gone has no mute state left to report.
            self.counts.coalesced += 1;
        }
        let subject = Subject::of(&ev);
        if self.remove(&subject) {
            self.counts.coalesced += 1;
        } else if self.queue.len() >= self.cap {
            self.drop_oldest_roster();
        }
        self.queue.insert(self.next, ev);
        self.index.insert(subject, self.next);
        self.next += 1;
    }

    fn pop(&mut self) -> Option<ParticipantEvent> {
        let (_, ev) = self.queue.pop_first()?;
        self.index.remove(&Subject::of(&ev));
        if self.queue.is_empty() && self.index.capacity() > IDLE_INDEX_CAPACITY {
            // A hash map keeps its capacity when emptied: a backlog that once held a join
            // storm (an entry per participant) would keep a room-sized table for every
            // reader. The BTreeMap frees its nodes as it empties.
            self.index = HashMap::new();
        }
        Some(ev)
    }

    /// The subject index's capacity now.
    #[cfg(test)]
    fn index_capacity(&self) -> usize {
        self.index.capacity()
    }

    /// Removes the subject's pending event, if it has one.
    fn remove(&mut self, subject: &Subject) -> bool {
        match self.index.remove(subject) {
            Some(seq) => self.queue.remove(&seq).is_some(),
            None => false,
        }
    }

    fn drop_oldest_roster(&mut self) {
        let oldest = self
            .queue
            .values()
            .find(|ev| is_roster(ev))
            .map(Subject::of);
        if let Some(subject) = oldest
            && self.remove(&subject)
        {
            self.counts.dropped += 1;
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Woken on every push, reader change and close.
    wake: Notify,
}

struct State {
    backlog: Backlog,
    /// Bumped by each new reader; a reader holding an older number has been replaced.
    reader: u64,
    /// The participant is gone: nothing more will be pushed.
    closed: bool,
}

impl Shared {
    /// Nothing panics while the lock is held short of running out of memory, so a poisoned lock
    /// still guards a consistent backlog. The lock is never held across an await.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registry's end of a participant's events. Dropping it (the participant is gone) ends
/// the reader's stream once the reader has read what is pending.
pub struct EventQueue {
    shared: Arc<Shared>,
}

impl Default for EventQueue {
    fn default() -> Self {
        EventQueue::with_cap(MAX_BACKLOG)
    }
}

impl EventQueue {
    pub fn new() -> Self {
        EventQueue::default()
    }

    fn with_cap(cap: usize) -> Self {
        EventQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    backlog: Backlog::with_cap(cap),
                    reader: 0,
                    closed: false,
                }),
                wake: Notify::new(),
            }),
        }
    }

    /// Queues an event, replacing a pending one about the same subject. Never waits.
    pub fn push(&self, ev: ParticipantEvent) {
        self.shared.lock().backlog.push(ev);
        self.shared.wake.notify_waiters();
    }

    /// A reader that takes over what is pending; the previous reader's stream ends.
    pub fn reader(&self) -> EventReader {
        let id = {
            let mut s = self.shared.lock();
            s.reader += 1;
            s.reader
        };
        self.shared.wake.notify_waiters();
        EventReader {
            shared: Arc::clone(&self.shared),
            id,
        }
    }

    pub fn counts(&self) -> EventCounts {
        self.shared.lock().backlog.counts
    }
}

impl Drop for EventQueue {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_waiters();
    }
}

/// Why [`EventReader::try_recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    #[error("no event is pending")]
    Empty,
    #[error("the events stream has ended")]
    Ended,
}

/// The `Events` stream's end: each subject's latest event, least recently updated first. It
/// ends when the participant is gone and everything pending has been read, or at once when a
/// newer `Events` call takes over.
pub struct EventReader {
    shared: Arc<Shared>,
    id: u64,
}

impl EventReader {
    pub fn try_recv(&self) -> Result<ParticipantEvent, TryRecvError> {
        let mut s = self.shared.lock();
        if s.reader != self.id {
            return Err(TryRecvError::Ended);
        }
        match s.backlog.pop() {
            Some(ev) => Ok(ev),
            None if s.closed => Err(TryRecvError::Ended),
            None => Err(TryRecvError::Empty),
        }
    }

    /// The next event, or `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<ParticipantEvent> {
        loop {
            let mut woken = std::pin::pin!(self.shared.wake.notified());
            // Registered before looking, so a push between the look and the wait still wakes us.
            woken.as_mut().enable();
            match self.try_recv() {
                Ok(ev) => return Some(ev),
                Err(TryRecvError::Ended) => return None,
                Err(TryRecvError::Empty) => woken.await,
            }
        }
    }

    pub fn into_stream(self) -> impl Stream<Item = ParticipantEvent> + Send + 'static {
        futures_util::stream::unfold(self, |mut r| async move {
            let ev = r.recv().await?;
            Some((ev, r))
        })
    }
}

#[cfg(test)]
mod tests;
