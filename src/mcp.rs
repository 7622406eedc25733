//! Gating MCP servers: every `tools/call` waits until policy or a person allows it.
//!
//! [`Gate::mcp`] wraps any MCP server handler (anything that is an rmcp
//! [`Service<RoleServer>`](rmcp::Service), as every [`ServerHandler`](rmcp::ServerHandler) is).
//! Each `tools/call` becomes a [`McpCall`] the policy is asked about; one it does not allow parks
//! until a person decides, as any other call does, and runs on the handler once approved.
//! `tools/list`, every other request and every notification pass through untouched.
//!
//! ```no_run
//! # async fn run(gate: tollgate::Gate, my_server: impl rmcp::ServerHandler) -> Result<(), Box<dyn std::error::Error>> {
//! use rmcp::ServiceExt;
//! use tollgate::policy::{Ask, CapabilityTable};
//!
//! let policy = CapabilityTable::new()
//!     .allow("search_docs")
//!     .ask("delete_file", Ask::new("deletes a file"));
//! let server = gate.mcp(policy).reason_from_argument("reason").wrap(my_server);
//! server.serve(rmcp::transport::stdio()).await?.waiting().await?;
//! # Ok(()) }
//! ```
//!
//! # What the policy sees
//!
//! - **Capability**: the tool's name.
//! - **Arguments**: the call's arguments (`{}` when it sent none).
//! - **Principal and session**: by default the client's name from its `initialize` request
//!   (never the client information a request carries in its `_meta`, which a client could change
//!   from call to call), and a session id the wrapped server makes for itself, `mcp_…`: one per
//!   connection, since each connection is served by a server of its own, so an approval of scope
//!   `session` covers the rest of that conversation. Set your own with
//!   [`identify`](McpApproval::identify), from the request's context (its extensions carry the
//!   HTTP request on the streamable HTTP transport); an identity that names no session keeps
//!   the connection's.
//! - **Reason**: the request's `_meta` field `reason` by default, or a tool argument you name
//!   with [`reason_from_argument`](McpApproval::reason_from_argument) (read, not removed: the
//!   tool receives its arguments as sent).
//!
//! # Answers
//!
//! A refusal of any kind (a denial, expiry, a missing reason, too many pending calls, a
//! notification nobody received) is a tool result with `isError: true` whose text is the stable
//! code and what it means, `access_request_denied: the call was denied and did not run; do not
//! retry it as is (…)`: the model reads why and need not retry blindly. Protocol errors are left for the
//! protocol's own faults (an error of the handler itself is passed on as it came).
//!
//! # Edits
//!
//! Where the policy lets approvers edit a tool's arguments ([`Ask::editable`]), the tool runs
//! with the arguments the approver wrote, and its result's `_meta` carries `tollgate/edited`:
//! `{"request_id", "approver", "original_arguments"}`, so the model can tell what ran was not
//! what it asked for. (The tool's own text says what it did with the new arguments.)
//!
//! [`Ask::editable`]: crate::policy::Ask::editable
//!
//! # A parked call stays alive
//!
//! MCP clients give up on a request after a timeout, often 60 seconds. While a call waits for a
//! person, and the client asked for progress (`_meta.progressToken`), a
//! `notifications/progress` goes out on that token every [`progress_interval`] (15 s by default):
//! clients that reset their timeout on progress keep waiting. A client that does not, or that
//! sent no progress token, gives up at its timeout; its cancellation then withdraws the call
//! like any other.
//!
//! A `notifications/cancelled` for a parked call drops it: when it was the request's last caller,
//! the request ends `cancelled` and the notifiers are told.
//!
//! [`progress_interval`]: McpApproval::progress_interval

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolResult, ClientNotification, ClientRequest, ContentBlock, ErrorCode,
    ErrorData, ProgressNotificationParam, ProgressToken, ProtocolVersion, ServerConfig,
    ServerResult,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use serde_json::Value;
use tokio::sync::oneshot;
use tower::ServiceExt as _;

use crate::call::{Call, Edit, ToolCall};
use crate::error::{BoxError, Error};
use crate::gate::Gate;
use crate::policy::Policy;
use crate::service::RequireApproval;

/// How often a parked call tells the client it is still waiting, by default.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(15);

/// The `_meta` field a reason is read from by default.
pub const DEFAULT_REASON_FIELD: &str = "reason";

/// Who makes a call: the principal, and the session it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    principal: String,
    session: Option<String>,
}

impl Identity {
    /// A principal; its calls belong to the connection's session unless
    /// [`session`](Self::session) names another.
    pub fn new(principal: impl Into<String>) -> Self {
        Identity {
            principal: principal.into(),
            session: None,
        }
    }

    /// The session or conversation the calls belong to.
    #[must_use]
    pub fn session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }

    /// By default: the client's name from its `initialize` handshake, else `mcp-client`. Never
    /// the client information a request carries in its `_meta`: a client could name itself
    /// anew in every call, and take on another principal's rules and limits.
    fn of_client(context: &RequestContext<RoleServer>) -> Self {
        let name = context
            .peer
            .peer_info()
            .map(|info| info.client_info.name.clone())
            .filter(|name| !name.is_empty());
        Identity::new(name.unwrap_or_else(|| "mcp-client".to_owned()))
    }
}

type Identify = dyn Fn(&RequestContext<RoleServer>) -> Identity + Send + Sync;

/// Where a call's reason is read from.
#[derive(Clone, Debug)]
enum ReasonFrom {
    Meta(String),
    Argument(String),
}

/// What [`McpApproval`] sets, shared by every call of a wrapped server.
struct Settings {
    identify: Option<Box<Identify>>,
    reason: ReasonFrom,
    progress_every: Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("identify", &self.identify.as_ref().map(|_| "<fn>"))
            .field("reason", &self.reason)
            .field("progress_every", &self.progress_every)
            .finish()
    }
}

impl Gate {
    /// Gates the `tools/call` requests of an MCP server by `policy`; see [`mcp`](crate::mcp).
    pub fn mcp<P>(&self, policy: P) -> McpApproval<P> {
        McpApproval {
            gate: self.clone(),
            policy,
            settings: Settings {
                identify: None,
                reason: ReasonFrom::Meta(DEFAULT_REASON_FIELD.to_owned()),
                progress_every: DEFAULT_PROGRESS_INTERVAL,
            },
        }
    }
}

/// Settings for gating an MCP server; [`wrap`](Self::wrap) a handler with them.
#[derive(Debug)]
pub struct McpApproval<P> {
    gate: Gate,
    policy: P,
    settings: Settings,
}

impl<P> McpApproval<P> {
    /// Names who makes each call, from the request's context.
    #[must_use]
    pub fn identify(
        mut self,
        identify: impl Fn(&RequestContext<RoleServer>) -> Identity + Send + Sync + 'static,
    ) -> Self {
        self.settings.identify = Some(Box::new(identify));
        self
    }

    /// Reads the reason from this field of the request's `_meta` (`reason` by default).
    #[must_use]
    pub fn reason_from_meta(mut self, field: impl Into<String>) -> Self {
        self.settings.reason = ReasonFrom::Meta(field.into());
        self
    }

    /// Reads the reason from this argument of the tool call, which the tool still receives.
    #[must_use]
    pub fn reason_from_argument(mut self, argument: impl Into<String>) -> Self {
        self.settings.reason = ReasonFrom::Argument(argument.into());
        self
    }

    /// How often a parked call sends progress on the request's progress token (15 s by
    /// default; at least 10 ms).
    #[must_use]
    pub fn progress_interval(mut self, every: Duration) -> Self {
        self.settings.progress_every = every.max(Duration::from_millis(10));
        self
    }

    /// The handler, gated.
    pub fn wrap<S>(self, handler: S) -> GatedServer<S, P>
    where
        S: rmcp::Service<RoleServer>,
        P: Clone,
    {
        let handler = Arc::new(handler);
        let upstream = Handler(handler.clone());
        // Each connection is served by a server of its own, so a session id made here names
        // the connection.
        let mut bits = [0u8; 12];
        getrandom::fill(&mut bits).expect("the operating system's random source failed");
        GatedServer {
            handler,
            service: tower::Layer::layer(&self.gate.layer(self.policy), upstream),
            settings: self.settings,
            connection: format!("mcp_{}", crate::hex::lower(&bits)).into(),
            initialized: AtomicBool::new(false),
        }
    }
}

/// An MCP server handler whose `tools/call` requests go through the gate first.
pub struct GatedServer<S, P> {
    handler: Arc<S>,
    service: RequireApproval<Handler<S>, P>,
    settings: Settings,
    /// The session of calls [`identify`](McpApproval::identify) does not name.
    connection: Box<str>,
    /// Whether the handshake's `initialize` came: any later one is refused.
    initialized: AtomicBool,
}

impl<S, P> fmt::Debug for GatedServer<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedServer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A `tools/call` as the policy sees it: the call, and the MCP request it came in.
#[derive(Debug)]
pub struct McpCall {
    tool: ToolCall,
    request: CallToolRequest,
    context: RequestContext<RoleServer>,
    /// Told when the gate lets the call through to the handler; shared with the copies an
    /// edit makes of the call.
    started: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl McpCall {
    /// The call: the tool's name as capability, its arguments, principal, session and reason.
    pub fn tool_call(&self) -> &ToolCall {
        &self.tool
    }

    /// The request's context: its id, `_meta`, extensions and the client.
    pub fn context(&self) -> &RequestContext<RoleServer> {
        &self.context
    }
}

impl Call for McpCall {
    fn capability(&self) -> &str {
        self.tool.capability()
    }
    fn args(&self) -> Cow<'_, Value> {
        Cow::Borrowed(self.tool.args())
    }
    fn principal(&self) -> Option<&str> {
        Call::principal(&self.tool)
    }
    fn session(&self) -> Option<&str> {
        Call::session(&self.tool)
    }
    fn reason(&self) -> Option<&str> {
        Call::reason(&self.tool)
    }
    /// The tool runs with the edited arguments, and its result's `_meta` says so (see the
    /// module docs).
    fn edited(&self, edit: &Edit) -> Result<Self, Error> {
        Ok(McpCall {
            tool: self.tool.edited(edit)?,
            request: self.request.clone(),
            context: self.context.clone(),
            started: self.started.clone(),
        })
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<ServerResult, ErrorData>> + Send>>;

/// The `_meta` field of the result of a call an approver edited.
const EDITED: &str = "tollgate/edited";

/// What the `_meta` field [`EDITED`] holds: the access request, who edited, and the arguments
/// the call asked with (the tool ran with the edited ones).
fn edited_meta(edit: &Edit) -> Value {
    serde_json::json!({
        "request_id": edit.request_id(),
        "approver": edit.approver(),
        "original_arguments": edit.original_args(),
    })
}

/// The wrapped handler as the tower service the gate lets calls through to.
struct Handler<S>(Arc<S>);

impl<S> Clone for Handler<S> {
    fn clone(&self) -> Self {
        Handler(self.0.clone())
    }
}

impl<S: rmcp::Service<RoleServer>> tower::Service<McpCall> for Handler<S> {
    type Response = ServerResult;
    type Error = ErrorData;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ErrorData>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut call: McpCall) -> Answer {
        let started = call
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(started) = started {
            let _ = started.send(());
        }
        // What runs is what was asked about: the arguments the policy and the approver saw, or
        // those the approver wrote.
        let edited = call.tool.edit().map(edited_meta);
        call.request.params.arguments = match call.tool.into_args() {
            Value::Object(arguments) => Some(arguments),
            _ => None,
        };
        let handler = self.0.clone();
        Box::pin(async move {
            let mut answer = handler
                .handle_request(ClientRequest::CallToolRequest(call.request), call.context)
                .await?;
            if let (Some(edited), ServerResult::CallToolResult(result)) = (edited, &mut answer) {
                let meta = result.meta.get_or_insert_default();
                meta.0.insert(EDITED.into(), edited);
            }
            Ok(answer)
        })
    }
}

impl<S, P> rmcp::Service<RoleServer> for GatedServer<S, P>
where
    S: rmcp::Service<RoleServer>,
    P: Policy<McpCall> + Clone + Send + Sync + 'static,
{
    async fn handle_request(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        match request {
            ClientRequest::CallToolRequest(call) => self.call_tool(call, context).await,
            // The handshake's `initialize` names the client, and so the principal; another one
            // later would let a client name itself anew between calls.
            ClientRequest::InitializeRequest(_)
                if self.initialized.swap(true, Ordering::AcqRel) =>
            {
                Err(ErrorData::invalid_request(
                    "the connection is initialized already",
                    None,
                ))
            }
            other => self.handler.handle_request(other, context).await,
        }
    }

    async fn handle_notification(
        &self,
        notification: ClientNotification,
        context: NotificationContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.handler
            .handle_notification(notification, context)
            .await
    }

    fn get_info(&self) -> ServerConfig {
        self.handler.get_info()
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        self.handler.supported_protocol_versions()
    }
}

impl<S, P> GatedServer<S, P>
where
    S: rmcp::Service<RoleServer>,
    P: Policy<McpCall> + Clone + Send + Sync + 'static,
{
    async fn call_tool(
        &self,
        mut request: CallToolRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        let settings = &self.settings;
        let args = Value::Object(request.params.arguments.take().unwrap_or_default());
        let identity = match &settings.identify {
            Some(identify) => identify(&context),
            None => Identity::of_client(&context),
        };
        let reason = match &settings.reason {
            ReasonFrom::Meta(field) => context.meta.0.get(field.as_str()),
            ReasonFrom::Argument(name) => args.get(name.as_str()),
        }
        .and_then(Value::as_str)
        .map(str::to_owned);
        // Every call belongs to a session: the identity's, else the connection's.
        let session = identity
            .session
            .unwrap_or_else(|| self.connection.to_string());
        let mut tool = ToolCall::new(request.params.name.clone(), args)
            .principal(identity.principal)
            .session(session);
        if let Some(reason) = reason {
            tool = tool.reason(reason);
        }

        let legacy_peer = context
            .protocol_version()
            .is_none_or(|v| v.as_str() < ProtocolVersion::V_2026_07_28.as_str());
        let cancelled = context.ct.clone();
        let progress = context
            .meta
            .get_progress_token()
            .map(|token| (token, context.peer.clone()));
        let (started, running) = oneshot::channel();
        let call = McpCall {
            tool,
            request,
            context,
            started: Arc::new(Mutex::new(Some(started))),
        };
        let answer = self.service.clone().oneshot(call);
        let waiting = keep_alive(progress, settings.progress_every, running);
        let outcome = tokio::select! {
            // Dropping the call withdraws it: the last caller gone cancels the request.
            () = cancelled.cancelled() => {
                return Err(ErrorData::new(
                    ErrorCode::INVALID_REQUEST,
                    "the client cancelled this call",
                    None,
                ));
            }
            outcome = answer => outcome,
            never = waiting => match never {},
        };
        let mut answer = outcome.or_else(answer_of_refusal)?;
        // As rmcp's own handlers answer: peers older than 2026-07-28 get no `resultType`.
        if legacy_peer {
            answer.strip_result_type_for_legacy_peer();
        }
        Ok(answer)
    }
}

/// While the call waits for a person, progress on the client's token every `every`; then
/// nothing, for ever.
async fn keep_alive(
    progress: Option<(ProgressToken, rmcp::Peer<RoleServer>)>,
    every: Duration,
    mut running: oneshot::Receiver<()>,
) -> std::convert::Infallible {
    if let Some((token, peer)) = progress {
        let start = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval_at(start + every, every);
        let mut sent = 0u32;
        loop {
            tokio::select! {
                _ = &mut running => break,
                _ = ticks.tick() => {
                    sent += 1;
                    let waited = start.elapsed().as_secs();
                    let note = ProgressNotificationParam::new(token.clone(), f64::from(sent))
                        .with_message(format!("waiting for a person to approve this call ({waited} s so far)"));
                    // A client that has gone away is the cancellation's business, not ours.
                    let _ = peer.notify_progress(note).await;
                }
            }
        }
    }
    std::future::pending().await
}

/// The gate's refusals become tool results the model can read; the handler's own protocol
/// errors pass as they came.
fn answer_of_refusal(error: BoxError) -> Result<ServerResult, ErrorData> {
    let error = match error.downcast::<Error>() {
        Ok(refusal) => {
            let text = ContentBlock::text(refusal.to_string());
            return Ok(ServerResult::CallToolResult(CallToolResult::error(vec![
                text,
            ])));
        }
        Err(other) => other,
    };
    match error.downcast::<ErrorData>() {
        Ok(protocol) => Err(*protocol),
        Err(other) => Err(ErrorData::internal_error(other.to_string(), None)),
    }
}
