//! `tollgate mcp` against the upstream MCP server called directly, in the same run: an allowed
//! `tools/call` over stdio, each way.
//!
//! ```sh
//! cargo bench --bench mcp --features cli
//! ```
//!
//! The upstream is this bench's own executable, started with `TOLLGATE_BENCH_UPSTREAM=1`: an
//! rmcp server with one tool that answers at once, so that the difference is the proxy's.
#![allow(missing_docs)]

use std::process::Stdio;
use std::sync::Arc;

use criterion::{Criterion, criterion_group};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleClient, RoleServer, RunningService};
use rmcp::{ServerHandler, ServiceExt};
use serde_json::json;
use tokio::process::Command;

const UPSTREAM: &str = "TOLLGATE_BENCH_UPSTREAM";

/// The upstream: one tool, `echo`, that answers at once.
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = Arc::new(JsonObject::from_iter([("type".into(), json!("object"))]));
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "echo", "echoes", schema,
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = serde_json::to_string(&request.arguments).unwrap_or_default();
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

/// A client over the stdio of `command`.
async fn connect(mut command: Command) -> RunningService<RoleClient, ()> {
    let mut child = command
        .env(UPSTREAM, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the server starts");
    let io = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    // The child lives as long as the runtime: dropped with it, it is killed.
    tokio::spawn(async move { child.wait().await });
    ().serve(io).await.expect("the MCP handshake")
}

fn allowed_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let me = std::env::current_exe().unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-bench-mcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        r#"
        [gate]
        random_secret = true
        allow_inline_secrets = true
        [capabilities.echo]
        decision = "allow"
        [[notifiers]]
        kind = "terminal"
        [approval]
        listen = "127.0.0.1:0"
        [[approval.approvers]]
        name = "bench"
        token = "a-bench-token-of-sixteen-bytes"
        "#,
    )
    .unwrap();

    let direct = rt.block_on(connect(Command::new(&me)));
    let mut proxied = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    proxied
        .args(["mcp", "--config"])
        .arg(&config)
        .arg("--")
        .arg(&me)
        .stderr(Stdio::null());
    let gated = rt.block_on(connect(proxied));

    let call = || {
        let args = json!({"q": "tollgate", "n": 3});
        CallToolRequestParams::new("echo").with_arguments(args.as_object().unwrap().clone())
    };
    let mut group = c.benchmark_group("allowed tools/call over stdio");
    group.bench_function("upstream directly", |b| {
        b.iter(|| rt.block_on(direct.peer().call_tool(call())).unwrap())
    });
    group.bench_function("through tollgate mcp", |b| {
        b.iter(|| rt.block_on(gated.peer().call_tool(call())).unwrap())
    });
    group.finish();
    drop((direct, gated));
    std::fs::remove_dir_all(dir).unwrap();
}

criterion_group!(benches, allowed_call);

fn main() {
    if std::env::var_os(UPSTREAM).is_some() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let io = (tokio::io::stdin(), tokio::io::stdout());
            let server = Echo.serve(io).await.expect("the upstream's handshake");
            let _ = server.waiting().await;
        });
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
