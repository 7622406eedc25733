//! One live request in the registry: where it is in its life, and the callers parked on it.

use std::mem;
use std::sync::Arc;
use std::task::Waker;

use tokio::runtime::Handle;

use super::event::{Effects, Event, Resolved, Ruling};
use super::index::Ticks;
use crate::by_id::HasId;
use crate::id::RequestId;
use crate::request::{AccessRequest, Outcome, Status};

/// Where a live request is in its life; see the module docs.
pub(super) enum Phase {
    Pending,
    // Boxed: a slot spends most of its life pending, and a ruling carries a whole rule.
    /// A verified decision is being stored; nothing else can decide meanwhile.
    Deciding(Box<Ruling>),
    /// Approved and stored; no caller has taken it yet.
    Approved(Box<Ruling>),
    /// A caller took the approval; the `executing` transition is being stored.
    Taking(Box<Ruling>),
    /// Stored as executing; the callers run. `unreceived` holds the approval until the first
    /// caller actually resumes with it: only then is the approver told.
    Executing {
        finished: Option<Status>,
        unreceived: Option<Box<Ruling>>,
    },
    /// Boxed, as the rulings are: most slots never close this way, and the slot stays small.
    Closed(Box<Outcome>),
}

impl Phase {
    pub(super) fn status(&self) -> Status {
        match self {
            Phase::Pending | Phase::Deciding(_) => Status::Pending,
            Phase::Approved(_) | Phase::Taking(_) => Status::Approved,
            Phase::Executing { finished, .. } => finished.unwrap_or(Status::Executing),
            Phase::Closed(outcome) => outcome.status(),
        }
    }

    /// Whether a store write this request waits on is under way.
    pub(super) fn in_flight(&self) -> bool {
        matches!(self, Phase::Deciding(_) | Phase::Taking(_))
    }

    /// Takes the ruling out of the phase `which` picks, leaving `Pending` for the caller to
    /// replace; any other phase is left as it was.
    pub(super) fn take(&mut self, which: fn(&Phase) -> bool) -> Option<Box<Ruling>> {
        if !which(self) {
            return None;
        }
        match mem::replace(self, Phase::Pending) {
            Phase::Deciding(ruling) | Phase::Approved(ruling) | Phase::Taking(ruling) => {
                Some(ruling)
            }
            _ => unreachable!("`which` picks a phase that holds a ruling"),
        }
    }
}

pub(super) struct Slot {
    pub(super) request: Arc<AccessRequest>,
    /// The gate's count of requests made before this one: listings are ordered by it.
    pub(super) seq: u64,
    pub(super) deadline: Ticks,
    pub(super) runtime: Handle,
    pub(super) phase: Phase,
    /// Whether the store has the request; until then nobody hears of it or can decide it.
    pub(super) stored: bool,
    /// Whether these callers joined another replica's identical request instead (a store
    /// replicas share had one pending): this one is then never stored, announced or decided;
    /// its callers follow that one (the registry's `followers` says which).
    pub(super) joined: bool,
    /// The callers' places, by waiter key. The next caller to join takes a free place, so the
    /// list grows with the callers waiting at once (at most the cap), not with every caller
    /// that ever joined.
    pub(super) waiters: Waiters,
    /// Waiters attached now; at most `Limits::waiters`, which is checked before a join.
    pub(super) attached: u32,
    /// At most `Limits::attempts`, itself at most 1,000: the request closes when it is reached.
    pub(super) wrong_codes: u16,
}

/// The places of the callers waiting on one request, by key: the first in the slot itself
/// (most requests have one caller), any others in a list made when a second one joins. A place
/// holds `None` once its caller left, and `Some(None)` until its caller is first polled.
#[derive(Default)]
pub(super) struct Waiters {
    first: Option<Option<Waker>>,
    // Boxed, so that a slot keeps eight bytes for them rather than a whole `Vec`.
    #[allow(clippy::box_collection)]
    others: Option<Box<Vec<Option<Option<Waker>>>>>,
}

impl Waiters {
    fn places(&mut self) -> impl Iterator<Item = &mut Option<Option<Waker>>> {
        let others = self.others.iter_mut().flat_map(|others| others.iter_mut());
        std::iter::once(&mut self.first).chain(others)
    }

    fn place(&mut self, key: usize) -> Option<&mut Option<Option<Waker>>> {
        match key {
            0 => Some(&mut self.first),
            _ => self.others.as_mut()?.get_mut(key - 1),
        }
    }

    fn len(&self) -> usize {
        1 + self.others.as_ref().map_or(0, |others| others.len())
    }
}

impl HasId for Slot {
    fn id(&self) -> RequestId {
        self.request.id
    }
}

impl Slot {
    pub(super) fn attach(&mut self) -> usize {
        let free = (self.attached as usize) < self.waiters.len();
        self.attached += 1;
        let Waiters { first, others } = &mut self.waiters;
        if free && first.is_none() {
            *first = Some(None);
            return 0;
        }
        let others = others.get_or_insert_default();
        // A scan of at most the cap's length, only when someone left: joins are the cold path.
        match free
            .then(|| others.iter().position(Option::is_none))
            .flatten()
        {
            Some(i) => {
                others[i] = Some(None);
                i + 1
            }
            None => {
                others.push(Some(None));
                others.len()
            }
        }
    }

    pub(super) fn detach(&mut self, key: usize) {
        if self.waiters.place(key).and_then(Option::take).is_some() {
            self.attached -= 1;
        }
    }

    /// The wakers of the callers polled since they were last woken; their places stay taken.
    pub(super) fn wakers(&mut self) -> impl Iterator<Item = Waker> + '_ {
        self.waiters
            .places()
            .filter_map(|place| place.as_mut()?.take())
    }

    pub(super) fn register(&mut self, key: usize, waker: &Waker) {
        let Some(place) = self.waiters.place(key) else {
            return;
        };
        let registered = place.get_or_insert(None);
        if !registered.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *registered = Some(waker.clone());
        }
    }

    pub(super) fn resolved(&self, outcome: Outcome) -> Resolved {
        Resolved {
            runtime: self.runtime.clone(),
            request: self.request.clone(),
            outcome,
        }
    }

    /// The request ends `outcome` from `from`: recorded, and announced.
    pub(super) fn closed(&mut self, from: Status, outcome: Outcome, effects: &mut Effects) {
        self.phase = Phase::Closed(Box::new(outcome.clone()));
        effects.resolved = Some(self.resolved(outcome.clone()));
        effects.events.push(Event::Closed {
            request: self.request.clone(),
            from,
            outcome,
        });
    }
}
