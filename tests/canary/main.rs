//! The verification code is a bearer secret: across a full flow it must appear in the notifier's
//! own output and nowhere else: not in logs at any level, `Debug` output, errors, or listings.
//!
//! This binary holds one test on purpose: tracing caches callsite interest process-wide, and a
//! parallel test without a subscriber could hide events from this one's scoped subscriber.

#[path = "../support/mod.rs"]
mod support;

use tollgate::future::Submitted;
use tollgate::notify::{RecordingNotifier, TerminalNotifier};
use tollgate::{Approve, Deny, Scope};
use tower::{Layer, ServiceExt};

use support::{Buffer, Tools, policy, refund};

#[tokio::test(start_paused = true)]
async fn the_code_appears_only_in_the_notifiers_output() {
    let (logs, _guard) = support::capture_logs();

    let terminal = Buffer::default();
    let alerts = RecordingNotifier::new();
    let gate = support::gate(&alerts)
        .notifier(TerminalNotifier::writer(terminal.clone()))
        .max_attempts(2)
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let mut printed = Vec::new(); // everything a user might print or log
    printed.push(format!("{gate:?} {svc:?}"));

    // 1. approved with a rule, after one wrong code; 2. denied and remembered; 3. locked after
    // wrong codes; 4. expired; 5. cancelled.
    let calls: Vec<_> = (1..=5)
        .map(|n| tokio::spawn(svc.clone().oneshot(refund(n))))
        .collect();
    let mut batch = Vec::new();
    for _ in 0..5 {
        batch.push(alerts.next_alert().await);
    }
    batch.sort_by_key(|a| a.request().args()["amount"].as_u64());
    printed.push(format!("{:?} {:?}", gate.pending(), batch));

    let [one, two, three, four, five] = &batch[..] else {
        unreachable!()
    };
    let wrong = gate
        .approve(Approve::new(one.request().id(), "WRONG123").by("mallory"))
        .await
        .unwrap_err();
    printed.push(format!("{wrong} {wrong:?}"));
    let approve = Approve::new(one.request().id(), one.code().reveal())
        .scope(Scope::Value)
        .by("alice");
    printed.push(format!("{approve:?}"));
    let approval = gate.approve(approve).await.unwrap();
    printed.push(format!("{approval:?} {:?}", gate.rules()));

    let deny = Deny::new(two.request().id(), two.code().reveal())
        .remember(Scope::Value)
        .reason("no")
        .by("bob");
    printed.push(format!("{deny:?}"));
    printed.push(format!("{:?}", gate.deny(deny).await.unwrap()));

    for _ in 0..2 {
        let error = gate
            .deny(Deny::new(three.request().id(), "00000000").by("mallory"))
            .await
            .unwrap_err();
        printed.push(format!("{error} {error:?}"));
    }
    let late = gate
        .approve(Approve::new(three.request().id(), three.code().reveal()).by("alice"))
        .await;
    printed.push(format!("{late:?}"));

    calls[4].abort();
    tokio::time::advance(support::TTL).await;
    let expired = gate
        .approve(Approve::new(four.request().id(), four.code().reveal()).by("alice"))
        .await;
    printed.push(format!("{expired:?}"));
    let cancelled = gate
        .approve(Approve::new(five.request().id(), five.code().reveal()).by("alice"))
        .await;
    printed.push(format!("{cancelled:?}"));
    for call in calls {
        match call.await {
            Ok(result) => printed.push(format!("{result:?}")),
            Err(e) => printed.push(format!("{e:?}")),
        }
    }

    // The non-blocking form and its handle.
    let Submitted::Pending(pending) = svc.clone().submit(refund(6)).await.unwrap() else {
        panic!()
    };
    let six = alerts.next_alert().await;
    printed.push(format!("{pending:?} {:?} {six:?}", pending.status()));

    support::until(|| alerts.resolutions().len() >= 5).await;
    printed.push(format!("{:?} {:?}", alerts.resolutions(), gate.stats()));

    let logs = logs.text();
    let terminal = terminal.text();
    assert!(
        logs.contains("access request created") && logs.contains(&one.request().id().to_string()),
        "{logs}"
    );
    assert!(logs.contains("wrong verification code") && logs.contains("rule granted"));
    for alert in [one, two, three, four, five, &six] {
        let code = alert.code().reveal();
        assert!(terminal.contains(code), "the notifier shows the code");
        assert!(!logs.contains(code), "code {code} leaked into the logs");
        for text in &printed {
            assert!(!text.contains(code), "code {code} leaked into: {text}");
        }
    }
    drop(pending);
}
