//! The MCP adapter against rmcp's own client and server, in process over an in-memory pipe, with
//! tokio's clock paused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest,
    ContentBlock, ErrorData, JsonObject, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ServerCapabilities, ServerConfig, ServerResult, Tool,
};
use rmcp::service::{
    NotificationContext, PeerRequestOptions, RequestContext, RoleClient, RoleServer,
    RunningService, ServiceError,
};
use rmcp::{ClientHandler, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tollgate::mcp::{Identity, McpCall};
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Ask, CapabilityTable, Policy};
use tollgate::{Approve, Deny, Gate, Outcome, Scope};

/// An MCP server with a harmless tool and one that asks; it records what ran.
#[derive(Clone, Default)]
struct Tools {
    ran: Arc<Mutex<Vec<(String, Value)>>>,
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = Arc::new(JsonObject::from_iter([("type".into(), json!("object"))]));
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("search", "searches", schema.clone()),
            Tool::new("delete_file", "deletes a file", schema),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name == "broken" {
            return Err(ErrorData::invalid_params("no such tool", None));
        }
        let args = Value::Object(request.arguments.unwrap_or_default());
        self.ran
            .lock()
            .unwrap()
            .push((request.name.to_string(), args.clone()));
        let text = format!("{} ran with {args}", request.name);
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

/// A client that counts the progress notifications it receives.
#[derive(Clone, Default)]
struct Client {
    progress: Arc<AtomicUsize>,
}

impl ClientHandler for Client {
    async fn on_progress(&self, _: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        self.progress.fetch_add(1, Ordering::SeqCst);
    }
}

fn policy() -> CapabilityTable {
    CapabilityTable::new()
        .allow("search")
        .allow("broken")
        .ask("delete_file", Ask::new("deletes a file"))
}

struct Setup {
    gate: Gate,
    recorder: RecordingNotifier,
    tools: Tools,
    client: RunningService<RoleClient, Client>,
    progress: Arc<AtomicUsize>,
}

fn gate() -> (Gate, RecordingNotifier) {
    let recorder = RecordingNotifier::new();
    let gate = Gate::builder()
        .secret("an MCP test secret, sixteen bytes or more")
        .notifier(recorder.clone())
        .request_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    (gate, recorder)
}

/// A gated server and a client, connected; `wrap` sets the adapter up.
async fn connect<P>(wrap: impl FnOnce(Gate) -> tollgate::mcp::McpApproval<P>) -> Setup
where
    P: Policy<McpCall> + Clone + Send + Sync + 'static,
{
    let (gate, recorder) = gate();
    let tools = Tools::default();
    let server = wrap(gate.clone()).wrap(tools.clone());
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let running = server.serve(server_io).await.expect("the server starts");
        let _ = running.waiting().await;
    });
    let client = Client::default();
    let progress = client.progress.clone();
    let client = client.serve(client_io).await.expect("the client connects");
    Setup {
        gate,
        recorder,
        tools,
        client,
        progress,
    }
}

fn call(name: &str, args: Value) -> CallToolRequestParams {
    let Value::Object(args) = args else {
        panic!("arguments are an object")
    };
    CallToolRequestParams::new(name.to_owned()).with_arguments(args)
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn listing_and_allowed_tools_pass_untouched() {
    let s = connect(|gate| gate.mcp(policy())).await;
    let tools = s.client.list_all_tools().await.unwrap();
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["search", "delete_file"]);

    let result = s
        .client
        .call_tool(call("search", json!({"q": "tollgate"})))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false));
    assert_eq!(text(&result), r#"search ran with {"q":"tollgate"}"#);
    assert!(s.recorder.alerts().is_empty(), "nobody was asked");
}

#[tokio::test(start_paused = true)]
async fn a_handler_error_stays_a_protocol_error() {
    let s = connect(|gate| gate.mcp(policy())).await;
    let error = s
        .client
        .call_tool(call("broken", json!({})))
        .await
        .unwrap_err();
    let ServiceError::McpError(error) = error else {
        panic!("expected the handler's own error, got {error:?}")
    };
    assert_eq!(error.message, "no such tool");
}

#[tokio::test(start_paused = true)]
async fn an_asked_tool_waits_for_approval_then_runs_with_the_arguments_shown() {
    let s = connect(|gate| gate.mcp(policy()).reason_from_argument("why")).await;
    let peer = s.client.peer().clone();
    let args = json!({"path": "/tmp/report.txt", "why": "the user asked"});
    let waiting = tokio::spawn(async move { peer.call_tool(call("delete_file", args)).await });

    let alert = s.recorder.next_alert().await;
    let request = alert.request();
    assert_eq!(request.capability(), "delete_file");
    assert_eq!(
        request.principal(),
        "rmcp",
        "the client's name from its handshake"
    );
    assert_eq!(request.reason(), Some("the user asked"));
    assert!(
        request.session().unwrap().starts_with("mcp_"),
        "the connection's session"
    );
    assert!(
        s.tools.ran.lock().unwrap().is_empty(),
        "nothing ran before approval"
    );

    let approve = Approve::new(request.id(), alert.code().reveal()).by("alice");
    s.gate.approve(approve).await.unwrap();
    let result = waiting.await.unwrap().unwrap();
    assert_eq!(result.is_error, Some(false));
    let ran = s.tools.ran.lock().unwrap().clone();
    assert_eq!(
        ran,
        [(
            "delete_file".to_owned(),
            json!({"path": "/tmp/report.txt", "why": "the user asked"})
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_denial_is_a_tool_error_the_model_can_read() {
    let s = connect(|gate| gate.mcp(policy())).await;
    let peer = s.client.peer().clone();
    let waiting = tokio::spawn(async move {
        peer.call_tool(call("delete_file", json!({"path": "/"})))
            .await
    });
    let alert = s.recorder.next_alert().await;
    let deny = Deny::new(alert.request().id(), alert.code().reveal())
        .reason("not the root")
        .by("alice");
    s.gate.deny(deny).await.unwrap();

    let result = waiting.await.unwrap().unwrap();
    assert_eq!(result.is_error, Some(true));
    let text = text(&result);
    assert!(text.starts_with("access_request_denied: "), "{text}");
    assert!(
        !text.contains(alert.code().reveal()),
        "the code never reaches the caller"
    );
    assert!(s.tools.ran.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_policy_denial_and_a_missing_reason_are_tool_errors_too() {
    let table = CapabilityTable::new()
        .deny("wipe", "never from an agent")
        .ask("delete_file", Ask::new("deletes").require_reason());
    let s = connect(|gate| gate.mcp(table)).await;
    let denied = s.client.call_tool(call("wipe", json!({}))).await.unwrap();
    assert_eq!(denied.is_error, Some(true));
    assert!(text(&denied).starts_with("access_request_denied: "));
    let unreasoned = s
        .client
        .call_tool(call("delete_file", json!({})))
        .await
        .unwrap();
    assert_eq!(unreasoned.is_error, Some(true));
    assert!(
        text(&unreasoned).starts_with("reason_required: "),
        "{}",
        text(&unreasoned)
    );
}

#[tokio::test(start_paused = true)]
async fn the_reason_comes_from_meta_by_default_and_identity_can_be_set() {
    let s = connect(|gate| {
        gate.mcp(policy())
            .identify(|_| Identity::new("agent-7").session("conv-42"))
    })
    .await;
    let peer = s.client.peer().clone();
    let mut request = CallToolRequest::new(call("delete_file", json!({"path": "/tmp/a"})));
    let mut meta = rmcp::model::RequestMetaObject::new();
    meta.0.insert("reason".into(), json!("clean up the draft"));
    let options = PeerRequestOptions::no_options().with_meta(meta);
    request.params.meta = None;
    let handle = peer
        .send_request_with_option(ClientRequest::CallToolRequest(request), options)
        .await
        .unwrap();
    let alert = s.recorder.next_alert().await;
    assert_eq!(alert.request().principal(), "agent-7");
    assert_eq!(alert.request().session(), Some("conv-42"));
    assert_eq!(alert.request().reason(), Some("clean up the draft"));
    let approve = Approve::new(alert.request().id(), alert.code().reveal()).by("alice");
    s.gate.approve(approve).await.unwrap();
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!("a tool result")
    };
    assert_eq!(result.is_error, Some(false));
}

/// A client that said who it is at `initialize` cannot name itself otherwise per call through
/// the request's `_meta` client information; and an identity without a session still belongs to
/// the connection's.
#[tokio::test(start_paused = true)]
async fn a_client_cannot_rename_itself_per_call() {
    let s = connect(|gate| gate.mcp(policy())).await;
    let peer = s.client.peer().clone();
    let request = CallToolRequest::new(call("delete_file", json!({"path": "/tmp/a"})));
    let mut meta = rmcp::model::RequestMetaObject::new();
    meta.0.insert(
        "io.modelcontextprotocol/clientInfo".into(),
        json!({"name": "release-bot", "version": "1.0"}),
    );
    let options = PeerRequestOptions::no_options().with_meta(meta);
    let _handle = peer
        .send_request_with_option(ClientRequest::CallToolRequest(request), options)
        .await
        .unwrap();
    let alert = s.recorder.next_alert().await;
    assert_eq!(
        alert.request().principal(),
        "rmcp",
        "the name from the handshake, not the one the request carries"
    );

    let s = connect(|gate| gate.mcp(policy()).identify(|_| Identity::new("agent-7"))).await;
    let peer = s.client.peer().clone();
    let _call = tokio::spawn(async move {
        peer.call_tool(call("delete_file", json!({"path": "/tmp/b"})))
            .await
    });
    let alert = s.recorder.next_alert().await;
    assert_eq!(alert.request().principal(), "agent-7");
    assert!(
        alert
            .request()
            .session()
            .is_some_and(|s| s.starts_with("mcp_")),
        "the connection's session: {:?}",
        alert.request().session()
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_withdraws_its_request() {
    let s = connect(|gate| gate.mcp(policy())).await;
    let request = CallToolRequest::new(call("delete_file", json!({"path": "/tmp/b"})));
    let handle = s
        .client
        .peer()
        .send_request_with_option(
            ClientRequest::CallToolRequest(request),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let alert = s.recorder.next_alert().await;
    handle
        .cancel(Some("the user changed their mind".into()))
        .await
        .unwrap();

    let resolution = s.recorder.next_resolution().await;
    assert_eq!(resolution.request().id(), alert.request().id());
    assert_eq!(*resolution.outcome(), Outcome::Cancelled);
    assert!(s.tools.ran.lock().unwrap().is_empty());
}

/// Calls `delete_file` on `path` with a timeout of 2 s, which progress resets.
async fn with_short_timeout(s: &Setup, path: &str) -> rmcp::service::RequestHandle<RoleClient> {
    let options =
        PeerRequestOptions::with_timeout(Duration::from_secs(2)).reset_timeout_on_progress();
    let request = CallToolRequest::new(call("delete_file", json!({ "path": path })));
    s.client
        .peer()
        .send_request_with_option(ClientRequest::CallToolRequest(request), options)
        .await
        .unwrap()
}

/// The client's timeout (2 s) is far shorter than the wait (a minute); progress every second
/// resets it.
#[tokio::test(start_paused = true)]
async fn progress_keeps_a_client_with_a_short_timeout_waiting() {
    let s = connect(|gate| gate.mcp(policy()).progress_interval(Duration::from_secs(1))).await;
    let handle = with_short_timeout(&s, "/tmp/c").await;
    let alert = s.recorder.next_alert().await;
    tokio::time::sleep(Duration::from_secs(60)).await; // the person takes a minute
    let sent = s.progress.load(Ordering::SeqCst);
    assert!(
        (55..=61).contains(&sent),
        "progress about once a second: {sent}"
    );
    let approve = Approve::new(alert.request().id(), alert.code().reveal()).by("alice");
    s.gate.approve(approve).await.unwrap();
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!("a tool result")
    };
    assert_eq!(result.is_error, Some(false));
    let after = s.progress.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        s.progress.load(Ordering::SeqCst),
        after,
        "no progress once decided"
    );
}

/// The same client without progress gives up at its timeout, which withdraws the request.
#[tokio::test(start_paused = true)]
async fn without_progress_the_client_times_out_and_the_request_ends() {
    let s = connect(|gate| {
        gate.mcp(policy())
            .progress_interval(Duration::from_secs(3600))
    })
    .await;
    let handle = with_short_timeout(&s, "/tmp/d").await;
    let alert = s.recorder.next_alert().await;
    let error = handle.await_response().await.unwrap_err();
    assert!(matches!(error, ServiceError::Timeout { .. }), "{error:?}");
    let resolution = s.recorder.next_resolution().await;
    assert_eq!(resolution.request().id(), alert.request().id());
    assert_eq!(*resolution.outcome(), Outcome::Cancelled);
}

/// Each connection is a session of its own: an approval of scope `session` covers the rest of
/// that connection's calls of the tool, and no other connection's.
#[tokio::test(start_paused = true)]
async fn a_session_approval_covers_the_rest_of_its_connection_only() {
    let table = || {
        CapabilityTable::new().ask(
            "delete_file",
            Ask::new("deletes a file").max_scope(Scope::Session),
        )
    };
    let (gate, recorder) = gate();
    let connect_to = |gate: &Gate| {
        let server = gate.mcp(table()).wrap(Tools::default());
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let running = server.serve(server_io).await.unwrap();
            let _ = running.waiting().await;
        });
        async move { ().serve(client_io).await.unwrap() }
    };
    let first = connect_to(&gate).await;
    let peer = first.peer().clone();
    let waiting = tokio::spawn(async move {
        peer.call_tool(call("delete_file", json!({"path": "/a"})))
            .await
    });
    let alert = recorder.next_alert().await;
    let approve = Approve::new(alert.request().id(), alert.code().reveal())
        .scope(Scope::Session)
        .by("alice");
    gate.approve(approve).await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap().is_error, Some(false));

    // The same connection, other arguments: covered, nobody asked.
    let again = first
        .call_tool(call("delete_file", json!({"path": "/b"})))
        .await
        .unwrap();
    assert_eq!(again.is_error, Some(false));
    assert_eq!(recorder.alerts().len(), 1);

    // Another connection asks again.
    let second = connect_to(&gate).await;
    let peer = second.peer().clone();
    let _waiting = tokio::spawn(async move {
        peer.call_tool(call("delete_file", json!({"path": "/b"})))
            .await
    });
    let asked = recorder.next_alert().await;
    assert_ne!(asked.request().id(), alert.request().id());
    assert_ne!(asked.request().session(), alert.request().session());
}

#[tokio::test(start_paused = true)]
async fn an_edited_call_runs_with_the_approvers_arguments_and_its_result_says_so() {
    let editable = CapabilityTable::new().ask("delete_file", Ask::new("deletes a file").editable());
    let s = connect(|gate| gate.mcp(editable)).await;
    let peer = s.client.peer().clone();
    let args = json!({"path": "/srv/data"});
    let waiting = tokio::spawn(async move { peer.call_tool(call("delete_file", args)).await });
    let alert = s.recorder.next_alert().await;
    let request = alert.request();
    assert!(request.editable());

    let edited = json!({"path": "/srv/data/tmp"});
    let approve = Approve::new(request.id(), alert.code().reveal())
        .edit(edited.clone())
        .by("alice");
    s.gate.approve(approve).await.unwrap();
    let result = waiting.await.unwrap().unwrap();
    assert_eq!(result.is_error, Some(false));
    assert_eq!(
        *s.tools.ran.lock().unwrap(),
        [("delete_file".to_owned(), edited)],
        "only the edited call ran"
    );
    let meta = &result.meta.expect("the result says it was edited").0["tollgate/edited"];
    assert_eq!(meta["approver"], "alice");
    assert_eq!(meta["request_id"], request.id().to_string());
    assert_eq!(meta["original_arguments"], json!({"path": "/srv/data"}));
}

/// A second `initialize` in the middle of the connection is refused: the handshake's named the
/// client, and so the principal, once.
#[tokio::test(start_paused = true)]
async fn a_second_initialize_cannot_rename_the_client() {
    let s = connect(|gate| gate.mcp(policy())).await;
    let peer = s.client.peer().clone();
    let params: rmcp::model::InitializeRequestParams = serde_json::from_value(json!({
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "release-bot", "version": "1.0"}
    }))
    .unwrap();
    let again = peer
        .send_request(ClientRequest::InitializeRequest(
            rmcp::model::InitializeRequest::new(params),
        ))
        .await;
    assert!(again.is_err(), "answered {again:?}");
    let _call = tokio::spawn(async move {
        peer.call_tool(call("delete_file", json!({"path": "/tmp/c"})))
            .await
    });
    let alert = s.recorder.next_alert().await;
    assert_eq!(alert.request().principal(), "rmcp", "the handshake's name");
}
