//! `examples/config/mcp.toml`, the file the README runs, started as shipped (its address moved
//! to a free port, its database to a scratch folder): a tool that reads passes, one that writes
//! parks, its terminal alert links to the binary's page, and an approval with that code runs it.

use super::*;
use support::shipped::{APPROVE, TOKEN as SHIPPED_TOKEN, approve, linked_alert, shipped};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_mcp_file_runs_as_the_readme_says() {
    let dir = temp_dir("shipped");
    let port = free_port();
    let db = dir.join("tollgate-mcp.db").display().to_string();
    let config = shipped(
        "mcp.toml",
        &dir,
        &[
            ("\"127.0.0.1:8790\"", &format!("\"127.0.0.1:{port}\"")),
            ("\"tollgate-mcp.db\"", &format!("{db:?}")),
        ],
    );
    let (python, upstream) = (python(), here("upstream.py"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["mcp", "--config"])
        .arg(&config)
        .args(["--", &python, &upstream])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"approve-me"}}}"#;
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    for line in [INITIALIZE, initialized, call] {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    let mut answer = async || -> Value {
        serde_json::from_str(&stdout.next_line().await.unwrap().expect("an answer")).unwrap()
    };
    assert_eq!(answer().await["id"], 1);

    let api = ([127, 0, 0, 1], port).into();
    let alert = linked_alert(&mut stderr, &mut String::new(), api).await;
    let approved = approve(api, APPROVE, SHIPPED_TOKEN, &alert, json!({})).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    let result = answer().await;
    assert_eq!(result["id"], 2, "{result}");
    assert_eq!(result["result"]["isError"], json!(false), "{result}");
    drop(stdin);
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}
