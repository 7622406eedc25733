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

use std::time::SystemTime;

use super::rate::RateLimiter;
use crate::args::ArgsDigest;
use crate::audit::{AuditEntry, AuditEvent};
use crate::error::{Error, ErrorKind};
use crate::id::RequestId;
use crate::id::RuleId;
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::Rule;
use crate::store::Transition;
use crate::time::to_millis;

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

/// Work to do once the registry lock is released; `writes` go to the journal before it is.
#[derive(Default)]
#[must_use]
pub(crate) struct Effects {
    pub(crate) wake: Vec<Waker>,
    pub(crate) rule: Option<(Rule, Instant)>,
    pub(crate) ack: Option<(Ack, Result<(), Error>)>,
    pub(crate) resolved: Option<Resolved>,
    pub(crate) writes: Vec<Write>,
}

/// Tells an approver how their decision ended: `Ok` once it is stored and, for an approval, a
/// waiting caller has it.
pub(crate) type Ack = oneshot::Sender<Result<(), Error>>;

/// A request that reached its outcome: notifiers and the log hear of it.
pub(crate) struct Resolved {
    pub(crate) runtime: Handle,
    pub(crate) request: Arc<AccessRequest>,
    pub(crate) outcome: Outcome,
}

/// What the registry asks the store to record, in the order it happened.
pub(crate) enum Write {
    /// A new request: once stored, it may be announced ([`Registry::stored`]).
    Insert(Arc<AccessRequest>, AuditEntry),
    /// A verified decision: once stored, it takes effect ([`Registry::decided`]).
    Decide(Transition),
    /// A caller took an approval: once stored, the callers run ([`Registry::taken`]).
    Take(Transition),
    /// A transition nobody waits for.
    Record(Transition),
    /// Audit entries that change no request.
    Append(AuditEntry),
    /// A rule filed for an approval nobody received, revoked again.
    Withdraw(RuleId),
}

/// An approval waiting for a caller to take it.
pub(crate) struct Delivery {
    pub(crate) outcome: Outcome,
    pub(crate) rule: Option<(Rule, Instant)>,
    pub(crate) ack: Ack,
}

/// What a verified approve or deny does to a pending request, once the store has it.
pub(crate) enum Decided {
    Approve(Delivery),
    Deny {
        outcome: Outcome,
        rule: Option<(Rule, Instant)>,
        ack: Ack,
    },
}

impl Decided {
    fn ack(self) -> Ack {
        match self {
            Decided::Approve(delivery) => delivery.ack,
            Decided::Deny { ack, .. } => ack,
        }
    }
}

/// Why `decide` refused.
pub(crate) enum Refusal {
    /// Neither live nor remembered: the store may know it.
    Unknown,
    Error(Error),
}

/// A parked caller: its request, its waiter key, and whether the request is new.
pub(crate) type Admitted = (Arc<AccessRequest>, usize, bool);

/// The caps on pending requests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) per_principal: usize,
    pub(crate) total: usize,
    pub(crate) attempts: u32,
    /// Callers waiting on one request at once.
    pub(crate) waiters: usize,
}

enum Phase {
    Pending,
    // Boxed: a slot spends most of its life pending, and a decision carries a whole rule.
    /// A verified decision is being stored; nothing else can decide meanwhile.
    Deciding(Box<Decided>),
    /// Approved and stored; no caller has taken it yet.
    Approved(Box<Delivery>),
    /// A caller took the approval; the `executing` transition is being stored.
    Taking(Box<Delivery>),
    /// Stored as executing; the callers run. `unreceived` holds the approval until the first
    /// caller actually resumes with it: only then is the approver told.
    Executing {
        finished: Option<Status>,
        unreceived: Option<Box<Delivery>>,
    },
    Closed(Outcome),
}

impl Phase {
    fn status(&self) -> Status {
        match self {
            Phase::Pending | Phase::Deciding(_) => Status::Pending,
            Phase::Approved(_) | Phase::Taking(_) => Status::Approved,
            Phase::Executing { finished, .. } => finished.unwrap_or(Status::Executing),
            Phase::Closed(outcome) => outcome.status(),
        }
    }

    /// Whether a store write this request waits on is under way.
    fn in_flight(&self) -> bool {
        matches!(self, Phase::Deciding(_) | Phase::Taking(_))
    }
}

struct Slot {
    request: Arc<AccessRequest>,
    /// The gate's count of requests made before this one: listings are ordered by it.
    seq: u64,
    deadline: Instant,
    runtime: Handle,
    phase: Phase,
    /// Whether the store has the request; until then nobody hears of it or can decide it.
    stored: bool,
    /// Indexed by waiter key; `None` is a place a waiter left, `Some(None)` a waiter not yet
    /// polled. The next caller to join takes a free place, so the list grows with the callers
    /// waiting at once (at most the cap), not with every caller that ever joined.
    waiters: Vec<Option<Option<Waker>>>,
    /// Waiters attached now; at most `Limits::waiters`, which is checked before a join.
    attached: u32,
    /// At most `Limits::attempts`, itself at most 1,000: the request closes when it is reached.
    wrong_codes: u16,
}

impl Slot {
    fn attach(&mut self) -> usize {
        let free = (self.attached as usize) < self.waiters.len();
        self.attached += 1;
        // A scan of at most the cap's length, only when someone left: joins are the cold path.
        match free
            .then(|| self.waiters.iter().position(Option::is_none))
            .flatten()
        {
            Some(key) => {
                self.waiters[key] = Some(None);
                key
            }
            None => {
                self.waiters.push(Some(None));
                self.waiters.len() - 1
            }
        }
    }

    fn detach(&mut self, key: usize) {
        if self.waiters.get_mut(key).and_then(Option::take).is_some() {
            self.attached -= 1;
        }
    }

    fn wakers(&mut self) -> impl Iterator<Item = Waker> + '_ {
        self.waiters.iter_mut().filter_map(|w| w.as_mut()?.take())
    }

    fn register(&mut self, key: usize, waker: &Waker) {
        let registered = self.waiters[key].get_or_insert(None);
        if !registered.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *registered = Some(waker.clone());
        }
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
    /// Requests made so far: the next request's `seq`.
    made: u64,
    /// Set by shutdown: no call is parked any more.
    shut: bool,
    /// How often each principal may open a new request, and so alert a person.
    alert_rate: Option<RateLimiter>,
    /// Whether audit entries carry the arguments, not only their digest.
    audit_args: bool,
}

/// The numbers behind [`Gate::stats`](crate::Gate::stats).
pub(crate) struct Counts {
    pub(crate) pending: usize,
    pub(crate) parked: usize,
    pub(crate) live: usize,
}

/// The store transition of `request` from `from` to `to`, with one audit entry of `event`.
pub(crate) fn step(
    entry: AuditEntry,
    from: Status,
    to: Status,
    outcome: Option<Outcome>,
) -> Transition {
    Transition {
        id: entry.request.expect("request entries name their request"),
        from,
        to,
        outcome,
        rule: None,
        audit: vec![entry],
    }
}

/// An audit entry about `request`, now; with its arguments if `audit_args`.
pub(crate) fn entry(audit_args: bool, event: AuditEvent, request: &AccessRequest) -> AuditEntry {
    let mut entry = AuditEntry::for_request(event, to_millis(SystemTime::now()), request);
    if audit_args {
        entry.args = Some(request.args.clone());
    }
    entry
}

/// The audit event of a request closed with `outcome`.
fn event_of(outcome: &Outcome) -> AuditEvent {
    match outcome {
        Outcome::Approved { .. } => AuditEvent::Approved,
        Outcome::Denied { .. } | Outcome::TooManyAttempts => AuditEvent::Denied,
        Outcome::Expired => AuditEvent::Expired,
        Outcome::Cancelled => AuditEvent::Cancelled,
        Outcome::Abandoned => AuditEvent::Abandoned,
        Outcome::NotificationFailed | Outcome::StoreFailed => AuditEvent::Failed,
    }
}

impl Registry {
    pub(crate) fn new(history: usize, alert_rate: Option<RateLimiter>, audit_args: bool) -> Self {
        Registry {
            live: HashMap::new(),
            index: PendingIndex::default(),
            history: History {
                capacity: history,
                order: VecDeque::new(),
                entries: HashMap::new(),
            },
            parked: 0,
            made: 0,
            shut: false,
            alert_rate,
            audit_args,
        }
    }

    /// Parks a caller on the pending request with this fingerprint, or on `request`, a new one.
    /// Returns the request, the waiter's key, and whether the request is new. Joining a pending
    /// request alerts nobody, so only a new request counts against the caps and the alert rate;
    /// a join counts only against the cap on callers waiting on one request. A new request is
    /// written to the store before anyone hears of it.
    pub(crate) fn admit(
        &mut self,
        request: AccessRequest,
        now: Instant,
        deadline: Instant,
        runtime: Handle,
        limits: Limits,
    ) -> (Result<Admitted, Error>, Effects) {
        let mut effects = Effects::default();
        if self.shut {
            return (Err(Error::new(ErrorKind::ShutDown)), effects);
        }
        let fingerprint = fingerprint(&request);
        if let Some(id) = self.index.by_fingerprint.get(&fingerprint) {
            let slot = self.live.get_mut(id).expect("indexed requests are live");
            if slot.attached as usize >= limits.waiters {
                let error = Error::new(ErrorKind::TooManyPending)
                    .with_request(*id)
                    .with_detail(format!(
                        "{} callers already wait on this request",
                        slot.attached
                    ));
                return (Err(error), effects);
            }
            self.parked += 1;
            return (Ok((slot.request.clone(), slot.attach(), false)), effects);
        }
        let principal_pending = self.index.per_principal.get(&request.principal).copied();
        if self.index.total >= limits.total
            || principal_pending.unwrap_or(0) >= limits.per_principal
        {
            return (Err(Error::new(ErrorKind::TooManyPending)), effects);
        }
        if let Some(rate) = &mut self.alert_rate
            && !rate.take(&request.principal, now)
        {
            return (Err(Error::new(ErrorKind::TooManyAlerts)), effects);
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
            seq: self.made,
            deadline,
            runtime,
            phase: Phase::Pending,
            stored: false,
            waiters: Vec::with_capacity(1),
            attached: 0,
            wrong_codes: 0,
        };
        let key = slot.attach();
        self.made += 1;
        self.parked += 1;
        self.live.insert(request.id, slot);
        let mut requested = entry(self.audit_args, AuditEvent::Requested, &request);
        requested.reason = request.reason.clone();
        requested.detail = Some((*request.reasoning).into());
        effects
            .writes
            .push(Write::Insert(request.clone(), requested));
        (Ok((request, key, true)), effects)
    }

    /// The store has request `id`, or could not take it. Returns whether it should now be
    /// announced; a request the store refused fails its callers with `store_failed`.
    pub(crate) fn stored(&mut self, id: RequestId, result: Result<(), Error>) -> (bool, Effects) {
        let Some(slot) = self.live.get_mut(&id) else {
            return (false, Effects::default());
        };
        match result {
            Ok(()) => {
                slot.stored = true;
                (matches!(slot.phase, Phase::Pending), Effects::default())
            }
            Err(error) => {
                tracing::error!(request_id = %id, %error, "the store could not record an access request; its calls fail");
                (false, self.close(id, Outcome::StoreFailed))
            }
        }
    }

    /// At least one notifier accepted the alert for `request`.
    pub(crate) fn notified(&mut self, request: &AccessRequest, accepted: usize) -> Effects {
        let mut notified = entry(self.audit_args, AuditEvent::Notified, request);
        notified.detail = Some(format!("accepted by {accepted} notifier(s)").into());
        Effects {
            writes: vec![Write::Append(notified)],
            ..Effects::default()
        }
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
            Phase::Pending | Phase::Deciding(_) | Phase::Taking(_) => {
                slot.register(key, waker);
                return (Poll::Pending, effects);
            }
            Phase::Approved(_) => {
                // This caller takes the approval; the callers run once the store has that.
                let Phase::Approved(delivery) = mem::replace(&mut slot.phase, Phase::Pending)
                else {
                    unreachable!()
                };
                let executing = entry(self.audit_args, AuditEvent::Executing, &slot.request);
                let at = executing.at;
                let mut take = step(executing, Status::Approved, Status::Executing, None);
                if let Some((rule, _)) = &delivery.rule {
                    let mut granted = AuditEntry::for_rule(AuditEvent::RuleGranted, at, rule);
                    granted.approver = Some(rule.granted_by.clone());
                    take.audit.push(granted);
                    take.rule = Some(rule.clone());
                }
                slot.phase = Phase::Taking(delivery);
                slot.register(key, waker);
                effects.writes.push(Write::Take(take));
                return (Poll::Pending, effects);
            }
            Phase::Executing { unreceived, .. } => {
                // The first caller to resume receives the approval: the approver hears so now.
                if let Some(delivery) = unreceived.take() {
                    effects.rule = delivery.rule;
                    effects.ack = Some((delivery.ack, Ok(())));
                    effects.resolved = Some(Resolved {
                        runtime: slot.runtime.clone(),
                        request: slot.request.clone(),
                        outcome: delivery.outcome,
                    });
                }
                Ok(())
            }
            Phase::Closed(outcome) => Err(outcome.error(id).expect("closed outcomes are errors")),
        };
        slot.detach(key);
        self.parked -= 1;
        self.retire_if_done(id);
        (Poll::Ready(result), effects)
    }

    /// The store has, or could not record, the `executing` transition of an approval a caller
    /// took. On success the callers are woken to run, and the approver hears so when the first
    /// resumes (or of a cancellation, if none is left); otherwise they all fail with
    /// `store_failed`.
    pub(crate) fn taken(&mut self, id: RequestId, result: Result<bool, Error>) -> Effects {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            return effects;
        };
        let delivery = match mem::replace(&mut slot.phase, Phase::Pending) {
            Phase::Taking(delivery) => delivery,
            other => {
                slot.phase = other;
                return effects;
            }
        };
        match result {
            Ok(true) if slot.attached == 0 => return self.unreceived(id, delivery),
            Ok(true) => {
                slot.phase = Phase::Executing {
                    finished: None,
                    unreceived: Some(delivery),
                };
                effects.wake.extend(slot.wakers());
            }
            Ok(false) | Err(_) => {
                let error = store_error(
                    result.err(),
                    "the store did not record the approval being taken",
                );
                tracing::error!(request_id = %id, %error, "approved call failed: not recorded");
                let failed = entry(self.audit_args, AuditEvent::Failed, &slot.request);
                slot.phase = Phase::Closed(Outcome::StoreFailed);
                effects.ack = Some((delivery.ack, Err(error.with_request(id))));
                effects.wake.extend(slot.wakers());
                effects.resolved = Some(slot.resolved(Outcome::StoreFailed));
                effects.writes.push(Write::Record(step(
                    failed,
                    Status::Approved,
                    Status::Failed,
                    Some(Outcome::StoreFailed),
                )));
            }
        }
        self.retire_if_done(id);
        effects
    }

    /// A waiter went away without taking a decision. The last one to leave a pending request
    /// cancels it; the last one to leave an untaken approval turns it into a cancellation. While a
    /// store write is under way, the write's completion decides instead.
    pub(crate) fn leave(&mut self, id: RequestId, key: usize) -> Effects {
        let effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            return effects;
        };
        slot.detach(key);
        self.parked -= 1;
        if slot.attached == 0 {
            match &mut slot.phase {
                Phase::Pending => return self.close(id, Outcome::Cancelled),
                Phase::Approved(_) => return self.cancel_approval(id),
                Phase::Executing { unreceived, .. } => {
                    if let Some(delivery) = unreceived.take() {
                        return self.unreceived(id, delivery);
                    }
                }
                _ => {}
            }
        }
        self.retire_if_done(id);
        effects
    }

    /// An approval stored as executing that no caller received, because every caller left first:
    /// it ends cancelled, the approver is told so, and its rule is withdrawn.
    fn unreceived(&mut self, id: RequestId, delivery: Box<Delivery>) -> Effects {
        let mut effects = Effects::default();
        let slot = self.live.get_mut(&id).expect("just seen");
        slot.phase = Phase::Closed(Outcome::Cancelled);
        tracing::debug!(request_id = %id, "an approval's callers left before receiving it");
        let cancelled = Error::new(ErrorKind::AccessRequestCancelled).with_request(id);
        effects.ack = Some((delivery.ack, Err(cancelled)));
        effects.resolved = Some(slot.resolved(Outcome::Cancelled));
        let entry = entry(self.audit_args, AuditEvent::Cancelled, &slot.request);
        effects.writes.push(Write::Record(step(
            entry,
            Status::Executing,
            Status::Cancelled,
            Some(Outcome::Cancelled),
        )));
        if let Some((rule, _)) = delivery.rule {
            effects.writes.push(Write::Withdraw(rule.id));
        }
        self.retire_if_done(id);
        effects
    }

    /// An approval nobody can take any more: the request ends cancelled, and the approver is told.
    fn cancel_approval(&mut self, id: RequestId) -> Effects {
        let mut effects = Effects::default();
        let slot = self.live.get_mut(&id).expect("just seen");
        let Phase::Approved(delivery) =
            mem::replace(&mut slot.phase, Phase::Closed(Outcome::Cancelled))
        else {
            unreachable!("only approvals are cancelled here")
        };
        let cancelled = Error::new(ErrorKind::AccessRequestCancelled).with_request(id);
        effects.ack = Some((delivery.ack, Err(cancelled)));
        effects.resolved = Some(slot.resolved(Outcome::Cancelled));
        let entry = entry(self.audit_args, AuditEvent::Cancelled, &slot.request);
        effects.writes.push(Write::Record(step(
            entry,
            Status::Approved,
            Status::Cancelled,
            Some(Outcome::Cancelled),
        )));
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
        // A request the store never took was never announced, so there is nobody to tell.
        if outcome != Outcome::StoreFailed {
            effects.resolved = Some(slot.resolved(outcome.clone()));
            let mut entry = entry(self.audit_args, event_of(&outcome), &slot.request);
            entry.detail = match &outcome {
                Outcome::TooManyAttempts => Some("too many wrong verification codes".into()),
                Outcome::NotificationFailed => Some("no notifier accepted the alert".into()),
                Outcome::Abandoned => Some("the gate shut down before anyone decided".into()),
                _ => None,
            };
            let to = outcome.status();
            effects.writes.push(Write::Record(step(
                entry,
                Status::Pending,
                to,
                Some(outcome),
            )));
        }
        self.retire_if_done(id);
        effects
    }

    /// An approve or deny: `may_decide` asks whether this approver may decide the request at
    /// all, `verify` checks the code, then the request must still be pending, stored and
    /// unexpired, then `transition` (which checks scope and TTL) says what to do and what to
    /// store. The decision takes effect once the store has it ([`decided`](Self::decided)).
    ///
    /// Someone who may not decide is answered exactly like an unknown id, before the code is
    /// looked at, so they spend none of the request's attempts. A wrong code is counted against
    /// a pending request and answered exactly like an unknown id.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decide(
        &mut self,
        id: RequestId,
        may_decide: impl Fn(&AccessRequest) -> bool,
        verify: impl Fn(&AccessRequest) -> bool,
        attempt_by: Option<&Arc<str>>,
        now: Instant,
        limits: Limits,
        transition: impl FnOnce(&AccessRequest) -> Result<(Decided, Transition), Error>,
    ) -> (Result<Arc<AccessRequest>, Refusal>, Effects) {
        let not_found = || Refusal::Error(Error::new(ErrorKind::AccessRequestNotFound));
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            let result = match self.history.entries.get(&id) {
                Some((request, status)) if may_decide(request) && verify(request) => {
                    Err(Refusal::Error(already(*status, id)))
                }
                Some(_) => Err(not_found()),
                None => Err(Refusal::Unknown),
            };
            return (result, effects);
        };
        if !slot.stored || !may_decide(&slot.request) {
            return (Err(not_found()), effects);
        }
        if !verify(&slot.request) {
            if !matches!(slot.phase, Phase::Pending) {
                return (Err(not_found()), effects);
            }
            slot.wrong_codes += 1;
            tracing::warn!(request_id = %id, attempts = slot.wrong_codes, "wrong verification code");
            let attempts = u32::from(slot.wrong_codes);
            let request = slot.request.clone();
            let mut rejected = entry(self.audit_args, AuditEvent::CodeRejected, &request);
            rejected.approver = attempt_by.cloned();
            rejected.detail = Some(format!("wrong code {attempts} of {}", limits.attempts).into());
            effects.writes.push(Write::Append(rejected));
            if attempts >= limits.attempts {
                tracing::warn!(request_id = %id, "access request locked after too many wrong codes");
                let closed = self.close(id, Outcome::TooManyAttempts);
                effects.merge(closed);
                let error = Error::new(ErrorKind::TooManyAttempts).with_request(id);
                return (Err(Refusal::Error(error)), effects);
            }
            return (Err(not_found()), effects);
        }
        if let Phase::Deciding(_) = slot.phase {
            let error = Error::new(ErrorKind::AlreadyResolved)
                .with_request(id)
                .with_detail("another decision on this request is being recorded");
            return (Err(Refusal::Error(error)), effects);
        }
        if !matches!(slot.phase, Phase::Pending) {
            return (
                Err(Refusal::Error(already(slot.phase.status(), id))),
                effects,
            );
        }
        if now >= slot.deadline {
            let effects = self.close(id, Outcome::Expired);
            let error = Error::new(ErrorKind::AccessRequestExpired).with_request(id);
            return (Err(Refusal::Error(error)), effects);
        }
        let request = slot.request.clone();
        match transition(&request) {
            Err(error) => (Err(Refusal::Error(error.with_request(id))), effects),
            Ok((decided, write)) => {
                slot.phase = Phase::Deciding(Box::new(decided));
                effects.writes.push(Write::Decide(write));
                (Ok(request), effects)
            }
        }
    }

    /// The store has, or could not record, a decision. Stored, it takes effect: a denial closes
    /// the request; an approval waits for a caller to take it, or ends cancelled if none is left.
    /// Not stored, the request is pending again and the approver hears `store_failed`.
    pub(crate) fn decided(
        &mut self,
        id: RequestId,
        result: Result<bool, Error>,
        now: Instant,
    ) -> Effects {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            return effects;
        };
        let decided = match mem::replace(&mut slot.phase, Phase::Pending) {
            Phase::Deciding(decided) => decided,
            other => {
                slot.phase = other;
                return effects;
            }
        };
        match result {
            Ok(true) => match *decided {
                Decided::Approve(delivery) => {
                    self.index.leave(slot);
                    slot.phase = Phase::Approved(Box::new(delivery));
                    if slot.attached == 0 {
                        return self.cancel_approval(id);
                    }
                    effects.wake.extend(slot.wakers());
                }
                Decided::Deny { outcome, rule, ack } => {
                    self.index.leave(slot);
                    slot.phase = Phase::Closed(outcome.clone());
                    effects.wake.extend(slot.wakers());
                    effects.resolved = Some(slot.resolved(outcome));
                    effects.rule = rule;
                    effects.ack = Some((ack, Ok(())));
                    self.retire_if_done(id);
                }
            },
            Ok(false) | Err(_) => {
                let error = store_error(
                    result.err(),
                    "the store no longer holds the request as pending",
                );
                tracing::error!(request_id = %id, %error, "decision not recorded; the request stays pending");
                effects.ack = Some((decided.ack(), Err(error.with_request(id))));
                if slot.attached == 0 {
                    effects.merge(self.close(id, Outcome::Cancelled));
                } else if now >= slot.deadline {
                    effects.merge(self.close(id, Outcome::Expired));
                }
            }
        }
        effects
    }

    /// Parks no call from now on, and returns the requests still pending, for the gate to close
    /// as abandoned one by one. Decisions and takes already being written finish as usual.
    pub(crate) fn shut_down(&mut self) -> Vec<RequestId> {
        self.shut = true;
        self.live
            .iter()
            .filter(|(_, slot)| matches!(slot.phase, Phase::Pending))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether a store write some request waits on (a decision, a take) is under way.
    pub(crate) fn writing(&self) -> bool {
        self.live.values().any(|slot| slot.phase.in_flight())
    }

    /// Records how an approved call ended; the store hears of it the first time.
    pub(crate) fn finish(&mut self, id: RequestId, status: Status) -> Effects {
        let mut effects = Effects::default();
        let request = if let Some(slot) = self.live.get_mut(&id) {
            let Phase::Executing { finished, .. } = &mut slot.phase else {
                return effects;
            };
            if finished.is_some() {
                return effects;
            }
            *finished = Some(status);
            slot.request.clone()
        } else {
            let Some((request, current)) = self.history.entries.get_mut(&id) else {
                return effects;
            };
            if *current != Status::Executing {
                return effects;
            }
            *current = status;
            request.clone()
        };
        let event = if status == Status::Executed {
            AuditEvent::Executed
        } else {
            AuditEvent::Failed
        };
        let entry = entry(self.audit_args, event, &request);
        let write = Write::Record(step(entry, Status::Executing, status, None));
        effects.writes.push(write);
        effects
    }

    pub(crate) fn status(&self, id: RequestId) -> Option<Status> {
        match self.live.get(&id) {
            Some(slot) => Some(slot.phase.status()),
            None => self.history.entries.get(&id).map(|(_, status)| *status),
        }
    }

    /// The pending requests, in the order they were made (many share a millisecond).
    pub(crate) fn pending(&self) -> Vec<AccessRequest> {
        let mut pending: Vec<&Slot> = self
            .live
            .values()
            .filter(|slot| slot.stored && matches!(slot.phase, Phase::Pending))
            .collect();
        pending.sort_unstable_by_key(|slot| slot.seq);
        pending
            .into_iter()
            .map(|slot| (*slot.request).clone())
            .collect()
    }

    /// Request `id` and where it stands, once stored and while remembered.
    pub(crate) fn request(&self, id: RequestId) -> Option<(Arc<AccessRequest>, Status)> {
        match self.live.get(&id) {
            Some(slot) => slot
                .stored
                .then(|| (slot.request.clone(), slot.phase.status())),
            None => self.history.entries.get(&id).cloned(),
        }
    }

    /// Request `id`, if it is stored and still pending.
    pub(crate) fn pending_request(&self, id: RequestId) -> Option<Arc<AccessRequest>> {
        let slot = self.live.get(&id)?;
        (slot.stored && matches!(slot.phase, Phase::Pending)).then(|| slot.request.clone())
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
            && !slot.phase.in_flight()
        {
            let slot = self.live.remove(&id).expect("just seen");
            self.history.insert(slot.request, slot.phase.status());
        }
    }
}

impl Effects {
    /// Adds `other`'s work after this one's.
    pub(crate) fn merge(&mut self, other: Effects) {
        self.wake.extend(other.wake);
        self.writes.extend(other.writes);
        if other.rule.is_some() {
            self.rule = other.rule;
        }
        if other.ack.is_some() {
            self.ack = other.ack;
        }
        if other.resolved.is_some() {
            self.resolved = other.resolved;
        }
    }
}

/// The error an approver hears when the store did not record their decision.
fn store_error(cause: Option<Error>, otherwise: &'static str) -> Error {
    match cause {
        Some(cause) if cause.kind() == ErrorKind::StoreFailed => cause,
        Some(cause) => Error::new(ErrorKind::StoreFailed).with_source(cause),
        None => Error::new(ErrorKind::StoreFailed).with_detail(otherwise),
    }
}

/// What a verified approve or deny of an already decided request hears.
pub(crate) fn already(status: Status, id: RequestId) -> Error {
    let kind = match status {
        Status::Expired => ErrorKind::AccessRequestExpired,
        Status::Cancelled => ErrorKind::AccessRequestCancelled,
        Status::Abandoned => ErrorKind::AccessRequestAbandoned,
        _ => ErrorKind::AlreadyResolved,
    };
    Error::new(kind)
        .with_request(id)
        .with_detail(format!("status: {status}"))
}
