//! `examples/config/sidecar.toml`, the file the README runs, started as shipped (addresses moved
//! to free ports): a refund parks, its terminal alert links to the binary's page, the README's
//! curl route approves it, and the standing rule is in its SQLite file after a restart.

use super::*;
use support::shipped::{TOKEN, approve, linked_alert, readme_curls, shipped};

async fn start_shipped(config: &Path) -> Spawned {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.args(["proxy", "--config"]).arg(config);
    spawned(command).await
}

fn agent_refund(path: &str) -> http::Request<Full<Bytes>> {
    request("POST", path)
        .header("content-type", "application/json")
        .header("x-agent-id", "agent-7")
        .body(Full::new(Bytes::from(r#"{"amount": 4200}"#)))
        .unwrap()
}

#[tokio::test]
async fn the_shipped_sidecar_file_runs_as_the_readme_says() {
    let (upstream, received) = upstream().await;
    let dir = std::env::temp_dir().join(format!("tollgate-shipped-sidecar-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("tollgate-sidecar.db").display().to_string();
    let upstream_url = format!("http://{upstream}");
    let config = shipped(
        "sidecar.toml",
        &dir,
        &[
            ("\"127.0.0.1:8080\"", "\"127.0.0.1:0\""),
            ("\"http://127.0.0.1:3000\"", &format!("{upstream_url:?}")),
            ("\"127.0.0.1:8790\"", "\"127.0.0.1:0\""),
            ("\"tollgate-sidecar.db\"", &format!("{db:?}")),
        ],
    );
    // The README's curl lines, by port: the proxy's and the approval API's, as shipped.
    let curls = readme_curls();
    let refund_path = curls
        .iter()
        .find(|(method, port, _)| method == "POST" && *port == 8080)
        .map(|(_, _, path)| path.clone())
        .expect("the README calls the proxy");
    let approve_path = curls
        .iter()
        .find(|(method, port, _)| method == "POST" && *port == 8790)
        .map(|(_, _, path)| path.clone())
        .expect("the README approves through the API");
    assert!(
        curls.iter().all(|(_, port, _)| [8080, 8790].contains(port)),
        "every README curl line goes to the proxy or the approval API: {curls:?}"
    );

    let mut sidecar = start_shipped(&config).await;
    let parked = start(sidecar.proxy, agent_refund(&refund_path)).await;
    let said = &mut sidecar.said_at_start;
    let alert = linked_alert(&mut sidecar.stderr, said, sidecar.approval).await;
    let more = json!({"scope": "value", "ttl_secs": 3600});
    let approved = approve(sidecar.approval, &approve_path, TOKEN, &alert, more).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(parked.reply.await.unwrap().status, 200);
    assert_eq!(received.bodies.lock().unwrap().len(), 1);

    // Restarted on the same file: the value approval stands.
    drop(sidecar);
    let sidecar = start_shipped(&config).await;
    let again = tokio::time::timeout(
        Duration::from_secs(30),
        send(sidecar.proxy, agent_refund(&refund_path)),
    )
    .await
    .expect("the same refund waited again after a restart");
    assert_eq!(again.status, 200);
    assert_eq!(received.bodies.lock().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
