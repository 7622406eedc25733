//! What follows a registry transition, outside its lock: callers woken, the approver answered, a
//! rule filed, notifiers told; and the alert that announces a new request.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Waker};

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tracing::Instrument as _;

use super::Shared;
use super::record;
use super::registry::{Effects, Resolved};
use crate::id::RequestId;
use crate::notify::{Alert, Resolution};
use crate::request::{AccessRequest, Outcome};

/// Counts notifier deliveries under way: shutdown waits until none is left. Each is bounded by
/// the notify timeout.
#[derive(Default)]
pub(super) struct Deliveries {
    running: AtomicUsize,
    idle: Notify,
}

impl Deliveries {
    /// Returns once no delivery is under way.
    pub(super) async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Shared {
    /// Runs a notifier delivery for request `id` on `runtime`, counted, so that shutdown can
    /// wait for it; once it waits, inside the request's span, so that whatever a notifier logs
    /// names the request.
    pub(super) fn deliver(
        self: &Arc<Self>,
        runtime: &Handle,
        id: RequestId,
        delivery: impl Future<Output = ()> + Send + 'static,
    ) {
        /// Counts the delivery as ended however it ends: finished, panicked, or dropped.
        struct Running(Arc<Shared>);
        impl Drop for Running {
            fn drop(&mut self) {
                if self.0.deliveries.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.0.deliveries.idle.notify_waiters();
                }
            }
        }
        self.deliveries.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(self.clone());
        // Polled once on the spot: a delivery every notifier finishes at once (a channel send,
        // a notifier with nothing to do on resolution) needs no task of its own, and logs
        // nothing the request id is not already a field of.
        let mut delivery = Box::pin(delivery);
        let mut cx = Context::from_waker(Waker::noop());
        if delivery.as_mut().poll(&mut cx).is_ready() {
            return;
        }
        // One that waits (a retry, a slow server) logs in the request's span.
        let delivery = delivery.instrument(request_span(id));
        runtime.spawn(async move {
            let _running = running;
            delivery.await;
        });
    }

    /// Tells the notifiers about requests an earlier process left unfinished; once, inside a
    /// runtime.
    pub(super) fn announce_abandoned(self: &Arc<Self>) {
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        let abandoned = std::mem::take(
            &mut *self
                .unannounced
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for request in abandoned {
            self.resolved(Resolved {
                runtime: runtime.clone(),
                request: Arc::new(request),
                outcome: Outcome::Abandoned,
            });
        }
    }

    /// Carries out a transition's effects, outside the registry lock. A rule is filed before the
    /// approver hears of success, so a rule exists whenever `approve` says it does.
    pub(super) fn apply(self: &Arc<Self>, effects: Effects) {
        let Effects {
            wake,
            rule,
            ack,
            resolved,
            alarm,
            events: _,
        } = effects;
        if alarm {
            self.alarm.notify_one();
        }
        let changed = !wake.is_empty() || rule.is_some() || ack.is_some() || resolved.is_some();
        if let Some((rule, deadline)) = rule {
            tracing::info!(
                rule_id = %rule.id,
                effect = ?rule.effect,
                scope = %rule.scope,
                capability = ?rule.capability,
                granted_by = ?rule.granted_by,
                "rule granted"
            );
            self.rules_mut().insert(rule, deadline);
        }
        if let Some((ack, result)) = ack {
            let _ = ack.send(result);
        }
        for waker in wake {
            waker.wake();
        }
        if let Some(resolved) = resolved {
            self.resolved(resolved);
        }
        if changed {
            self.announce();
        }
    }

    pub(super) fn resolved(
        self: &Arc<Self>,
        Resolved {
            runtime,
            request,
            outcome,
        }: Resolved,
    ) {
        let id = request.id;
        crate::meters::resolved(&request, &outcome);
        match &outcome {
            Outcome::Approved {
                approver, scope, ..
            } => {
                tracing::info!(request_id = %id, ?approver, %scope, "access request approved")
            }
            Outcome::Denied { approver, reason } => {
                tracing::info!(request_id = %id, ?approver, reason = reason.as_deref(), "access request denied")
            }
            Outcome::TooManyAttempts => {
                tracing::warn!(request_id = %id, "access request denied: too many attempts")
            }
            Outcome::Expired => tracing::info!(request_id = %id, "access request expired"),
            Outcome::Cancelled => tracing::info!(request_id = %id, "access request cancelled"),
            Outcome::NotificationFailed => {
                tracing::warn!(request_id = %id, "access request failed: no notifier accepted the alert")
            }
            Outcome::Abandoned => {
                tracing::warn!(request_id = %id, "access request abandoned: the process that held it stopped")
            }
            Outcome::StoreFailed => {
                tracing::error!(request_id = %id, "access request failed: the store did not record it")
            }
        }
        let shared = self.clone();
        self.deliver(&runtime, id, async move {
            let resolution = Resolution::new(request, outcome);
            let resolution = &resolution;
            let notifiers = shared.notifiers();
            let report = notifiers
                .each(|notifier| notifier.on_resolved(resolution))
                .await;
            report.log("on_resolved", id);
        });
    }

    /// Alerts every notifier at once; if none accepts within the notify timeout, the request
    /// fails closed, unless the gate parks unnotified requests for pull approvals.
    pub(super) async fn alert(self: Arc<Self>, request: Arc<AccessRequest>) {
        let id = request.id;
        let alert = self.alert_of(&request);
        let alert = &alert;
        let notifiers = self.notifiers();
        let report = notifiers.each(|notifier| notifier.notify(alert)).await;
        report.log("notify", id);
        if report.accepted > 0 {
            tracing::debug!(request_id = %id, notifiers = report.accepted, "access request notified");
            self.write(record::notified(
                &request,
                report.accepted,
                self.settings.audit_args,
            ));
        } else if self.settings.park_unnotified {
            tracing::warn!(request_id = %id, "no notifier accepted the alert; the request waits for an approver to find it");
        } else {
            self.locked(|registry| ((), registry.close(id, Outcome::NotificationFailed)));
        }
    }

    /// The alert for `request`: its code, and for a quorum, each approver's.
    fn alert_of(&self, request: &Arc<AccessRequest>) -> Alert {
        let codes = (request.quorum > 1).then(|| {
            let approvers = request.approvers().unwrap_or_default();
            approvers
                .iter()
                .map(|a| (a.clone(), self.key.code_for(request, a)))
                .collect::<Box<[_]>>()
        });
        let codes = codes.map(Box::new);
        Alert::new(request.clone(), self.key.code(request), codes)
    }

    /// Alerts the escalation notifiers about `request`, still pending after the escalation
    /// delay, with the code the first alert carried; audited as `escalated` once one accepts.
    pub(super) fn escalate(self: &Arc<Self>, request: Arc<AccessRequest>) {
        let Some(notifiers) = self.escalation.clone() else {
            return;
        };
        let id = request.id;
        tracing::info!(request_id = %id, "access request escalated: nobody decided in time");
        let shared = self.clone();
        self.deliver(&Handle::current(), id, async move {
            let alert = shared.alert_of(&request);
            let alert = &alert;
            let report = notifiers.each(|notifier| notifier.notify(alert)).await;
            report.log("escalate", id);
            if report.accepted > 0 {
                let write =
                    record::escalated(&request, report.accepted, shared.settings.audit_args);
                shared.write(write);
            }
        });
    }
}

/// The span every event of a request's life is logged in, or names the request itself:
/// `access_request{request_id=areq_…}`.
pub(super) fn request_span(id: RequestId) -> tracing::Span {
    tracing::info_span!("access_request", request_id = %id)
}
