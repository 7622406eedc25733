//! The MCP proxy between the client on our stdio and the upstream server, a child on its own.
//!
//! The client's requests go up ([`Proxy`], which `tollgate::mcp` wraps, so that `tools/call`
//! meets the gate first); the upstream's requests and notifications come down ([`Relay`]). The
//! upstream starts when the client's `initialize` arrives, with the client's own information and
//! capabilities, and its answer is the client's answer.
//!
//! Progress tokens: the SDK's client gives every request it sends a token of its own, so the
//! upstream's progress arrives on ours; [`Tokens`] maps it back to the client's.

use std::collections::HashMap;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rmcp::ServiceExt as _;
use rmcp::model::{
    CancelledNotificationParam, ClientConfig, ClientNotification, ClientRequest, ClientResult,
    ErrorCode, ErrorData, GetMeta as _, InitializeResult, JsonRpcMessage, ProgressToken,
    ServerConfig, ServerNotification, ServerRequest, ServerResult,
};
use rmcp::service::{
    NotificationContext, Peer, PeerRequestOptions, RequestContext, RoleClient, RoleServer,
    RunningService, RxJsonRpcMessage, ServiceError, TxJsonRpcMessage,
};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::AsyncRwTransport;
use serde_json::json;
use tokio::process::Command;
use tokio::sync::{Notify, OnceCell, oneshot};

/// How the upstream is started and how long it may take.
#[derive(Debug)]
pub(crate) struct UpstreamCommand {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    /// For the handshake.
    pub(crate) startup_timeout: Duration,
    /// For each request, reset by the upstream's progress on it.
    pub(crate) request_timeout: Duration,
}

/// The upstream, once started.
struct Upstream {
    peer: Peer<RoleClient>,
    info: InitializeResult,
    /// Kept so that the client side runs as long as the proxy does.
    _service: RunningService<RoleClient, Relay>,
}

/// The server the client talks to: each request goes to the upstream.
pub(crate) struct Proxy {
    command: UpstreamCommand,
    upstream: OnceCell<Upstream>,
    tokens: Tokens,
    /// Told how the upstream process ended; taken by [`Proxy::exited`].
    exit: Mutex<Option<oneshot::Sender<std::io::Result<ExitStatus>>>>,
}

impl Proxy {
    /// A proxy to `command`, and what tells when its process ends.
    pub(crate) fn new(
        command: UpstreamCommand,
    ) -> (Self, oneshot::Receiver<std::io::Result<ExitStatus>>) {
        let (exit, exited) = oneshot::channel();
        let proxy = Proxy {
            command,
            upstream: OnceCell::new(),
            tokens: Tokens::default(),
            exit: Mutex::new(Some(exit)),
        };
        (proxy, exited)
    }

    /// The upstream, started on first use with what the client said of itself.
    async fn upstream(
        &self,
        client: Option<ClientConfig>,
        downstream: &Peer<RoleServer>,
    ) -> Result<&Upstream, ErrorData> {
        self.upstream
            .get_or_try_init(|| self.start(client, downstream.clone()))
            .await
    }

    async fn start(
        &self,
        client: Option<ClientConfig>,
        downstream: Peer<RoleServer>,
    ) -> Result<Upstream, ErrorData> {
        let command = &self.command;
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                upstream_failed(format!(
                    "cannot start the upstream `{}`: {e}",
                    command.program
                ))
            })?;
        let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
            return Err(upstream_failed(
                "the upstream's stdio could not be piped".into(),
            ));
        };
        let exit = self
            .exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        tokio::spawn(async move {
            let status = child.wait().await;
            if let Some(exit) = exit {
                let _ = exit.send(status);
            }
        });
        let relay = Relay {
            downstream,
            tokens: self.tokens.clone(),
            info: client.unwrap_or_default(),
        };
        let transport = Counting {
            inner: AsyncRwTransport::new_client(stdout, stdin),
            tokens: self.tokens.clone(),
        };
        let handshake = relay.serve(transport);
        let service = match tokio::time::timeout(command.startup_timeout, handshake).await {
            Ok(Ok(service)) => service,
            Ok(Err(e)) => {
                return Err(upstream_failed(format!(
                    "the upstream failed the MCP handshake: {e}"
                )));
            }
            Err(_) => {
                return Err(upstream_failed(format!(
                    "the upstream did not complete the MCP handshake within {}",
                    humantime::format_duration(command.startup_timeout)
                )));
            }
        };
        let peer = service.peer().clone();
        let info = peer
            .peer_info()
            .map(|info| server_config(&info))
            .ok_or_else(|| upstream_failed("the upstream sent no server information".into()))?;
        tracing::info!(server = %info.server_info.name, "upstream MCP server started");
        Ok(Upstream {
            peer,
            info,
            _service: service,
        })
    }
}

/// The upstream's handshake answer, as ours to the client.
fn server_config(info: &rmcp::model::ServerPeerInfo) -> InitializeResult {
    let mut config = InitializeResult::new(info.capabilities.clone())
        .with_protocol_version(info.protocol_version.clone());
    if let Some(server) = &info.server_info {
        config = config.with_server_info(server.clone());
    }
    if let Some(instructions) = &info.instructions {
        config = config.with_instructions(instructions.clone());
    }
    config
}

/// An error of the upstream's, as the client hears it: the JSON-RPC internal error, with the
/// stable code `upstream_failed` in its data.
pub(crate) fn upstream_failed(message: String) -> ErrorData {
    tracing::error!("{message}");
    ErrorData::new(
        ErrorCode::INTERNAL_ERROR,
        message,
        Some(json!({"code": "upstream_failed"})),
    )
}

impl rmcp::Service<RoleServer> for Proxy {
    async fn handle_request(
        &self,
        mut request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        if let ClientRequest::InitializeRequest(initialize) = &request {
            let upstream = self
                .upstream(Some(initialize.params.clone()), &context.peer)
                .await?;
            return Ok(ServerResult::InitializeResult(upstream.info.clone()));
        }
        let upstream = self.upstream(None, &context.peer).await?;
        let theirs = context.meta.get_progress_token();
        // The request's `_meta` travelled in the context; it goes up with the request.
        *request.get_meta_mut() = context.meta.clone();
        let timeout = self.command.request_timeout;
        let options = PeerRequestOptions::with_timeout(timeout).reset_timeout_on_progress();
        let handle = upstream
            .peer
            .send_request_with_option(request, options)
            .await
            .map_err(|e| upstream_failed(format!("the upstream cannot be reached: {e}")))?;
        let (id, ours) = (handle.id.clone(), handle.progress_token.clone());
        let mapped = theirs.map(|theirs| self.tokens.map(ours, theirs));
        tokio::select! {
            answer = handle.await_response() => {
                // The upstream sent its progress before its answer: so does the client get them.
                if let Some(mapped) = &mapped {
                    mapped.relayed().await;
                }
                match answer {
                Ok(answer) => Ok(answer),
                Err(ServiceError::McpError(error)) => Err(error),
                Err(ServiceError::Timeout { timeout }) => Err(upstream_failed(format!(
                    "the upstream did not answer within {}",
                    humantime::format_duration(timeout)
                ))),
                Err(e) => Err(upstream_failed(format!("the upstream failed: {e}"))),
                }
            }
            () = context.ct.cancelled() => {
                let cancel = CancelledNotificationParam::new(Some(id), Some("the client cancelled".into()));
                let _ = upstream.peer.notify_cancelled(cancel).await;
                Err(ErrorData::new(ErrorCode::INVALID_REQUEST, "the client cancelled this request", None))
            }
        }
    }

    async fn handle_notification(
        &self,
        notification: ClientNotification,
        _: NotificationContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        match notification {
            // The upstream had its own from the handshake; a cancellation reaches the upstream
            // through the request it cancels.
            ClientNotification::InitializedNotification(_)
            | ClientNotification::CancelledNotification(_) => Ok(()),
            other => {
                match self.upstream.get() {
                    Some(upstream) => upstream.peer.send_notification(other).await.map_err(|e| {
                        upstream_failed(format!("the upstream cannot be reached: {e}"))
                    }),
                    None => Ok(()),
                }
            }
        }
    }

    fn get_info(&self) -> ServerConfig {
        self.upstream
            .get()
            .map(|upstream| upstream.info.clone())
            .unwrap_or_default()
    }
}

/// The client side, toward the upstream: what it asks of the client, and what it tells it,
/// goes down.
struct Relay {
    downstream: Peer<RoleServer>,
    tokens: Tokens,
    info: ClientConfig,
}

impl rmcp::Service<RoleClient> for Relay {
    async fn handle_request(
        &self,
        request: ServerRequest,
        _: RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        match self.downstream.send_request(request).await {
            Ok(answer) => Ok(answer),
            Err(ServiceError::McpError(error)) => Err(error),
            Err(e) => Err(ErrorData::internal_error(
                format!("the client cannot be reached: {e}"),
                None,
            )),
        }
    }

    async fn handle_notification(
        &self,
        mut notification: ServerNotification,
        _: NotificationContext<RoleClient>,
    ) -> Result<(), ErrorData> {
        let _relaying = match &mut notification {
            ServerNotification::ProgressNotification(progress) => {
                match self.tokens.relay(&progress.params.progress_token) {
                    Some((theirs, relaying)) => {
                        progress.params.progress_token = theirs;
                        Some(relaying)
                    }
                    // Progress on a request the client did not ask progress of.
                    None => return Ok(()),
                }
            }
            _ => None,
        };
        // A client that has gone away is the main loop's business.
        let _ = self.downstream.send_notification(notification).await;
        Ok(())
    }

    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }
}

/// Our progress tokens to the client's, while their requests are in flight, with how many of
/// each request's notifications are on their way down: its answer waits for them, so that the
/// client hears all of a request's progress, and before its answer.
#[derive(Clone, Default)]
struct Tokens(Arc<TokenTable>);

#[derive(Default)]
struct TokenTable {
    map: Mutex<HashMap<ProgressToken, Mapping>>,
    relayed: Notify,
}

struct Mapping {
    theirs: ProgressToken,
    relaying: usize,
}

impl Tokens {
    /// Maps `ours` to `theirs` until the returned guard drops.
    fn map(&self, ours: ProgressToken, theirs: ProgressToken) -> Mapped {
        let mapping = Mapping {
            theirs,
            relaying: 0,
        };
        self.lock().insert(ours.clone(), mapping);
        Mapped(self.clone(), ours)
    }

    /// Counts a notification on `ours` as on its way to the client, as it is read from the
    /// upstream: before the SDK hands it to a task of its own, and so before an answer read
    /// after it.
    fn arrived(&self, ours: &ProgressToken) {
        if let Some(mapping) = self.lock().get_mut(ours) {
            mapping.relaying += 1;
        }
    }

    /// The client's token for `ours`, the notification counted as being relayed until the
    /// guard drops.
    fn relay(&self, ours: &ProgressToken) -> Option<(ProgressToken, Relaying)> {
        let map = self.lock();
        let mapping = map.get(ours)?;
        Some((mapping.theirs.clone(), Relaying(self.clone(), ours.clone())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProgressToken, Mapping>> {
        self.0.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a mapping when its request is answered.
struct Mapped(Tokens, ProgressToken);

impl Mapped {
    /// Until every notification of this request received so far has been written to the client.
    async fn relayed(&self) {
        loop {
            let relayed = self.0.0.relayed.notified();
            let relaying = self.0.lock().get(&self.1).map_or(0, |m| m.relaying);
            if relaying == 0 {
                return;
            }
            relayed.await;
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// The upstream's transport, counting each progress notification as it is read (see
/// [`Tokens::arrived`]).
struct Counting<T> {
    inner: T,
    tokens: Tokens,
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for Counting<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await?;
        if let JsonRpcMessage::Notification(notification) = &message
            && let ServerNotification::ProgressNotification(progress) = &notification.notification
        {
            self.tokens.arrived(&progress.params.progress_token);
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// One notification on its way to the client.
struct Relaying(Tokens, ProgressToken);

impl Drop for Relaying {
    fn drop(&mut self) {
        if let Some(mapping) = self.0.lock().get_mut(&self.1) {
            mapping.relaying -= 1;
        }
        self.0.0.relayed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Waker};

    use rmcp::model::{NumberOrString, ProgressToken};

    use super::Tokens;

    /// The SDK hands each notification to a task of its own, then reads the answer after it:
    /// the answer must wait for a notification read before it even if that task has not run.
    #[tokio::test]
    async fn an_answer_waits_for_progress_read_before_it() {
        let tokens = Tokens::default();
        let ours = ProgressToken(NumberOrString::Number(1));
        let mapped = tokens.map(ours.clone(), ProgressToken(NumberOrString::Number(7)));
        tokens.arrived(&ours);
        let mut answer = pin!(mapped.relayed());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            answer.as_mut().poll(&mut cx).is_pending(),
            "the handler has not run"
        );
        let (theirs, relaying) = tokens.relay(&ours).expect("mapped");
        assert_eq!(theirs, ProgressToken(NumberOrString::Number(7)));
        assert!(
            answer.as_mut().poll(&mut cx).is_pending(),
            "not yet written"
        );
        drop(relaying);
        answer.await;
    }
}
