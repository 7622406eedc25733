//! `examples/config/sidecar.toml`, the file the README runs, started as shipped (addresses moved
//! to free ports): a refund parks, its terminal alert links to the binary's page, the README's
//! curl route approves it, and the standing rule is in its SQLite file after a restart.

use super::*;
use support::shipped::{SECRET, TOKEN, readme_curls, shipped, terminal_alert};

struct Shipped {
    _child: Child,
    stderr: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    proxy: SocketAddr,
    approval: SocketAddr,
    said: String,
}

async fn start_shipped(config: &Path) -> Shipped {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["proxy", "--config"])
        .arg(config)
        .env(SECRET.0, SECRET.1)
        .env(TOKEN.0, TOKEN.1)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut proxy, mut approval, mut said) = (None, None, String::new());
    while proxy.is_none() {
        let line = stderr
            .next_line()
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the proxy exited on the shipped file:\n{said}"));
        said.push_str(&line);
        said.push('\n');
        let address = |prefix: &str| -> Option<SocketAddr> {
            line.strip_prefix(prefix)?
                .trim_start_matches("http://")
                .split('/')
                .next()?
                .parse()
                .ok()
        };
        approval = approval.or(address("tollgate: approval page and API at "));
        proxy = address("tollgate: proxying ");
    }
    Shipped {
        _child: child,
        stderr,
        proxy: proxy.unwrap(),
        approval: approval.unwrap(),
        said,
    }
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
    let db = dir.join("tollgate.db").display().to_string();
    let upstream_url = format!("http://{upstream}");
    let config = shipped(
        "sidecar.toml",
        &dir,
        &[
            ("\"127.0.0.1:8080\"", "\"127.0.0.1:0\""),
            ("\"http://127.0.0.1:3000\"", &format!("{upstream_url:?}")),
            ("\"127.0.0.1:8790\"", "\"127.0.0.1:0\""),
            ("\"tollgate.db\"", &format!("{db:?}")),
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
    let alert = terminal_alert(&mut sidecar.stderr, &mut sidecar.said).await;
    assert_eq!(
        alert.approve_at.as_deref(),
        Some(format!("http://{}/{}", sidecar.approval, alert.request).as_str()),
        "the alert links to the binary's own page:\n{}",
        sidecar.said
    );
    let approve_path = approve_path.replace("areq_…", &alert.request);
    let body = json!({"code": alert.code, "scope": "value", "ttl_secs": 3600}).to_string();
    let approve = request("POST", &approve_path)
        .header("authorization", format!("Bearer {}", TOKEN.1))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let approved = send(sidecar.approval, approve).await;
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
