//! `mode = "observe"` through the binary: every call runs, and what would have been asked is in
//! the audit trail and the metrics, without the arguments.

use super::*;

#[tokio::test]
async fn observe_runs_a_call_that_would_ask_and_records_it_without_its_arguments() {
    let (upstream, received) = upstream().await;
    let mut sidecar = sidecar_with("observe", &format!("http://{upstream}"), "1m", |c| {
        format!("mode = \"observe\"\n{c}")
    })
    .await;
    let body = r#"{"amount": 9000, "note": "argument-value-never-recorded"}"#;
    let reply = send(sidecar.proxy, refund(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "refunded r_1");
    assert_eq!(received.bodies.lock().unwrap().len(), 1);
    assert!(sidecar.alerts.try_recv().is_err(), "nobody was alerted");

    // The audit entry is written after the call: read until it is there.
    let audit = || {
        request("GET", "/api/audit?event=observed")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let started = std::time::Instant::now();
    let entries = loop {
        let entries = send(sidecar.approval, audit()).await.json();
        let entries = entries["entries"].as_array().cloned().unwrap_or_default();
        if !entries.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break entries;
        }
    };
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry["event"], "observed");
    assert_eq!(entry["capability"], "POST /v1/refunds/{id}");
    assert_eq!(entry["principal"], "agent-7");
    assert!(
        entry["detail"]
            .as_str()
            .unwrap()
            .starts_with("would have asked a person"),
        "{entry}"
    );
    assert!(entry["request"].is_null(), "no request was made: {entry}");
    assert!(!entry.to_string().contains("argument-value"), "{entry}");

    let metrics = send(sidecar.approval, get_request("/metrics")).await.body;
    assert!(
        metrics.contains("tollgate_calls_total{decision=\"observed\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("argument-value"));
}
