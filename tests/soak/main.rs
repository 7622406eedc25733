//! A randomized soak: 10,000 concurrent parked calls per seed; approvals, denials, wrong codes,
//! cancellations and expiries race in random order. Nothing may be lost, nothing resumed twice,
//! no approval reported for a caller that never got it, and the registry must end empty.

#[path = "../support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use tokio::task::{AbortHandle, JoinHandle};
use tollgate::notify::{Alert, RecordingNotifier};
use tollgate::policy::Ask;
use tollgate::{Approve, BoxError, Deny, Gate, RequestId, Scope, Status, ToolCall};
use tower::{Layer, ServiceExt};

use support::{Rng, Tools, code};

const CALLS: u64 = 10_000;
const TTL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Approve,
    Deny,
    WrongCodes(u32),
    Cancel,
    ApproveWhileCancelling,
    ApproveAndDeny,
    Expire,
}

#[derive(Default, Debug)]
struct Decisions {
    approved: usize,
    approve_errors: Vec<&'static str>,
    denied: usize,
}

async fn soak(seed: u64, paused: bool) {
    let alerts = RecordingNotifier::new();
    let gate = support::gate(&alerts)
        .request_ttl(TTL)
        .max_pending(20_000)
        .max_pending_per_principal(20_000)
        .unlimited_alert_rate()
        .max_attempts(3)
        .history(20_000)
        .build()
        .unwrap();
    let tools = Tools::default();
    let policy = Ask::new("soak").max_scope(Scope::Value);
    let svc = gate.layer(policy).layer(tools.clone());
    let mut rng = Rng::new(seed);

    // About one call in ten repeats an earlier one and must join its request.
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let n = if rng.below(10) == 0 {
            rng.below(i + 1)
        } else {
            i
        };
        calls.push((
            n,
            ToolCall::new("soak.op", json!({"n": n})).principal(format!("p{}", n % 97)),
        ));
    }
    let mut by_n: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut tasks: Vec<JoinHandle<Result<String, BoxError>>> = Vec::new();
    for (i, (n, call)) in calls.iter().enumerate() {
        by_n.entry(*n).or_default().push(i);
        tasks.push(tokio::spawn(svc.clone().oneshot(call.clone())));
    }
    let aborts: Vec<AbortHandle> = tasks.iter().map(JoinHandle::abort_handle).collect();

    let mut requests: HashMap<u64, Alert> = HashMap::new();
    while requests.len() < by_n.len() {
        let alert = alerts.next_alert().await;
        let n = alert.request().args()["n"].as_u64().unwrap();
        assert!(requests.insert(n, alert).is_none(), "one alert per request");
    }
    // A call that joins a request already alerted may not have run yet on another thread.
    support::until(|| gate.stats().parked == CALLS as usize).await;
    assert_eq!(gate.stats().pending, by_n.len());

    // Every request gets a random action, run by its own task after a random number of yields.
    let mut actions: HashMap<u64, Action> = HashMap::new();
    let mut actors = Vec::new();
    for (&n, alert) in &requests {
        let action = match rng.below(7) {
            0 => Action::Approve,
            1 => Action::Deny,
            2 => Action::WrongCodes(1 + rng.below(3) as u32),
            3 => Action::Cancel,
            4 => Action::ApproveWhileCancelling,
            5 => Action::ApproveAndDeny,
            _ if paused => Action::Expire,
            _ => Action::Cancel,
        };
        actions.insert(n, action);
        let scope = if rng.below(2) == 0 {
            Scope::Once
        } else {
            Scope::Value
        };
        let yields = rng.below(4);
        let handles: Vec<AbortHandle> = by_n[&n].iter().map(|&i| aborts[i].clone()).collect();
        actors.push(tokio::spawn(act(
            gate.clone(),
            alert.clone(),
            action,
            scope,
            yields,
            handles,
            n,
        )));
    }
    let mut decisions: HashMap<u64, Decisions> = HashMap::new();
    for actor in actors {
        let (n, d) = actor.await.unwrap();
        decisions.insert(n, d);
    }
    if paused {
        tokio::time::advance(TTL).await;
    } else {
        // Real time cannot be advanced: callers still waiting go away instead.
        for (n, alert) in &requests {
            if gate.status(alert.request().id()).unwrap().is_pending() {
                by_n[n].iter().for_each(|&i| aborts[i].abort());
            }
        }
    }

    let mut results: Vec<Option<Result<String, &'static str>>> = Vec::new();
    for task in tasks {
        results.push(match task.await {
            Ok(result) => Some(result.map_err(|e| code(&e))),
            Err(e) if e.is_cancelled() => None,
            Err(e) => panic!("call task panicked: {e}"),
        });
    }

    for (&n, indices) in &by_n {
        let action = actions[&n];
        let d = &decisions[&n];
        let id: RequestId = requests[&n].request().id();
        let outcomes: Vec<_> = indices.iter().map(|&i| &results[i]).collect();
        let ran = outcomes.iter().filter(|r| matches!(r, Some(Ok(_)))).count();
        let context = format!("seed {seed}, n {n}, {action:?}, {d:?}, {outcomes:?}");

        assert_eq!(
            tools.calls_of(&calls[indices[0]].1),
            ran,
            "each received approval runs once: {context}"
        );
        assert!(
            d.approved + d.denied <= 1,
            "one decision per request: {context}"
        );
        if d.approved == 1 {
            assert!(
                ran >= 1,
                "an approval was reported but no caller got it: {context}"
            );
            assert!(
                outcomes.iter().all(|r| matches!(r, Some(Ok(_)) | None)),
                "every remaining caller resumes: {context}"
            );
        } else {
            assert_eq!(
                ran, 0,
                "nothing runs without a reported approval: {context}"
            );
        }
        if d.denied == 1 {
            assert!(
                outcomes
                    .iter()
                    .all(|r| matches!(r, Some(Err("access_request_denied")) | None)),
                "{context}"
            );
        }
        for error in &d.approve_errors {
            assert!(
                [
                    "access_request_cancelled",
                    "already_resolved",
                    "access_request_expired",
                    "access_request_not_found",
                    "too_many_attempts"
                ]
                .contains(error),
                "unexpected approver error {error}: {context}"
            );
        }
        for outcome in &outcomes {
            if let Some(Err(error)) = outcome {
                assert!(
                    [
                        "access_request_denied",
                        "access_request_expired",
                        "too_many_attempts"
                    ]
                    .contains(error),
                    "unexpected caller error {error}: {context}"
                );
            }
        }
        let status = gate.status(id).unwrap();
        let expected = if d.approved == 1 {
            Status::Executed
        } else if d.denied == 1 || matches!(action, Action::WrongCodes(3)) {
            Status::Denied
        } else if outcomes.iter().all(|r| r.is_none()) {
            Status::Cancelled
        } else {
            Status::Expired
        };
        assert_eq!(status, expected, "{context}");
    }

    // Every request was resolved exactly once, and the registry is empty.
    support::until(|| alerts.resolutions().len() >= by_n.len()).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let resolved = alerts.resolutions();
    let unique: HashSet<RequestId> = resolved.iter().map(|r| r.request().id()).collect();
    assert_eq!(
        (resolved.len(), unique.len()),
        (by_n.len(), by_n.len()),
        "seed {seed}"
    );
    let stats = gate.stats();
    assert_eq!(
        (stats.pending, stats.parked, stats.live),
        (0, 0, 0),
        "seed {seed}"
    );
    assert!(gate.pending().is_empty());
}

async fn act(
    gate: Gate,
    alert: Alert,
    action: Action,
    scope: Scope,
    yields: u64,
    callers: Vec<AbortHandle>,
    n: u64,
) -> (u64, Decisions) {
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
    let id = alert.request().id();
    let code_ = alert.code().reveal().to_owned();
    let approve = || Approve::new(id, code_.clone()).scope(scope).by("alice");
    let deny = || Deny::new(id, code_.clone()).reason("soak").by("bob");
    let mut d = Decisions::default();
    let record_approve = |result: Result<tollgate::gate::Approval, tollgate::Error>,
                          d: &mut Decisions| match result {
        Ok(_) => d.approved += 1,
        Err(e) => d.approve_errors.push(e.code()),
    };
    match action {
        Action::Approve => record_approve(gate.approve(approve()).await, &mut d),
        Action::Deny => d.denied += usize::from(gate.deny(deny()).await.is_ok()),
        Action::WrongCodes(k) => {
            for _ in 0..k {
                let wrong = Approve::new(id, "0000000G").by("mallory");
                d.approve_errors
                    .push(gate.approve(wrong).await.unwrap_err().code());
            }
        }
        Action::Cancel => callers.iter().for_each(AbortHandle::abort),
        Action::ApproveWhileCancelling => {
            let approving = tokio::spawn({
                let gate = gate.clone();
                let approve = approve();
                async move { gate.approve(approve).await }
            });
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            callers.iter().for_each(AbortHandle::abort);
            record_approve(approving.await.unwrap(), &mut d);
        }
        Action::ApproveAndDeny => {
            let (a, b) = tokio::join!(gate.approve(approve()), gate.deny(deny()));
            record_approve(a, &mut d);
            d.denied += usize::from(b.is_ok());
        }
        Action::Expire => {}
    }
    (n, d)
}

#[tokio::test(start_paused = true)]
async fn soak_with_paused_time() {
    for seed in 1..=10 {
        soak(seed, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_on_two_threads() {
    for seed in 101..=102 {
        soak(seed, false).await;
    }
}
