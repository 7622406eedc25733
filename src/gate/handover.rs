//! A request passed between replicas. It lives while a caller waits on it on any replica: when
//! the last caller on the replica holding it leaves, the store ends it only if no other replica
//! follows it, and otherwise hands it to one that does
//! ([`Store::leave`](crate::store::Store::leave)). The replica it is handed to takes its
//! approval for the callers there, runs them, and tells the notifiers how it ended.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::runtime::Handle;

use super::Shared;
use super::record::{self, Write};
use super::registry::{Effects, Event, Resolved};
use super::rules::deadline_of;
use super::writer::Job;
use crate::boxed::BoxFuture;
use crate::error::Error;
use crate::id::RequestId;
use crate::request::{AccessRequest, Outcome, Status};
use crate::store::{Left, Transition};

impl Shared {
    /// What the store did when the last caller here left `request`: the notifiers hear of a
    /// cancellation from here; a request callers here joined again stays here.
    pub(super) async fn left(
        self: &Arc<Self>,
        request: Arc<AccessRequest>,
        left: Result<Left, Error>,
    ) {
        let id = request.id;
        match left {
            Ok(Left::Cancelled) => self.resolved(Resolved {
                runtime: Handle::current(),
                request,
                outcome: Outcome::Cancelled,
            }),
            Ok(Left::HandedOver) => {
                tracing::info!(request_id = %id, "the last caller here left; the request passes to a replica where an identical call waits");
            }
            Ok(Left::Kept) => self.handed_over(id),
            Ok(left) => tracing::debug!(request_id = %id, ?left, "the last caller here left"),
            Err(error) => {
                tracing::error!(request_id = %id, %error, "the store did not hear that no caller here waits on the request any more");
            }
        }
    }

    /// Request `id`, which callers here joined, is this process's now (the last caller of the
    /// replica holding it left): an approval made before is taken for the callers here; with
    /// none of them left, it is left in turn.
    pub(super) fn handed_over(self: &Arc<Self>, id: RequestId) {
        let shared = self.clone();
        self.run(Job::Run(Box::pin(async move {
            let now = match shared.writer.store_ref().request(id).await {
                Ok(Some(now)) => now,
                Ok(None) => return,
                Err(error) => {
                    tracing::error!(request_id = %id, %error, "a request handed to this replica could not be read");
                    return;
                }
            };
            let left = now
                .request
                .expires_at()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let deadline = tokio::time::Instant::now() + left;
            if shared.locked(|registry| registry.handed(id, deadline)) {
                tracing::info!(request_id = %id, "request handed to this replica, where an identical call waits");
                shared.apply_remote(id, now.status, now.outcome, now.verdict.as_deref());
            } else {
                let request = Arc::new(now.request);
                let cancel = record::closed(
                    &request,
                    Status::Pending,
                    Outcome::Cancelled,
                    shared.settings.audit_args,
                );
                shared.write(Write::Leave(cancel, request, false));
            }
        })));
    }

    /// This process moved request `id` on in the store (decided, took, ended it). Callers here
    /// that joined it through the store (identical calls made after it was filed) hear of it as
    /// callers on other replicas do from the feed, which brings a process no word of its own
    /// writes: from the store, with its verdict, so that they run only on one that binds their
    /// tickets. `None` unless callers here joined it.
    // Off the path of a gate whose store is its own: kept out of `after`, which it would grow.
    #[inline(never)]
    pub(super) fn mirrored(self: &Arc<Self>, id: RequestId) -> Option<BoxFuture<'static, ()>> {
        self.registry().joined_seal(id)?;
        let shared = self.clone();
        Some(Box::pin(async move {
            let store = shared.writer.store_ref();
            if let Ok(Some(now)) = store.request(id).await {
                shared.apply_remote(id, now.status, now.outcome, now.verdict.as_deref());
            }
        }))
    }

    /// The store has (`Ok(true)`), or did not take, the approval of request `request` taken here
    /// for the callers that joined it, held here since another replica's callers left. Stored,
    /// they run and the notifiers hear of the approval; with none left to run it, it ends
    /// cancelled and its rule is withdrawn.
    // As `mirrored`: only for a store replicas share.
    #[inline(never)]
    pub(super) fn carried(
        self: &Arc<Self>,
        take: Transition,
        request: Arc<AccessRequest>,
        outcome: Outcome,
        result: Result<bool, Error>,
    ) -> Option<BoxFuture<'static, ()>> {
        let id = request.id;
        match result {
            Ok(true) => {
                let rule = take.rule.map(|rule| *rule);
                let runtime = Handle::current();
                let ran = self.locked(|registry| {
                    if registry.joined_seal(id).is_none() {
                        let mut effects = Effects::default();
                        effects.events.push(Event::Closed {
                            request: request.clone(),
                            from: Status::Executing,
                            outcome: Outcome::Cancelled,
                        });
                        effects
                            .events
                            .extend(rule.map(|rule| Event::Withdrawn(rule.id)));
                        effects.resolved = Some(Resolved {
                            runtime,
                            request,
                            outcome: Outcome::Cancelled,
                        });
                        return (false, effects);
                    }
                    let mut effects = registry.followed(id, Status::Executing, None, true);
                    effects.rule = rule.and_then(|rule| deadline_of(&rule).map(|d| (rule, d)));
                    effects.resolved = Some(Resolved {
                        runtime,
                        request,
                        outcome,
                    });
                    (true, effects)
                });
                // An approver waiting here hears at once: the feed brings this process no word
                // of its own writes.
                let settled = if ran {
                    Status::Executing
                } else {
                    Status::Cancelled
                };
                self.settle(id, settled);
                None
            }
            Ok(false) => {
                let shared = self.clone();
                Some(Box::pin(async move {
                    let store = shared.writer.store_ref();
                    if let Ok(Some(now)) = store.request(id).await {
                        shared.apply_remote(id, now.status, now.outcome, now.verdict.as_deref());
                    }
                }))
            }
            Err(error) => {
                tracing::error!(request_id = %id, %error, "approved call failed: not recorded");
                let failed = Outcome::StoreFailed;
                self.locked(|registry| {
                    (
                        (),
                        registry.followed(id, failed.status(), Some(&failed), false),
                    )
                });
                None
            }
        }
    }
}
