//! Edits on approve: an approver may change a call's arguments where the policy allows it; the
//! edited call is checked by the policy again, audited beside the original, and is what runs.

#[path = "../support/mod.rs"]
mod support;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate::notify::{Alert, RecordingNotifier};
use tollgate::policy::{Ask, CapabilityTable, Decision, Policy, arg, threshold};
use tollgate::store::AuditEvent;
use tollgate::{Approve, BoxError, Call, Deny, Edit, Error, ErrorKind, Scope, Status, ToolCall};
use tower::{Layer, Service, ServiceExt};

use support::gate;

/// Refunds above 100 ask (editable, up to `value`), above 1,000 are denied; `payments.charge`
/// asks without edits.
fn policy() -> impl Policy<ToolCall> + Clone + Send + Sync + 'static {
    let refunds = threshold(arg("/amount"), 100.0)
        .deny_above(1_000.0, "refunds over 1,000 go through finance")
        .ask(
            Ask::new("refunds move money")
                .max_scope(Scope::Value)
                .editable(),
        );
    let table = CapabilityTable::new().ask("payments.charge", Ask::new("charges a card"));
    tollgate::policy::first_match()
        .when(
            |call: &ToolCall| call.capability() == "payments.refund",
            refunds,
        )
        .otherwise(table)
}

/// A tool service that records every call it runs, with the edit it carried.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<Vec<ToolCall>>>);

impl Ledger {
    fn runs(&self) -> Vec<ToolCall> {
        self.0.lock().unwrap().clone()
    }
}

impl Service<ToolCall> for Ledger {
    type Response = Value;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Value, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        // What an agent's tool answers: the arguments it ran with, and whether they were edited.
        let answer = json!({
            "ran": call.args(),
            "edited_by": call.edit().map(Edit::approver),
        });
        self.0.lock().unwrap().push(call);
        Box::pin(async move { Ok(answer) })
    }
}

type Fixture<P> = support::Fixture<P, Ledger>;

fn fixture() -> Fixture<impl Policy<ToolCall> + Clone + Send + Sync + 'static> {
    fixture_with(policy(), false)
}

fn fixture_with<P>(policy: P, audit_args: bool) -> Fixture<P>
where
    P: Policy<ToolCall> + Clone + Send + Sync + 'static,
{
    Fixture::new(policy, Ledger::default(), |b| b.audit_args(audit_args))
}

fn refund(amount: u64) -> ToolCall {
    ToolCall::new(
        "payments.refund",
        json!({"charge": "ch_1", "amount": amount}),
    )
    .principal("agent-7")
    .session("conv-42")
}

fn approve(alert: &Alert) -> Approve {
    Approve::new(alert.request().id(), alert.code().reveal()).by("alice")
}

fn kind(result: Result<impl std::fmt::Debug, Error>) -> ErrorKind {
    result.expect_err("refused").kind()
}

#[tokio::test]
async fn an_approver_edits_the_arguments_and_the_edited_call_runs() {
    let f = fixture();
    let (task, alert) = f.park(refund(500)).await;
    assert!(alert.request().editable());
    let edited = json!({"charge": "ch_1", "amount": 50});
    let approval = f
        .gate
        .approve(approve(&alert).edit(edited.clone()))
        .await
        .expect("approved with the edit");
    let edit = approval.edit().expect("the approval says it edited");
    assert_eq!(edit.args(), &edited);
    assert_eq!(
        edit.original_args(),
        &json!({"charge": "ch_1", "amount": 500})
    );

    // The caller can tell: the tool saw the edit, and answered with what it ran.
    let answer = task.await.unwrap().expect("ran");
    assert_eq!(answer, json!({"ran": edited, "edited_by": "alice"}));
    let runs = f.tools.runs();
    assert_eq!(runs.len(), 1, "only the edited call ran");
    assert_eq!(runs[0].args(), &edited);
    assert_eq!(runs[0].edit().unwrap().request_id(), alert.request().id());
    assert_eq!(Call::principal(&runs[0]), Some("agent-7"));
    assert_eq!(Call::session(&runs[0]), Some("conv-42"));
    assert_eq!(
        f.gate.status(alert.request().id()).unwrap(),
        Status::Executed
    );
}

#[tokio::test]
async fn the_trail_records_the_edit_beside_the_original() {
    let f = fixture_with(policy(), true);
    let (task, alert) = f.park(refund(500)).await;
    let request = alert.request();
    f.gate
        .approve(approve(&alert).edit(json!({"charge": "ch_1", "amount": 50})))
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    let trail = f.trail(request.id()).await;
    let events: Vec<_> = trail.iter().map(|e| e.event).collect();
    assert_eq!(
        events,
        [
            AuditEvent::Requested,
            AuditEvent::Notified,
            AuditEvent::Edited,
            AuditEvent::Approved,
            AuditEvent::Executing,
            AuditEvent::Executed
        ]
    );
    let requested = &trail[0];
    let edited = &trail[2];
    assert_eq!(
        requested.args.as_deref(),
        Some(r#"{"amount":500,"charge":"ch_1"}"#)
    );
    assert_eq!(
        edited.args.as_deref(),
        Some(r#"{"amount":50,"charge":"ch_1"}"#)
    );
    assert_ne!(edited.args_digest, requested.args_digest);
    assert_eq!(edited.approver.as_deref(), Some("alice"));
    let detail = edited.detail.as_deref().unwrap();
    assert!(
        detail.contains(&request.args_digest().to_string()),
        "{detail}"
    );
}

#[tokio::test]
async fn an_edit_the_policy_would_deny_is_refused_and_the_request_stays_pending() {
    let f = fixture();
    let (task, alert) = f.park(refund(500)).await;
    let id = alert.request().id();
    let error = f
        .gate
        .approve(approve(&alert).edit(json!({"charge": "ch_1", "amount": 5000})))
        .await
        .expect_err("the policy denies refunds over 1,000");
    assert_eq!(error.kind(), ErrorKind::EditNotAllowed);
    assert!(error.detail().unwrap().contains("finance"), "{error}");
    assert_eq!(f.gate.status(id).unwrap(), Status::Pending);
    assert!(f.tools.runs().is_empty());

    // Nothing was spent: the same code approves as asked.
    f.gate.approve(approve(&alert)).await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(f.tools.runs()[0].args()["amount"], 500);
    assert!(f.tools.runs()[0].edit().is_none());
}

#[tokio::test]
async fn an_edit_of_a_request_whose_policy_forbids_edits_is_refused() {
    let f = fixture();
    let call = ToolCall::new("payments.charge", json!({"amount": 10})).principal("agent-7");
    let (task, alert) = f.park(call).await;
    assert!(!alert.request().editable());
    let edited = f
        .gate
        .approve(approve(&alert).edit(json!({"amount": 1})))
        .await;
    assert_eq!(kind(edited), ErrorKind::EditNotAllowed);
    f.gate
        .deny(Deny::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    assert!(task.await.unwrap().is_err());
    assert!(f.tools.runs().is_empty());
}

#[tokio::test]
async fn arguments_equal_to_the_asked_ones_are_no_edit() {
    let f = fixture();
    let (task, alert) = f.park(refund(500)).await;
    // Another key order and number form: the same canonical arguments.
    let approval = f
        .gate
        .approve(approve(&alert).edit(json!({"amount": 500.0, "charge": "ch_1"})))
        .await
        .unwrap();
    assert!(approval.edit().is_none());
    task.await.unwrap().unwrap();
    assert!(f.tools.runs()[0].edit().is_none());
}

#[tokio::test]
async fn a_value_approval_with_an_edit_covers_the_edited_arguments() {
    let f = fixture();
    let (task, alert) = f.park(refund(500)).await;
    f.gate
        .approve(
            approve(&alert)
                .edit(json!({"charge": "ch_1", "amount": 150}))
                .scope(Scope::Value),
        )
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    // The edited call passes without asking; the original asks again.
    f.svc.clone().oneshot(refund(150)).await.expect("covered");
    let mut again = Box::pin(f.svc.clone().oneshot(refund(500)));
    assert!(support::poll_once(&mut again).is_none(), "asks again");
    assert_eq!(f.alerts.alerts().len(), 2);
}

#[tokio::test]
async fn an_edited_call_the_policy_asks_about_again_keeps_that_asks_limits() {
    // Small refunds may be approved for `capability`; large ones only `once`, by bob.
    let policy = tollgate::policy::policy_fn(|call: &ToolCall| {
        let amount = call.args()["amount"].as_u64().unwrap_or(0);
        let ask = Ask::new("refunds move money").editable();
        Decision::Ask(if amount > 100 {
            ask.approvers(["alice", "bob"])
        } else {
            ask.max_scope(Scope::Capability).approvers(["alice"])
        })
    });
    let f = fixture_with(policy, false);
    let (task, alert) = f.park(refund(50)).await;
    assert_eq!(alert.request().max_scope(), Scope::Capability);
    let large = json!({"charge": "ch_1", "amount": 500});
    let wide = approve(&alert).edit(large.clone()).scope(Scope::Capability);
    assert_eq!(kind(f.gate.approve(wide).await), ErrorKind::ScopeNotAllowed);
    let once = approve(&alert).edit(large.clone());
    f.gate
        .approve(once)
        .await
        .expect("once is within both asks");
    task.await.unwrap().unwrap();
    assert_eq!(f.tools.runs()[0].args(), &large);

    // An approver the edited call's ask does not name may not make that edit.
    let policy = tollgate::policy::policy_fn(|call: &ToolCall| {
        let amount = call.args()["amount"].as_u64().unwrap_or(0);
        let ask = Ask::new("refunds move money").editable();
        Decision::Ask(if amount > 100 {
            ask.approvers(["bob"])
        } else {
            ask
        })
    });
    let f = fixture_with(policy, false);
    let (_task, alert) = f.park(refund(50)).await;
    let edit = approve(&alert).edit(json!({"charge": "ch_1", "amount": 500}));
    assert_eq!(kind(f.gate.approve(edit).await), ErrorKind::EditNotAllowed);
    assert_eq!(f.gate.stats().pending, 1);
}

/// A call whose capability and principal come from its arguments: an edit may not change them.
#[derive(Clone, Debug)]
struct Routed(Value);

impl Call for Routed {
    fn capability(&self) -> &str {
        self.0["tool"].as_str().unwrap_or("")
    }
    fn args(&self) -> Cow<'_, Value> {
        Cow::Borrowed(&self.0)
    }
    fn principal(&self) -> Option<&str> {
        self.0["as"].as_str()
    }
    fn edited(&self, edit: &Edit) -> Result<Self, Error> {
        Ok(Routed(edit.args().clone()))
    }
}

/// A call that cannot be rebuilt from arguments: `Call::edited` is left as it is.
#[derive(Clone, Debug)]
struct Opaque;

impl Call for Opaque {
    fn capability(&self) -> &str {
        "vault.open"
    }
    fn args(&self) -> Cow<'_, Value> {
        Cow::Owned(json!({"door": 1}))
    }
}

#[derive(Clone, Default)]
struct Runs(Arc<Mutex<Vec<Value>>>);

impl<R: Call> Service<R> for Runs {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: R) -> Self::Future {
        self.0.lock().unwrap().push(call.args().into_owned());
        std::future::ready(Ok(()))
    }
}

#[tokio::test]
async fn an_edit_that_changes_the_capability_or_principal_is_refused() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let runs = Runs::default();
    let svc = gate
        .layer(Ask::new("routes anything").editable())
        .layer(runs.clone());
    let asked = json!({"tool": "fs.read", "as": "agent-7", "path": "/tmp/a"});
    let task = tokio::spawn(svc.oneshot(Routed(asked.clone())));
    let alert = alerts.next_alert().await;
    for widened in [
        json!({"tool": "fs.delete", "as": "agent-7", "path": "/tmp/a"}),
        json!({"tool": "fs.read", "as": "root", "path": "/tmp/a"}),
        json!({"tool": "fs.read", "path": "/tmp/a"}),
    ] {
        let error = gate
            .approve(approve(&alert).edit(widened.clone()))
            .await
            .expect_err("widens the call");
        assert_eq!(error.kind(), ErrorKind::EditNotAllowed, "{widened}");
    }
    let narrowed = json!({"tool": "fs.read", "as": "agent-7", "path": "/tmp/b"});
    gate.approve(approve(&alert).edit(narrowed.clone()))
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(*runs.0.lock().unwrap(), [narrowed]);
}

#[tokio::test]
async fn a_call_that_cannot_be_rebuilt_refuses_edits_with_a_typed_error() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let runs = Runs::default();
    let svc = gate
        .layer(Ask::new("opens the vault").editable())
        .layer(runs.clone());
    let task = tokio::spawn(svc.oneshot(Opaque));
    let alert = alerts.next_alert().await;
    let edit = approve(&alert).edit(json!({"door": 2}));
    assert_eq!(kind(gate.approve(edit).await), ErrorKind::EditUnsupported);
    assert_eq!(ErrorKind::EditUnsupported.code(), "edit_unsupported");
    gate.approve(approve(&alert)).await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(*runs.0.lock().unwrap(), [json!({"door": 1})]);
}

#[tokio::test]
async fn every_caller_of_a_joined_request_runs_the_edit() {
    let f = fixture();
    let (first, alert) = f.park(refund(500)).await;
    let second = tokio::spawn(f.svc.clone().oneshot(refund(500)));
    support::until(|| f.gate.stats().parked == 2).await;
    f.gate
        .approve(approve(&alert).edit(json!({"charge": "ch_1", "amount": 60})))
        .await
        .unwrap();
    for task in [first, second] {
        let answer = task.await.unwrap().unwrap();
        assert_eq!(answer["ran"]["amount"], 60);
    }
    assert_eq!(f.gate.stats().parked, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever amount an approver writes, the edited call runs only if the policy would let
    /// a person approve it, and then with exactly that amount; otherwise nothing runs and the
    /// request is still pending.
    #[test]
    fn an_edited_call_never_passes_where_the_policy_would_deny_it(
        asked in 101u64..=1_000,
        written in prop_oneof![0u64..=2_000, Just(1_000), Just(1_001)],
    ) {
        support::runtime().block_on(async {
            let f = fixture();
            let (task, alert) = f.park(refund(asked)).await;
            let edited = json!({"charge": "ch_1", "amount": written});
            let result = f.gate.approve(approve(&alert).edit(edited.clone())).await;
            let denied = matches!(policy().check(&refund(written)), Decision::Deny(_));
            if denied {
                assert_eq!(result.expect_err("denied").kind(), ErrorKind::EditNotAllowed);
                assert!(f.tools.runs().is_empty());
                assert_eq!(f.gate.status(alert.request().id()).unwrap(), Status::Pending);
                task.abort();
            } else {
                result.expect("approved");
                task.await.unwrap().unwrap();
                let runs = f.tools.runs();
                assert_eq!(runs.len(), 1);
                assert_eq!(runs[0].args(), &edited);
            }
        });
    }
}

/// Payouts up to 100 ask one approver; above that, two (a quorum of alice and bob); payouts to
/// an account ask with `value` approvals about the account (`/to`).
fn payouts() -> impl Policy<ToolCall> + Clone + Send + Sync + 'static {
    tollgate::policy::policy_fn(|call: &ToolCall| {
        let amount = call.args()["amount"].as_u64().unwrap_or(0);
        let ask = Ask::new("payouts move money")
            .editable()
            .max_scope(Scope::Value)
            .key_fields(["/to"]);
        Decision::Ask(if amount > 100 {
            ask.approvers(["alice", "bob"]).quorum(2)
        } else {
            ask
        })
    })
}

fn payout(to: &str, amount: u64) -> ToolCall {
    ToolCall::new("payments.payout", json!({"to": to, "amount": amount})).principal("agent-7")
}

#[tokio::test]
async fn an_edit_whose_call_needs_a_quorum_is_refused_and_never_runs_on_one_approval() {
    let f = fixture_with(payouts(), false);
    let (task, alert) = f.park(payout("acct-1", 50)).await;
    assert_eq!(alert.request().quorum(), 1);
    let larger = approve(&alert).edit(json!({"to": "acct-1", "amount": 5_000}));
    assert_eq!(
        kind(f.gate.approve(larger).await),
        ErrorKind::EditNotAllowed
    );
    assert!(f.tools.runs().is_empty(), "5,000 needs two approvers");
    assert_eq!(
        f.gate.status(alert.request().id()).unwrap(),
        Status::Pending
    );
    // Within the one approver's reach, the edit goes through.
    f.gate
        .approve(approve(&alert).edit(json!({"to": "acct-1", "amount": 60})))
        .await
        .expect("60 needs one approver");
    task.await.unwrap().unwrap();
    assert_eq!(f.tools.runs()[0].args()["amount"], 60);
}

#[tokio::test]
async fn an_edit_cannot_land_on_a_remembered_denial() {
    let f = fixture_with(payouts(), false);
    // Payouts to acct-evil are denied, and the denial remembered for the account.
    let (task, alert) = f.park(payout("acct-evil", 10)).await;
    f.gate
        .deny(
            Deny::new(alert.request().id(), alert.code().reveal())
                .by("alice")
                .remember(Scope::Value),
        )
        .await
        .expect("denied and remembered");
    assert!(task.await.unwrap().is_err());
    let refused = f.gate.layer(payouts()).layer(f.tools.clone());
    let error = refused.oneshot(payout("acct-evil", 20)).await.unwrap_err();
    assert_eq!(
        support::code(&error),
        "access_request_denied",
        "the denial covers the account"
    );

    // An approver's edit of another payout may not send it there.
    let (_task, alert) = f.park(payout("acct-1", 10)).await;
    let there = approve(&alert).edit(json!({"to": "acct-evil", "amount": 10}));
    assert_eq!(kind(f.gate.approve(there).await), ErrorKind::EditNotAllowed);
    assert!(f.tools.runs().is_empty());
    assert_eq!(
        f.gate.status(alert.request().id()).unwrap(),
        Status::Pending
    );
}
