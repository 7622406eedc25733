//! Replicas: what other processes sharing the store did, carried out here.
//!
//! A store replicas share ([`Store::shared`](crate::store::Store::shared)) hands the gate a feed
//! of [`Change`]s. One task per gate applies them in order: rules filed elsewhere join the rule
//! table (if their seal verifies), revoked ones leave it, a decision on a request whose callers
//! wait here moves them on (an approval only if its verdict's seal verifies), and an approver
//! here waiting for a caller elsewhere to take an approval hears how it went.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::registry::{Effects, Known, Remote, Resolved, Ruling, already};
use super::rules::deadline_of;
use super::{Shared, verdict};
use crate::error::{Error, ErrorKind};
use crate::id::RequestId;
use crate::request::AccessRequest;
use crate::request::{Outcome, Status};
use crate::rule::Rule;
use crate::store::{Change, Store, Transition, is_finished};

/// How often an approver waiting for a caller on another replica re-reads the store, in case
/// the change that would have told it was lost.
pub(super) const RECHECK: Duration = Duration::from_secs(1);

impl Shared {
    /// Starts applying the store's changes: once, inside a runtime. The task ends with the gate.
    pub(super) fn follow(self: &Arc<Self>) {
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        let Some(mut changes) = self
            .feed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let shared = Arc::downgrade(self);
        runtime.spawn(async move {
            while let Some(change) = changes.recv().await {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.apply_change(change);
            }
        });
    }

    fn apply_change(self: &Arc<Self>, change: Change) {
        match change {
            Change::RuleGranted(rule) => self.file_remote_rule(rule),
            Change::RuleRevoked(id) => {
                if let Some(rule) = self.rules_mut().remove(id) {
                    tracing::info!(rule_id = %id, capability = ?rule.capability, "rule revoked on another replica");
                }
            }
            Change::Request {
                id,
                status,
                outcome,
                verdict,
            } => {
                self.settle(id, status);
                self.apply_remote(id, status, outcome, verdict.as_deref());
            }
            Change::HandedOver(id) => self.handed_over(id),
            Change::Abandoned(request) => {
                let id = request.id;
                self.settle(id, Status::Abandoned);
                // Callers here that joined it end too: the change this process wrote when it
                // abandoned the request does not come back to it on the feed.
                self.locked(|registry| {
                    let mut effects = registry.remote(id, Remote::Closed(Outcome::Abandoned));
                    let abandoned = Outcome::Abandoned;
                    effects.merge(registry.followed(
                        id,
                        abandoned.status(),
                        Some(&abandoned),
                        false,
                    ));
                    ((), effects)
                });
                self.resolved(Resolved {
                    runtime: Handle::current(),
                    request: Arc::new(request),
                    outcome: Outcome::Abandoned,
                });
            }
        }
        self.announce();
    }

    /// A rule another replica filed: honoured only if its seal verifies.
    fn file_remote_rule(self: &Arc<Self>, rule: Rule) {
        if !self.seals.verifies(&rule) {
            self.reject(&rule);
            return;
        }
        let Some(deadline) = deadline_of(&rule) else {
            return;
        };
        tracing::info!(rule_id = %rule.id, effect = ?rule.effect, scope = %rule.scope, capability = ?rule.capability, "rule granted on another replica");
        self.rules_mut().insert(rule, deadline);
    }

    /// Carries out what the store holds for request `id` on its callers here, if they wait here:
    /// an approval whose verdict verifies, or an ending.
    pub(super) fn apply_remote(
        self: &Arc<Self>,
        id: RequestId,
        status: Status,
        outcome: Option<Outcome>,
        verdict: Option<&str>,
    ) {
        // A verdict binds the request's seal: the one checked when callers here joined it, or,
        // for a request made here, the seal of the request as this process holds it. Callers
        // that joined run only on a verdict stored after their joins: one that binds every
        // one of their tickets.
        let known = {
            let registry = self.registry();
            registry.joined_seal(id).or_else(|| {
                registry
                    .pending_request(id)
                    .map(|r| (self.seals.request_seal(&r), Vec::new()))
            })
        };
        let open = || {
            let ((asked, tickets), verdict) = (known.as_ref()?, verdict?);
            let opened = verdict::open(&self.seals, id, asked, verdict)?;
            if !tickets.iter().all(|ticket| opened.binds(ticket)) {
                tracing::warn!(request_id = %id, "a verdict made before callers here joined is not honoured for them");
                return None;
            }
            Some((opened.outcome, opened.rule))
        };
        // Callers here that joined the request run only on a verified approval.
        let taken = matches!(
            status,
            Status::Executing | Status::Executed | Status::Failed
        );
        // Opened once, and only where a verdict counts: an approval, or its being taken.
        let opened = (taken || status == Status::Approved).then(open).flatten();
        let approved = taken && matches!(opened, Some((Outcome::Approved { .. }, _)));
        // Approved, and handed to this process for the callers here that joined it: taken here.
        if status == Status::Approved
            && let Some((outcome @ Outcome::Approved { .. }, rule)) = opened.clone()
        {
            self.locked(|registry| ((), registry.carry(id, outcome, rule)));
        }
        self.locked(|registry| {
            (
                (),
                registry.followed(id, status, outcome.as_ref(), approved),
            )
        });
        let remote = match (status, outcome) {
            (Status::Approved, _) => {
                let Some((outcome @ Outcome::Approved { scope, .. }, rule)) = opened else {
                    if self.registry().pending_request(id).is_some() {
                        tracing::warn!(request_id = %id, "approval not honoured: its verdict is missing or its seal does not verify");
                    }
                    return;
                };
                let rule = rule.and_then(|rule| deadline_of(&rule).map(|d| (rule, d)));
                Remote::Approved(Box::new(Ruling {
                    outcome,
                    scope,
                    rule,
                    ack: oneshot::channel().0,
                    verdict: None,
                    edit: None,
                }))
            }
            (status, Some(outcome)) if is_finished(status) && outcome.status() == status => {
                Remote::Closed(outcome)
            }
            _ => return,
        };
        self.locked(|registry| ((), registry.remote(id, remote)));
    }

    /// In a store replicas share, this process's decision `change` was not stored. If callers
    /// of other replicas joined the request meanwhile, an approval is sealed again over their
    /// tickets and stored. Otherwise another replica decided it first: the approver here hears
    /// where it stands, and the decision that won is carried out on the callers here.
    pub(super) async fn decided_elsewhere(
        self: &Arc<Self>,
        store: &dyn Store,
        mut change: Transition,
    ) {
        let id = change.id;
        let mut now = store.request(id).await;
        for _ in 0..verdict::RESEALS {
            let Ok(Some(stored)) = &now else { break };
            let Some(sealed) = change.sealed.as_deref_mut() else {
                break;
            };
            if stored.status != Status::Pending || sealed.tickets == stored.tickets {
                break;
            }
            let Known::Live(request) = self.registry().look(id) else {
                break;
            };
            let Some(resealed) =
                verdict::reseal(&self.seals, &request, &sealed.verdict, &stored.tickets)
            else {
                break;
            };
            sealed.verdict = resealed;
            sealed.tickets.clone_from(&stored.tickets);
            match store.transition(&change).await {
                Ok(true) => {
                    let at = tokio::time::Instant::now();
                    self.locked(|registry| ((), registry.decided(id, Ok(()), at)));
                    return;
                }
                Ok(false) => now = store.request(id).await,
                Err(error) => now = Err(error),
            }
        }
        let result = match &now {
            Ok(Some(stored)) if stored.status == Status::Pending => {
                Err(Error::new(ErrorKind::StoreFailed)
                    .with_request(id)
                    .with_detail("identical calls kept joining the request; try again"))
            }
            Ok(Some(stored)) => Err(already(stored.status, id)),
            Ok(None) => Err(Error::new(ErrorKind::AccessRequestNotFound).with_request(id)),
            Err(error) => Err(Error::new(ErrorKind::StoreFailed)
                .with_request(id)
                .with_detail(format!(
                    "another replica decided first; reading it back failed: {error}"
                ))),
        };
        let at = tokio::time::Instant::now();
        self.locked(|registry| ((), registry.decided(id, result, at)));
        if let Ok(Some(now)) = now {
            self.apply_remote(id, now.status, now.outcome, now.verdict.as_deref());
        }
    }

    /// This process ended request `closing.id` (expired, cancelled) for its callers, but the
    /// store had it decided by another replica first. An approval there, which nobody will take
    /// now that the callers here are gone, is ended the way they were, so that the store, the
    /// approver waiting elsewhere and the callers agree; any other ending stands as stored.
    pub(super) async fn closed_elsewhere(self: &Arc<Self>, store: &dyn Store, closing: Transition) {
        let id = closing.id;
        let stored = match store.request(id).await {
            Ok(Some(stored)) => stored.status,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(request_id = %id, %error, "an ending this process recorded was not stored, and the store could not be read back");
                return;
            }
        };
        if stored != Status::Approved {
            tracing::warn!(request_id = %id, ended_here = %closing.to, stored = %stored, "another replica ended the request first");
            return;
        }
        let ended = Transition {
            from: Status::Approved,
            ..closing
        };
        match store.transition(&ended).await {
            Ok(true) => {
                tracing::warn!(request_id = %id, ended = %ended.to, "an approval made on another replica after the callers here ended is ended as they were");
            }
            Ok(false) => {
                tracing::warn!(request_id = %id, "another replica moved the request on meanwhile");
            }
            Err(error) => {
                tracing::error!(request_id = %id, %error, "an untaken approval could not be ended as its callers were");
            }
        }
    }

    /// Files a new request in a store replicas share: `Ok(true)` if it was filed; `Ok(false)` if
    /// an identical request another replica holds was pending, and its callers here joined that
    /// one instead (following it from now on, and at once if it moved on meanwhile).
    pub(super) async fn file_or_join(
        self: &Arc<Self>,
        store: &dyn Store,
        request: &AccessRequest,
        audit: &[crate::audit::AuditEntry],
    ) -> Result<bool, Error> {
        let seal = crate::hex::lower(&self.seals.request_seal(request));
        // The ticket of this join, if it is one: fresh, so no verdict stored before it binds it.
        let ticket = crate::hex::lower(&crate::id::random_bits());
        let Some(other) = store.insert_or_join(request, &seal, &ticket, audit).await? else {
            return Ok(true);
        };
        let id = request.id;
        let asked = self.seals.request_seal(&other.request);
        let sealed = self
            .seals
            .request_verifies(&other.request, other.seal.as_deref());
        if !(sealed && same_call(request, &other.request)) {
            self.reject_request(&other.request);
            return Err(Error::new(ErrorKind::StoreUnreadable)
                .with_request(id)
                .with_detail(format!(
                    "the identical request pending in the store, {}, is not sealed by this gate's secret as this very call; it was not joined",
                    other.request.id
                )));
        }
        tracing::debug!(request_id = %id, joined = %other.request.id, "call joined an identical request on another replica");
        let request = Arc::new(other.request);
        let other = request.id;
        self.locked(|registry| {
            registry.joined(id, request, asked, ticket.into());
            ((), Effects::default())
        });
        if let Ok(Some(now)) = store.request(other).await {
            self.apply_remote(other, now.status, now.outcome, now.verdict.as_deref());
        }
        Ok(false)
    }

    /// An approver here waits for request `id`'s callers on another replica to take the approval:
    /// the receiver hears the status that settles it.
    pub(super) fn await_settled(&self, id: RequestId) -> oneshot::Receiver<Status> {
        let (tx, rx) = oneshot::channel();
        self.elsewhere
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_default()
            .push(tx);
        rx
    }

    /// Tells the approvers waiting on request `id` that it reached `status`, if that settles an
    /// approval.
    pub(super) fn settle(&self, id: RequestId, status: Status) {
        if !settles(status) {
            return;
        }
        let waiting = self
            .elsewhere
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        for waiter in waiting.into_iter().flatten() {
            let _ = waiter.send(status);
        }
    }
}

/// Whether `stored`, found pending in the store under `request`'s fingerprint, asks about the
/// very same call.
fn same_call(request: &AccessRequest, stored: &AccessRequest) -> bool {
    request.capability == stored.capability
        && request.principal == stored.principal
        && request.session == stored.session
        && request.args_digest == stored.args_digest
}

/// Whether an approval's request reaching `status` tells its approver how it went.
pub(super) fn settles(status: Status) -> bool {
    !matches!(status, Status::Pending | Status::Approved)
}

/// What the approver of a request that reached `status` hears: success once a caller took it.
pub(super) fn settled(id: RequestId, status: Status) -> Result<(), Error> {
    match status {
        Status::Executing | Status::Executed | Status::Failed => Ok(()),
        Status::Cancelled => Err(Error::new(ErrorKind::AccessRequestCancelled).with_request(id)),
        Status::Abandoned => Err(Error::new(ErrorKind::AccessRequestAbandoned)
            .with_request(id)
            .with_detail("the replica its callers waited on stopped")),
        status => Err(already(status, id)),
    }
}
