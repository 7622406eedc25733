//! Quorums: a call several approvers must approve waits until that many distinct approvers
//! have, each with a code of their own; one denial denies.

#[path = "../support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tollgate::notify::{Alert, RecordingNotifier, TerminalNotifier};
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::store::AuditEvent;
use tollgate::{Approve, Deny, Error, ErrorKind, Scope, Status, ToolCall};
use tower::{Layer, ServiceExt};

use support::{Tools, gate};

/// Payouts need two of alice, bob and carol; refunds one, as usual.
fn policy() -> CapabilityTable {
    CapabilityTable::new()
        .ask(
            "payments.payout",
            Ask::new("pays money out")
                .approvers(["alice", "bob", "carol"])
                .quorum(2)
                .max_scope(Scope::Value),
        )
        .ask("payments.refund", Ask::new("refunds"))
}

type Fixture = support::Fixture<CapabilityTable>;

fn fixture() -> Fixture {
    Fixture::new(policy(), Tools::default(), |b| b)
}

fn payout(amount: u64) -> ToolCall {
    ToolCall::new("payments.payout", json!({"amount": amount})).principal("agent-7")
}

/// `approver`'s approval with their own code.
fn approve(alert: &Alert, approver: &str) -> Approve {
    let code = alert.code_for(approver).expect("one of the approvers");
    Approve::new(alert.request().id(), code.reveal()).by(approver)
}

fn kind<T: std::fmt::Debug>(result: Result<T, Error>) -> ErrorKind {
    result.expect_err("refused").kind()
}

#[tokio::test]
async fn the_call_waits_for_two_approvers_and_each_approval_is_audited() {
    let f = fixture();
    let (task, alert) = f.park(payout(900)).await;
    let id = alert.request().id();
    assert_eq!(alert.request().quorum(), 2);

    let first = f.gate.approve(approve(&alert, "alice")).await.unwrap();
    assert_eq!(first.outstanding(), 1);
    assert!(first.rule().is_none());
    assert_eq!(f.gate.status(id).unwrap(), Status::Pending);
    assert_eq!(f.gate.approved_by(id), ["alice"]);
    assert_eq!(f.tools.total(), 0, "one approval runs nothing");

    let second = f.gate.approve(approve(&alert, "bob")).await.unwrap();
    assert_eq!(second.outstanding(), 0);
    task.await.unwrap().unwrap();
    assert_eq!(f.tools.total(), 1);
    assert_eq!(f.gate.status(id).unwrap(), Status::Executed);
    assert!(f.gate.approved_by(id).is_empty(), "decided: nothing kept");

    let trail = f.trail(id).await;
    let steps: Vec<_> = trail
        .iter()
        .map(|e| (e.event, e.approver.as_deref().map(str::to_owned)))
        .collect();
    let by = |name: &str| Some(name.to_owned());
    assert_eq!(
        steps,
        [
            (AuditEvent::Requested, None),
            (AuditEvent::Notified, None),
            (AuditEvent::Endorsed, by("alice")),
            (AuditEvent::Approved, by("bob")),
            (AuditEvent::Executing, None),
            (AuditEvent::Executed, None),
        ]
    );
}

#[tokio::test]
async fn each_approver_has_a_code_of_their_own() {
    let f = fixture();
    let (task, alert) = f.park(payout(900)).await;
    let id = alert.request().id();
    let codes: Vec<(String, String)> = alert
        .codes()
        .map(|(a, c)| (a.to_owned(), c.reveal().to_owned()))
        .collect();
    let names: Vec<_> = codes.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let mut distinct: Vec<_> = codes.iter().map(|(_, c)| c.clone()).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "three different codes");
    assert_eq!(alert.code_for("dave"), None, "not one of the approvers");
    assert_eq!(
        f.gate.verification_code_for(id, "bob").unwrap().reveal(),
        alert.code_for("bob").unwrap().reveal()
    );
    assert_eq!(f.gate.verification_code_for(id, "dave"), None);

    // Another approver's code, or the request's own, is a wrong code.
    let alices = alert.code_for("alice").unwrap().reveal();
    let as_bob = Approve::new(id, alices).by("bob");
    assert_eq!(
        kind(f.gate.approve(as_bob).await),
        ErrorKind::AccessRequestNotFound
    );
    let shared = Approve::new(id, alert.code().reveal()).by("alice");
    assert_eq!(
        kind(f.gate.approve(shared).await),
        ErrorKind::AccessRequestNotFound
    );
    assert!(f.gate.approved_by(id).is_empty());

    f.gate.approve(approve(&alert, "alice")).await.unwrap();
    f.gate.approve(approve(&alert, "carol")).await.unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn one_person_approving_twice_counts_once() {
    let f = fixture();
    let (task, alert) = f.park(payout(900)).await;
    let id = alert.request().id();
    f.gate.approve(approve(&alert, "alice")).await.unwrap();
    let again = f.gate.approve(approve(&alert, "alice")).await;
    assert_eq!(kind(again), ErrorKind::AlreadyApproved);
    assert_eq!(ErrorKind::AlreadyApproved.code(), "already_approved");
    assert_eq!(f.gate.status(id).unwrap(), Status::Pending);
    assert_eq!(f.tools.total(), 0);
    assert_eq!(f.gate.approved_by(id), ["alice"]);
    f.gate.approve(approve(&alert, "bob")).await.unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn someone_outside_the_approvers_cannot_join_the_quorum() {
    let f = fixture();
    let (task, alert) = f.park(payout(900)).await;
    let id = alert.request().id();
    f.gate.approve(approve(&alert, "alice")).await.unwrap();
    // Dave holds bob's code, and names himself: he may not decide at all.
    let bobs = alert.code_for("bob").unwrap().reveal();
    let dave = Approve::new(id, bobs).by("dave");
    assert_eq!(
        kind(f.gate.approve(dave).await),
        ErrorKind::AccessRequestNotFound
    );
    assert_eq!(f.gate.approved_by(id), ["alice"]);
    assert_eq!(f.tools.total(), 0);
    task.abort();
}

#[tokio::test]
async fn one_denial_denies_even_after_an_approval() {
    let f = fixture();
    let (task, alert) = f.park(payout(900)).await;
    f.gate.approve(approve(&alert, "alice")).await.unwrap();
    let code = alert.code_for("bob").unwrap().reveal();
    let deny = Deny::new(alert.request().id(), code).reason("no").by("bob");
    f.gate.deny(deny).await.unwrap();
    let error = task.await.unwrap().unwrap_err();
    assert_eq!(support::code(&error), "access_request_denied");
    assert_eq!(f.tools.total(), 0);
}

#[tokio::test]
async fn the_deciding_approval_reaches_no_further_than_the_others() {
    let f = fixture();
    let (task, alert) = f.park(payout(900)).await;
    f.gate.approve(approve(&alert, "alice")).await.unwrap(); // once
    let wider = approve(&alert, "bob").scope(Scope::Value);
    assert_eq!(
        kind(f.gate.approve(wider).await),
        ErrorKind::ScopeNotAllowed
    );
    let approval = f.gate.approve(approve(&alert, "bob")).await.unwrap();
    assert!(approval.rule().is_none());
    task.await.unwrap().unwrap();
}

/// An earlier approver's `until`, and a later one's shorter TTL that would still end later: the
/// rule ends when the earlier approver allowed, not later.
#[tokio::test]
async fn the_quorums_rule_ends_no_later_than_any_approver_allowed() {
    let f = fixture();
    let (task, alert) = f.park(payout(900)).await;
    let before = SystemTime::now();
    let until = before + Duration::from_secs(600);
    let alice = approve(&alert, "alice").scope(Scope::Value).until(until);
    f.gate.approve(alice).await.unwrap();
    // Wall-clock time passes (rules are wall-clock), so that a TTL shorter than alice's would
    // still end after her `until`.
    let later = before + Duration::from_millis(150);
    while SystemTime::now() < later {
        tokio::task::yield_now().await;
    }
    let bob = approve(&alert, "bob")
        .scope(Scope::Value)
        .ttl(Duration::from_secs(600) - Duration::from_millis(100));
    let approval = f.gate.approve(bob).await.expect("bob completes the quorum");
    let rule = approval.rule().expect("a value rule").clone();
    assert!(
        rule.expires_at() <= until,
        "the rule ends at {:?}, after alice's end {until:?}",
        rule.expires_at()
    );
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn approvals_made_at_once_run_the_call_once() {
    for _ in 0..20 {
        let f = fixture();
        let (task, alert) = f.park(payout(900)).await;
        let (a, b) = tokio::join!(
            f.gate.approve(approve(&alert, "alice")),
            f.gate.approve(approve(&alert, "bob"))
        );
        let mut outstanding = [a.unwrap().outstanding(), b.unwrap().outstanding()];
        outstanding.sort();
        assert_eq!(outstanding, [0, 1]);
        task.await.unwrap().unwrap();
        assert_eq!(f.tools.total(), 1);
    }
}

#[tokio::test]
async fn a_quorum_larger_than_its_approvers_refuses_the_call() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let ask = Ask::new("x").approvers(["alice", "bob", "bob"]).quorum(3);
    let error = gate
        .layer(CapabilityTable::new().ask("x", ask))
        .layer(Tools::default())
        .oneshot(ToolCall::new("x", json!({})))
        .await
        .unwrap_err();
    assert_eq!(support::code(&error), "invalid_config");
    assert!(error.to_string().contains("names 2"), "{error}");
    let unnamed = Ask::new("y").quorum(2);
    let error = gate
        .layer(CapabilityTable::new().ask("y", unnamed))
        .layer(Tools::default())
        .oneshot(ToolCall::new("y", json!({})))
        .await
        .unwrap_err();
    assert_eq!(support::code(&error), "invalid_config");
    assert!(alerts.alerts().is_empty(), "nobody was asked");
}

#[tokio::test]
async fn a_quorums_arguments_are_not_edited() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let ask = Ask::new("x")
        .approvers(["alice", "bob"])
        .quorum(2)
        .editable();
    let svc = gate
        .layer(CapabilityTable::new().ask("x", ask))
        .layer(Tools::default());
    let task = tokio::spawn(svc.oneshot(ToolCall::new("x", json!({"n": 1}))));
    let alert = alerts.next_alert().await;
    let edit = approve(&alert, "alice").edit(json!({"n": 2}));
    assert_eq!(kind(gate.approve(edit).await), ErrorKind::EditNotAllowed);

    // The arguments as asked are no edit, for the deciding approval too (the approval page
    // always sends them back for an editable request).
    let same = || json!({"n": 1});
    let first = gate.approve(approve(&alert, "alice").edit(same())).await;
    assert_eq!(first.unwrap().outstanding(), 1);
    let last = gate.approve(approve(&alert, "bob").edit(same())).await;
    assert_eq!(last.unwrap().outstanding(), 0);
    assert!(task.await.unwrap().unwrap().contains(r#"{"n":1}"#));
}

#[tokio::test]
async fn a_one_approver_request_is_as_before() {
    let f = fixture();
    let call = ToolCall::new("payments.refund", json!({})).principal("agent-7");
    let (task, alert) = f.park(call).await;
    assert_eq!(alert.request().quorum(), 1);
    assert_eq!(alert.codes().count(), 0);
    assert_eq!(
        alert.code_for("anyone").unwrap().reveal(),
        alert.code().reveal()
    );
    let approval = f
        .gate
        .approve(Approve::new(alert.request().id(), alert.code().reveal()).by("zed"))
        .await
        .unwrap();
    assert_eq!(approval.outstanding(), 0);
    task.await.unwrap().unwrap();
}

/// The terminal shows each approver's code on a line of its own (it is one person's screen).
#[tokio::test]
async fn the_terminal_shows_each_approvers_code() {
    #[derive(Clone, Default)]
    struct Screen(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Screen {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let screen = Screen::default();
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts)
        .notifier(TerminalNotifier::writer(screen.clone()))
        .build()
        .unwrap();
    let svc = gate.layer(policy()).layer(Tools::default());
    let task = tokio::spawn(svc.oneshot(payout(5)));
    let alert = alerts.next_alert().await;
    support::until(|| !screen.0.lock().unwrap().is_empty()).await;
    let text = String::from_utf8(screen.0.lock().unwrap().clone()).unwrap();
    for (approver, code) in alert.codes() {
        let line = format!("{} (for {approver})", code.reveal());
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    assert!(!text.contains(alert.code().reveal()), "no shared code");
    task.abort();
}

/// Payouts up to 100 ask one approver, above that two of alice, bob and carol; `value`
/// approvals are about the account.
fn payouts_by_account() -> impl tollgate::policy::Policy<ToolCall> + Clone + Send + Sync + 'static {
    tollgate::policy::policy_fn(|call: &ToolCall| {
        let amount = call.args()["amount"].as_u64().unwrap_or(0);
        let ask = Ask::new("pays money out")
            .max_scope(Scope::Value)
            .key_fields(["/account"]);
        tollgate::policy::Decision::Ask(if amount > 100 {
            ask.approvers(["alice", "bob", "carol"]).quorum(2)
        } else {
            ask
        })
    })
}

fn payout_to(account: &str, amount: u64) -> ToolCall {
    ToolCall::new(
        "payments.payout",
        json!({"account": account, "amount": amount}),
    )
    .principal("agent-7")
}

/// A standing rule covers a later call only if the approval that made it meets that call's
/// own ask: one approver's `value` rule about an account does not let through a payout to it
/// that needs two; a rule the quorum made does.
#[tokio::test]
async fn a_rule_one_approver_made_does_not_cover_a_call_that_needs_a_quorum() {
    let f = support::Fixture::new(payouts_by_account(), Tools::default(), |b| b);
    let (task, alert) = f.park(payout_to("a1", 10)).await;
    let small = Approve::new(alert.request().id(), alert.code().reveal())
        .by("alice")
        .scope(Scope::Value);
    f.gate
        .approve(small)
        .await
        .expect("one approver suffices for 10");
    task.await.unwrap().unwrap();
    let svc = f.gate.layer(payouts_by_account()).layer(f.tools.clone());
    svc.clone()
        .oneshot(payout_to("a1", 20))
        .await
        .expect("the rule covers another small payout to a1");
    // 500 to a1 needs two approvers: it asks.
    let task = tokio::spawn(svc.clone().oneshot(payout_to("a1", 500)));
    let alert = tokio::time::timeout(Duration::from_secs(5), f.alerts.next_alert())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the large payout ran on one approver's rule: {:?}",
                f.tools.take()
            )
        });
    assert_eq!(f.tools.total(), 2, "the large payout waits");
    assert_eq!(alert.request().quorum(), 2);
    // Approved by two, with a `value` rule: that rule covers the next large payout to a1.
    f.gate
        .approve(approve(&alert, "alice").scope(Scope::Value))
        .await
        .unwrap();
    f.gate
        .approve(approve(&alert, "bob").scope(Scope::Value))
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    svc.oneshot(payout_to("a1", 600))
        .await
        .expect("the quorum's rule covers it");
    assert_eq!(f.tools.total(), 4);
}
