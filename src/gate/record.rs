//! What the registry's events write: each [`Event`] becomes one store write, a transition or an
//! insert with its audit entries, in the order the events happened.

use std::sync::Arc;
use std::time::SystemTime;

use super::registry::Event;
use crate::audit::{AuditEntry, AuditEvent};
use crate::id::RuleId;
use crate::request::{AccessRequest, Outcome, Status};
use crate::store::Transition;
use crate::time::to_millis;

/// One store write, and which registry step waits for it.
pub(super) enum Write {
    /// A new request: once stored, it may be announced.
    Insert(Arc<AccessRequest>, AuditEntry),
    /// A verified decision: once stored, it takes effect.
    Decide(Transition),
    /// A caller took an approval: once stored, the callers run.
    Take(Transition),
    /// A transition nobody waits for.
    Record(Transition),
    /// Audit entries that change no request.
    Append(AuditEntry),
    /// A rule filed for an approval nobody received, revoked again.
    Withdraw(RuleId),
}

/// The write `event` calls for; audit entries carry the arguments if `audit_args`.
pub(super) fn write(event: Event, audit_args: bool) -> Write {
    let audit = |event, request: &AccessRequest| entry(audit_args, event, request);
    match event {
        Event::Requested(request) => {
            let mut requested = audit(AuditEvent::Requested, &request);
            requested.reason = request.reason.clone();
            requested.detail = Some((*request.reasoning).into());
            Write::Insert(request, requested)
        }
        Event::CodeRejected {
            request,
            attempt,
            of,
            by,
        } => {
            tracing::warn!(request_id = %request.id, attempts = attempt, "wrong verification code");
            if attempt >= of {
                tracing::warn!(request_id = %request.id, "access request locked after too many wrong codes");
            }
            let mut rejected = audit(AuditEvent::CodeRejected, &request);
            rejected.approver = Some(by);
            rejected.detail = Some(format!("wrong code {attempt} of {of}").into());
            Write::Append(rejected)
        }
        Event::Decided {
            request,
            outcome,
            scope,
            rule,
        } => {
            let (event, approver, reason) = match &outcome {
                Outcome::Approved { approver, .. } => (AuditEvent::Approved, approver, &None),
                Outcome::Denied { approver, reason } => (AuditEvent::Denied, approver, reason),
                _ => unreachable!("a person's decision approves or denies"),
            };
            let (approver, reason) = (approver.clone(), reason.clone());
            let mut decided = audit(event, &request);
            decided.approver = Some(approver.clone());
            decided.reason = reason.clone();
            decided.scope = Some(scope);
            let to = outcome.status();
            let mut write = step(decided, Status::Pending, to, Some(outcome));
            // A denial's remembered rule is filed at once; an approval's when it is taken.
            if let Some(rule) = rule {
                let mut granted =
                    AuditEntry::for_rule(AuditEvent::RuleGranted, write.audit[0].at, &rule);
                granted.approver = Some(approver);
                granted.reason = reason;
                write.audit.push(granted);
                write.rule = Some(rule);
            }
            Write::Decide(write)
        }
        Event::Taken { request, rule } => {
            let executing = audit(AuditEvent::Executing, &request);
            let at = executing.at;
            let mut take = step(executing, Status::Approved, Status::Executing, None);
            if let Some(rule) = rule {
                let mut granted = AuditEntry::for_rule(AuditEvent::RuleGranted, at, &rule);
                granted.approver = Some(rule.granted_by.clone());
                take.audit.push(granted);
                take.rule = Some(rule);
            }
            Write::Take(take)
        }
        Event::Closed {
            request,
            from,
            outcome,
        } => {
            let mut closed = audit(event_of(&outcome), &request);
            closed.detail = match &outcome {
                Outcome::TooManyAttempts => Some("too many wrong verification codes".into()),
                Outcome::NotificationFailed => Some("no notifier accepted the alert".into()),
                Outcome::Abandoned => Some("the gate shut down before anyone decided".into()),
                _ => None,
            };
            let to = outcome.status();
            Write::Record(step(closed, from, to, Some(outcome)))
        }
        Event::Finished { request, status } => {
            let event = if status == Status::Executed {
                AuditEvent::Executed
            } else {
                AuditEvent::Failed
            };
            let finished = audit(event, &request);
            Write::Record(step(finished, Status::Executing, status, None))
        }
        Event::Withdrawn(rule) => Write::Withdraw(rule),
    }
}

/// The `notified` entry: `accepted` notifiers took the alert for `request`.
pub(super) fn notified(request: &AccessRequest, accepted: usize, audit_args: bool) -> Write {
    let mut notified = entry(audit_args, AuditEvent::Notified, request);
    notified.detail = Some(format!("accepted by {accepted} notifier(s)").into());
    Write::Append(notified)
}

/// The store transition of a request from `from` to `to`, with one audit entry.
fn step(entry: AuditEntry, from: Status, to: Status, outcome: Option<Outcome>) -> Transition {
    Transition {
        id: entry.request.expect("request entries name their request"),
        from,
        to,
        outcome,
        rule: None,
        audit: vec![entry],
        verdict: None,
    }
}

/// An audit entry about `request`, now; with its arguments if `audit_args`.
fn entry(audit_args: bool, event: AuditEvent, request: &AccessRequest) -> AuditEntry {
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
