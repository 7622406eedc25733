//! The registry's bookkeeping beside the requests themselves: which pending request identical
//! calls join, how many each principal has, and the decided requests still remembered.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashTable;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::time::Instant;

use crate::id::RequestId;
use crate::request::{AccessRequest, Status};

/// The registry's clock origin: instants are kept as [`Ticks`] from it.
#[derive(Clone, Copy)]
pub(super) struct Epoch(Instant);

/// An instant as nanoseconds after (or, negative, before) the registry's [`Epoch`]: 8 bytes
/// where an `Instant` takes 16, ordered as the instants are within 292 years either side.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) struct Ticks(i64);

impl Epoch {
    pub(super) fn now() -> Epoch {
        Epoch::at(Instant::now())
    }

    pub(super) fn at(origin: Instant) -> Epoch {
        Epoch(origin)
    }

    pub(super) fn ticks(self, at: Instant) -> Ticks {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Ticks(match at.checked_duration_since(self.0) {
            Some(after) => nanos(after),
            None => -nanos(self.0 - at),
        })
    }

    pub(super) fn instant(self, at: Ticks) -> Instant {
        let d = Duration::from_nanos(at.0.unsigned_abs());
        if at.0 >= 0 { self.0 + d } else { self.0 - d }
    }
}

/// Counts and indexes that exist only for pending requests.
#[derive(Default)]
pub(super) struct PendingIndex {
    /// The pending requests identical calls join, found by what those calls share: principal,
    /// session, capability and args digest. They are the caller's, so they are hashed with a
    /// key of this process's own (SipHash), and compared in full.
    joinable: HashTable<Arc<AccessRequest>>,
    hasher: RandomState,
    pub(super) per_principal: HashMap<Arc<str>, usize>,
    /// How many pending requests each capability has; they share one copy of its name, as the
    /// pending requests of one principal share theirs.
    per_capability: HashMap<Arc<str>, usize>,
    pub(super) total: usize,
    /// Deadlines of pending requests, earliest first, for the gate's expiry task. A request
    /// that stops being pending leaves its entry behind, skipped when it comes up; entries left
    /// behind are swept out once they are as many as the pending requests.
    deadlines: VecDeque<(Ticks, RequestId)>,
    left_behind: usize,
}

impl PendingIndex {
    /// The pending request a call identical to `request` joins, if there is one.
    // Called once a call, from admission: inlined there.
    #[inline]
    pub(super) fn joinable(&self, request: &AccessRequest) -> Option<&Arc<AccessRequest>> {
        self.joinable
            .find(self.hash(request), |pending| identical(pending, request))
    }

    /// The copy of `capability` the pending requests share, counting one more of them.
    // Called once a call, from admission: inlined there.
    #[inline]
    pub(super) fn share_capability(&mut self, capability: &mut Arc<str>) {
        match self.per_capability.entry(capability.clone()) {
            Entry::Occupied(mut shared) => {
                *capability = shared.key().clone();
                *shared.get_mut() += 1;
            }
            Entry::Vacant(first) => {
                first.insert(1);
            }
        }
    }

    /// Counts a new pending request, due to expire at `deadline`, whose capability was shared
    /// first. Returns whether that is now the earliest deadline.
    // Called once a call, from admission: inlined there.
    #[inline]
    pub(super) fn enter(&mut self, request: &Arc<AccessRequest>, deadline: Ticks) -> bool {
        *self
            .per_principal
            .entry(request.principal.clone())
            .or_default() += 1;
        self.total += 1;
        let hasher = &self.hasher;
        self.joinable
            .insert_unique(hash(hasher, request), request.clone(), |pending| {
                hash(hasher, pending)
            });
        // Deadlines arrive in order but for calls that raced to the lock.
        let at = self
            .deadlines
            .iter()
            .rposition(|(earlier, _)| *earlier <= deadline)
            .map_or(0, |i| i + 1);
        self.deadlines.insert(at, (deadline, request.id));
        at == 0
    }

    /// Moves pending request `id`'s deadline to `deadline`. Its other place on the list stays
    /// until it comes due, when the request is found not due (or no longer pending) and skipped.
    pub(super) fn postpone(&mut self, id: RequestId, deadline: Ticks) {
        let at = self
            .deadlines
            .iter()
            .rposition(|(earlier, _)| *earlier <= deadline)
            .map_or(0, |i| i + 1);
        self.deadlines.insert(at, (deadline, id));
    }

    /// Identical calls join pending `request` no more: each makes a request of its own.
    // Called once a parked call, from `leave`: inlined there.
    #[inline(always)]
    pub(super) fn unjoinable(&mut self, request: &AccessRequest) {
        if let Ok(entry) = self
            .joinable
            .find_entry(self.hash(request), |pending| pending.id == request.id)
        {
            entry.remove();
        }
    }

    /// Forgets a request that is no longer pending.
    pub(super) fn leave(&mut self, request: &AccessRequest) {
        self.unjoinable(request);
        self.total -= 1;
        for (counts, name) in [
            (&mut self.per_principal, &request.principal),
            (&mut self.per_capability, &request.capability),
        ] {
            if let Entry::Occupied(mut count) = counts.entry(name.clone()) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
        self.left_behind += 1;
        if self.left_behind > 64 && self.left_behind > self.total {
            let pending: FxHashSet<RequestId> = self.joinable.iter().map(|r| r.id).collect();
            self.deadlines.retain(|(_, id)| pending.contains(id));
            self.left_behind = 0;
        }
    }

    /// The first request on the deadline list whose deadline is at or before `now`, taken off
    /// it: pending, or one that ended before its deadline.
    pub(super) fn due(&mut self, now: Ticks) -> Option<RequestId> {
        let &(deadline, id) = self.deadlines.front()?;
        if deadline > now {
            return None;
        }
        self.deadlines.pop_front();
        Some(id)
    }

    fn hash(&self, request: &AccessRequest) -> u64 {
        hash(&self.hasher, request)
    }

    /// The earliest deadline on the list.
    pub(super) fn next_deadline(&self) -> Option<Ticks> {
        self.deadlines.front().map(|&(deadline, _)| deadline)
    }
}

/// The hash of what identical calls share.
// Called once a call, from admission: inlined there.
#[inline]
fn hash(hasher: &RandomState, request: &AccessRequest) -> u64 {
    hasher.hash_one((
        &*request.principal,
        request.session.as_deref(),
        &*request.capability,
        request.args_digest,
    ))
}

/// Whether two requests are for identical calls, which join one request.
fn identical(a: &AccessRequest, b: &AccessRequest) -> bool {
    a.args_digest == b.args_digest
        && a.capability == b.capability
        && a.principal == b.principal
        && a.session == b.session
}

/// Decided requests kept for `status` and for telling a late approver what happened, oldest
/// forgotten first.
pub(super) struct History {
    capacity: usize,
    order: VecDeque<RequestId>,
    /// FxHash, as for the live requests: the keys are the gate's own random ids.
    pub(super) entries: FxHashMap<RequestId, (Arc<AccessRequest>, Status)>,
}

impl History {
    pub(super) fn new(capacity: usize) -> Self {
        History {
            capacity,
            order: VecDeque::new(),
            entries: FxHashMap::default(),
        }
    }

    pub(super) fn insert(&mut self, request: Arc<AccessRequest>, status: Status) {
        if self.capacity == 0 {
            return;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.entries.remove(&oldest);
        }
        self.order.push_back(request.id);
        self.entries.insert(request.id, (request, status));
    }
}
