//! `tollgate`: a person approves an agent's tool calls before they run.
//!
//! `tollgate mcp --config tollgate.toml -- COMMAND [ARGS…]` starts the MCP server `COMMAND` as a
//! child, speaks MCP to the client on its own stdin and stdout, gates every `tools/call` by the
//! configuration's policy, and serves the approval page and JSON API on a local address.

mod proxy;
mod sidecar;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use metrics_exporter_prometheus::PrometheusHandle;
use rmcp::ServiceExt as _;
use rmcp::model::{
    ClientNotification, ClientRequest, ErrorData, ProtocolVersion, ServerConfig, ServerResult,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use tollgate::Gate;
use tollgate::config::{Config, ConfigPolicy, NotifierSettings, StoreSettings, Stream};
use tollgate::mcp::Identity;
use tollgate::policy::LivePolicy;

use crate::proxy::{Proxy, UpstreamCommand};
use crate::sidecar::Upstream;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "A person approves an agent's tool calls before they run."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Put the gate in front of an MCP server that speaks over stdio.
    ///
    /// Starts COMMAND as the upstream MCP server and speaks MCP to the client on stdin and
    /// stdout. Every `tools/call` meets the configuration's policy first: a call it does not
    /// allow waits until a person approves it on the approval page or through the JSON API
    /// (their address is printed on stderr), and a refusal comes back as a tool error naming
    /// its code. Everything else passes through untouched. Logs go to stderr; stdout belongs
    /// to the protocol.
    #[command(after_help = MCP_EXAMPLE)]
    Mcp(McpArgs),
    /// Put the gate in front of an HTTP API, as a reverse proxy.
    ///
    /// Listens on `[proxy] listen` and forwards every request to `[proxy] upstream`. A request
    /// the configuration's policy does not allow waits until a person approves it on the
    /// approval page or through the JSON API, then goes on; a refusal is a JSON error with a
    /// stable code. The capability is the method and the route pattern of `[proxy] routes` the
    /// path matches (`POST /v1/refunds/{id}`), else the method and the path. Requests the policy
    /// allows stream through unread.
    #[command(after_help = PROXY_EXAMPLE)]
    Proxy(ProxyArgs),
}

const PROXY_EXAMPLE: &str = "Example configuration:
  [proxy]
  listen = \"127.0.0.1:8080\"
  upstream = \"http://127.0.0.1:3000\"
  routes = [\"/v1/refunds/{id}\"]
  principal_header = \"x-agent-id\"

  [capabilities.\"GET *\"]
  decision = \"allow\"";

#[derive(Args, Debug)]
struct ProxyArgs {
    /// The configuration file: `[proxy]`, policy, notifiers, and `[approval]`.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Listen here instead of `[proxy] listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Serve the approval page, API and health checks here instead of `[approval] listen`.
    #[arg(long, value_name = "ADDR")]
    approval_listen: Option<SocketAddr>,
    /// Log more to stderr (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

const MCP_EXAMPLE: &str = "Example:
  tollgate mcp --config tollgate.toml -- npx -y @scope/files-server /srv/files

In a desktop MCP client's configuration:
  \"files\": { \"command\": \"tollgate\",
             \"args\": [\"mcp\", \"--config\", \"/etc/tollgate.toml\", \"--\", \"files-server\", \"/srv/files\"] }";

#[derive(Args, Debug)]
struct McpArgs {
    /// The configuration file: policy, notifiers, and `[approval]` (address and approvers).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Serve the approval page and API here instead of `[approval] listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Who the calls are from (default: the client's name from its handshake).
    #[arg(long, value_name = "NAME")]
    principal: Option<String>,
    /// The session the calls belong to, for rules of scope `session` (default: one for the
    /// whole connection). Needs `--principal`.
    #[arg(long, value_name = "ID", requires = "principal")]
    session: Option<String>,
    /// Read each call's reason from this tool argument (default: the request's `_meta.reason`).
    #[arg(long, value_name = "NAME")]
    reason_argument: Option<String>,
    /// How often a waiting call sends progress to the client.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    progress_interval: Duration,
    /// How long the upstream may take to start and complete its handshake.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    startup_timeout: Duration,
    /// How long the upstream may take to answer a request; its progress on the request resets it.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    upstream_timeout: Duration,
    /// Log more to stderr (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// The upstream MCP server and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    upstream: Vec<String>,
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    let verbose = match &command {
        Command::Mcp(args) => args.verbose,
        Command::Proxy(args) => args.verbose,
    };
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .init();
    let runtime = match &command {
        // One thread: messages are relayed in the order they arrive.
        Command::Mcp(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Command::Proxy(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let ran = match command {
        Command::Mcp(args) => runtime.block_on(mcp(args)),
        Command::Proxy(args) => runtime.block_on(proxy(args)),
    };
    // Everything to finish has finished. Not waiting for the runtime's blocking threads: one may
    // be in a read of stdin that nothing can cancel, and would hold the exit until the client
    // writes or closes it.
    runtime.shutdown_background();
    match ran {
        Ok(code) => code,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("tollgate: error: {message}");
    ExitCode::FAILURE
}

/// The configuration at `path`, read.
fn load(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

/// The gate of `config` (read from `path`), with the approval page, API, metrics and health
/// checks served on `[approval] listen` (or `listen`).
async fn start(config: &Config, path: &Path, listen: Option<SocketAddr>) -> Result<Gate, String> {
    let approvers = config.approvers().map_err(|e| e.to_string())?;
    if approvers.is_empty() {
        return Err(format!(
            "{}: approval.approvers: nobody may approve a call; add an approver with a token of at least 16 bytes:\n  [[approval.approvers]]\n  name = \"alice\"\n  token = {{ env = \"TOLLGATE_ALICE_TOKEN\" }}",
            path.display()
        ));
    }
    let address = match listen {
        Some(address) => address,
        None => config.approval_address().map_err(|e| e.to_string())?,
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot serve the approval page on {address}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    // Alerts link to this page unless the file says where approvers reach it.
    let mut config = Cow::Borrowed(config);
    if config.gate.approval_base_url.is_none() {
        config.to_mut().gate.approval_base_url = Some(page_url(address));
    }
    // The recorder goes in before the gate is built: the gate registers its counters then.
    let metrics = prometheus()?;
    let gate = config.open_gate().await.map_err(|e| e.to_string())?;
    if matches!(config.store, StoreSettings::Memory) {
        eprintln!(
            "tollgate: requests, standing approvals and the audit trail are kept in memory and end with this process; a [store] section keeps them"
        );
    }
    let app = tollgate::approval::router(gate.clone(), approvers)
        .merge(operations(gate.clone(), metrics));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the approval server stopped: {e}");
        }
    });
    eprintln!("tollgate: approval page and API at http://{address}/");
    Ok(gate)
}

/// The approval page's address as approvers' browsers open it: a wildcard listen address is
/// reached on the loopback one (set `approval_base_url` when approvers are elsewhere).
fn page_url(address: SocketAddr) -> String {
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, address.port()))
}

/// The `metrics` facade's recorder, rendering Prometheus text, kept up to date.
fn prometheus() -> Result<PrometheusHandle, String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let decision = Matcher::Full("tollgate_decision_seconds".into());
    let write = Matcher::Full("tollgate_store_write_seconds".into());
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(decision, &[1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0])
        .and_then(|b| b.set_buckets_for_metric(write, &[0.0001, 0.001, 0.01, 0.1, 1.0]))
        .map_err(|e| format!("metrics: {e}"))?
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// `/metrics` in Prometheus text; `/healthz`: the process answers; `/readyz`: and its store too.
fn operations(gate: Gate, metrics: PrometheusHandle) -> axum::Router {
    use axum::routing::get;
    let render = move || {
        let text = metrics.render();
        async move {
            let kind = [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )];
            (kind, text)
        }
    };
    let ready = move || {
        let gate = gate.clone();
        async move {
            match gate.pending_anywhere().await {
                Ok(_) => (axum::http::StatusCode::OK, "ready\n".to_owned()),
                Err(e) => (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: the store: {}\n", e.code()),
                ),
            }
        }
    };
    axum::Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
}

async fn mcp(args: McpArgs) -> Result<ExitCode, String> {
    let config = load(&args.config)?;
    if config
        .notifiers
        .iter()
        .any(|n| matches!(n, NotifierSettings::Terminal(t) if t.stream == Stream::Stdout))
    {
        return Err(format!(
            "{}: a terminal notifier on stdout would write into the MCP protocol; use stream = \"stderr\"",
            args.config.display()
        ));
    }
    let gate = start(&config, &args.config, args.listen).await?;
    let policy = LivePolicy::new(config.policy().map_err(|e| e.to_string())?);
    reload_on_hangup(args.config.clone(), policy.clone(), gate.clone());

    let (program, rest) = args
        .upstream
        .split_first()
        .expect("clap requires a command");
    let (proxy, exited) = Proxy::new(UpstreamCommand {
        program: program.clone(),
        args: rest.to_vec(),
        startup_timeout: args.startup_timeout,
        request_timeout: args.upstream_timeout,
    });
    let mut approval = gate.mcp(policy).progress_interval(args.progress_interval);
    if let Some(argument) = args.reason_argument {
        approval = approval.reason_from_argument(argument);
    }
    if let Some(principal) = args.principal {
        let identity = match args.session {
            Some(session) => Identity::new(principal).session(session),
            None => Identity::new(principal),
        };
        approval = approval.identify(move |_| identity.clone());
    }
    let (server, in_flight) = Counted::new(approval.wrap(proxy));
    let server = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("the MCP client's handshake failed: {e}"))?;
    let cancel = server.cancellation_token();
    let mut served = tokio::spawn(server.waiting());
    // Watched once the session is up: a stop before then has no call to answer.
    let stop = stop_requested();

    // Every waiting call fails with `gate_shut_down` (its request ends `abandoned`); once every
    // request has its answer, the service stops, writing those answers out first.
    let wind_down = async || {
        if let Err(e) = gate.shutdown().await {
            tracing::error!("shutting the gate down: {e}");
        }
        let answered = tokio::time::timeout(Duration::from_secs(5), in_flight.idle()).await;
        if answered.is_err() {
            tracing::warn!("some requests were still unanswered after 5 s");
        }
        cancel.cancel();
    };
    tokio::select! {
        // The client closed our stdin: the session is over.
        _ = &mut served => {
            gate.shutdown().await.map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        () = stop => {
            wind_down().await;
            let _ = served.await;
            Ok(ExitCode::SUCCESS)
        }
        status = exited => {
            let status = match status {
                Ok(Ok(status)) => status.to_string(),
                Ok(Err(e)) => format!("cannot be waited for: {e}"),
                Err(_) => "is gone".to_owned(),
            };
            eprintln!("tollgate: error: the upstream MCP server exited ({status}); waiting calls end abandoned");
            wind_down().await;
            let _ = served.await;
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn proxy(args: ProxyArgs) -> Result<ExitCode, String> {
    let config = load(&args.config)?;
    let upstream = Arc::new(Upstream::of(&config)?);
    let gate = start(&config, &args.config, args.approval_listen).await?;
    let origin = upstream.origin().to_owned();
    let policy = LivePolicy::new(config.policy().map_err(|e| e.to_string())?);
    reload_on_hangup(args.config.clone(), policy.clone(), gate.clone());
    let app = sidecar::app(&gate, &config, policy, upstream)?;
    let address = match args.listen {
        Some(address) => address,
        None => config
            .proxy
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_PROXY_ADDRESS)
            .parse()
            .map_err(
                |_| "[proxy] listen: expected an address and port, such as \"127.0.0.1:8080\"",
            )?,
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    // Watched before the line that says the proxy is up: a supervisor may stop it right after.
    let stop = stop_requested();
    eprintln!("tollgate: proxying http://{address}/ to {origin}");
    // On a stop, the server takes no more connections and waits for the answers under way, while
    // the gate answers parked calls `gate_shut_down` at once: a decision could take longer than
    // any supervisor waits.
    let stopping = {
        let gate = gate.clone();
        async move {
            stop.await;
            if let Err(e) = gate.shutdown().await {
                tracing::error!("shutting the gate down: {e}");
            }
        }
    };
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(stopping)
        .await
        .map_err(|e| format!("the proxy stopped: {e}"))?;
    gate.shutdown().await.map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// Reloads the configuration file on every `SIGHUP` while the process runs: the policy and the
/// notifiers change for later calls, parked calls stay; a bad file changes nothing and says why.
fn reload_on_hangup(path: PathBuf, policy: LivePolicy<ConfigPolicy>, gate: Gate) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("SIGHUP cannot be watched here: the configuration is read at start only");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match Config::reload(&path, &policy, &gate) {
                Ok(_) => eprintln!("tollgate: reloaded {}", path.display()),
                Err(e) => eprintln!("tollgate: error: kept the running configuration: {e}"),
            }
        }
    });
}

/// Resolves once the process is asked to stop: Ctrl-C, or `SIGTERM` from a supervisor.
///
/// Both signals are watched from the call on, not from the first poll: until a signal is
/// watched, its default action ends the process at once, with no clean shutdown.
fn stop_requested() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let watch = |kind: SignalKind, name: &str| {
        signal(kind)
            .inspect_err(|e| tracing::warn!("{name} cannot be watched here: {e}"))
            .ok()
    };
    let interrupt = watch(SignalKind::interrupt(), "SIGINT");
    let terminate = watch(SignalKind::terminate(), "SIGTERM");
    let received = |signal: Option<tokio::signal::unix::Signal>| async move {
        match signal {
            Some(mut signal) => _ = signal.recv().await,
            None => std::future::pending().await,
        }
    };
    async move {
        tokio::select! {
            () = received(interrupt) => {}
            () = received(terminate) => {}
        }
    }
}

/// Where `tollgate proxy` listens unless `[proxy] listen` or `--listen` says.
const DEFAULT_PROXY_ADDRESS: &str = "127.0.0.1:8080";

/// A server that counts the requests it is handling, so that shutting down can wait for their
/// answers.
struct Counted<S> {
    inner: S,
    in_flight: Arc<InFlight>,
}

#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl InFlight {
    /// Until no request is being handled.
    async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Counts one request as handled when dropped.
struct Handling(Arc<InFlight>);

impl Drop for Handling {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl<S> Counted<S> {
    fn new(inner: S) -> (Self, Arc<InFlight>) {
        let in_flight = Arc::new(InFlight::default());
        let counted = Counted {
            inner,
            in_flight: in_flight.clone(),
        };
        (counted, in_flight)
    }
}

impl<S: rmcp::Service<RoleServer>> rmcp::Service<RoleServer> for Counted<S> {
    async fn handle_request(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        self.in_flight.count.fetch_add(1, Ordering::AcqRel);
        let _handling = Handling(self.in_flight.clone());
        self.inner.handle_request(request, context).await
    }

    async fn handle_notification(
        &self,
        notification: ClientNotification,
        context: NotificationContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.inner.handle_notification(notification, context).await
    }

    fn get_info(&self) -> ServerConfig {
        self.inner.get_info()
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        self.inner.supported_protocol_versions()
    }
}
