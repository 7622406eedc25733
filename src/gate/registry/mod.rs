//! The pending registry: one decision cell per access request, as a synchronous state machine.
//!
//! Everything here runs under the gate's one registry lock, so each transition is a single atomic
//! step. Nothing here awaits, wakes a task, logs, reads a clock, checks a code or an approver's
//! rights, or builds a store record: a transition returns [`Effects`], the [`Event`]s that
//! happened and the work they call for, which the gate records and carries out.
//!
//! A request's life (its `Phase`):
//!
//! - `Pending` → `Deciding` when a verified ruling arrives ([`Registry::decide`]); → `Closed`
//!   on expiry, a close (no notifier, shutdown), too many wrong codes, or the last caller leaving.
//! - `Deciding` → `Approved` once the store has an approval, `Closed` once it has a denial, and
//!   `Pending` again if the store refused it ([`Registry::decided`]).
//! - `Approved` → `Taking` when a waiting caller polls; → `Closed` (cancelled) if the last
//!   caller leaves first.
//! - `Taking` → `Executing` once the store has the take, `Closed` (failed) if it refused it
//!   ([`Registry::taken`]).
//! - `Executing`: the callers run; if every one left before any resumed, `Closed` (cancelled)
//!   and the approval's rule withdrawn.
//!
//! An approval becomes final only when a waiting caller takes it (`Executing`); if every caller
//! leaves first, the request ends cancelled and the approver is told so.
//!
//! With a store replicas share, a pending request may also move on because another replica
//! decided or ended it ([`Registry::remote`]: `Approved` or `Closed`, writing nothing), and the
//! callers of a request the store found already pending (on another replica, or, once stored,
//! on this one) follow that one instead ([`Registry::joined`], [`Registry::followed`]:
//! `Executing` or `Closed`). There the last caller leaving does not end a request: it leaves it
//! closed here and unremembered, and the store ends it or hands it to a replica where a caller
//! still waits ([`Event::Left`]; `follow.rs` for a request handed here).

mod decide;
mod event;
mod follow;
mod index;
mod remote;
mod slot;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, SystemTime};

use rustc_hash::FxHashMap;
use tokio::runtime::Handle;
use tokio::time::Instant;

pub(crate) use self::event::{Ack, Effects, Event, Resolved, Ruling};
use self::follow::Following;
use self::index::{Epoch, History, PendingIndex, Ticks};
pub(crate) use self::remote::Remote;
use self::slot::{Phase, Slot, Waiters};
use super::edit::Edits;
use super::rate::RateLimiter;
use crate::by_id::ById;
use crate::call::Edit;
use crate::error::{Error, ErrorKind};
use crate::id::RequestId;
use crate::request::{AccessRequest, Outcome, Status};
use crate::scope::Scope;

/// A parked caller: its request, its waiter key, and whether the request is new.
pub(crate) type Admitted = (Arc<AccessRequest>, usize, bool);

/// What a parked caller gets once its request is decided: the approval to run, with the edit
/// it was approved with if any, or the request's error.
pub(crate) type Decided = Result<Option<Arc<Edit>>, Error>;

/// What the registry knows of a request, before an approver's code is checked.
pub(crate) enum Known {
    /// Neither live nor remembered: the store may know it.
    Nowhere,
    /// Held here, pending or on its way out.
    Live(Arc<AccessRequest>),
    /// Decided, and remembered with where it ended.
    Remembered(Arc<AccessRequest>, Status),
}

/// The caps on pending requests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) per_principal: usize,
    pub(crate) total: usize,
    pub(crate) attempts: u32,
    /// Callers waiting on one request at once.
    pub(crate) waiters: usize,
}

pub(crate) struct Registry {
    /// By request id, hashed with FxHash: ids end in 80 random bits the gate chose, so nobody
    /// can pick ids that collide, and a lookup by a made-up id only probes.
    live: ById<Slot>,
    index: PendingIndex,
    /// Where the deadlines the registry keeps count from.
    epoch: Epoch,
    history: History,
    parked: usize,
    /// Requests made so far: the next request's `seq`.
    made: u64,
    /// Set by shutdown: no call is parked any more.
    shut: bool,
    /// How often each principal may open a new request, and so alert a person.
    alert_rate: Option<RateLimiter>,
    /// Whether the store is one replicas share: a request the last caller here leaves may live
    /// on for callers elsewhere, so whether it ends is the store's to say.
    shared: bool,
    /// Each request of another replica that callers here joined.
    followers: FxHashMap<RequestId, Following>,
    /// For each caller's request here that joined another replica's: the one it joined.
    follows: FxHashMap<RequestId, RequestId>,
    /// The callers' requests here running on the approval of a request handed to this process,
    /// with that request: the first of them to end records how.
    running: FxHashMap<RequestId, Arc<AccessRequest>>,
    /// How long a request waits before it is escalated, if the gate escalates.
    escalate_after: Option<Duration>,
    /// How much later an escalated request expires, if the escalation extends it.
    extension: Option<Duration>,
    /// When each request made here escalates, in order (one delay for all: creation order).
    /// Entries of requests decided since are dropped when they come due.
    escalations: VecDeque<(Ticks, RequestId)>,
    /// For each live request approvers may edit: its check of edits while it is pending, then the
    /// edit it was approved with, if any. Kept beside the slots, which stay small for the rest.
    edits: FxHashMap<RequestId, Editing>,
    /// For each live request several approvers must approve, the approvals counted so far.
    votes: FxHashMap<RequestId, Vec<Vote>>,
}

/// One approval of a request several approvers must approve, counted once its `endorsed`
/// entry is stored: who, and how far they let a rule reach (the approval that decides may reach
/// no further than any of them).
pub(crate) struct Vote {
    pub(crate) approver: Arc<str>,
    pub(crate) scope: Scope,
    /// When the rule they allowed ends (an end time, not a TTL: approvals come at different
    /// times); `None` for `once`.
    pub(crate) until: Option<SystemTime>,
}

impl Vote {
    /// `approver`'s approval `ruling` as a vote.
    pub(crate) fn of(approver: &Arc<str>, ruling: &Ruling) -> Self {
        Vote {
            approver: approver.clone(),
            scope: ruling.scope,
            until: ruling.rule.as_ref().map(|(rule, _)| rule.expires_at),
        }
    }
}

/// What the registry keeps for a request approvers may edit.
enum Editing {
    /// The check of an approver's edit, made by the middleware that parked the first caller.
    Open(Arc<dyn Edits>),
    /// The edit the request was approved with, for each of its callers to run.
    Made(Arc<Edit>),
}

/// The numbers behind [`Gate::stats`](crate::Gate::stats).
pub(crate) struct Counts {
    pub(crate) pending: usize,
    pub(crate) parked: usize,
    pub(crate) live: usize,
    pub(crate) following: usize,
}

fn not_found() -> Error {
    Error::new(ErrorKind::AccessRequestNotFound)
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

impl Registry {
    pub(crate) fn new(history: usize, alert_rate: Option<RateLimiter>) -> Self {
        Registry {
            live: Default::default(),
            index: PendingIndex::default(),
            epoch: Epoch::now(),
            history: History::new(history),
            parked: 0,
            made: 0,
            shut: false,
            alert_rate,
            shared: false,
            followers: Default::default(),
            follows: Default::default(),
            running: Default::default(),
            escalate_after: None,
            extension: None,
            escalations: VecDeque::new(),
            edits: Default::default(),
            votes: Default::default(),
        }
    }

    /// For a store replicas share (see the field).
    pub(crate) fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// Escalates every request still pending `after` it was made, and then gives it
    /// `extension` more before it expires.
    pub(crate) fn escalate_after(
        mut self,
        after: Option<Duration>,
        extension: Option<Duration>,
    ) -> Self {
        self.escalate_after = after;
        self.extension = extension;
        self
    }

    /// Parks a caller on the pending request for an identical call, or on `request`, a new one.
    /// Returns the request, the waiter's key, and whether the request is new. Joining a pending
    /// request alerts nobody, so only a new request counts against the caps and the alert rate;
    /// a join counts only against the cap on callers waiting on one request. A new request is
    /// written to the store before anyone hears of it. A new request approvers may edit keeps
    /// `edits`, the check of their edits.
    pub(crate) fn admit(
        &mut self,
        request: AccessRequest,
        now: Instant,
        deadline: Instant,
        runtime: Handle,
        limits: Limits,
        edits: Option<Arc<dyn Edits>>,
    ) -> (Result<Admitted, Error>, Effects) {
        let mut effects = Effects::default();
        if self.shut {
            return (Err(Error::new(ErrorKind::ShutDown)), effects);
        }
        if let Some(pending) = self.index.joinable(&request) {
            let id = &pending.id;
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
        let mut request = request;
        let principal_pending = match self.index.per_principal.get_key_value(&request.principal) {
            Some((principal, &pending)) => {
                // The pending requests of one principal share one copy of its name.
                request.principal = principal.clone();
                pending
            }
            None => 0,
        };
        if self.index.total >= limits.total || principal_pending >= limits.per_principal {
            return (Err(Error::new(ErrorKind::TooManyPending)), effects);
        }
        if let Some(rate) = &mut self.alert_rate
            && !rate.take(&request.principal, now)
        {
            return (Err(Error::new(ErrorKind::TooManyAlerts)), effects);
        }
        self.index.share_capability(&mut request.capability);
        let request = Arc::new(request);
        let deadline = self.epoch.ticks(deadline);
        effects.alarm = self.index.enter(&request, deadline);
        if let Some(after) = self.escalate_after {
            // The first escalation waiting: the expiry task may sleep past it.
            effects.alarm |= self.escalations.is_empty();
            let at = self.epoch.ticks(now + after);
            self.escalations.push_back((at, request.id));
        }
        let mut slot = Slot {
            request: request.clone(),
            seq: self.made,
            deadline,
            runtime,
            phase: Phase::Pending,
            stored: false,
            joined: false,
            waiters: Waiters::default(),
            attached: 0,
            wrong_codes: 0,
        };
        let key = slot.attach();
        self.made += 1;
        self.parked += 1;
        if self.live.insert_new(slot).is_err() {
            unreachable!("request ids are unique");
        }
        if let Some(edits) = edits.filter(|_| request.editable) {
            self.edits.insert(request.id, Editing::Open(edits));
        }
        effects.events.push(Event::Requested(request.clone()));
        (Ok((request, key, true)), effects)
    }

    /// The store has request `id` (`true`), or could not take it. Returns whether it should now
    /// be announced; a request the store refused fails its callers with `store_failed`.
    pub(crate) fn stored(&mut self, id: RequestId, stored: bool) -> (bool, Effects) {
        let Some(slot) = self.live.get_mut(&id) else {
            return (false, Effects::default());
        };
        if stored {
            slot.stored = true;
            if self.shared {
                // Another replica may decide it from now on: a later identical call here joins
                // it through the store, with a ticket of its own, as on any other replica.
                self.index.unjoinable(&slot.request);
            }
            (matches!(slot.phase, Phase::Pending), Effects::default())
        } else {
            (false, self.close(id, Outcome::StoreFailed))
        }
    }

    /// The check of edits of pending request `id`, if it is held here and approvers may edit it.
    pub(crate) fn edits(&self, id: RequestId) -> Option<Arc<dyn Edits>> {
        match self.edits.get(&id)? {
            Editing::Open(edits) => Some(edits.clone()),
            Editing::Made(_) => None,
        }
    }

    /// A waiter looks at its request: `Ok` once an approval is its to run (with the edit it was
    /// approved with, if any), the request's error once it is closed. A waiter that gets `Ready`
    /// is detached.
    pub(crate) fn poll(
        &mut self,
        id: RequestId,
        key: usize,
        waker: &Waker,
    ) -> (Poll<Decided>, Effects) {
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
                let ruling = slot
                    .phase
                    .take(|p| matches!(p, Phase::Approved(_)))
                    .expect("just seen");
                effects.events.push(Event::Taken {
                    request: slot.request.clone(),
                    rule: ruling.rule.as_ref().map(|(rule, _)| Box::new(rule.clone())),
                });
                slot.phase = Phase::Taking(ruling);
                slot.register(key, waker);
                return (Poll::Pending, effects);
            }
            Phase::Executing { unreceived, .. } => {
                // The first caller to resume receives the approval: the approver hears so now.
                if let Some(ruling) = unreceived.take() {
                    effects.rule = ruling.rule;
                    effects.ack = Some((ruling.ack, Ok(())));
                    effects.resolved = Some(slot.resolved(ruling.outcome));
                }
                let edit = match slot.request.editable.then(|| self.edits.get(&id)).flatten() {
                    Some(Editing::Made(edit)) => Some(edit.clone()),
                    _ => None,
                };
                Ok(edit)
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
    /// `store_failed`, and the approver hears `error`.
    pub(crate) fn taken(&mut self, id: RequestId, result: Result<(), Error>) -> Effects {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            return effects;
        };
        let Some(ruling) = slot.phase.take(|p| matches!(p, Phase::Taking(_))) else {
            return effects;
        };
        match result {
            Ok(()) if slot.attached == 0 => return self.unreceived(id, ruling),
            Ok(()) => {
                if let Some(edit) = &ruling.edit {
                    self.edits.insert(id, Editing::Made(edit.clone()));
                }
                slot.phase = Phase::Executing {
                    finished: None,
                    unreceived: Some(ruling),
                };
                effects.wake.extend(slot.wakers());
            }
            Err(error) => {
                effects.ack = Some((ruling.ack, Err(error.with_request(id))));
                effects.wake.extend(slot.wakers());
                slot.closed(Status::Approved, Outcome::StoreFailed, &mut effects);
            }
        }
        self.retire_if_done(id);
        effects
    }

    /// A waiter went away without taking a decision. The last one to leave a pending request
    /// cancels it; the last one to leave an untaken approval turns it into a cancellation. While a
    /// store write is under way, the write's completion decides instead.
    pub(crate) fn leave(&mut self, id: RequestId, key: usize) -> Effects {
        let Some(slot) = self.live.get_mut(&id) else {
            return Effects::default();
        };
        slot.detach(key);
        self.parked -= 1;
        if slot.attached == 0 {
            match &mut slot.phase {
                Phase::Pending => return self.left(id),
                Phase::Approved(_) => {
                    let ruling = slot.phase.take(|p| matches!(p, Phase::Approved(_)));
                    return self.cancel(id, Status::Approved, ruling.expect("just seen"));
                }
                Phase::Executing { unreceived, .. } => {
                    if let Some(ruling) = unreceived.take() {
                        return self.unreceived(id, ruling);
                    }
                }
                _ => {}
            }
        }
        self.retire_if_done(id);
        Effects::default()
    }

    /// The last caller here left pending request `id`. With a store replicas share, callers on
    /// other replicas may still wait on it, so the store says whether it ends ([`Event::Left`]);
    /// it is not remembered here, since it may live on elsewhere. Otherwise it ends cancelled.
    pub(super) fn left(&mut self, id: RequestId) -> Effects {
        let Some(slot) = self.live.get_mut(&id).filter(|_| self.shared) else {
            return self.close(id, Outcome::Cancelled);
        };
        if slot.joined {
            return self.close(id, Outcome::Cancelled);
        }
        self.index.leave(&slot.request);
        slot.phase = Phase::Closed(Box::new(Outcome::Cancelled));
        let mut effects = Effects::default();
        effects.events.push(Event::Left {
            request: slot.request.clone(),
            holding: true,
        });
        self.retire(id, false);
        effects
    }

    /// An approval stored as executing that no caller received, because every caller left first:
    /// it ends cancelled, the approver is told so, and its rule is withdrawn.
    fn unreceived(&mut self, id: RequestId, ruling: Box<Ruling>) -> Effects {
        let withdrawn = ruling.rule.as_ref().map(|(rule, _)| rule.id);
        let mut effects = self.cancel(id, Status::Executing, ruling);
        effects.events.extend(withdrawn.map(Event::Withdrawn));
        effects
    }

    /// An approval nobody can take any more: the request ends cancelled, and the approver is told.
    fn cancel(&mut self, id: RequestId, from: Status, ruling: Box<Ruling>) -> Effects {
        let mut effects = Effects::default();
        let slot = self.live.get_mut(&id).expect("just seen");
        let cancelled = Error::new(ErrorKind::AccessRequestCancelled).with_request(id);
        effects.ack = Some((ruling.ack, Err(cancelled)));
        slot.closed(from, Outcome::Cancelled, &mut effects);
        self.retire_if_done(id);
        effects
    }

    /// Expires the request if it is still pending at `now`.
    pub(crate) fn expire(&mut self, id: RequestId, now: Instant) -> Effects {
        match self.live.get(&id) {
            Some(slot)
                if matches!(slot.phase, Phase::Pending)
                    && self.epoch.ticks(now) >= slot.deadline =>
            {
                self.close(id, Outcome::Expired)
            }
            _ => Effects::default(),
        }
    }

    /// Takes the first request whose deadline has passed off the deadline list and expires it
    /// if it is still pending. Returns whether there was one: the caller asks again until not.
    pub(crate) fn expire_next(&mut self, now: Instant) -> (bool, Effects) {
        match self.index.due(self.epoch.ticks(now)) {
            Some(id) => (true, self.expire(id, now)),
            None => (false, Effects::default()),
        }
    }

    /// The next request due for escalation at `now` that is still pending, taken off the
    /// escalation list with those ahead of it that ended before theirs.
    pub(crate) fn escalate_next(&mut self, now: Instant) -> Option<Arc<AccessRequest>> {
        let now = self.epoch.ticks(now);
        while let Some(&(at, id)) = self.escalations.front() {
            if at > now {
                return None;
            }
            self.escalations.pop_front();
            if let Some(slot) = self.live.get_mut(&id)
                && matches!(slot.phase, Phase::Pending)
            {
                if let Some(by) = self.extension {
                    // A later expiry: a new request in the slot and on the deadline list, whose
                    // code binds the expiry it was made with.
                    let mut extended = (*slot.request).clone();
                    extended.expires_at = extended.expires_at + by;
                    extended.extended_secs = u32::try_from(by.as_secs()).unwrap_or(u32::MAX);
                    let extended = Arc::new(extended);
                    let deadline = self.epoch.ticks(self.epoch.instant(slot.deadline) + by);
                    self.index.postpone(id, deadline);
                    slot.request = extended;
                    slot.deadline = deadline;
                }
                return Some(slot.request.clone());
            }
        }
        None
    }

    /// The earliest deadline or escalation of a pending request, for the expiry task (it may
    /// belong to a request that ended since: the task then finds nothing to do).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let deadline = self.index.next_deadline();
        let escalation = self.escalations.front().map(|&(at, _)| at);
        let next = match (deadline, escalation) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.epoch.instant(next))
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
        self.index.leave(&slot.request);
        effects.wake.extend(slot.wakers());
        if slot.joined {
            // The callers of one that joined another replica's request leave it.
            slot.phase = Phase::Closed(Box::new(outcome.clone()));
            effects.merge(self.unfollow(id, &outcome));
        } else if outcome == Outcome::StoreFailed {
            // A request the store never took was never announced, so there is nobody to tell.
            slot.phase = Phase::Closed(Box::new(outcome));
        } else {
            slot.closed(Status::Pending, outcome, &mut effects);
        }
        self.retire_if_done(id);
        effects
    }

    /// Parks no call from now on, and returns the requests still pending, for the gate to close
    /// as abandoned one by one. Decisions and takes already being written finish as usual.
    pub(crate) fn shut_down(&mut self) -> Vec<RequestId> {
        self.shut = true;
        self.live
            .values()
            .filter(|slot| matches!(slot.phase, Phase::Pending))
            .map(|slot| slot.request.id)
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
            if slot.joined {
                // The replica that holds the request it joined records how that ended.
                return self.finished_following(id, status).unwrap_or_default();
            }
            slot.request.clone()
        } else if !self.running.is_empty()
            && let Some(effects) = self.finished_following(id, status)
        {
            return effects;
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
        effects.events.push(Event::Finished { request, status });
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

    /// The pending requests and parked callers, for the gauges: two fields, no scan.
    #[cfg(feature = "metrics")]
    pub(crate) fn load(&self) -> (usize, usize) {
        (self.index.total, self.parked)
    }

    pub(crate) fn counts(&self) -> Counts {
        // A scan, but only of live requests, and only when someone asks for the numbers.
        let following = self
            .live
            .values()
            .filter(|slot| slot.joined && matches!(slot.phase, Phase::Pending))
            .count();
        Counts {
            pending: self.index.total - following,
            parked: self.parked,
            live: self.live.len(),
            following,
        }
    }

    /// Moves a request nobody waits on any more from the live table to the history.
    fn retire_if_done(&mut self, id: RequestId) {
        if let Some(slot) = self.live.get(&id)
            && slot.attached == 0
            && !matches!(slot.phase, Phase::Pending)
            && !slot.phase.in_flight()
        {
            // A request that joined another replica's is not remembered: nobody knows its id,
            // and the replica that holds the one it joined records how it ends.
            let remember = !slot.joined;
            self.retire(id, remember);
        }
    }

    /// Moves request `id` out of the live table, into the history if `remember`.
    // On the path of every call that parks: inlined into `retire_if_done`.
    #[inline(always)]
    fn retire(&mut self, id: RequestId, remember: bool) {
        let Some(slot) = self.live.remove(&id) else {
            return;
        };
        if slot.request.editable {
            self.edits.remove(&id);
        }
        if slot.request.quorum > 1 {
            self.votes.remove(&id);
        }
        if slot.joined {
            self.follows.remove(&id);
        }
        if remember {
            self.history.insert(slot.request, slot.phase.status());
        }
    }
}
