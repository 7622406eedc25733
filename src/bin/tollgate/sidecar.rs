//! `tollgate proxy`: a reverse proxy in front of any HTTP API, gating each request as
//! `tollgate::http` gates an axum router, then forwarding it to the upstream.
//!
//! The request's way: [`Canonical`] puts its path in the one form the gate judges and the
//! upstream receives and drops its hop-by-hop headers (and those `Connection` names) before
//! anything reads it, axum matches it against the configured route patterns (for its
//! capability), the gate's layer asks the policy (reading the body only for a request it asks
//! about), and [`forward`] sends it on with hyper, streaming both bodies. The upstream learns
//! who asked from `X-Forwarded-For`, `-Host` and `-Proto`.

mod aliases;
mod canonical;
mod lookalike;

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pin_project_lite::pin_project;
use serde_json::json;
use tollgate::config::{Config, ConfigPolicy};
use tollgate::http::Approved;
use tollgate::policy::LivePolicy;
use tollgate::{Gate, RequestId};
use tower::Service;

use self::aliases::Aliased;
use self::canonical::canonical;
use self::lookalike::Routes;

/// Where requests go, and how long the upstream may take to answer.
pub(crate) struct Upstream {
    client: Client<HttpConnector, Body>,
    /// `http://host:port`, and a path prefix without its trailing slash.
    origin: String,
    timeout: Duration,
}

impl Upstream {
    /// The upstream `[proxy]` names.
    pub(crate) fn of(config: &Config) -> Result<Self, String> {
        let Some(url) = &config.proxy.upstream else {
            return Err("[proxy] upstream is missing: the base URL to forward to, such as \"http://127.0.0.1:3000\"".into());
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("[proxy] upstream: {url:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "[proxy] upstream: {url:?} must be http://host:port (the sidecar talks plain HTTP to its neighbour; terminate TLS in front of it)"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("[proxy] upstream: {url:?} must have no query"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Upstream {
            client: Client::builder(TokioExecutor::new()).build(connector),
            origin: url.trim_end_matches('/').to_owned(),
            timeout: config
                .proxy
                .upstream_timeout
                .unwrap_or(Duration::from_secs(30)),
        })
    }

    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }
}

/// The proxy's router: the routes named in `[proxy] routes` and every other path, all forwarded,
/// behind the gate.
pub(crate) fn app(
    gate: &Gate,
    config: &Config,
    policy: LivePolicy<ConfigPolicy>,
    upstream: Arc<Upstream>,
) -> Result<Router, String> {
    let proxy = &config.proxy;
    let mut layer = gate.http(Aliased(policy)).decide_before_body();
    if let Some(limit) = proxy.body_limit {
        layer = layer.body_limit(limit);
    }
    let header = |field: &str, name: &Option<String>| -> Result<Option<HeaderName>, String> {
        name.as_deref()
            .map(|name| {
                HeaderName::try_from(name)
                    .map_err(|_| format!("[proxy] {field}: {name:?} is not a header name"))
            })
            .transpose()
    };
    if let Some(name) = header("principal_header", &proxy.principal_header)? {
        layer = layer.principal_header(name);
    }
    if let Some(name) = header("session_header", &proxy.session_header)? {
        layer = layer.session_header(name);
    }
    if let Some(name) = header("reason_header", &proxy.reason_header)? {
        layer = layer.reason_header(name);
    }
    let mut router = Router::new();
    // Many servers route `/x/` as `/x` (and `/x` as `/x/`): each route is matched either way,
    // and judged under the pattern as configured.
    let mut variants: HashMap<String, String> = HashMap::new();
    for (i, route) in proxy.routes.iter().enumerate() {
        if !route.starts_with('/') || proxy.routes[..i].contains(route) {
            return Err(format!(
                "[proxy] routes: {route:?} must start with `/` and be listed once"
            ));
        }
        router = router.merge(one_route(route)?);
        if let Some(variant) = slash_variant(route).filter(|v| !proxy.routes.contains(v)) {
            router = router.merge(one_route(&variant)?);
            variants.insert(variant, route.clone());
        }
    }
    if !variants.is_empty() {
        layer = layer.capability_fn(move |parts| {
            let route = variants.get(parts.extensions.get::<MatchedPath>()?.as_str())?;
            Some(format!("{} {route}", parts.method))
        });
    }
    let gated = router.fallback(forward).layer(layer).with_state(upstream);
    let routes = Arc::new(Routes::new(&proxy.routes));
    Ok(Router::new().fallback_service(Canonical(gated, routes)))
}

/// A router forwarding `route`, or why `route` is no pattern.
fn one_route(route: &str) -> Result<Router<Arc<Upstream>>, String> {
    // axum refuses a malformed pattern by panicking; say which one instead.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Router::new().route(route, any(forward))
    }))
    .map_err(|_| {
        format!("[proxy] routes: {route:?} is not a route pattern (write parameters as {{name}})")
    })
}

/// `route` with a trailing slash added or taken off; none for `/` and for a catch-all, which
/// matches either already.
fn slash_variant(route: &str) -> Option<String> {
    if route == "/" || route.contains("{*") {
        return None;
    }
    Some(match route.strip_suffix('/') {
        Some(trimmed) => trimmed.to_owned(),
        None => format!("{route}/"),
    })
}

/// Puts each request in the form the upstream gets before anything reads it, so that routing,
/// the gate and the upstream see one request: its path canonical, its hop-by-hop headers gone.
/// A path with no canonical form is refused `400 invalid_path`.
#[derive(Clone, Debug)]
struct Canonical<S>(S, Arc<Routes>);

impl<S> Service<Request> for Canonical<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CanonicalFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // Before the gate reads them: `Connection` may name the content type or the principal's
        // header, which the upstream then never gets.
        strip_hop_by_hop(request.headers_mut());
        match canonical(request.uri().path()) {
            Ok(Cow::Borrowed(_)) => {}
            Ok(Cow::Owned(path)) => match with_path(request.uri(), &path) {
                Some(uri) => *request.uri_mut() = uri,
                None => return CanonicalFuture::refused("the path cannot be forwarded"),
            },
            Err(refused) => return CanonicalFuture::refused(refused.detail()),
        }
        if self.1.near_miss(request.uri().path()).is_some() {
            return CanonicalFuture::refused(
                "the path differs from a configured route only in letter case, a trailing `.` or a `.ext`, which some servers run as that route",
            );
        }
        CanonicalFuture::Routed {
            future: self.0.call(request),
        }
    }
}

/// `uri` with `path` in place of its own.
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

pin_project! {
    #[project = CanonicalProj]
    enum CanonicalFuture<F> {
        Refused { response: Option<Response> },
        Routed { #[pin] future: F },
    }
}

impl<F> CanonicalFuture<F> {
    fn refused(detail: &str) -> Self {
        CanonicalFuture::Refused {
            response: Some(failure(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                detail.into(),
                None,
            )),
        }
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for CanonicalFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CanonicalProj::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            CanonicalProj::Routed { future } => future.poll(cx),
        }
    }
}

/// Headers that belong to one hop, not to the request or response (RFC 9110, 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

/// Sends the request on to the upstream and its answer back, both bodies streamed.
async fn forward(
    State(upstream): State<Arc<Upstream>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    // An approver was told this call runs: a failure names their request.
    let approved = parts
        .extensions
        .get::<Approved>()
        .map(|approved| approved.0);
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(uri) = format!("{}{path}", upstream.origin).parse::<Uri>() else {
        return failure(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request's path cannot be forwarded".into(),
            approved,
        );
    };
    parts.uri = uri;
    // Hop-by-hop headers went before routing (`Canonical`).
    let host = parts.headers.remove(header::HOST);
    let forwarded_for = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        parts.headers.insert("x-forwarded-for", value);
    }
    if let Some(host) = host {
        parts.headers.insert("x-forwarded-host", host);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let sent = upstream
        .client
        .request(axum::http::Request::from_parts(parts, body));
    match tokio::time::timeout(upstream.timeout, sent).await {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, request_id = ?approved, "the upstream could not be reached");
            failure(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("the upstream at {} could not be reached", upstream.origin),
                approved,
            )
        }
        Err(_) => failure(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!(
                "the upstream did not answer within {}",
                humantime::format_duration(upstream.timeout)
            ),
            approved,
        ),
    }
}

/// An error of the proxy's own, in the shape of the gate's JSON errors, naming the access request
/// whose approval let the call run, if one did.
fn failure(status: StatusCode, code: &str, detail: String, request: Option<RequestId>) -> Response {
    let message = match status {
        StatusCode::BAD_GATEWAY => "the service behind the proxy is unavailable; retry later",
        StatusCode::GATEWAY_TIMEOUT => "the service behind the proxy did not answer in time",
        _ => "the request cannot be forwarded",
    };
    let body = json!({"error": {
        "code": code,
        "message": message,
        "detail": detail,
        "request_id": request,
        "retryable": status != StatusCode::BAD_REQUEST,
    }});
    (status, axum::Json(body)).into_response()
}
