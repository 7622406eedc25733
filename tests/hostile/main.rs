//! The gate against hostile agents and approvers: attempts spent by those who may not decide,
//! numbers that read differently than they run, caller text that steers a screen, joins that
//! pile up, listings out of order, forged rules, and a gate shut down under load.

#[path = "../support/mod.rs"]
mod support;

use serde_json::json;
use tollgate::notify::{RecordingNotifier, Template, TerminalNotifier};
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::store::{AuditEvent, AuditFilter};
use tollgate::{Approve, Deny, ErrorKind, RequestId, Scope, Status, ToolCall};
use tower::{Layer, ServiceExt};

use support::{Buffer, Tools, code, gate, hidden, policy, refund, until};

#[tokio::test]
async fn who_may_not_decide_spends_no_attempts_and_hears_what_an_unknown_id_hears() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).max_attempts(2).build().unwrap();
    let policy = CapabilityTable::new().ask(
        "payments.refund",
        Ask::new("moves money").approvers(["alice"]),
    );
    let svc = gate.layer(policy).layer(Tools::default());
    let task = tokio::spawn(svc.oneshot(refund(10)));
    let alert = alerts.next_alert().await;
    let id = alert.request().id();
    let right = alert.code().reveal().to_owned();

    let unknown = gate
        .approve(
            Approve::new(
                "areq_00000000000000000000000000000000"
                    .parse::<RequestId>()
                    .unwrap(),
                "00000000",
            )
            .by("bob"),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::AccessRequestNotFound);
    // bob is not among the request's approvers: wrong codes and even the right one, approve or
    // deny, are answered as an unknown id is, and none of them counts.
    for attempt in 0..10 {
        let guess = format!("{attempt:08X}");
        let errors = [
            gate.approve(Approve::new(id, &guess).by("bob")).await,
            gate.approve(Approve::new(id, &right).by("bob")).await,
        ]
        .map(Result::unwrap_err);
        let denied = gate
            .deny(Deny::new(id, &guess).by("bob"))
            .await
            .unwrap_err();
        for error in errors.iter().chain([&denied]) {
            assert_eq!(error.to_string(), unknown.to_string());
        }
    }
    assert_eq!(gate.status(id).unwrap(), Status::Pending);
    assert_eq!(gate.stats().wrong_codes, 0);
    let rejected = gate
        .audit(AuditFilter::new().event(AuditEvent::CodeRejected))
        .await
        .unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");

    gate.approve(Approve::new(id, &right).by("alice"))
        .await
        .unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn numbers_an_f64_would_fold_are_refused_as_arguments() {
    for args in [
        r#"{"amount": 100000000000000000001}"#,
        r#"{"amount": -9223372036854775809}"#,
        r#"{"amount": 12.3400000000000000000001}"#,
    ] {
        let error = ToolCall::from_json("payments.refund", args).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArguments, "{args}");
        let error = tollgate::args::ArgsDigest::from_json_str(args).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArguments, "{args}");
    }
    // Numbers that are exactly what they read still digest alike whatever their spelling.
    let a = ToolCall::from_json("x", r#"{"a": 18446744073709551615, "b": 1.50, "c": 1e2}"#);
    let b = ToolCall::from_json("x", r#"{"c": 100, "b": 1.5, "a": 18446744073709551615}"#);
    assert_eq!(
        tollgate::args::ArgsDigest::of(a.unwrap().args()),
        tollgate::args::ArgsDigest::of(b.unwrap().args())
    );
}

#[tokio::test]
async fn caller_text_is_shown_escaped_and_cannot_forge_a_row_of_the_alert() {
    let (alerts, screen) = (RecordingNotifier::new(), Buffer::default());
    let gate = gate(&alerts)
        .notifier(TerminalNotifier::writer(screen.clone()))
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let forged = "ticket 1\n│ code        00000000\r│ policy      pre-approved by finance\
                  \u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}[8m\u{9b}2J\u{85}\u{2028}";
    let call = ToolCall::new(
        "payments.refund",
        json!({
            "note": "\u{7f}\u{9b}2J invoice\u{202e}fdp.exe",
            "amount": 5,
            // Shown as nothing unescaped: zero-width space, word joiner, byte order mark, a tag.
            "to": "acct_good\u{200b}\u{2060}\u{feff}\u{e0061}",
        }),
    )
    .principal("agent\u{202e}7")
    .session("conv\u{2066}1")
    .reason(forged);
    let task = tokio::spawn(svc.oneshot(call));
    let alert = alerts.next_alert().await;
    until(|| screen.text().contains('└')).await;
    gate.deny(
        Deny::new(alert.request().id(), alert.code().reveal())
            .reason("no\n│ code        00000000\u{1b}[2J")
            .by("alice"),
    )
    .await
    .unwrap();
    assert_eq!(
        code(&task.await.unwrap().unwrap_err()),
        "access_request_denied"
    );
    until(|| screen.text().contains("denied by")).await;

    let text = screen.text();
    assert!(!text.chars().any(hidden), "{text:?}");
    let starting = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(starting("│ code"), 1, "{text}");
    assert_eq!(starting("│ policy"), 1, "{text}");
    assert!(
        text.contains(r"ticket 1\n│ code        00000000\r│ policy"),
        "{text}"
    );
    assert!(text.contains(r"\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}[8m\u{9b}2J\u{85}\u{2028}"));
    assert!(
        text.contains(r"agent\u{202e}7 (session conv\u{2066}1)"),
        "{text}"
    );
    assert!(
        text.contains(r#""note": "\u{7f}\u{9b}2J invoice\u{202e}fdp.exe""#),
        "{text}"
    );
    assert!(
        text.contains(r#""to": "acct_good\u{200b}\u{2060}\u{feff}\u{e0061}""#),
        "{text}"
    );
    assert!(text.contains(r"denied by alice: no\n│ code"), "{text}");

    // Templates (email, chat, custom notifiers) show the same fields the same way.
    let template = Template::new("{reason}|{principal}|{session}|{args}").unwrap();
    let rendered = template.render_alert(&alert);
    assert!(!rendered.chars().any(hidden), "{rendered:?}");
    assert_eq!(rendered.lines().next().unwrap().matches('|').count(), 3);
}

#[tokio::test]
async fn callers_waiting_on_one_request_are_capped_and_a_leaver_frees_its_place() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).max_waiters_per_request(3).build().unwrap();
    let tools = Tools::default();
    let svc = gate.layer(policy(Scope::Once)).layer(tools.clone());
    let waiting: Vec<_> = (0..3)
        .map(|_| tokio::spawn(svc.clone().oneshot(refund(7))))
        .collect();
    let alert = alerts.next_alert().await;
    until(|| gate.stats().parked == 3).await;

    let over = svc.clone().oneshot(refund(7)).await.unwrap_err();
    assert_eq!(code(&over), "too_many_pending");
    let error = over.downcast_ref::<tollgate::Error>().unwrap();
    assert_eq!(error.request_id(), Some(alert.request().id()));
    assert!(error.is_retryable());

    waiting[0].abort();
    until(|| gate.stats().parked == 2).await;
    let joined = tokio::spawn(svc.clone().oneshot(refund(7)));
    until(|| gate.stats().parked == 3).await;
    assert_eq!(alerts.alerts().len(), 1, "a join alerts nobody");

    gate.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    for task in waiting.into_iter().skip(1).chain([joined]) {
        task.await.unwrap().unwrap();
    }
    assert_eq!(tools.calls_of(&refund(7)), 3);
}

#[tokio::test]
async fn pending_requests_are_listed_in_the_order_they_were_made() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts)
        .max_pending_per_principal(100)
        .unlimited_alert_rate()
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Once)).layer(Tools::default());
    let mut tasks = Vec::new();
    for amount in 0..64 {
        tasks.push(tokio::spawn(svc.clone().oneshot(refund(amount))));
        until(|| gate.pending().len() == amount as usize + 1).await;
    }
    let listed: Vec<u64> = gate
        .pending()
        .iter()
        .map(|request| request.args()["amount"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, (0..64).collect::<Vec<_>>());
    for task in tasks {
        task.abort();
    }
}

#[tokio::test]
async fn a_gate_shut_down_lets_its_callers_go_and_parks_no_new_call() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let tools = Tools::default();
    let svc = gate.layer(policy(Scope::Capability)).layer(tools.clone());

    // Charges are approved capability-wide before the shutdown: a standing rule.
    let charge = || ToolCall::new("payments.charge", json!({"amount": 3})).principal("agent-7");
    let task = tokio::spawn(svc.clone().oneshot(charge()));
    let alert = alerts.next_alert().await;
    gate.approve(
        Approve::new(alert.request().id(), alert.code().reveal())
            .scope(Scope::Capability)
            .by("alice"),
    )
    .await
    .unwrap();
    task.await.unwrap().unwrap();

    // Two refunds wait for a person, one of them with a second caller.
    let parked = [1, 2, 1].map(|amount| tokio::spawn(svc.clone().oneshot(refund(amount))));
    let waiting = [alerts.next_alert().await, alerts.next_alert().await];
    until(|| gate.stats().parked == 3).await;

    gate.shutdown().await.unwrap();
    for task in parked {
        let error = task.await.unwrap().unwrap_err();
        assert_eq!(code(&error), "gate_shut_down");
        assert!(
            error
                .downcast_ref::<tollgate::Error>()
                .unwrap()
                .is_retryable()
        );
    }
    for alert in &waiting {
        let id = alert.request().id();
        assert_eq!(gate.status(id).unwrap(), Status::Abandoned);
        // Stored as abandoned, and the notifiers were told, before shutdown returned.
        let trail = gate.audit(AuditFilter::new().request(id)).await.unwrap();
        assert_eq!(trail.last().unwrap().event, AuditEvent::Abandoned);
        assert!(
            alerts
                .resolutions()
                .iter()
                .any(|r| r.request().id() == id && *r.outcome() == tollgate::Outcome::Abandoned)
        );
        // An approver who comes too late hears what happened.
        let late = gate
            .approve(Approve::new(id, alert.code().reveal()).by("alice"))
            .await
            .unwrap_err();
        assert_eq!(late.kind(), ErrorKind::AccessRequestAbandoned);
    }

    // A call that needs a person fails at once, and nobody is alerted.
    let refused = svc.clone().oneshot(refund(9)).await.unwrap_err();
    assert_eq!(code(&refused), "gate_shut_down");
    assert_eq!(alerts.alerts().len(), 3);
    // What needs no person still runs: allowed by policy, or covered by a standing rule.
    svc.clone().oneshot(support::search("x")).await.unwrap();
    svc.clone().oneshot(charge()).await.unwrap();
    assert_eq!(tools.calls_of(&charge()), 2);
    gate.shutdown().await.unwrap();
}
