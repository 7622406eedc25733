//! The registry's bookkeeping beside the requests themselves: which pending request identical
//! calls join, how many each principal has, and the decided requests still remembered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap;

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
}

impl PendingIndex {
    /// Counts a new pending request.
    pub(super) fn enter(&mut self, fingerprint: Fingerprint, request: &AccessRequest) {
        *self
            .per_principal
            .entry(request.principal.clone())
            .or_default() += 1;
        self.total += 1;
        self.by_fingerprint.insert(fingerprint, request.id);
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
