//! Wrong codes across replicas: the last allowed wrong code and the right code, entered at once
//! on two replicas, end the request one way, heard once by the approvers, the caller and the
//! notifiers.

use std::collections::HashMap;
use std::time::Duration;

use tollgate::{Approve, ErrorKind, Scope};
use tower::{Layer, ServiceExt};

use super::pair;
use crate::support::{self, Tools, code, policy, refund};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_wrong_code_racing_the_right_one_ends_the_request_once() {
    let (a, alerts_a, b, alerts_b) = pair("attempts_race", true).await;
    let tools = Tools::default();
    let svc = a.layer(policy(Scope::Once)).layer(tools.clone());
    let rounds = 48;
    let mut ids = Vec::new();
    let mut approved = 0;
    for round in 0..rounds {
        let call = tokio::spawn(svc.clone().oneshot(refund(300 + round)));
        let alert = alerts_a.next_alert().await;
        let (id, right) = (alert.request().id(), alert.code().reveal().to_owned());
        ids.push(id);
        for i in 0..4 {
            let error = b
                .approve(Approve::new(id, format!("wrong-{i}")).by("mallory"))
                .await
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::AccessRequestNotFound);
        }
        // The fifth wrong code first, the right one a little later each round: the rounds
        // sweep the right code across every step of the wrong one's (store round trips of
        // a few hundred microseconds each).
        let on_b = b.clone();
        let fifth = tokio::spawn(async move {
            on_b.approve(Approve::new(id, "wrong-5").by("mallory"))
                .await
        });
        let later = std::time::Instant::now() + Duration::from_micros(150 * (round % 12));
        while std::time::Instant::now() < later {
            tokio::task::yield_now().await;
        }
        let approval = a.approve(Approve::new(id, right).by("alice")).await;
        let fifth = fifth.await.unwrap().unwrap_err().kind();
        let ran = call.await.unwrap();
        match approval {
            Ok(_) => {
                approved += 1;
                assert_ne!(
                    fifth,
                    ErrorKind::TooManyAttempts,
                    "round {round}: the approval ran the call, yet the fifth wrong code heard the request was locked"
                );
                assert!(ran.is_ok(), "round {round}: approved, so the call ran");
            }
            Err(error) => {
                assert_eq!(
                    fifth,
                    ErrorKind::TooManyAttempts,
                    "round {round}: the approval lost ({error:?}) to something else"
                );
                assert_eq!(
                    code(&ran.unwrap_err()),
                    "too_many_attempts",
                    "round {round}"
                );
            }
        }
    }
    assert_eq!(tools.total(), approved);

    // Each request's ending reached the notifiers once, on one replica or the other.
    let told = || {
        let mut told: HashMap<_, Vec<_>> = HashMap::new();
        for resolution in alerts_a
            .resolutions()
            .into_iter()
            .chain(alerts_b.resolutions())
        {
            told.entry(resolution.request().id())
                .or_default()
                .push(resolution.outcome().clone());
        }
        told
    };
    support::within(Duration::from_secs(10), || {
        let told = told();
        ids.iter().all(|id| told.contains_key(id))
    })
    .await;
    // Anything told twice is told by now: the second telling follows the first's store write.
    b.pending_anywhere().await.unwrap();
    a.pending_anywhere().await.unwrap();
    for (id, outcomes) in told() {
        assert_eq!(outcomes.len(), 1, "{id} was told {outcomes:?}");
    }
}
