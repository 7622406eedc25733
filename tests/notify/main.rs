//! The notifiers shipped with the core and the gate's delivery rules: what the terminal shows a
//! person, fan-out, fallback, timeouts, bounded concurrency, the alert rate, parking unnotified.

#[path = "../support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tollgate::notify::{
    ChannelsFailed, FanOut, Notifier, NotifierExt, RecordingNotifier, TerminalNotifier, notifier_fn,
};
use tollgate::{Approve, Deny, Scope};
use tower::{Layer, ServiceExt};

use support::{Buffer, Tools, code, policy, refund};

#[test]
fn the_terminal_alert_names_everything_an_approver_needs() {
    let out = Buffer::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let alerts = RecordingNotifier::new();
        let gate = support::gate(&alerts)
            .notifier(TerminalNotifier::writer(out.clone()))
            .approval_base_url("https://ops.example.com/approvals")
            .build()
            .unwrap();
        let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
        let task = tokio::spawn(svc.oneshot(refund(10_000)));
        let alert = alerts.next_alert().await;
        support::until(|| out.text().contains("└")).await;
        let text = out.text();
        for needle in [
            "payments.refund",
            "agent-7 (session conv-42)",
            "customer ticket #4421",
            "refunds move money",
            "\"amount\": 10000",
            &alert.request().id().to_string(),
            alert.code().reveal(),
            "(in 300 s)",
            "up to scope `value`, rules up to 3600 s",
            "https://ops.example.com/approvals/areq_",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        gate.deny(
            Deny::new(alert.request().id(), alert.code().reveal())
                .reason("wrong customer")
                .by("bob"),
        )
        .await
        .unwrap();
        task.await.unwrap().unwrap_err();
        support::until(|| out.text().contains("denied by bob: wrong customer")).await;
    });
}

#[tokio::test(start_paused = true)]
async fn a_fan_out_succeeds_when_one_channel_accepts_and_names_every_failed_one() {
    let ok = RecordingNotifier::new();
    let fan_out = FanOut::new()
        .with(RecordingNotifier::failing().named("pager"))
        .with(ok.clone().named("chat"));
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .notifier(fan_out)
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let call = tokio::spawn(svc.clone().oneshot(refund(1)));
    let alert = ok.next_alert().await;
    gate.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    call.await.unwrap().unwrap();

    // Every channel failing: the error says which failed and how.
    let report = Arc::new(Mutex::new(String::new()));
    let all_failing = Arc::new(
        FanOut::new()
            .with(RecordingNotifier::failing().named("pager"))
            .with(
                notifier_fn(|_| std::future::pending())
                    .timeout(Duration::from_secs(1))
                    .named("chat"),
            ),
    );
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .notifier(notifier_fn({
            let report = report.clone();
            move |alert| {
                let (all_failing, report) = (all_failing.clone(), report.clone());
                async move {
                    let result = all_failing.notify(&alert).await;
                    let error = result.as_ref().unwrap_err();
                    let failed = std::error::Error::source(error)
                        .and_then(|e| e.downcast_ref::<ChannelsFailed>())
                        .unwrap();
                    let names: Vec<_> = failed
                        .failures()
                        .map(|(name, e)| (name.to_owned(), e.is_timeout()))
                        .collect();
                    assert_eq!(
                        names,
                        [("pager".to_owned(), false), ("chat".to_owned(), true)]
                    );
                    *report.lock().unwrap() = error.to_string();
                    result
                }
            }
        }))
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let error = svc.oneshot(refund(2)).await.unwrap_err();
    assert_eq!(code(&error), "notification_failed");
    let report = report.lock().unwrap().clone();
    assert!(
        report.starts_with("notification_failed: every channel failed: pager: ")
            && report.contains("; chat: notification_failed: timed out after 1s"),
        "{report}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fallback_is_used_only_when_the_primary_fails_and_hears_how_its_requests_end() {
    let primary = RecordingNotifier::failing();
    let fallback = RecordingNotifier::new();
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .notifier(primary.clone().or_else(fallback.clone()))
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());

    let call = tokio::spawn(svc.clone().oneshot(refund(1)));
    let alert = fallback.next_alert().await;
    primary.set_failing(false); // the primary comes back before the decision
    gate.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    call.await.unwrap().unwrap();
    let resolution = fallback.next_resolution().await;
    assert_eq!(resolution.request().id(), alert.request().id());
    assert!(
        primary.resolutions().is_empty(),
        "the primary never saw this request"
    );

    let call = tokio::spawn(svc.oneshot(refund(2)));
    let alert = primary.next_alert().await;
    gate.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    call.await.unwrap().unwrap();
    assert_eq!(
        primary.next_resolution().await.request().id(),
        alert.request().id()
    );
    assert_eq!(fallback.alerts().len(), 1, "the fallback was not needed");
}

#[tokio::test(start_paused = true)]
async fn a_per_notifier_timeout_hands_over_to_the_fallback_in_time() {
    let fallback = RecordingNotifier::new();
    let hung = notifier_fn(|_| std::future::pending());
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .notify_timeout(Duration::from_secs(10))
        .notifier(
            hung.timeout(Duration::from_secs(2))
                .or_else(fallback.clone()),
        )
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let started = Instant::now();
    let _call = tokio::spawn(svc.oneshot(refund(1)));
    fallback.next_alert().await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_hung_notifier_delays_no_other_channel_or_request() {
    let recorder = RecordingNotifier::new();
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .alert_concurrency(1)
        .unlimited_alert_rate()
        .notifier(notifier_fn(|_| std::future::pending()).named("hung"))
        .notifier(recorder.clone())
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let started = Instant::now();
    let calls: Vec<_> = (1..=10)
        .map(|n| tokio::spawn(svc.clone().oneshot(refund(n))))
        .collect();
    for _ in 0..10 {
        recorder.next_alert().await;
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "every alert went out at once"
    );
    assert_eq!(gate.stats().pending, 10);
    drop(calls);
}

#[tokio::test(start_paused = true)]
async fn each_notifier_delivers_at_most_its_concurrency_at_once() {
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let slow = notifier_fn({
        let (now, most) = (now.clone(), most.clone());
        move |_| {
            let (now, most) = (now.clone(), most.clone());
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }
    });
    let (slow, mut delivered) = support::Reported::new(slow);
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .alert_concurrency(3)
        .unlimited_alert_rate()
        .notifier(slow)
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let started = Instant::now();
    let _calls: Vec<_> = (1..=10)
        .map(|n| tokio::spawn(svc.clone().oneshot(refund(n))))
        .collect();
    for _ in 0..10 {
        assert!(delivered.recv().await.unwrap().2);
    }
    assert_eq!(most.load(Ordering::SeqCst), 3);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(4),
        "in rounds of three"
    );
    assert_eq!(
        gate.stats().pending,
        10,
        "every request was alerted in time"
    );
}

#[tokio::test(start_paused = true)]
async fn the_alert_rate_limits_new_requests_per_principal_not_joins() {
    let alerts = RecordingNotifier::new();
    let gate = support::gate(&alerts)
        .alert_rate(2, Duration::from_secs(60))
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let first = tokio::spawn(svc.clone().oneshot(refund(1)));
    let second = tokio::spawn(svc.clone().oneshot(refund(2)));
    alerts.next_alert().await;
    alerts.next_alert().await;

    let error = svc.clone().oneshot(refund(3)).await.unwrap_err();
    assert_eq!(code(&error), "too_many_alerts");
    assert!(error.to_string().contains("retry later"), "{error}");
    let joined = tokio::spawn(svc.clone().oneshot(refund(1)));
    let other = tollgate::ToolCall::new("payments.refund", serde_json::json!({"amount": 3}))
        .principal("agent-8");
    let other = tokio::spawn(svc.clone().oneshot(other));
    alerts.next_alert().await;
    assert_eq!(
        gate.stats().pending,
        3,
        "a join and another principal are not limited"
    );
    assert_eq!(gate.stats().parked, 4);

    tokio::time::advance(Duration::from_secs(30)).await;
    let third = tokio::spawn(svc.clone().oneshot(refund(3)));
    alerts.next_alert().await;
    let error = svc.oneshot(refund(4)).await.unwrap_err();
    assert_eq!(
        code(&error),
        "too_many_alerts",
        "one alert per 30 s after the burst"
    );
    drop((first, second, joined, other, third));
}

#[tokio::test(start_paused = true)]
async fn park_when_unnotified_keeps_the_call_for_an_approver_who_pulls() {
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .notifier(RecordingNotifier::failing())
        .park_when_unnotified()
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let call = tokio::spawn(svc.oneshot(refund(1)));
    // Past the notify timeout: the request still waits.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let pending = gate.pending();
    assert_eq!(pending.len(), 1);
    let id = pending[0].id();
    let code = gate.verification_code(id).unwrap();
    assert_eq!(format!("{code:?}"), "VerificationCode(<redacted>)");
    gate.approve(Approve::new(id, code.reveal()).by("alice"))
        .await
        .unwrap();
    call.await.unwrap().unwrap();
    assert!(
        gate.verification_code(id).is_none(),
        "only pending requests have one"
    );

    // Without a notifier at all, only with the option.
    let none = tollgate::Gate::builder().secret(support::SECRET).build();
    assert_eq!(none.unwrap_err().code(), "invalid_config");
    tollgate::Gate::builder()
        .secret(support::SECRET)
        .park_when_unnotified()
        .build()
        .unwrap();
}

#[test]
fn delivery_settings_are_checked_at_build() {
    let base = || {
        tollgate::Gate::builder()
            .secret(support::SECRET)
            .notifier(RecordingNotifier::new())
    };
    for builder in [
        base().alert_concurrency(0),
        base().notify_timeout(Duration::ZERO),
        base().alert_rate(0, Duration::from_secs(60)),
        base().alert_rate(5, Duration::ZERO),
    ] {
        assert_eq!(builder.build().unwrap_err().code(), "invalid_config");
    }
}

#[tokio::test(start_paused = true)]
async fn a_slot_held_by_a_hung_delivery_comes_back_when_the_notify_timeout_ends_it() {
    let (hangs, mut delivered) = support::Reported::new(notifier_fn(|alert| async move {
        if alert.request().args()["amount"] == 1 {
            std::future::pending::<()>().await;
        }
        Ok(())
    }));
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .alert_concurrency(1)
        .notify_timeout(Duration::from_secs(10))
        .notifier(hangs)
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let started = Instant::now();
    let hung = tokio::spawn(svc.clone().oneshot(refund(1))); // takes the one slot
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _queued = tokio::spawn(svc.oneshot(refund(2))); // waits for it

    // The hung request's resolution may be reported first: the queued alert is what counts.
    let (hook, ok) = loop {
        let (_, hook, ok) = delivered.recv().await.unwrap();
        if hook != "on_resolved" {
            break (hook, ok);
        }
    };
    assert_eq!((hook, ok), ("notify", true));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "delivered as soon as the hung delivery was given up"
    );
    assert_eq!(
        code(&hung.await.unwrap().unwrap_err()),
        "notification_failed"
    );
    assert_eq!(
        gate.stats().pending,
        1,
        "the queued request was alerted in time"
    );
}
