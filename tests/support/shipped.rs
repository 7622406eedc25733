//! The configurations the README shows, as the tests start the binary on them: the file with
//! only its addresses moved to free ports, the variables it reads set, and the terminal alert
//! an approver reads off stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use tokio::io::{BufReader, Lines};
use tokio::process::ChildStderr;

/// The files the shipped configurations read their secret and alice's token from, as the README
/// makes them, and what the tests write there.
const SECRET: &str = "a-secret-for-the-shipped-configs-0123456789";
pub const TOKEN: &str = "alice-token-for-the-shipped-configs";

/// `examples/config/{name}` copied to `dir`, with the secret and token files it reads written
/// there too, and the paths to them and its `moves` (a value in the file, and what the test
/// puts there: addresses, the database) changed to the test's; each must find its value, so
/// the test runs the file as shipped but for them.
pub fn shipped(name: &str, dir: &Path, moves: &[(&str, &str)]) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/config")
        .join(name);
    let mut text = std::fs::read_to_string(&path).unwrap();
    let (secret, token) = (dir.join("tollgate.secret"), dir.join("alice.token"));
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::write(&token, TOKEN).unwrap();
    let files = [
        (
            "\"tollgate.secret\"",
            format!("{:?}", secret.display().to_string()),
        ),
        (
            "\"alice.token\"",
            format!("{:?}", token.display().to_string()),
        ),
    ];
    let moves = moves.iter().map(|(from, to)| (*from, (*to).to_owned()));
    for (from, to) in files.into_iter().chain(moves) {
        assert!(text.contains(from), "{name} no longer says {from}");
        text = text.replacen(from, &to, 1);
    }
    let copy = dir.join(name);
    std::fs::write(&copy, text).unwrap();
    copy
}

/// What an approver reads off the terminal notifier's alert.
#[derive(Debug)]
pub struct TerminalAlert {
    pub request: String,
    pub code: String,
    pub approve_at: Option<String>,
}

/// The next terminal alert on `stderr`, which must link to its request's page on `page` (the
/// binary's or the program's own approval address); every line read is kept in `seen`.
pub async fn linked_alert(
    stderr: &mut Lines<BufReader<ChildStderr>>,
    seen: &mut String,
    page: SocketAddr,
) -> TerminalAlert {
    let alert = terminal_alert(stderr, seen).await;
    let link = format!("http://{page}/{}", alert.request);
    assert_eq!(
        alert.approve_at.as_deref(),
        Some(link.as_str()),
        "the alert links to the page it is decided on:\n{seen}"
    );
    alert
}

/// Reads `stderr` up to the end of the next terminal alert; every line read is kept in `seen`.
pub async fn terminal_alert(
    stderr: &mut Lines<BufReader<ChildStderr>>,
    seen: &mut String,
) -> TerminalAlert {
    let (mut request, mut code, mut approve_at) = (None, None, None);
    loop {
        let line = stderr
            .next_line()
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("stderr ended before an alert:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
        let value = |label: &str| {
            line.strip_prefix("│ ")?
                .strip_prefix(label)
                .map(|rest| rest.trim().to_owned())
        };
        request = request.or(value("request"));
        code = code.or(value("code"));
        approve_at = approve_at.or(value("approve at"));
        if line.starts_with('└') {
            return TerminalAlert {
                request: request.expect("the alert names its request"),
                code: code.expect("the alert shows the code"),
                approve_at,
            };
        }
    }
}

/// Approves `alert`'s request through the approval API at `api` (at `path`, the README's
/// approve route with `areq_…` for the id), as `token`'s approver, with the alert's code and
/// `more` (scope, TTL) in the body; the API's answer.
pub async fn approve(
    api: SocketAddr,
    path: &str,
    token: &str,
    alert: &TerminalAlert,
    more: Value,
) -> super::client::Reply {
    let mut body = json!({"code": alert.code});
    if let (Some(body), Value::Object(more)) = (body.as_object_mut(), more) {
        body.extend(more);
    }
    let post = super::client::request("POST", &path.replace("areq_…", &alert.request))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    super::client::send(api, post).await
}

/// The API's approve route, as the README writes it.
pub const APPROVE: &str = "/api/requests/areq_…/approve";

/// Each `curl` line of the README: its method, port and path (`areq_…` and `…` kept as written).
pub fn readme_curls() -> Vec<(String, u16, String)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut curls = Vec::new();
    for line in readme
        .lines()
        .filter(|l| l.trim_start().starts_with("curl "))
    {
        let method = if line.contains("-X POST") {
            "POST"
        } else {
            "GET"
        };
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("localhost:") || w.starts_with("http://localhost:"))
            .unwrap_or_else(|| panic!("a README curl line without a localhost URL: {line}"));
        let url = url
            .trim_start_matches("http://")
            .trim_start_matches("localhost:");
        let (port, path) = url.split_once('/').unwrap();
        curls.push((method.to_owned(), port.parse().unwrap(), format!("/{path}")));
    }
    assert!(!curls.is_empty(), "the README shows no curl line");
    curls
}
