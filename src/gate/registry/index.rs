//! The registry's bookkeeping beside the requests themselves: which pending request identical
//! calls join, how many each principal has, and the decided requests still remembered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::time::Instant;

use crate::id::RequestId;
use crate::request::{AccessRequest, Status};

/// What identical calls share; see [`AccessRequest::fingerprint`].
pub(super) type Fingerprint = [u8; 32];

pub(super) fn fingerprint(request: &AccessRequest) -> Fingerprint {
    request.fingerprint()
}

/// Counts and indexes that exist only for pending requests.
#[derive(Default)]
pub(super) struct PendingIndex {
    pub(super) by_fingerprint: HashMap<Fingerprint, RequestId>,
    pub(super) per_principal: HashMap<Arc<str>, usize>,
    pub(super) total: usize,
    /// Deadlines of pending requests, earliest first, for the gate's expiry task. A request
    /// that stops being pending leaves its entry behind, skipped when it comes up; entries left
    /// behind are swept out once they are as many as the pending requests.
    deadlines: VecDeque<(Instant, RequestId)>,
    left_behind: usize,
}

impl PendingIndex {
    /// Counts a new pending request, due to expire at `deadline`. Returns whether that is now
    /// the earliest deadline.
    pub(super) fn enter(
        &mut self,
        fingerprint: Fingerprint,
        request: &AccessRequest,
        deadline: Instant,
    ) -> bool {
        *self
            .per_principal
            .entry(request.principal.clone())
            .or_default() += 1;
        self.total += 1;
        self.by_fingerprint.insert(fingerprint, request.id);
        // Deadlines arrive in order but for calls that raced to the lock.
        let at = self
            .deadlines
            .iter()
            .rposition(|(earlier, _)| *earlier <= deadline)
            .map_or(0, |i| i + 1);
        self.deadlines.insert(at, (deadline, request.id));
        at == 0
    }

    /// Forgets a request that is no longer pending.
    pub(super) fn leave(&mut self, fingerprint: &Fingerprint, request: &AccessRequest) {
        self.by_fingerprint.remove(fingerprint);
        self.total -= 1;
        let principal = &request.principal;
        if let Some(n) = self.per_principal.get_mut(principal) {
            *n -= 1;
            if *n == 0 {
                self.per_principal.remove(principal);
            }
        }
        self.left_behind += 1;
        if self.left_behind > 64 && self.left_behind > self.total {
            let pending: FxHashSet<RequestId> = self.by_fingerprint.values().copied().collect();
            self.deadlines.retain(|(_, id)| pending.contains(id));
            self.left_behind = 0;
        }
    }

    /// The first request on the deadline list whose deadline is at or before `now`, taken off
    /// it: pending, or one that ended before its deadline.
    pub(super) fn due(&mut self, now: Instant) -> Option<RequestId> {
        let &(deadline, id) = self.deadlines.front()?;
        if deadline > now {
            return None;
        }
        self.deadlines.pop_front();
        Some(id)
    }

    /// The earliest deadline on the list.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|&(deadline, _)| deadline)
    }
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
