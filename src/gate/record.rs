//! What the registry's events write: each [`Event`] becomes one store write, a transition or an
//! insert with its audit entries, in the order the events happened.

use std::sync::Arc;
use std::time::SystemTime;

use super::registry::{Event, Vote};
use crate::args::{ArgsDigest, canonical_json};
use crate::audit::{AuditEntry, AuditEvent};
use crate::call::Edit;
use crate::id::RuleId;
use crate::request::{AccessRequest, Outcome, Status};
use crate::store::{self, Sealed, Transition};
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
    /// The last caller here left a pending request, in a store replicas share: the store ends
    /// it with this cancellation, or it lives on for callers elsewhere ([`Store::leave`]).
    ///
    /// [`Store::leave`]: crate::store::Store::leave
    Leave(Transition, Arc<AccessRequest>, bool),
    /// An approval taken for the callers here of a request handed to this process: once
    /// stored, they run.
    Carry(Transition, Box<(Arc<AccessRequest>, Outcome)>),
    /// Audit entries that change no request.
    Append(AuditEntry),
    /// A rule filed for an approval nobody received, revoked again.
    Withdraw(RuleId),
}

impl Write {
    /// The store write this is, for [`Store::write_batch`](crate::store::Store::write_batch):
    /// `None` for a withdrawal, a revocation of its own.
    pub(super) fn to_store(&self) -> Option<store::Write<'_>> {
        Some(match self {
            Write::Insert(request, entry) => {
                store::Write::Insert(request, std::slice::from_ref(entry))
            }
            Write::Decide(change)
            | Write::Take(change)
            | Write::Record(change)
            | Write::Carry(change, _) => store::Write::Transition(change),
            Write::Append(entry) => store::Write::Append(std::slice::from_ref(entry)),
            Write::Withdraw(_) | Write::Leave(..) => return None,
        })
    }

    /// Whether it can be committed together with other writes: one that is a store write, but
    /// not, in a `shared` store, an insert (which may join another replica's request instead).
    pub(super) fn batched(&self, shared: bool) -> bool {
        match self {
            Write::Insert(..) if shared => false,
            write => write.to_store().is_some(),
        }
    }
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
        } => Write::Append(code_rejected(&request, Some(attempt), of, by, audit_args)),
        Event::Decided {
            request,
            outcome,
            scope,
            rule,
            carried,
        } => {
            let mut decision = decision(&request, outcome, scope, rule, audit_args);
            if let Some(carried) = carried {
                if let Some(edit) = &carried.edit {
                    let edited = edited(&request, edit, decision.audit[0].at, audit_args);
                    decision.audit.insert(0, edited);
                }
                // Sealed over no join's ticket: stored only while no call of another replica
                // joined (else sealed again, `Shared::decided_elsewhere`).
                decision.sealed = carried.verdict.map(|verdict| {
                    Box::new(Sealed {
                        verdict,
                        tickets: Vec::new(),
                    })
                });
            }
            Write::Decide(decision)
        }
        Event::Taken { request, rule } => Write::Take(take(&request, rule, audit_args)),
        Event::Carried {
            request,
            outcome,
            rule,
        } => Write::Carry(
            take(&request, rule, audit_args),
            Box::new((request, outcome)),
        ),
        Event::Left { request, holding } => Write::Leave(
            closed(&request, Status::Pending, Outcome::Cancelled, audit_args),
            request,
            holding,
        ),
        Event::Closed {
            request,
            from,
            outcome,
        } => Write::Record(closed(&request, from, outcome, audit_args)),
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

/// The `code_rejected` entry, and its log lines: `attempt` of at most `of`, if known (a shared
/// store counts attempts itself).
pub(super) fn code_rejected(
    request: &AccessRequest,
    attempt: Option<u32>,
    of: u32,
    by: Arc<str>,
    audit_args: bool,
) -> AuditEntry {
    let mut rejected = entry(audit_args, AuditEvent::CodeRejected, request);
    rejected.approver = Some(by);
    rejected.detail = Some(match attempt {
        Some(attempt) => {
            tracing::warn!(request_id = %request.id, attempts = attempt, "wrong verification code");
            if attempt >= of {
                tracing::warn!(request_id = %request.id, "access request locked after too many wrong codes");
            }
            format!("wrong code {attempt} of {of}").into()
        }
        None => {
            tracing::warn!(request_id = %request.id, "wrong verification code");
            format!("wrong code (at most {of})").into()
        }
    });
    rejected
}

/// The transition that records a caller taking an approval, with the rule it files.
// On the path of every approval: inlined into `write`.
#[inline(always)]
fn take(
    request: &AccessRequest,
    rule: Option<Box<crate::rule::Rule>>,
    audit_args: bool,
) -> Transition {
    let executing = entry(audit_args, AuditEvent::Executing, request);
    let at = executing.at;
    let mut take = step(executing, Status::Approved, Status::Executing, None);
    if let Some(rule) = rule {
        let mut granted = AuditEntry::for_rule(AuditEvent::RuleGranted, at, &rule);
        granted.approver = Some(rule.granted_by.clone());
        take.audit.push(granted);
        take.rule = Some(rule);
    }
    take
}

/// The transition that records a person's decision, with its audit entries and, for a denial,
/// its remembered rule (an approval's is filed when it is taken).
pub(super) fn decision(
    request: &AccessRequest,
    outcome: Outcome,
    scope: crate::scope::Scope,
    rule: Option<Box<crate::rule::Rule>>,
    audit_args: bool,
) -> Transition {
    let (event, approver, reason) = match &outcome {
        Outcome::Approved { approver, .. } => (AuditEvent::Approved, approver, &None),
        Outcome::Denied { approver, reason } => (AuditEvent::Denied, approver, reason),
        _ => unreachable!("a person's decision approves or denies"),
    };
    let (approver, reason) = (approver.clone(), reason.clone());
    let mut decided = entry(audit_args, event, request);
    decided.approver = Some(approver.clone());
    decided.reason = reason.clone();
    decided.scope = Some(scope);
    let to = outcome.status();
    let mut write = step(decided, Status::Pending, to, Some(outcome));
    if let Some(rule) = rule {
        let mut granted = AuditEntry::for_rule(AuditEvent::RuleGranted, write.audit[0].at, &rule);
        granted.approver = Some(approver);
        granted.reason = reason;
        write.audit.push(granted);
        write.rule = Some(rule);
    }
    write
}

/// The `edited` entry of an approval that changed the arguments: the new arguments' digest (and
/// the arguments, if `audit_args`), who edited, and in `detail` the digest of the arguments the
/// call asked with, which the `requested` entry holds.
fn edited(request: &AccessRequest, edit: &Edit, at: SystemTime, audit_args: bool) -> AuditEntry {
    let args = canonical_json(edit.args());
    let mut edited = AuditEntry::for_request(AuditEvent::Edited, at, request);
    edited.args_digest = Some(ArgsDigest::of_canonical(&args));
    edited.args = audit_args.then(|| args.into_boxed_str());
    edited.approver = Some(edit.approver().into());
    edited.detail = Some(format!("edited from arguments {}", request.args_digest).into());
    edited
}

/// The `endorsed` entry of an approval of a request several approvers must approve, counted
/// but not deciding: who, the scope they gave, and in `detail` how many must approve.
pub(super) fn endorsed(request: &AccessRequest, vote: &Vote, audit_args: bool) -> AuditEntry {
    let mut endorsed = entry(audit_args, AuditEvent::Endorsed, request);
    endorsed.approver = Some(vote.approver.clone());
    endorsed.scope = Some(vote.scope);
    endorsed.detail = Some(format!("{} approvers must approve", request.quorum).into());
    endorsed
}

/// The transition that closes a pending request with `outcome`, as the registry's `Closed`
/// event writes it.
pub(super) fn closed(
    request: &AccessRequest,
    from: Status,
    outcome: Outcome,
    audit_args: bool,
) -> Transition {
    let mut closed = entry(audit_args, event_of(&outcome), request);
    closed.detail = match &outcome {
        Outcome::TooManyAttempts => Some("too many wrong verification codes".into()),
        Outcome::NotificationFailed => Some("no notifier accepted the alert".into()),
        Outcome::Abandoned => Some("the gate shut down before anyone decided".into()),
        _ => None,
    };
    let to = outcome.status();
    step(closed, from, to, Some(outcome))
}

/// The `notified` entry: `accepted` notifiers took the alert for `request`.
pub(super) fn notified(request: &AccessRequest, accepted: usize, audit_args: bool) -> Write {
    let mut notified = entry(audit_args, AuditEvent::Notified, request);
    // Most gates have one notifier: its text needs no formatting.
    notified.detail = Some(match accepted {
        1 => "accepted by 1 notifier(s)".into(),
        n => format!("accepted by {n} notifier(s)").into(),
    });
    Write::Append(notified)
}

/// The `escalated` entry: nobody decided `request` in time, and `accepted` escalation
/// notifiers took its alert.
pub(super) fn escalated(request: &AccessRequest, accepted: usize, audit_args: bool) -> Write {
    let mut escalated = entry(audit_args, AuditEvent::Escalated, request);
    let mut detail = format!("accepted by {accepted} escalation notifier(s)");
    if request.extended_secs > 0 {
        let until = crate::time::rfc3339(request.expires_at());
        detail.push_str(&format!("; it now expires at {until}"));
    }
    escalated.detail = Some(detail.into());
    Write::Append(escalated)
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
        sealed: None,
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
