//! The pending registry: one decision cell per access request.
//!
//! Everything here runs under the gate's one registry lock, so each transition is a single atomic
//! step. Nothing here awaits, wakes a task, or calls a notifier: transitions return [`Effects`],
//! which the gate applies after the lock is released.
//!
//! A request's life: `Pending` → one of `Approved` (a decision waiting to be taken by a caller),
//! `Closed` (denied, expired, failed) or cancelled (the last caller left). An approval becomes
//! final only when a waiting caller takes it (`Executing`); if every caller leaves first, the
//! request ends cancelled and the approver is told so.

use std::collections::{HashMap, VecDeque};
use std::mem;
use std::sync::Arc;
use std::task::{Poll, Waker};

use sha2::{Digest as _, Sha256};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::rate::RateLimiter;
use super::request::{AccessRequest, Outcome, RequestId, Status};
use super::rules::Rule;
use crate::args::ArgsDigest;
use crate::error::{Error, ErrorKind};

/// What identical calls share: a digest of (principal, session, capability, args digest).
type Fingerprint = [u8; 32];

fn fingerprint(request: &AccessRequest) -> Fingerprint {
    let mut hash = Sha256::new();
    for field in [
        request.principal.as_bytes(),
        request.session.as_deref().unwrap_or("").as_bytes(),
        request.capability.as_bytes(),
    ] {
        hash.update((field.len() as u64).to_be_bytes());
        hash.update(field);
    }
    hash.update([u8::from(request.session.is_some())]);
    hash.update(ArgsDigest::as_bytes(&request.args_digest));
    hash.finalize().into()
}

/// Work to do once the registry lock is released.
#[derive(Default)]
#[must_use]
pub(crate) struct Effects {
    pub(crate) wake: Vec<Waker>,
    pub(crate) rule: Option<(Rule, Instant)>,
    pub(crate) ack: Option<(oneshot::Sender<bool>, bool)>,
    pub(crate) resolved: Option<Resolved>,
}

/// A request that reached its outcome: notifiers and the log hear of it.
pub(crate) struct Resolved {
    pub(crate) runtime: Handle,
    pub(crate) request: Arc<AccessRequest>,
    pub(crate) outcome: Outcome,
}

/// An approval waiting for a caller to take it.
pub(crate) struct Delivery {
    pub(crate) outcome: Outcome,
    pub(crate) rule: Option<(Rule, Instant)>,
    pub(crate) ack: oneshot::Sender<bool>,
}

/// What a verified approve or deny does to a pending request.
pub(crate) enum Transition {
    Approve(Delivery),
    Deny {
        outcome: Outcome,
        rule: Option<(Rule, Instant)>,
    },
}

/// The caps on pending requests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) per_principal: usize,
    pub(crate) total: usize,
    pub(crate) attempts: u32,
}

enum Phase {
    Pending,
    // Boxed: a slot spends most of its life pending, and an approval carries a whole rule.
    Approved(Box<Delivery>),
    Executing { finished: Option<Status> },
    Closed(Outcome),
}

impl Phase {
    fn status(&self) -> Status {
        match self {
            Phase::Pending => Status::Pending,
            Phase::Approved(_) => Status::Approved,
            Phase::Executing { finished } => finished.unwrap_or(Status::Executing),
            Phase::Closed(outcome) => outcome.status(),
        }
    }
}

struct Slot {
    request: Arc<AccessRequest>,
    deadline: Instant,
    runtime: Handle,
    phase: Phase,
    /// Indexed by waiter key; `None` is a waiter that left, `Some(None)` one not yet polled.
    waiters: Vec<Option<Option<Waker>>>,
    attached: usize,
    wrong_codes: u32,
}

impl Slot {
    fn attach(&mut self) -> usize {
        // Keys are not reused: the list lives only as long as its request.
        self.attached += 1;
        self.waiters.push(Some(None));
        self.waiters.len() - 1
    }

    fn detach(&mut self, key: usize) {
        if self.waiters.get_mut(key).and_then(Option::take).is_some() {
            self.attached -= 1;
        }
    }

    fn wakers(&mut self) -> impl Iterator<Item = Waker> + '_ {
        self.waiters.iter_mut().filter_map(|w| w.as_mut()?.take())
    }

    fn resolved(&self, outcome: Outcome) -> Resolved {
        Resolved {
            runtime: self.runtime.clone(),
            request: self.request.clone(),
            outcome,
        }
    }
}

/// Counts and indexes that exist only for pending requests.
#[derive(Default)]
struct PendingIndex {
    by_fingerprint: HashMap<Fingerprint, RequestId>,
    per_principal: HashMap<Arc<str>, usize>,
    total: usize,
}

impl PendingIndex {
    fn leave(&mut self, slot: &Slot) {
        self.by_fingerprint.remove(&fingerprint(&slot.request));
        self.total -= 1;
        let principal = &slot.request.principal;
        if let Some(n) = self.per_principal.get_mut(principal) {
            *n -= 1;
            if *n == 0 {
                self.per_principal.remove(principal);
            }
        }
    }
}

/// Decided requests kept for `status` and for telling a late approver what happened.
struct History {
    capacity: usize,
    order: VecDeque<RequestId>,
    entries: HashMap<RequestId, (Arc<AccessRequest>, Status)>,
}

impl History {
    fn insert(&mut self, request: Arc<AccessRequest>, status: Status) {
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

pub(crate) struct Registry {
    live: HashMap<RequestId, Slot>,
    index: PendingIndex,
    history: History,
    parked: usize,
    /// How often each principal may open a new request, and so alert a person.
    alert_rate: Option<RateLimiter>,
}

/// The numbers behind [`Gate::stats`](crate::Gate::stats).
pub(crate) struct Counts {
    pub(crate) pending: usize,
    pub(crate) parked: usize,
    pub(crate) live: usize,
}

impl Registry {
    pub(crate) fn new(history: usize, alert_rate: Option<RateLimiter>) -> Self {
        Registry {
            live: HashMap::new(),
            index: PendingIndex::default(),
            history: History {
                capacity: history,
                order: VecDeque::new(),
                entries: HashMap::new(),
            },
            parked: 0,
            alert_rate,
        }
    }

    /// Parks a caller on the pending request with this fingerprint, or on `request`, a new one.
    /// Returns the request, the waiter's key, and whether the request is new. Joining a pending
    /// request alerts nobody, so only a new request counts against the caps and the alert rate.
    pub(crate) fn admit(
        &mut self,
        request: AccessRequest,
        now: Instant,
        deadline: Instant,
        runtime: Handle,
        limits: Limits,
    ) -> Result<(Arc<AccessRequest>, usize, bool), Error> {
        let fingerprint = fingerprint(&request);
        if let Some(id) = self.index.by_fingerprint.get(&fingerprint) {
            let slot = self.live.get_mut(id).expect("indexed requests are live");
            self.parked += 1;
            return Ok((slot.request.clone(), slot.attach(), false));
        }
        let principal_pending = self.index.per_principal.get(&request.principal).copied();
        if self.index.total >= limits.total
            || principal_pending.unwrap_or(0) >= limits.per_principal
        {
            return Err(Error::new(ErrorKind::TooManyPending));
        }
        if let Some(rate) = &mut self.alert_rate
            && !rate.take(&request.principal, now)
        {
            return Err(Error::new(ErrorKind::TooManyAlerts));
        }
        let request = Arc::new(request);
        *self
            .index
            .per_principal
            .entry(request.principal.clone())
            .or_default() += 1;
        self.index.total += 1;
        self.index.by_fingerprint.insert(fingerprint, request.id);
        let mut slot = Slot {
            request: request.clone(),
            deadline,
            runtime,
            phase: Phase::Pending,
            waiters: Vec::with_capacity(1),
            attached: 0,
            wrong_codes: 0,
        };
        let key = slot.attach();
        self.parked += 1;
        self.live.insert(request.id, slot);
        Ok((request, key, true))
    }

    /// A waiter looks at its request: `Ok` once an approval is its to run, the request's error once
    /// it is closed. A waiter that gets `Ready` is detached.
    pub(crate) fn poll(
        &mut self,
        id: RequestId,
        key: usize,
        waker: &Waker,
    ) -> (Poll<Result<(), Error>>, Effects) {
        let mut effects = Effects::default();
        let slot = self
            .live
            .get_mut(&id)
            .expect("an attached waiter's request is live");
        let result = match &mut slot.phase {
            Phase::Pending => {
                let registered = slot.waiters[key].get_or_insert(None);
                if !registered.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *registered = Some(waker.clone());
                }
                return (Poll::Pending, effects);
            }
            Phase::Approved(_) => {
                // This caller takes the approval: from here on it is final.
                let Phase::Approved(delivery) =
                    mem::replace(&mut slot.phase, Phase::Executing { finished: None })
                else {
                    unreachable!()
                };
                effects.rule = delivery.rule;
                effects.ack = Some((delivery.ack, true));
                effects.resolved = Some(slot.resolved(delivery.outcome));
                Ok(())
            }
            Phase::Executing { .. } => Ok(()),
            Phase::Closed(outcome) => Err(outcome.error(id).expect("closed outcomes are errors")),
        };
        slot.detach(key);
        self.parked -= 1;
        self.retire_if_done(id);
        (Poll::Ready(result), effects)
    }

    /// A waiter went away without taking a decision. The last one to leave a pending request
    /// cancels it; the last one to leave an untaken approval turns it into a cancellation.
    pub(crate) fn leave(&mut self, id: RequestId, key: usize) -> Effects {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            return effects;
        };
        slot.detach(key);
        self.parked -= 1;
        if slot.attached == 0 {
            match mem::replace(&mut slot.phase, Phase::Closed(Outcome::Cancelled)) {
                Phase::Pending => {
                    self.index.leave(slot);
                    effects.resolved = Some(slot.resolved(Outcome::Cancelled));
                }
                Phase::Approved(delivery) => {
                    effects.ack = Some((delivery.ack, false));
                    effects.resolved = Some(slot.resolved(Outcome::Cancelled));
                }
                other => slot.phase = other,
            }
        }
        self.retire_if_done(id);
        effects
    }

    /// Expires the request if it is still pending at `now`.
    pub(crate) fn expire(&mut self, id: RequestId, now: Instant) -> Effects {
        match self.live.get(&id) {
            Some(slot) if matches!(slot.phase, Phase::Pending) && now >= slot.deadline => {
                self.close(id, Outcome::Expired)
            }
            _ => Effects::default(),
        }
    }

    /// Closes a pending request with a non-approval outcome and wakes its callers.
    pub(crate) fn close(&mut self, id: RequestId, outcome: Outcome) -> Effects {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            return effects;
        };
        if !matches!(slot.phase, Phase::Pending) {
            return effects;
        }
        self.index.leave(slot);
        slot.phase = Phase::Closed(outcome.clone());
        effects.wake.extend(slot.wakers());
        effects.resolved = Some(slot.resolved(outcome));
        effects
    }

    /// An approve or deny: `verify` checks the code first, then the request must still be pending
    /// and unexpired, then `transition` (which checks scope and TTL) says what to do.
    ///
    /// A wrong code is counted against a pending request and answered exactly like an unknown id.
    pub(crate) fn decide(
        &mut self,
        id: RequestId,
        verify: impl Fn(&AccessRequest) -> bool,
        now: Instant,
        limits: Limits,
        transition: impl FnOnce(&AccessRequest) -> Result<Transition, Error>,
    ) -> (Result<Arc<AccessRequest>, Error>, Effects) {
        let not_found = || Error::new(ErrorKind::AccessRequestNotFound);
        let Some(slot) = self.live.get_mut(&id) else {
            let result = match self.history.entries.get(&id) {
                Some((request, status)) if verify(request) => Err(already(*status, id)),
                _ => Err(not_found()),
            };
            return (result, Effects::default());
        };
        if !verify(&slot.request) {
            if !matches!(slot.phase, Phase::Pending) {
                return (Err(not_found()), Effects::default());
            }
            slot.wrong_codes += 1;
            tracing::warn!(request_id = %id, attempts = slot.wrong_codes, "wrong verification code");
            if slot.wrong_codes >= limits.attempts {
                tracing::warn!(request_id = %id, "access request locked after too many wrong codes");
                let effects = self.close(id, Outcome::TooManyAttempts);
                return (
                    Err(Error::new(ErrorKind::TooManyAttempts).with_request(id)),
                    effects,
                );
            }
            return (Err(not_found()), Effects::default());
        }
        if !matches!(slot.phase, Phase::Pending) {
            return (Err(already(slot.phase.status(), id)), Effects::default());
        }
        if now >= slot.deadline {
            let effects = self.close(id, Outcome::Expired);
            let error = Error::new(ErrorKind::AccessRequestExpired).with_request(id);
            return (Err(error), effects);
        }
        let request = slot.request.clone();
        match transition(&request) {
            Err(error) => (Err(error.with_request(id)), Effects::default()),
            Ok(Transition::Deny { outcome, rule }) => {
                let mut effects = self.close(id, outcome);
                effects.rule = rule;
                (Ok(request), effects)
            }
            Ok(Transition::Approve(delivery)) => {
                self.index.leave(slot);
                slot.phase = Phase::Approved(Box::new(delivery));
                let effects = Effects {
                    wake: slot.wakers().collect(),
                    ..Effects::default()
                };
                (Ok(request), effects)
            }
        }
    }

    /// Records how an approved call ended.
    pub(crate) fn finish(&mut self, id: RequestId, status: Status) {
        if let Some(slot) = self.live.get_mut(&id) {
            if let Phase::Executing { finished } = &mut slot.phase {
                *finished = Some(status);
            }
        } else if let Some((_, current)) = self.history.entries.get_mut(&id)
            && matches!(
                *current,
                Status::Executing | Status::Executed | Status::Failed
            )
        {
            *current = status;
        }
    }

    pub(crate) fn status(&self, id: RequestId) -> Option<Status> {
        match self.live.get(&id) {
            Some(slot) => Some(slot.phase.status()),
            None => self.history.entries.get(&id).map(|(_, status)| *status),
        }
    }

    pub(crate) fn pending(&self) -> Vec<AccessRequest> {
        let mut pending: Vec<AccessRequest> = self
            .live
            .values()
            .filter(|slot| matches!(slot.phase, Phase::Pending))
            .map(|slot| (*slot.request).clone())
            .collect();
        pending.sort_by_key(|r| r.created_at);
        pending
    }

    /// Request `id`, if it is still pending.
    pub(crate) fn pending_request(&self, id: RequestId) -> Option<Arc<AccessRequest>> {
        let slot = self.live.get(&id)?;
        matches!(slot.phase, Phase::Pending).then(|| slot.request.clone())
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            pending: self.index.total,
            parked: self.parked,
            live: self.live.len(),
        }
    }

    /// Moves a request nobody waits on any more from the live table to the history.
    fn retire_if_done(&mut self, id: RequestId) {
        if let Some(slot) = self.live.get(&id)
            && slot.attached == 0
            && !matches!(slot.phase, Phase::Pending)
        {
            let slot = self.live.remove(&id).expect("just seen");
            self.history.insert(slot.request, slot.phase.status());
        }
    }
}

/// What a verified approve or deny of an already decided request hears.
fn already(status: Status, id: RequestId) -> Error {
    let kind = match status {
        Status::Expired => ErrorKind::AccessRequestExpired,
        Status::Cancelled => ErrorKind::AccessRequestCancelled,
        _ => ErrorKind::AlreadyResolved,
    };
    Error::new(kind)
        .with_request(id)
        .with_detail(format!("status: {status}"))
}
