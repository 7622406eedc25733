//! The middleware's contract with the service it wraps: nothing reaches the inner service before
//! approval, exactly one call after, and a parked call holds none of its readiness.

#[path = "../support/mod.rs"]
mod support;

use std::task::Poll;
use std::time::Duration;

use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Ask, Decision, policy_fn};
use tollgate::{Approve, Call, Deny, Gate, Scope, ToolCall};
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_test::mock;

use support::{Tools, code, gate, policy, refund, search};

type Mocked<P> = (
    Gate,
    RecordingNotifier,
    tollgate::RequireApproval<mock::Mock<ToolCall, &'static str>, P>,
    mock::Handle<ToolCall, &'static str>,
);

/// A gate with `policy` in front of tower-test's mock service.
fn mocked<P>(policy: P) -> Mocked<P> {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let (inner, handle) = mock::pair::<ToolCall, &'static str>();
    let svc = tollgate::RequireApproval::new(inner, gate.clone(), policy);
    (gate, alerts, svc, handle)
}

#[tokio::test]
async fn the_inner_service_is_not_called_before_approval_and_once_after() {
    let (gate, alerts, svc, mut handle) = mocked(Ask::new("test"));

    let call = tokio::spawn(svc.oneshot(refund(100)));
    let alert = alerts.next_alert().await;
    assert!(
        handle.poll_request().is_pending(),
        "no request before approval"
    );

    let approver = {
        let gate = gate.clone();
        tokio::spawn(async move {
            gate.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
                .await
        })
    };
    let (request, respond) = handle
        .next_request()
        .await
        .expect("one request after approval");
    assert_eq!(
        request,
        refund(100),
        "the call that runs is the call that was approved"
    );
    respond.send_response("refunded");
    assert_eq!(call.await.unwrap().unwrap(), "refunded");
    approver.await.unwrap().unwrap();
    assert!(
        !matches!(handle.poll_request(), Poll::Ready(Some(_))),
        "exactly one request"
    );
}

#[tokio::test]
async fn a_denied_call_never_reaches_the_inner_service() {
    let (gate, alerts, svc, mut handle) = mocked(Ask::new("test"));
    let call = tokio::spawn(svc.oneshot(refund(100)));
    let alert = alerts.next_alert().await;
    gate.deny(Deny::new(alert.request().id(), alert.code().reveal()).by("bob"))
        .await
        .unwrap();
    assert_eq!(
        code(&call.await.unwrap().unwrap_err()),
        "access_request_denied"
    );
    assert!(
        !matches!(handle.poll_request(), Poll::Ready(Some(_))),
        "no request ever arrived"
    );
}

#[tokio::test]
async fn inner_service_errors_pass_through_unchanged() {
    let (_gate, _alerts, svc, mut handle) = mocked(policy(Scope::Value));
    let call = tokio::spawn(svc.oneshot(search("x")));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error(std::io::Error::other("backend down"));
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(code(&error), "not_a_tollgate_error");
    assert_eq!(error.to_string(), "backend down");
}

#[tokio::test(start_paused = true)]
async fn a_parked_call_holds_no_readiness_of_the_inner_service() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let tools = Tools::default();
    let mut svc = ServiceBuilder::new()
        .layer(gate.layer(policy(Scope::Value)))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(tools.clone());

    // Park a call through this very service handle.
    let parked = svc.ready().await.unwrap().call(refund(100));
    let parked = tokio::spawn(parked);
    let alert = alerts.next_alert().await;

    // The one permit is free: an allowed call passes while the other waits for a person. If the
    // parked call kept the permit, `ready` would never finish and the timeout would fire.
    let ready = tokio::time::timeout(Duration::from_secs(1), svc.ready()).await;
    let out = ready
        .expect("the inner service is ready")
        .unwrap()
        .call(search("q"))
        .await
        .unwrap();
    assert!(out.starts_with("ran search.web"));

    // After approval the parked call gets the permit back and runs.
    gate.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    assert!(
        parked
            .await
            .unwrap()
            .unwrap()
            .starts_with("ran payments.refund")
    );
    assert_eq!(tools.total(), 2);
}

#[tokio::test]
async fn closures_decide_on_the_call_and_its_arguments() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let threshold = policy_fn(|call: &ToolCall| match call.args()["amount"].as_u64() {
        Some(amount) if amount <= 100 => Decision::allow("small refunds pass"),
        Some(_) => Decision::Ask(Ask::new("over 100").max_scope(Scope::Value)),
        None => Decision::Deny("an amount is required".into()),
    });
    let svc = gate.layer(threshold).layer(Tools::default());
    svc.clone().oneshot(refund(100)).await.unwrap();
    let missing = ToolCall::new("payments.refund", serde_json::json!({}));
    assert_eq!(
        code(&svc.clone().oneshot(missing).await.unwrap_err()),
        "access_request_denied"
    );
    let call = tokio::spawn(svc.clone().oneshot(refund(101)));
    let alert = alerts.next_alert().await;
    assert_eq!(alert.request().reasoning(), "over 100");
    assert_eq!(alert.request().reason(), Some("customer ticket #4421"));
    assert_eq!(alert.request().principal(), "agent-7");
    assert_eq!(alert.request().session(), Some("conv-42"));
    assert_eq!(
        alert.request().args_digest(),
        tollgate::args::ArgsDigest::of(refund(101).args())
    );
    assert_eq!(
        alert.request().args_json(),
        r#"{"amount":101,"charge":"ch_1"}"#
    );
    call.abort();
}

/// A user's own request type, read through `Call`.
#[derive(Debug)]
struct Transfer {
    to: String,
    cents: u64,
}

impl Call for Transfer {
    fn capability(&self) -> &str {
        "bank.transfer"
    }
    fn args(&self) -> std::borrow::Cow<'_, serde_json::Value> {
        std::borrow::Cow::Owned(serde_json::json!({"to": self.to, "cents": self.cents}))
    }
}

#[tokio::test]
async fn user_request_types_work_through_the_call_trait() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let bank = tower::service_fn(|t: Transfer| async move { Ok::<_, tollgate::BoxError>(t.cents) });
    let svc = gate.layer(Ask::new("money leaves")).layer(bank);
    let call = tokio::spawn(svc.oneshot(Transfer {
        to: "acct_9".into(),
        cents: 500,
    }));
    let alert = alerts.next_alert().await;
    assert_eq!(alert.request().principal(), tollgate::gate::ANONYMOUS);
    assert_eq!(alert.request().args()["to"], "acct_9");
    gate.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 500);
}

#[tokio::test]
async fn poll_ready_errors_of_the_inner_service_surface() {
    let (_gate, _alerts, mut svc, mut handle) = mocked(policy(Scope::Value));
    handle.send_error("not ready");
    let ready = std::future::poll_fn(|cx| Poll::Ready(svc.poll_ready(cx))).await;
    assert!(matches!(ready, Poll::Ready(Err(e)) if e.to_string() == "not ready"));
}
