//! The binary's `[store]`: an approval's standing rule outlives the process, and the binary says
//! when it keeps everything in memory.

use super::*;

/// A stable secret (rules are sealed with it) and a SQLite file outside the sidecar's own
/// folder, which is removed when it stops.
fn stored(config: String, db: &Path) -> String {
    config.replace(
        "random_secret = true",
        "secret = \"a-stable-secret-for-the-store-tests-0123456789\"",
    ) + &format!(
        "\n[store]\nkind = \"sqlite\"\npath = {:?}\n",
        db.display().to_string()
    )
}

#[tokio::test]
async fn a_value_approvals_rule_survives_a_restart_of_the_binary() {
    let (upstream, received) = upstream().await;
    let dir = tempfile_dir("store-restart");
    let db = dir.join("tollgate.db");
    let body = r#"{"amount": 70}"#;
    {
        let mut first = sidecar_with("store-1", &format!("http://{upstream}"), "1m", |c| {
            stored(c, &db)
        })
        .await;
        let parked = start(first.proxy, refund(body)).await;
        let (id, code, _) = next_alert(&mut first).await;
        let approve = json!({ "code": code, "scope": "value", "ttl_secs": 3600 }).to_string();
        let post = request("POST", &format!("/api/requests/{id}/approve"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(approve)))
            .unwrap();
        assert_eq!(send(first.approval, post).await.status, 200);
        assert_eq!(parked.reply.await.unwrap().status, 200);
        // Dropped: SIGKILL, no clean shutdown.
    }
    let mut second = sidecar_with("store-2", &format!("http://{upstream}"), "1m", |c| {
        stored(c, &db)
    })
    .await;
    // The same call passes on the stored rule: no alert, no wait.
    let reply = tokio::time::timeout(Duration::from_secs(30), send(second.proxy, refund(body)))
        .await
        .expect("the call waited: the rule did not survive the restart");
    assert_eq!(reply.status, 200);
    assert_eq!(received.bodies.lock().unwrap().len(), 2);
    // Nobody was asked again. (The restarted binary may announce that the first one's request,
    // killed between running and recording its end, was abandoned: a resolution, no alert.)
    while let Ok(event) = second.alerts.try_recv() {
        let event = event.json();
        assert_ne!(
            event["type"], "access_request.created",
            "asked again: {event}"
        );
    }
    // Another amount still asks.
    let parked = start(second.proxy, refund(r#"{"amount": 71}"#)).await;
    loop {
        let event = second.alerts.recv().await.unwrap().json();
        if event["type"] == "access_request.created" {
            assert_eq!(event["data"]["request"]["args"]["body"]["amount"], 71);
            break;
        }
    }
    drop(parked);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_memory_store_is_named_at_start() {
    let (upstream, _) = upstream().await;
    let sidecar = sidecar("store-memory", &format!("http://{upstream}"), "1m").await;
    // Printed when the gate is built, before the proxy says it is proxying.
    assert!(
        sidecar
            .said_at_start
            .contains("kept in memory and end with this process; a [store] section keeps them"),
        "{}",
        sidecar.said_at_start
    );
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
