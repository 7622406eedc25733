//! The gate's behaviour through its public API: decisions, scopes, rules, expiry, cancellation,
//! flood limits, the non-blocking form, and every error code.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::json;
use tokio::time::advance;
use tollgate::future::Submitted;
use tollgate::notify::{Alert, RecordingNotifier};
use tollgate::rule::RuleEffect;
use tollgate::{
    Approve, BoxError, Deny, ErrorKind, Gate, Outcome, Revoke, Scope, Status, ToolCall,
};
use tower::{Layer, ServiceExt};

use support::{Tools, code, gate, policy, refund, search, until};

type Fixture = support::Fixture<tollgate::policy::CapabilityTable>;

fn fixture_with(
    max_scope: Scope,
    configure: impl FnOnce(tollgate::gate::GateBuilder) -> tollgate::gate::GateBuilder,
) -> Fixture {
    Fixture::new(policy(max_scope), Tools::default(), configure)
}

fn fixture(max_scope: Scope) -> Fixture {
    fixture_with(max_scope, |b| b)
}

impl Fixture {
    async fn approve(
        &self,
        alert: &Alert,
        scope: Scope,
    ) -> Result<tollgate::gate::Approval, tollgate::Error> {
        self.gate
            .approve(
                Approve::new(alert.request().id(), alert.code().reveal())
                    .scope(scope)
                    .by("alice"),
            )
            .await
    }

    /// Runs a call that must not park (allowed, or decided by a rule).
    async fn run(&self, call: ToolCall) -> Result<String, BoxError> {
        let result = self.svc.clone().oneshot(call).await;
        assert_eq!(
            self.gate.stats().pending,
            0,
            "the call must not have parked"
        );
        result
    }

    /// Whether `call` parks: it is cancelled right after, leaving no trace but its alert.
    async fn parks(&self, call: ToolCall) -> bool {
        let mut future = Box::pin(self.svc.clone().oneshot(call));
        let parked = support::poll_once(&mut future).is_none() && self.gate.stats().pending == 1;
        drop(future);
        assert_eq!(self.gate.stats().pending, 0);
        parked
    }
}

#[tokio::test]
async fn policy_allow_and_deny_never_park() {
    let f = fixture(Scope::Value);
    assert_eq!(
        f.run(search("rust")).await.unwrap(),
        r#"ran search.web {"q":"rust"}"#
    );
    let denied = f
        .run(ToolCall::new("fs.delete", json!({"path": "/"})))
        .await
        .unwrap_err();
    assert_eq!(code(&denied), "access_request_denied");
    assert!(denied.to_string().contains("deleting is never allowed"));
    assert!(f.alerts.alerts().is_empty());
}

#[tokio::test]
async fn approval_resumes_the_call_and_records_the_approver() {
    let f = fixture(Scope::Value);
    let (task, alert) = f.park(refund(100)).await;
    assert_eq!(f.tools.total(), 0, "nothing runs before approval");
    assert_eq!(
        f.gate.status(alert.request().id()).unwrap(),
        Status::Pending
    );
    assert_eq!(f.gate.pending().len(), 1);

    let approval = f.approve(&alert, Scope::Once).await.unwrap();
    assert_eq!(approval.scope(), Scope::Once);
    assert!(approval.rule().is_none());
    assert!(
        task.await
            .unwrap()
            .unwrap()
            .starts_with("ran payments.refund")
    );
    assert_eq!(f.tools.calls_of(&refund(100)), 1);
    assert_eq!(
        f.gate.status(alert.request().id()).unwrap(),
        Status::Executed
    );
    assert!(f.gate.pending().is_empty());

    let resolution = f.alerts.next_resolution().await;
    assert_eq!(resolution.request().id(), alert.request().id());
    assert!(matches!(
        resolution.outcome(),
        Outcome::Approved { approver, scope: Scope::Once, until: None } if &**approver == "alice"
    ));
}

#[tokio::test]
async fn denial_fails_the_call_with_its_reason() {
    let f = fixture(Scope::Value);
    let (task, alert) = f.park(refund(100)).await;
    let denial = f
        .gate
        .deny(
            Deny::new(alert.request().id(), alert.code().reveal())
                .reason("not for this customer")
                .by("bob"),
        )
        .await
        .unwrap();
    assert!(denial.rule().is_none());
    let error = task.await.unwrap().unwrap_err();
    assert_eq!(code(&error), "access_request_denied");
    assert!(error.to_string().contains("not for this customer"));
    assert_eq!(f.tools.total(), 0);
    assert_eq!(f.gate.status(alert.request().id()).unwrap(), Status::Denied);
    assert!(matches!(
        f.alerts.next_resolution().await.outcome(),
        Outcome::Denied { approver, .. } if &**approver == "bob"
    ));
    // Exactly one decision: the request is no longer open to an approval.
    let again = f.approve(&alert, Scope::Once).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyResolved);
}

#[tokio::test]
async fn a_remembered_denial_refuses_covered_calls_without_asking() {
    let f = fixture(Scope::Capability);
    let (task, alert) = f.park(refund(100)).await;
    let denial = f
        .gate
        .deny(
            Deny::new(alert.request().id(), alert.code().reveal())
                .reason("no refunds today")
                .remember(Scope::Capability)
                .by("bob"),
        )
        .await
        .unwrap();
    assert_eq!(denial.rule().unwrap().effect(), RuleEffect::Deny);
    assert_eq!(
        code(&task.await.unwrap().unwrap_err()),
        "access_request_denied"
    );

    let error = f.run(refund(5)).await.unwrap_err();
    assert_eq!(code(&error), "access_request_denied");
    assert!(error.to_string().contains("no refunds today"));
    assert_eq!(f.alerts.alerts().len(), 1, "no second alert");
    assert_eq!(f.tools.total(), 0);
}

#[tokio::test]
async fn a_denial_beats_an_approval_covering_the_same_call() {
    let f = fixture(Scope::Capability);
    let (task, alert) = f.park(refund(1)).await;
    f.approve(&alert, Scope::Capability).await.unwrap();
    task.await.unwrap().unwrap();
    let (task, alert) = f.park(refund(2).principal("agent-8")).await;
    f.gate
        .deny(
            Deny::new(alert.request().id(), alert.code().reveal())
                .remember(Scope::Value)
                .by("bob"),
        )
        .await
        .unwrap();
    task.await.unwrap().unwrap_err();
    // agent-7 keeps its capability rule; agent-8's denial covers only its own call.
    f.run(refund(3)).await.unwrap();
    assert_eq!(
        code(&f.run(refund(2).principal("agent-8")).await.unwrap_err()),
        "access_request_denied"
    );
}

#[tokio::test]
async fn every_scope_covers_exactly_what_it_says() {
    let other_args = || refund(999);
    let other_session = || refund(100).session("conv-other");
    let other_principal = || refund(100).principal("agent-8");

    // once: nothing later.
    let f = fixture(Scope::Global);
    let (task, alert) = f.park(refund(100)).await;
    f.approve(&alert, Scope::Once).await.unwrap();
    task.await.unwrap().unwrap();
    assert!(f.parks(refund(100)).await);

    // value: same principal, capability and arguments, in any session.
    let f = fixture(Scope::Global);
    let (task, alert) = f.park(refund(100)).await;
    f.approve(&alert, Scope::Value).await.unwrap();
    task.await.unwrap().unwrap();
    f.run(refund(100)).await.unwrap();
    f.run(refund(100).session("conv-other")).await.unwrap();
    assert!(f.parks(other_args()).await);
    assert!(f.parks(other_principal()).await);
    // Argument order and number spelling do not matter; the canonical digest decides.
    f.run(
        ToolCall::new(
            "payments.refund",
            json!({"amount": 100.0, "charge": "ch_1"}),
        )
        .principal("agent-7"),
    )
    .await
    .unwrap();

    // session: same principal, session and capability, any arguments.
    let f = fixture(Scope::Global);
    let (task, alert) = f.park(refund(100)).await;
    f.approve(&alert, Scope::Session).await.unwrap();
    task.await.unwrap().unwrap();
    f.run(other_args()).await.unwrap();
    assert!(f.parks(other_session()).await);
    assert!(f.parks(other_principal()).await);
    assert!(
        f.parks(
            ToolCall::new("payments.charge", json!({}))
                .principal("agent-7")
                .session("conv-42")
        )
        .await
    );

    // capability: same principal and capability, any session and arguments.
    let f = fixture(Scope::Global);
    let (task, alert) = f.park(refund(100)).await;
    f.approve(&alert, Scope::Capability).await.unwrap();
    task.await.unwrap().unwrap();
    f.run(other_args()).await.unwrap();
    f.run(other_session()).await.unwrap();
    assert!(f.parks(other_principal()).await);

    // global: the capability, for every principal.
    let f = fixture(Scope::Global);
    let (task, alert) = f.park(refund(100)).await;
    let approval = f.approve(&alert, Scope::Global).await.unwrap();
    assert_eq!(approval.rule().unwrap().principal(), None);
    task.await.unwrap().unwrap();
    f.run(other_principal()).await.unwrap();
    f.run(ToolCall::new("payments.refund", json!({})))
        .await
        .unwrap();
    assert!(f.parks(ToolCall::new("payments.charge", json!({}))).await);
}

#[tokio::test]
async fn approvals_wider_than_the_request_allows_are_refused() {
    let f = fixture(Scope::Value);
    let (task, alert) = f.park(refund(100)).await;
    let id = alert.request().id();
    let code_ = alert.code().reveal();
    for scope in [Scope::Session, Scope::Capability, Scope::Global] {
        let error = f
            .gate
            .approve(Approve::new(id, code_).scope(scope).by("alice"))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ScopeNotAllowed, "{scope}");
    }
    let too_long = Approve::new(id, code_)
        .scope(Scope::Value)
        .ttl(Duration::from_secs(3601))
        .by("alice");
    assert_eq!(
        f.gate.approve(too_long).await.unwrap_err().code(),
        "scope_not_allowed"
    );
    let remember_wide = Deny::new(id, code_).remember(Scope::Global).by("alice");
    assert_eq!(
        f.gate.deny(remember_wide).await.unwrap_err().code(),
        "scope_not_allowed"
    );
    // Refusals are not decisions: the request still waits, and a valid approval works.
    assert_eq!(f.gate.status(id).unwrap(), Status::Pending);
    let approval = f.approve(&alert, Scope::Value).await.unwrap();
    assert_eq!(approval.rule().unwrap().scope(), Scope::Value);
    task.await.unwrap().unwrap();

    // A session scope needs a call that names its session.
    let f = fixture(Scope::Session);
    let (_task, alert) = f
        .park(ToolCall::new("payments.refund", json!({})).principal("p"))
        .await;
    assert_eq!(
        f.approve(&alert, Scope::Session).await.unwrap_err().code(),
        "scope_not_allowed"
    );
}

#[tokio::test]
async fn a_wrong_code_and_an_unknown_id_get_the_same_answer_and_are_counted() {
    let f = fixture(Scope::Value);
    let (task, alert) = f.park(refund(100)).await;
    let id = alert.request().id();
    let unknown: tollgate::RequestId = "areq_00000000000000000000000000000000".parse().unwrap();
    let wrong = f
        .gate
        .approve(Approve::new(id, "00000000").by("mallory"))
        .await
        .unwrap_err();
    let missing = f
        .gate
        .approve(Approve::new(unknown, alert.code().reveal()).by("mallory"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), "access_request_not_found");
    assert_eq!(missing.code(), wrong.code());
    assert_eq!(
        wrong.to_string().replace(&id.to_string(), ""),
        missing.to_string().replace(&unknown.to_string(), "")
    );
    assert_eq!(f.gate.stats().wrong_codes, 1);

    // Codes are case-insensitive and may carry surrounding space.
    let lower = format!("  {} ", alert.code().reveal().to_lowercase());
    f.gate
        .approve(Approve::new(id, lower).by("alice"))
        .await
        .unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn too_many_wrong_codes_deny_the_request() {
    let f = fixture_with(Scope::Value, |b| b.max_attempts(3));
    let (task, alert) = f.park(refund(100)).await;
    let id = alert.request().id();
    for _ in 0..2 {
        let error = f
            .gate
            .deny(Deny::new(id, "BAD").by("mallory"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "access_request_not_found");
    }
    let error = f
        .gate
        .approve(Approve::new(id, "BAD").by("mallory"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "too_many_attempts");
    assert_eq!(code(&task.await.unwrap().unwrap_err()), "too_many_attempts");
    assert_eq!(f.gate.status(id).unwrap(), Status::Denied);
    assert_eq!(f.gate.stats().wrong_codes, 3);
    // The right code now learns the request was decided; nothing runs.
    assert_eq!(
        f.approve(&alert, Scope::Once).await.unwrap_err().code(),
        "already_resolved"
    );
    assert_eq!(f.tools.total(), 0);
}

#[tokio::test(start_paused = true)]
async fn approval_one_millisecond_before_expiry_succeeds() {
    let f = fixture(Scope::Value);
    let (task, alert) = f.park(refund(100)).await;
    advance(support::TTL - Duration::from_millis(1)).await;
    f.approve(&alert, Scope::Once).await.unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn at_its_ttl_the_request_expires() {
    let f = fixture(Scope::Value);
    let (task, alert) = f.park(refund(100)).await;
    advance(support::TTL).await;
    let error = f.approve(&alert, Scope::Once).await.unwrap_err();
    assert_eq!(error.code(), "access_request_expired");
    assert_eq!(
        code(&task.await.unwrap().unwrap_err()),
        "access_request_expired"
    );
    assert_eq!(
        f.gate.status(alert.request().id()).unwrap(),
        Status::Expired
    );
    assert!(matches!(
        f.alerts.next_resolution().await.outcome(),
        Outcome::Expired
    ));
    let stats = f.gate.stats();
    assert_eq!(
        (stats.pending, stats.parked, stats.live, stats.rules),
        (0, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn an_unwatched_request_expires_when_its_caller_wakes() {
    // The gate's expiry task expires the request, with no approver involved.
    let f = fixture(Scope::Value);
    let (task, alert) = f.park(refund(100)).await;
    let error = task.await.unwrap().unwrap_err();
    assert_eq!(code(&error), "access_request_expired");
    assert!(
        error
            .downcast_ref::<tollgate::Error>()
            .unwrap()
            .is_retryable()
    );
    assert_eq!(
        f.gate.status(alert.request().id()).unwrap(),
        Status::Expired
    );
}

/// A request expires at its own deadline, however late identical calls joined it and whichever
/// of its callers is left.
#[tokio::test(start_paused = true)]
async fn a_request_expires_at_its_deadline_though_its_first_caller_left() {
    let f = fixture(Scope::Value);
    let started = tokio::time::Instant::now();
    let (first, alert) = f.park(refund(100)).await;
    advance(Duration::from_secs(100)).await;
    let joined = tokio::spawn(f.svc.clone().oneshot(refund(100)));
    until(|| f.gate.stats().parked == 2).await;
    first.abort();
    until(|| f.gate.stats().parked == 1).await;
    let error = joined.await.unwrap().unwrap_err();
    assert_eq!(code(&error), "access_request_expired");
    assert_eq!(started.elapsed(), support::TTL, "at the request's deadline");
    assert_eq!(
        f.gate.status(alert.request().id()).unwrap(),
        Status::Expired
    );
}

#[tokio::test(start_paused = true)]
async fn rules_end_on_time() {
    let f = fixture(Scope::Value);
    let (task, alert) = f.park(refund(100)).await;
    let approve = Approve::new(alert.request().id(), alert.code().reveal())
        .scope(Scope::Value)
        .ttl(Duration::from_secs(60))
        .by("alice");
    let rule = f
        .gate
        .approve(approve)
        .await
        .unwrap()
        .rule()
        .unwrap()
        .clone();
    assert_eq!(rule.granted_by(), "alice");
    assert_eq!(
        rule.expires_at().duration_since(rule.granted_at()).unwrap(),
        Duration::from_secs(60)
    );
    task.await.unwrap().unwrap();

    advance(Duration::from_millis(59_999)).await;
    f.run(refund(100)).await.unwrap();
    assert_eq!(f.gate.rules().len(), 1);
    advance(Duration::from_millis(1)).await;
    assert!(f.gate.rules().is_empty());
    assert!(f.parks(refund(100)).await);
}

#[tokio::test]
async fn a_policy_without_a_ttl_limit_makes_long_rules_not_panics() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let unlimited = tollgate::policy::Ask::new("forever is allowed")
        .max_scope(Scope::Global)
        .max_rule_ttl(Duration::MAX);
    let svc = gate.layer(unlimited).layer(Tools::default());
    let task = tokio::spawn(svc.clone().oneshot(refund(1)));
    let alert = alerts.next_alert().await;
    let approve = Approve::new(alert.request().id(), alert.code().reveal())
        .scope(Scope::Global)
        .by("alice");
    let rule = gate.approve(approve).await.unwrap().rule().unwrap().clone();
    task.await.unwrap().unwrap();
    let years = rule
        .expires_at()
        .duration_since(rule.granted_at())
        .unwrap()
        .as_secs()
        / (365 * 24 * 3600);
    assert_eq!(years, 100);
    svc.oneshot(refund(2)).await.unwrap();
}

#[tokio::test]
async fn rules_can_be_listed_and_revoked() {
    let f = fixture(Scope::Global);
    let grant = |call: ToolCall, scope| {
        let f = &f;
        async move {
            let (task, alert) = f.park(call).await;
            f.approve(&alert, scope).await.unwrap();
            task.await.unwrap().unwrap();
        }
    };
    grant(refund(1), Scope::Value).await;
    grant(refund(2).principal("agent-8"), Scope::Capability).await;
    grant(
        ToolCall::new("payments.charge", json!({}))
            .principal("x")
            .session("s"),
        Scope::Session,
    )
    .await;
    let rules = f.gate.rules();
    assert_eq!(rules.len(), 3);
    assert!(
        rules
            .iter()
            .all(|r| r.granted_by() == "alice" && r.effect() == RuleEffect::Allow)
    );

    let first = rules.iter().find(|r| r.scope() == Scope::Value).unwrap();
    let revoked = f.gate.revoke(Revoke::rule(first.id()).by("bob")).await;
    assert_eq!(revoked.unwrap()[0].id(), first.id());
    let again = f.gate.revoke(Revoke::rule(first.id()).by("bob")).await;
    assert!(again.unwrap().is_empty());
    let anonymous = f.gate.revoke(Revoke::all()).await.unwrap_err();
    assert_eq!(anonymous.kind(), ErrorKind::MissingApprover);
    assert!(f.parks(refund(1)).await);
    f.run(refund(7).principal("agent-8")).await.unwrap();

    let revoked = f
        .gate
        .revoke(Revoke::capability("payments.refund").by("bob"));
    assert_eq!(revoked.await.unwrap().len(), 1);
    assert!(f.parks(refund(7).principal("agent-8")).await);
    assert_eq!(
        f.gate.revoke(Revoke::all().by("bob")).await.unwrap().len(),
        1
    );
    assert!(f.gate.rules().is_empty());
    assert_eq!(f.gate.stats().rules, 0);
}

#[tokio::test]
async fn identical_calls_share_one_request_and_all_resume() {
    let f = fixture(Scope::Value);
    let (first, alert) = f.park(refund(100)).await;
    let others: Vec<_> = (0..3)
        .map(|_| tokio::spawn(f.svc.clone().oneshot(refund(100))))
        .collect();
    support::until(|| f.gate.stats().parked == 4).await;
    assert_eq!(f.gate.stats().pending, 1);
    // A different call is a different request.
    let (different, other_alert) = f.park(refund(101)).await;
    assert_ne!(other_alert.request().id(), alert.request().id());

    f.approve(&alert, Scope::Once).await.unwrap();
    first.await.unwrap().unwrap();
    for task in others {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        f.tools.calls_of(&refund(100)),
        4,
        "every caller runs its own call, once"
    );
    assert_eq!(f.alerts.alerts().len(), 2, "one alert per request");
    drop(different);
}

#[tokio::test]
async fn the_last_caller_leaving_cancels_the_request() {
    let f = fixture(Scope::Value);
    let (first, alert) = f.park(refund(100)).await;
    let second = tokio::spawn(f.svc.clone().oneshot(refund(100)));
    support::until(|| f.gate.stats().parked == 2).await;
    let id = alert.request().id();

    first.abort();
    support::until(|| f.gate.stats().parked == 1).await;
    assert_eq!(
        f.gate.status(id).unwrap(),
        Status::Pending,
        "one caller still waits"
    );
    second.abort();
    support::until(|| f.gate.stats().parked == 0).await;
    assert_eq!(f.gate.status(id).unwrap(), Status::Cancelled);
    assert!(f.gate.pending().is_empty());
    assert!(matches!(
        f.alerts.next_resolution().await.outcome(),
        Outcome::Cancelled
    ));
    assert_eq!(
        f.approve(&alert, Scope::Once).await.unwrap_err().code(),
        "access_request_cancelled"
    );
    assert_eq!(f.tools.total(), 0);
}

#[tokio::test]
async fn an_approval_no_caller_receives_is_reported_as_cancelled() {
    let f = fixture(Scope::Value);
    let (task, alert) = f.park(refund(100)).await;
    // The caller goes away in the same instant the approval lands: it never takes it.
    task.abort();
    let error = f.approve(&alert, Scope::Value).await.unwrap_err();
    assert_eq!(error.code(), "access_request_cancelled");
    assert!(
        f.gate.rules().is_empty(),
        "an approval nobody received grants nothing"
    );
    assert_eq!(
        f.gate.status(alert.request().id()).unwrap(),
        Status::Cancelled
    );
    assert_eq!(f.tools.total(), 0);
    assert_eq!(f.gate.stats().live, 0);
}

#[tokio::test]
async fn a_failed_notification_fails_the_call_closed() {
    let alerts = RecordingNotifier::failing();
    let gate = gate(&alerts).build().unwrap();
    let tools = Tools::default();
    let svc = gate.layer(policy(Scope::Value)).layer(tools.clone());
    let error = svc.oneshot(refund(100)).await.unwrap_err();
    assert_eq!(code(&error), "notification_failed");
    assert_eq!(tools.total(), 0);
    assert_eq!(gate.stats().live, 0);
    let resolution = alerts.next_resolution().await;
    assert_eq!(
        gate.status(resolution.request().id()).unwrap(),
        Status::Failed
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_notifier_times_out_and_fails_closed() {
    let hung = tollgate::notify::notifier_fn(|_| std::future::pending());
    let gate = Gate::builder()
        .secret(support::SECRET)
        .notifier(hung)
        .notify_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let started = tokio::time::Instant::now();
    let error = svc.oneshot(refund(1)).await.unwrap_err();
    assert_eq!(code(&error), "notification_failed");
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test]
async fn a_panicking_notifier_counts_as_failed() {
    struct PanicsAtOnce;
    impl tollgate::notify::Notifier for PanicsAtOnce {
        fn notify<'a>(
            &'a self,
            _: &'a Alert,
        ) -> tollgate::notify::BoxFuture<'a, Result<(), tollgate::notify::NotifyError>> {
            panic!("a plugin bug before returning its future")
        }
    }
    let panics_later =
        tollgate::notify::notifier_fn(|_| async { panic!("a plugin bug while sending") });
    for gate in [
        Gate::builder()
            .secret(support::SECRET)
            .notifier(PanicsAtOnce)
            .build()
            .unwrap(),
        Gate::builder()
            .secret(support::SECRET)
            .notifier(panics_later)
            .build()
            .unwrap(),
    ] {
        let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
        let error = svc.oneshot(refund(1)).await.unwrap_err();
        assert_eq!(code(&error), "notification_failed");
        assert_eq!(gate.stats().live, 0);
    }
}

#[tokio::test]
async fn one_notifier_accepting_is_enough() {
    let good = RecordingNotifier::new();
    let gate = Gate::builder()
        .secret(support::SECRET)
        .notifier(RecordingNotifier::failing())
        .notifier(good.clone())
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let task = tokio::spawn(svc.oneshot(refund(1)));
    let alert = good.next_alert().await;
    gate.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("a"))
        .await
        .unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn pending_requests_are_capped_per_principal_and_in_total() {
    let f = fixture_with(Scope::Value, |b| {
        b.max_pending_per_principal(2).max_pending(3)
    });
    let _a = f.park(refund(1)).await;
    let _b = f.park(refund(2)).await;
    let error = f.svc.clone().oneshot(refund(3)).await.unwrap_err();
    assert_eq!(code(&error), "too_many_pending");
    // Joining an identical pending call is not a new request.
    let joined = tokio::spawn(f.svc.clone().oneshot(refund(1)));
    support::until(|| f.gate.stats().parked == 3).await;
    // Another principal has room until the total is reached.
    let _c = f.park(refund(3).principal("agent-8")).await;
    let error = f
        .svc
        .clone()
        .oneshot(refund(4).principal("agent-9"))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "too_many_pending");
    assert_eq!(f.gate.stats().pending, 3);
    assert_eq!(f.alerts.alerts().len(), 3);
    drop(joined);
}

#[tokio::test(start_paused = true)]
async fn submit_returns_a_handle_to_poll_and_wait_on() {
    let f = fixture_with(Scope::Value, |b| {
        b.approval_base_url("https://approve.example.com/tollgate/")
    });
    let mut svc = f.svc.clone();
    let Submitted::Done(out) = svc.submit(search("x")).await.unwrap() else {
        panic!("allowed calls run")
    };
    assert!(out.starts_with("ran search.web"));

    let Submitted::Pending(mut pending) = svc.submit(refund(100)).await.unwrap() else {
        panic!("must park")
    };
    let id = pending.id();
    assert_eq!(
        pending.approval_url().unwrap(),
        format!("https://approve.example.com/tollgate/{id}")
    );
    assert_eq!(pending.status().unwrap(), Status::Pending);
    assert_eq!(
        pending
            .expires_at()
            .duration_since(pending.request().created_at())
            .unwrap(),
        support::TTL
    );

    // Waiting gives up on its own timeout, which is not the request's expiry.
    let error = pending.wait(Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(code(&error), "wait_timed_out");
    assert_eq!(
        f.gate
            .wait(id, Duration::from_secs(1))
            .await
            .unwrap_err()
            .code(),
        "wait_timed_out"
    );
    assert_eq!(pending.status().unwrap(), Status::Pending);

    let alert = f.alerts.next_alert().await;
    let gate = f.gate.clone();
    let by_id = tokio::spawn(async move { gate.wait(id, Duration::from_secs(60)).await });
    f.approve(&alert, Scope::Once).await.unwrap();
    assert!(
        pending
            .wait(Duration::from_secs(1))
            .await
            .unwrap()
            .starts_with("ran payments.refund")
    );
    assert!(!by_id.await.unwrap().unwrap().is_pending());
    assert_eq!(pending.status().unwrap(), Status::Executed);
    assert_eq!(
        f.tools.calls_of(&refund(100)),
        1,
        "an approved call runs at most once"
    );
    assert_eq!(
        code(&pending.wait(Duration::from_secs(1)).await.unwrap_err()),
        "already_resolved"
    );
}

/// A `wait` already listening hears each change at once, however the gate decides whether
/// anyone listens: time is paused, so a missed wake-up would let the runtime run the clock to
/// the wait's timeout.
#[tokio::test(start_paused = true)]
async fn a_wait_under_way_hears_the_decision_at_once() {
    let f = fixture(Scope::Value);
    let (task, alert) = f.park(refund(100)).await;
    let id = alert.request().id();
    let started = tokio::time::Instant::now();
    let mut waiting = Box::pin(f.gate.wait(id, Duration::from_secs(60)));
    assert!(
        support::poll_once(&mut waiting).is_none(),
        "pending: it listens"
    );
    let mut second = Box::pin(f.gate.wait(id, Duration::from_secs(60)));
    assert!(support::poll_once(&mut second).is_none());
    drop(second); // a wait that gives up stops counting; the other still hears
    f.approve(&alert, Scope::Once).await.unwrap();
    task.await.unwrap().unwrap();
    assert!(!waiting.await.unwrap().is_pending());
    assert_eq!(started.elapsed(), Duration::ZERO, "no timeout ran out");
}

#[tokio::test]
async fn dropping_a_pending_handle_cancels_it() {
    let f = fixture(Scope::Value);
    let Submitted::Pending(pending) = f.svc.clone().submit(refund(100)).await.unwrap() else {
        panic!()
    };
    let id = pending.id();
    pending.cancel();
    assert_eq!(
        f.gate.wait(id, Duration::from_secs(5)).await.unwrap(),
        Status::Cancelled
    );
}

#[tokio::test]
async fn decisions_must_name_their_approver() {
    let f = fixture(Scope::Value);
    let (_task, alert) = f.park(refund(100)).await;
    let id = alert.request().id();
    let code_ = alert.code().reveal();
    assert_eq!(
        f.gate
            .approve(Approve::new(id, code_))
            .await
            .unwrap_err()
            .code(),
        "missing_approver"
    );
    assert_eq!(
        f.gate.deny(Deny::new(id, code_)).await.unwrap_err().code(),
        "missing_approver"
    );
    assert_eq!(f.gate.status(id).unwrap(), Status::Pending);
}

#[test]
fn building_a_gate_checks_its_settings() {
    let kind = |b: tollgate::gate::GateBuilder| b.build().unwrap_err().kind();
    let recorder = RecordingNotifier::new();
    let base = || Gate::builder().notifier(recorder.clone());
    assert_eq!(kind(base()), ErrorKind::MissingSecret);
    assert_eq!(kind(base().secret("short")), ErrorKind::InvalidConfig);
    assert_eq!(
        kind(base().secret(support::SECRET).random_secret()),
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        kind(base().secret(support::SECRET).code_length(5)),
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        kind(base().secret(support::SECRET).code_length(65)),
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        kind(base().secret(support::SECRET).request_ttl(Duration::ZERO)),
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        kind(base().secret(support::SECRET).request_ttl(Duration::MAX)),
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        kind(base().secret(support::SECRET).max_attempts(0)),
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        kind(base().secret(support::SECRET).max_attempts(1001)),
        ErrorKind::InvalidConfig
    );
    base()
        .secret(support::SECRET)
        .max_attempts(1000)
        .build()
        .unwrap();
    assert_eq!(
        kind(base().secret(support::SECRET).max_pending(0)),
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        kind(base().secret(support::SECRET).max_waiters_per_request(0)),
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        kind(Gate::builder().secret(support::SECRET)),
        ErrorKind::InvalidConfig
    );
    base().random_secret().build().unwrap();
    let error = base().build().unwrap_err();
    assert!(
        error.to_string().contains("random_secret"),
        "says how to fix it: {error}"
    );
}

#[tokio::test]
async fn codes_have_the_configured_length_and_differ_per_request() {
    let f = fixture_with(Scope::Value, |b| b.code_length(12));
    let (_a, first) = f.park(refund(1)).await;
    let (_b, second) = f.park(refund(2)).await;
    for alert in [&first, &second] {
        let code = alert.code().reveal();
        assert_eq!(code.len(), 12);
        assert!(
            code.chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
            "{code}"
        );
    }
    assert_ne!(first.code(), second.code());
    // A code is bound to its request.
    let swapped = Approve::new(first.request().id(), second.code().reveal()).by("alice");
    assert_eq!(
        f.gate.approve(swapped).await.unwrap_err().code(),
        "access_request_not_found"
    );
}

#[tokio::test]
async fn codes_from_another_secret_do_not_verify() {
    let f = fixture(Scope::Value);
    let (_task, alert) = f.park(refund(1)).await;
    let other = RecordingNotifier::new();
    let other_gate = Gate::builder()
        .secret("another secret, also long enough")
        .notifier(other.clone())
        .build()
        .unwrap();
    let _other_task = tokio::spawn(
        other_gate
            .layer(policy(Scope::Value))
            .layer(Tools::default())
            .oneshot(refund(1)),
    );
    let other_alert = other.next_alert().await;
    assert_ne!(alert.code(), other_alert.code());
}

#[test]
fn arguments_with_repeated_keys_are_refused() {
    let error =
        ToolCall::from_json("payments.refund", r#"{"amount": 1, "amount": 1000}"#).unwrap_err();
    assert_eq!(error.code(), "invalid_arguments");
    assert!(
        std::error::Error::source(&error)
            .unwrap()
            .to_string()
            .contains("duplicate key")
    );
    let call = ToolCall::from_json("payments.refund", r#"{"amount": 1}"#).unwrap();
    assert_eq!(call.args(), &json!({"amount": 1}));
}

#[test]
fn outside_a_runtime_a_parked_call_fails_with_no_runtime() {
    let gate = gate(&RecordingNotifier::new()).build().unwrap();
    let mut svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let mut future = Box::pin(tower::Service::call(&mut svc, refund(1)));
    let error = support::poll_once(&mut future)
        .expect("fails at once")
        .unwrap_err();
    assert_eq!(code(&error), "no_runtime");
}

#[test]
fn every_error_kind_has_a_stable_distinct_snake_case_code() {
    use ErrorKind::*;
    let kinds = ErrorKind::ALL;
    let codes: std::collections::HashSet<_> = kinds.iter().map(|k| k.code()).collect();
    assert_eq!(codes.len(), kinds.len());
    for &kind in kinds {
        let code = kind.code();
        assert!(
            code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{code}"
        );
        let message = tollgate::Error::new(kind).to_string();
        assert!(message.starts_with(&format!("{code}: ")), "{message}");
        assert!(
            message.len() > code.len() + 20,
            "the message explains: {message}"
        );
    }
    assert!(TooManyPending.is_retryable() && AccessRequestExpired.is_retryable());
    assert!(!AccessRequestDenied.is_retryable() && !TooManyAttempts.is_retryable());
}

#[test]
fn request_ids_print_and_parse() {
    let id: tollgate::RequestId = "areq_0123456789abcdef0123456789abcdef".parse().unwrap();
    assert_eq!(id.to_string(), "areq_0123456789abcdef0123456789abcdef");
    for bad in [
        "",
        "areq_",
        "rule_0123456789abcdef0123456789abcdef",
        "areq_0123",
        "areq_zz23456789abcdef0123456789abcdef",
    ] {
        assert_eq!(
            bad.parse::<tollgate::RequestId>().unwrap_err().code(),
            "access_request_not_found"
        );
    }
    assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
}

/// The gate's expiry task runs on the runtime of the first request; if that runtime shuts
/// down, the next request starts it again on its own, and requests still expire on time.
#[test]
fn requests_expire_after_the_runtime_of_the_first_one_shut_down() {
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let f = fixture(Scope::Value);
    let first = paused();
    first.block_on(async {
        let (task, _) = f.park(refund(1)).await;
        task.abort();
    });
    drop(first);
    paused().block_on(async {
        let started = tokio::time::Instant::now();
        let (task, _) = f.park(refund(2)).await;
        let error = task.await.unwrap().unwrap_err();
        assert_eq!(code(&error), "access_request_expired");
        assert_eq!(started.elapsed(), support::TTL);
    });
}

/// A gate that is dropped leaves no task behind: its store writer and its expiry task end.
#[tokio::test]
async fn a_dropped_gate_leaves_no_task_behind() {
    let tasks = tokio::runtime::Handle::current().metrics();
    {
        let f = fixture(Scope::Value);
        let (task, _) = f.park(refund(1)).await;
        task.abort();
        let _ = task.await;
        until(|| f.gate.stats().parked == 0).await;
        assert!(tasks.num_alive_tasks() > 0, "the gate's tasks run");
    }
    until(|| tasks.num_alive_tasks() == 0).await;
}

#[tokio::test]
async fn an_approval_can_end_at_a_given_time() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let f = fixture(Scope::Value);
    let (task, alert) = f.park(refund(100)).await;
    let id = alert.request().id();
    let code_ = alert.code().reveal();
    let now = SystemTime::now();
    let refused = |approve: Approve| async { f.gate.approve(approve).await.unwrap_err() };
    for end in [
        now - Duration::from_secs(1),
        UNIX_EPOCH,
        now + Duration::from_secs(3601),
    ] {
        let error = refused(
            Approve::new(id, code_)
                .scope(Scope::Value)
                .until(end)
                .by("a"),
        )
        .await;
        assert_eq!(error.code(), "scope_not_allowed", "{end:?}");
    }
    assert_eq!(f.gate.status(id).unwrap(), Status::Pending);

    // A time with a fraction of a millisecond: the rule ends at its millisecond.
    let end = now + Duration::from_millis(30 * 60 * 1000) + Duration::from_micros(700);
    let approval = f
        .gate
        .approve(
            Approve::new(id, code_)
                .scope(Scope::Value)
                .until(end)
                .by("alice"),
        )
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    let ends = approval.rule().unwrap().expires_at();
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(ms(ends), ms(end));
    assert_eq!(
        ends.duration_since(UNIX_EPOCH).unwrap().subsec_micros() % 1000,
        0
    );
    assert_eq!(f.gate.rules()[0].expires_at(), ends);

    // The latest of `ttl` and `until` given is the one that counts, for denials too.
    let (task, alert) = f.park(refund(200)).await;
    let end = SystemTime::now() + Duration::from_secs(600);
    let denial = f
        .gate
        .deny(
            Deny::new(alert.request().id(), alert.code().reveal())
                .remember(Scope::Value)
                .ttl(Duration::from_secs(60))
                .until(end)
                .by("alice"),
        )
        .await
        .unwrap();
    assert_eq!(ms(denial.rule().unwrap().expires_at()), ms(end));
    assert_eq!(
        code(&task.await.unwrap().unwrap_err()),
        "access_request_denied"
    );
}

#[tokio::test]
async fn notifiers_can_be_replaced_while_calls_wait() {
    let f = fixture(Scope::Value);
    let (task, first) = f.park(refund(100)).await;

    let next = RecordingNotifier::new();
    f.gate
        .replace_notifiers(tollgate::notify::FanOut::new().with(next.clone()))
        .unwrap();
    let (task2, _) = {
        let task = tokio::spawn(f.svc.clone().oneshot(refund(200)));
        (task, next.next_alert().await)
    };
    assert_eq!(
        f.alerts.alerts().len(),
        1,
        "the old notifier hears of nothing new"
    );

    // The request parked before the replacement is decided as before; its resolution goes to
    // the notifiers in place now.
    f.approve(&first, Scope::Once).await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(
        next.next_resolution().await.request().id(),
        first.request().id()
    );

    let none = f
        .gate
        .replace_notifiers(tollgate::notify::FanOut::new())
        .unwrap_err();
    assert_eq!(none.code(), "invalid_config");
    assert!(!next.alerts().is_empty(), "the notifiers in place stay");
    task2.abort();
}

#[tokio::test(start_paused = true)]
async fn a_request_nobody_decides_in_time_is_escalated_once_and_audited() {
    let second = RecordingNotifier::new();
    let f = fixture_with(Scope::Value, |b| {
        b.escalate(Duration::from_secs(60), second.clone())
    });
    let (task, alert) = f.park(refund(100)).await;
    // Decided before its escalation: nobody else hears of it.
    let (quick, quick_alert) = f.park(refund(1)).await;
    f.approve(&quick_alert, Scope::Once).await.unwrap();
    quick.await.unwrap().unwrap();

    advance(Duration::from_secs(59)).await;
    settle().await;
    assert!(second.alerts().is_empty(), "not yet");
    advance(Duration::from_secs(2)).await;
    let escalated = second.next_alert().await;
    assert_eq!(escalated.request().id(), alert.request().id());
    assert_eq!(
        escalated.code().reveal(),
        alert.code().reveal(),
        "the same code"
    );
    assert_eq!(second.alerts().len(), 1, "only the request still pending");
    assert_eq!(
        f.alerts.alerts().len(),
        2,
        "the first notifiers hear nothing new"
    );

    // Whoever was told may decide; the trail says it was escalated, before the decision.
    let id = alert.request().id();
    f.gate
        .approve(Approve::new(id, escalated.code().reveal()).by("bob"))
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    let trail = f.trail(id).await;
    let events: Vec<_> = trail.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "requested",
            "notified",
            "escalated",
            "approved",
            "executing",
            "executed"
        ]
    );
    advance(Duration::from_secs(600)).await;
    settle().await;
    assert_eq!(second.alerts().len(), 1, "once");
}

#[tokio::test(start_paused = true)]
async fn an_escalation_can_give_the_request_more_time_once_with_the_same_code() {
    let second = RecordingNotifier::new();
    let extra = Duration::from_secs(120);
    let f = fixture_with(Scope::Value, |b| {
        b.escalate(Duration::from_secs(60), second.clone())
            .escalation_extends(extra)
    });
    let (task, alert) = f.park(refund(100)).await;
    let id = alert.request().id();
    let made_to_expire = alert.request().expires_at();
    assert_eq!(alert.request().extended_by(), None);

    advance(Duration::from_secs(61)).await;
    let escalated = second.next_alert().await;
    assert_eq!(escalated.request().expires_at(), made_to_expire + extra);
    assert_eq!(escalated.request().extended_by(), Some(extra));
    assert_eq!(
        escalated.code().reveal(),
        alert.code().reveal(),
        "the same code"
    );

    // Past the expiry it was made with, it is still pending, and the first code approves it.
    advance(support::TTL).await;
    settle().await;
    assert_eq!(f.gate.status(id).unwrap(), Status::Pending);
    f.gate
        .approve(Approve::new(id, alert.code().reveal()).by("bob"))
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    let trail = f.trail(id).await;
    let escalation = trail
        .iter()
        .find(|e| e.event.as_str() == "escalated")
        .unwrap();
    assert!(
        escalation
            .detail
            .as_deref()
            .unwrap()
            .contains("now expires at"),
        "{escalation:?}"
    );

    // Another request, left alone: it expires at the later time, extended once.
    let (task, alert) = f.park(refund(7)).await;
    advance(Duration::from_secs(61)).await;
    second.next_alert().await;
    advance(support::TTL - Duration::from_secs(61) + Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(
        f.gate.status(alert.request().id()).unwrap(),
        Status::Pending
    );
    advance(Duration::from_secs(61)).await;
    let error = task.await.unwrap().unwrap_err();
    assert_eq!(code(&error), "access_request_expired");
    assert_eq!(second.alerts().len(), 2, "each escalated once");
}

#[test]
fn an_escalation_extends_only_with_an_escalation_and_by_a_sensible_time() {
    let error = gate(&RecordingNotifier::new())
        .escalation_extends(Duration::from_secs(60))
        .build()
        .unwrap_err();
    assert_eq!(error.code(), "invalid_config");
    let error = gate(&RecordingNotifier::new())
        .escalate(Duration::from_secs(60), RecordingNotifier::new())
        .escalation_extends(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(error.code(), "invalid_config");
}

#[test]
fn an_escalation_must_come_before_the_request_expires() {
    for after in [Duration::ZERO, support::TTL, support::TTL * 2] {
        let error = gate(&RecordingNotifier::new())
            .escalate(after, RecordingNotifier::new())
            .build()
            .unwrap_err();
        assert_eq!(error.code(), "invalid_config", "{after:?}");
    }
}

/// Lets every task that can run, run: a clock that moved wakes timers, whose tasks need turns.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}
