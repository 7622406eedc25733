//! Gating HTTP services: axum routers, handlers, any tower service of `http::Request`.
//!
//! Long by design: the layer, its service and the response future share private state and read
//! best together.
//!
//! [`Gate::http`] makes a layer that reads each request as a [`HttpCall`] and asks the policy
//! about it; [`Gate::require`] makes one for a single route with a fixed capability. A call the
//! policy does not allow parks until a person decides, exactly as for any other service; when it
//! fails, the client gets a JSON error with the stable code, and the handler never runs.
//!
//! ```
//! use axum::{routing::{get, post}, Router};
//! use tollgate::policy::CapabilityTable;
//! use tollgate::Gate;
//!
//! # fn app(gate: Gate) -> Router {
//! let policy = CapabilityTable::new().allow("GET *");          // reads pass, writes ask
//! Router::new()
//!     .route("/v1/refunds/{id}", get(|| async { "a refund" }).post(|| async { "refunded" }))
//!     .route("/v1/payouts", post(|| async { "paid" }).layer(gate.require("payments.payout")))
//!     .layer(gate.http(policy))
//! # }
//! ```
//!
//! # What the policy sees
//!
//! - **Capability**: the method and route pattern, `POST /v1/refunds/{id}`, when the layer runs
//!   inside an axum router (`Router::layer`, `route_layer`, or a route's own `.layer`). Outside
//!   one, the literal path stands in for the pattern; name capabilities yourself with
//!   [`capability_fn`](HttpApprovalLayer::capability_fn) there. axum answers `HEAD` with the
//!   route's `GET` handler, so a `HEAD` is judged as `GET` too, and keeps the name whose
//!   decision is stricter.
//! - **Arguments**: `{"path": {…}, "query": {…}, "body": …}` for a JSON body. Other text is a
//!   string under `body_text`, other bytes their length and digest under `body_bytes` and
//!   `body_sha256`, and a query that is not UTF-8 once decoded its text as sent under
//!   `query_raw`: each form has keys of its own, so distinct bytes are never the same arguments
//!   (see [`HttpCall`]). The body is read, up to
//!   [`body_limit`](HttpApprovalLayer::body_limit) (64 KiB by default), whatever the method: a
//!   `GET`'s body reaches the handler as surely as a `POST`'s, so the approver sees it and a
//!   `value` approval binds it. A request without a body (most reads) is not read at all. A
//!   larger body is answered `413 body_too_large` and nobody is asked.
//! - **Principal, session, reason**: the [`Principal`], [`Session`] and [`Reason`] extensions your
//!   own authentication layer sets. A header is read only when you name it, and only when the
//!   extension is absent: a header is whatever the client says it is. A named header sent more
//!   than once is refused `400 invalid_arguments`: the gate would read one value, the service
//!   perhaps another. So is a body sent with two content types.
//!
//! # Answers
//!
//! | code | status |
//! |---|---|
//! | `access_request_denied`, `approver_not_allowed` | 403 |
//! | `access_request_expired`, `wait_timed_out` | 504 |
//! | `too_many_pending`, `too_many_alerts`, `too_many_attempts` | 429 |
//! | `notification_failed`, `access_request_cancelled`, `gate_shut_down` | 503 |
//! | `reason_required`, `invalid_arguments`, `missing_approver` | 400 |
//! | `body_too_large` | 413 |
//! | `access_request_not_found` | 404 |
//! | `already_resolved` | 409 |
//! | `scope_not_allowed` | 422 |
//! | `service_failed` (the service's own error, not repeated), `invalid_config`, `missing_secret`, `no_runtime` | 500 |
//!
//! The body is `{"error": {"code", "message", "detail", "request_id", "retryable"}}`.
//!
//! A call a person approved reaches the service with the request's id in its extensions
//! ([`Approved`]), for the service's own answers and logs to name it. If the service answers it
//! with a server error (5xx), the request ends `failed` in the audit trail (not `executed`),
//! and the service's answer goes to the caller as it is.
//! [`handle_error`] gives the same answer for services that fail with a [`BoxError`], for axum's
//! `HandleErrorLayer`.
//!
//! The approval page and JSON API people and bots decide through are the
//! [`approval`](crate::approval) module.
//!
//! # Pitfalls
//!
//! - **Bodies are buffered** up to the limit before the policy runs, allowed calls included.
//!   Put the layer on the routes that need it, call
//!   [`skip_body`](HttpApprovalLayer::skip_body) for uploads the policy need not read, or
//!   [`decide_before_body`](HttpApprovalLayer::decide_before_body) for a policy that decides
//!   without them.
//! - **Route patterns need the router.** Applied around a whole `Router` from outside (for example
//!   with `ServiceBuilder` before `into_make_service`), the layer runs before routing and sees
//!   only literal paths. axum routes a path as written (no `..` resolved, no escape decoded, no
//!   slashes merged), so the literal path is the one it routes; a service that reads paths more
//!   loosely (a proxy to another server) needs them put in one form before the layer, as
//!   `tollgate proxy` does.

mod call;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

pub use self::call::{Approved, HttpCall, Operation, Principal, Reason, Session};

use self::call::{Sources, body_value};
use crate::call::Edit;
use crate::error::{BoxError, Error, ErrorKind};
use crate::gate::Gate;
use crate::id::RequestId;
use crate::policy::{Ask, Decision, Policy};
use crate::service::RequireApproval;

/// The default most body bytes read for the arguments: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

impl Gate {
    /// A layer gating HTTP requests with `policy`; the capability is the method and route
    /// pattern. See the [`http` module](crate::http).
    pub fn http<P>(&self, policy: P) -> HttpApprovalLayer<P> {
        HttpApprovalLayer {
            gate: self.clone(),
            policy: Arc::new(policy),
            capability: CapabilityFrom::Route,
            principal_header: None,
            session_header: None,
            reason_header: None,
            body_limit: DEFAULT_BODY_LIMIT,
            read_body: true,
            decide_before_body: false,
        }
    }

    /// A layer for one route: every request is the call `capability` and asks a person, unless a
    /// standing rule covers it. Replace the policy with [`HttpApprovalLayer::policy`].
    ///
    /// ```
    /// use axum::{routing::post, Router};
    /// # fn app(gate: tollgate::Gate) -> Router {
    /// Router::new().route("/refunds", post(|| async { "refunded" }).layer(gate.require("payments.refund")))
    /// # }
    /// ```
    pub fn require(&self, capability: &str) -> HttpApprovalLayer<Ask> {
        let mut layer = self.http(Ask::new(format!("{capability} requires approval")));
        layer.capability = CapabilityFrom::Fixed(capability.into());
        layer
    }
}

type CapabilityFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

#[derive(Clone)]
enum CapabilityFrom {
    Route,
    Fixed(Arc<str>),
    Custom(CapabilityFn),
}

/// Gates an HTTP service; made by [`Gate::http`] or [`Gate::require`].
#[must_use]
pub struct HttpApprovalLayer<P> {
    gate: Gate,
    policy: Arc<P>,
    capability: CapabilityFrom,
    principal_header: Option<HeaderName>,
    session_header: Option<HeaderName>,
    reason_header: Option<HeaderName>,
    body_limit: usize,
    read_body: bool,
    decide_before_body: bool,
}

impl<P> Clone for HttpApprovalLayer<P> {
    fn clone(&self) -> Self {
        HttpApprovalLayer {
            gate: self.gate.clone(),
            policy: self.policy.clone(),
            capability: self.capability.clone(),
            principal_header: self.principal_header.clone(),
            session_header: self.session_header.clone(),
            reason_header: self.reason_header.clone(),
            body_limit: self.body_limit,
            read_body: self.read_body,
            decide_before_body: self.decide_before_body,
        }
    }
}

impl<P: fmt::Debug> fmt::Debug for HttpApprovalLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let capability = match &self.capability {
            CapabilityFrom::Route => "method and route",
            CapabilityFrom::Fixed(name) => name,
            CapabilityFrom::Custom(_) => "a custom function",
        };
        f.debug_struct("HttpApprovalLayer")
            .field("policy", &self.policy)
            .field("capability", &capability)
            .field("principal_header", &self.principal_header)
            .field("session_header", &self.session_header)
            .field("reason_header", &self.reason_header)
            .field("body_limit", &self.body_limit)
            .field("read_body", &self.read_body)
            .finish_non_exhaustive()
    }
}

impl<P> HttpApprovalLayer<P> {
    /// Replaces the policy.
    pub fn policy<Q>(self, policy: Q) -> HttpApprovalLayer<Q> {
        HttpApprovalLayer {
            gate: self.gate,
            policy: Arc::new(policy),
            capability: self.capability,
            principal_header: self.principal_header,
            session_header: self.session_header,
            reason_header: self.reason_header,
            body_limit: self.body_limit,
            read_body: self.read_body,
            decide_before_body: self.decide_before_body,
        }
    }

    /// Every request is the call `capability`.
    pub fn capability(mut self, capability: &str) -> Self {
        self.capability = CapabilityFrom::Fixed(capability.into());
        self
    }

    /// Names each request's capability; `None` falls back to the method and route.
    pub fn capability_fn<F>(mut self, f: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.capability = CapabilityFrom::Custom(Arc::new(f));
        self
    }

    /// Reads the principal from this header when no [`Principal`] extension is set. Only for
    /// headers a trusted proxy sets: clients can send any header they like.
    pub fn principal_header(mut self, name: HeaderName) -> Self {
        self.principal_header = Some(name);
        self
    }

    /// Reads the session from this header when no [`Session`] extension is set.
    pub fn session_header(mut self, name: HeaderName) -> Self {
        self.session_header = Some(name);
        self
    }

    /// Reads the caller's reason from this header when no [`Reason`] extension is set.
    pub fn reason_header(mut self, name: HeaderName) -> Self {
        self.reason_header = Some(name);
        self
    }

    /// The most body bytes read for the arguments; larger bodies are answered
    /// `413 body_too_large`. Default: [`DEFAULT_BODY_LIMIT`].
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Never reads bodies: the arguments are the path and query only, and bodies of any size
    /// pass through untouched.
    pub fn skip_body(mut self) -> Self {
        self.read_body = false;
        self
    }

    /// Asks the policy before reading a body, with the path and query as the arguments: a
    /// request it allows streams through unread, of any size; one it asks about has its body
    /// read (up to the limit) so that the approver sees it. Only for a policy that decides
    /// without the body, as [`CapabilityTable`](crate::policy::CapabilityTable) and
    /// [`ConfigPolicy`](crate::config::ConfigPolicy) do: one that reads the body would be
    /// asked about arguments without it.
    pub fn decide_before_body(mut self) -> Self {
        self.decide_before_body = true;
        self
    }
}

impl<S, P> Layer<S> for HttpApprovalLayer<P> {
    type Service = HttpApproval<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpApproval {
            inner: RequireApproval::new(Forward(inner), self.gate.clone(), self.policy.clone()),
            settings: Arc::new(Settings {
                capability: self.capability.clone(),
                sources: Arc::new(Sources {
                    principal_header: self.principal_header.clone(),
                    session_header: self.session_header.clone(),
                    reason_header: self.reason_header.clone(),
                }),
                body_limit: self.body_limit,
                read_body: self.read_body,
                decide_before_body: self.decide_before_body,
            }),
        }
    }
}

struct Settings {
    capability: CapabilityFrom,
    sources: Arc<Sources>,
    body_limit: usize,
    read_body: bool,
    decide_before_body: bool,
}

/// Middleware that parks HTTP requests the policy does not allow until a person decides; made
/// by [`HttpApprovalLayer`].
pub struct HttpApproval<S, P> {
    inner: RequireApproval<Forward<S>, Arc<P>>,
    settings: Arc<Settings>,
}

impl<S: Clone, P> Clone for HttpApproval<S, P> {
    fn clone(&self) -> Self {
        HttpApproval {
            inner: self.inner.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for HttpApproval<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpApproval")
            .field("inner", &self.inner.get_ref().0)
            .field("policy", self.inner.policy())
            .finish_non_exhaustive()
    }
}

impl<S, P, B, ResBody> Service<Request<B>> for HttpApproval<S, P>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: fmt::Debug + fmt::Display + Send + Sync + 'static,
    P: Policy<HttpCall<B>> + Send + Sync + 'static,
    B: http_body::Body + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, P, B, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.get_mut().0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let settings = &self.settings;
        let route = parts.extensions.get::<MatchedPath>().cloned();
        let named = match &settings.capability {
            CapabilityFrom::Route => None,
            CapabilityFrom::Fixed(name) => Some(Box::from(&**name)),
            CapabilityFrom::Custom(f) => f(&parts).map(String::into_boxed_str),
        };
        let capability = named.unwrap_or_else(|| {
            let path = route.as_ref().map_or(parts.uri.path(), MatchedPath::as_str);
            format!("{} {path}", parts.method).into_boxed_str()
        });
        let params = match path_params(&mut parts) {
            Ok(params) => params,
            Err(error) => return ResponseFuture::answer(error),
        };
        if let Some(name) = settings.sources.repeated(&parts) {
            return ResponseFuture::answer(sent_twice(name));
        }
        let mut head = HttpCall {
            request: Request::from_parts(parts, body),
            capability,
            route,
            params,
            body: None,
            sources: settings.sources.clone(),
        };
        if head.request.method() == Method::HEAD {
            judge_head_as_get(self.inner.policy(), &mut head);
        }
        // Every method's body reaches the service, so every method's is judged; a request
        // without one (most reads) is not read at all.
        if !settings.read_body || head.request.body().is_end_stream() {
            return ResponseFuture::gated(self.inner.call(head));
        }
        if settings.decide_before_body
            && matches!(self.inner.policy().check(&head), Decision::Allow(_))
        {
            return ResponseFuture::gated(self.inner.call(head));
        }
        let (parts, body) = head.request.into_parts();
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > settings.body_limit as u64) {
            return ResponseFuture::answer(too_large(settings.body_limit));
        }
        // Which type the body is read as decides its arguments: one type, or none.
        if parts.headers.get_all(CONTENT_TYPE).iter().nth(1).is_some() {
            return ResponseFuture::answer(sent_twice(&CONTENT_TYPE));
        }
        let head = HttpCall {
            request: Request::from_parts(parts, B::from(Bytes::new())),
            ..head
        };
        // The ready service goes with the future; an unready clone stays for the next call.
        let unready = self.inner.clone();
        let ready = mem::replace(&mut self.inner, unready);
        ResponseFuture::reading(
            Limited::new(body, settings.body_limit).collect(),
            head,
            ready,
            settings.body_limit,
        )
    }
}

/// axum answers `HEAD` with the route's `GET` handler, unless the route has a `HEAD` handler of
/// its own: a `HEAD` is judged under both names and keeps the one whose decision is stricter
/// (`GET` on a tie), so that it gets no further than the `GET` it may run.
fn judge_head_as_get<P: Policy<HttpCall<B>>, B>(policy: &P, call: &mut HttpCall<B>) {
    let Some(get) = call
        .capability
        .strip_prefix("HEAD ")
        .map(|path| format!("GET {path}"))
    else {
        return;
    };
    let as_head = policy.check(call).strictness();
    let head = mem::replace(&mut call.capability, get.into_boxed_str());
    if policy.check(call).strictness() < as_head {
        call.capability = head;
    }
}

/// The path parameters axum matched, percent-decoded.
fn path_params(parts: &mut Parts) -> Result<Option<RawPathParams>, Error> {
    if parts.extensions.get::<MatchedPath>().is_none() {
        return Ok(None);
    }
    // The extractor reads the request's extensions and never waits.
    let extract = pin!(RawPathParams::from_request_parts(parts, &()));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match extract.poll(&mut cx) {
        Poll::Ready(Ok(params)) => Ok(Some(params)),
        Poll::Ready(Err(rejection)) => Err(Error::new(ErrorKind::InvalidArguments)
            .with_detail(format!("path parameters: {}", rejection.body_text()))),
        Poll::Pending => Ok(None),
    }
}

/// A header the gate reads, sent more than once.
fn sent_twice(name: &HeaderName) -> Error {
    Error::new(ErrorKind::InvalidArguments).with_detail(format!(
        "the {name} header is sent more than once: the gate would read one value, the service \
         perhaps another"
    ))
}

fn too_large(limit: usize) -> Error {
    Error::new(ErrorKind::BodyTooLarge)
        .with_detail(format!("the gate reads bodies of at most {limit} bytes"))
}

/// The inner service as the gate calls it: with the request out of the [`HttpCall`], and its
/// errors marked so they can be told apart from the gate's own.
#[derive(Clone, Debug)]
pub(crate) struct Forward<S>(S);

/// The response comes back with the access request whose approval edited the call, if one did.
impl<S, B, ResBody> Service<HttpCall<B>> for Forward<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = (S::Response, Option<RequestId>);
    type Error = InnerError<S::Error, S::Response>;
    type Future = ForwardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(InnerError::Service)
    }

    fn call(&mut self, call: HttpCall<B>) -> Self::Future {
        let request = call.into_request();
        let edited = request.extensions().get::<Edit>().map(Edit::request_id);
        ForwardFuture {
            inner: self.0.call(request),
            edited,
        }
    }
}

pin_project! {
    pub(crate) struct ForwardFuture<F> {
        #[pin]
        inner: F,
        // The access request whose approval edited this call, if one did.
        edited: Option<RequestId>,
    }
}

impl<F, ResBody, E> Future for ForwardFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<(Response<ResBody>, Option<RequestId>), InnerError<E, Response<ResBody>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx)).map_err(InnerError::Service)?;
        if response.status().is_server_error() {
            // An error, so that the gate records an approved call `failed`; the layer takes the
            // answer back out for the caller.
            return Poll::Ready(Err(InnerError::Answered {
                response: Mutex::new(response),
                edited: *this.edited,
            }));
        }
        Poll::Ready(Ok((response, *this.edited)))
    }
}

/// The header that tells the caller an approver edited its request: the access request's id.
const EDITED: HeaderName = HeaderName::from_static("tollgate-edited");

/// What the inner service did wrong, on its way through the gate's boxed errors and back.
pub(crate) enum InnerError<E, T> {
    /// It failed.
    Service(E),
    /// It answered a server error (5xx): the call failed, and the answer still goes back.
    /// Behind a lock only because boxed errors are `Sync` and bodies need not be.
    Answered {
        response: Mutex<T>,
        edited: Option<RequestId>,
    },
}

impl<E: fmt::Debug, T> fmt::Debug for InnerError<E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InnerError::Service(error) => f.debug_tuple("Service").field(error).finish(),
            InnerError::Answered { .. } => f.debug_struct("Answered").finish_non_exhaustive(),
        }
    }
}

impl<E: fmt::Display, T> fmt::Display for InnerError<E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InnerError::Service(error) => error.fmt(f),
            InnerError::Answered { .. } => f.write_str("the service answered a server error"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display, T> std::error::Error for InnerError<E, T> {}

type Gated<S, B> = crate::future::ResponseFuture<Forward<S>, HttpCall<B>>;

pin_project! {
    /// Response future of [`HttpApproval`].
    pub struct ResponseFuture<S, P, B, ResBody>
    where
        S: Service<Request<B>, Response = Response<ResBody>>,
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        state: State<S, P, B, ResBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, P, B, ResBody>
    where
        S: Service<Request<B>, Response = Response<ResBody>>,
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        Answer { error: Option<Error>, body: PhantomData<fn() -> ResBody> },
        Reading {
            #[pin]
            body: Collect<Limited<B>>,
            next: Option<(HttpCall<B>, RequireApproval<Forward<S>, Arc<P>>)>,
            limit: usize,
        },
        Gated { #[pin] future: Gated<S, B> },
    }
}

impl<S, P, B, ResBody> ResponseFuture<S, P, B, ResBody>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    fn answer(error: Error) -> Self {
        ResponseFuture {
            state: State::Answer {
                error: Some(error),
                body: PhantomData,
            },
        }
    }

    fn gated(future: Gated<S, B>) -> Self {
        ResponseFuture {
            state: State::Gated { future },
        }
    }

    fn reading(
        body: Collect<Limited<B>>,
        head: HttpCall<B>,
        ready: RequireApproval<Forward<S>, Arc<P>>,
        limit: usize,
    ) -> Self {
        ResponseFuture {
            state: State::Reading {
                body,
                next: Some((head, ready)),
                limit,
            },
        }
    }
}

impl<S, P, B, ResBody> Future for ResponseFuture<S, P, B, ResBody>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: fmt::Debug + fmt::Display + Send + Sync + 'static,
    P: Policy<HttpCall<B>> + Send + Sync + 'static,
    B: http_body::Body + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: From<Bytes> + Send + 'static,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Answer { error, .. } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Ok(error_response(&error)));
                }
                StateProj::Gated { future } => {
                    return Poll::Ready(match ready!(future.poll(cx)) {
                        Ok((response, edited)) => Ok(marked(response, edited)),
                        Err(error) => {
                            match error.downcast::<InnerError<S::Error, Response<ResBody>>>() {
                                Ok(inner) => match *inner {
                                    InnerError::Service(error) => Err(error),
                                    InnerError::Answered { response, edited } => {
                                        let response = response
                                            .into_inner()
                                            .unwrap_or_else(PoisonError::into_inner);
                                        Ok(marked(response, edited))
                                    }
                                },
                                Err(error) => Ok(boxed_error_response(&error)),
                            }
                        }
                    });
                }
                StateProj::Reading { body, next, limit } => {
                    let collected = ready!(body.poll(cx));
                    let (mut call, mut service) = next.take().expect("polled after completion");
                    let bytes = match collected {
                        Ok(collected) => collected.to_bytes(),
                        Err(error) if error.is::<LengthLimitError>() => {
                            return Poll::Ready(Ok(error_response(&too_large(*limit))));
                        }
                        Err(_) => {
                            let error = Error::new(ErrorKind::InvalidArguments)
                                .with_detail("the request body could not be read");
                            return Poll::Ready(Ok(error_response(&error)));
                        }
                    };
                    match body_value(call::content_type(&call.request), &bytes) {
                        Ok(value) => call.body = value,
                        Err(error) => return Poll::Ready(Ok(error_response(&error))),
                    }
                    *call.request.body_mut() = B::from(bytes);
                    State::Gated {
                        future: service.call(call),
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

impl<S, P, B, ResBody> fmt::Debug for ResponseFuture<S, P, B, ResBody>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Answer { .. } => "answer",
            State::Reading { .. } => "reading the body",
            State::Gated { future } => {
                return f.debug_tuple("ResponseFuture").field(future).finish();
            }
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// `response`, with the `tollgate-edited` header if an approver edited its request.
fn marked<ResBody>(
    mut response: Response<ResBody>,
    edited: Option<RequestId>,
) -> Response<ResBody> {
    if let Some(id) = edited {
        let id = HeaderValue::try_from(id.to_string()).expect("ids are header-safe");
        response.headers_mut().insert(EDITED, id);
    }
    response
}

/// The HTTP status for an error of this kind, answered to the caller of a gated service.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::AccessRequestDenied | ErrorKind::ApproverNotAllowed => StatusCode::FORBIDDEN,
        ErrorKind::AccessRequestExpired | ErrorKind::WaitTimedOut => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::TooManyPending | ErrorKind::TooManyAlerts | ErrorKind::TooManyAttempts => {
            StatusCode::TOO_MANY_REQUESTS
        }
        ErrorKind::NotificationFailed
        | ErrorKind::AccessRequestCancelled
        | ErrorKind::AccessRequestAbandoned
        | ErrorKind::StoreFailed
        | ErrorKind::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::ReasonRequired | ErrorKind::InvalidArguments | ErrorKind::MissingApprover => {
            StatusCode::BAD_REQUEST
        }
        ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::AccessRequestNotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyResolved | ErrorKind::AlreadyApproved => StatusCode::CONFLICT,
        ErrorKind::ScopeNotAllowed | ErrorKind::EditNotAllowed | ErrorKind::EditUnsupported => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorKind::ServiceFailed
        | ErrorKind::InvalidConfig
        | ErrorKind::ConfigUnreadable
        | ErrorKind::MissingSecret
        | ErrorKind::NoRuntime
        | ErrorKind::StoreUnreadable => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON answer for `error`: its [`status`] and `{"error": {…}}`.
pub fn error_response<ResBody: From<Bytes>>(error: &Error) -> Response<ResBody> {
    let body = serde_json::to_vec(&serde_json::json!({ "error": error }))
        .unwrap_or_else(|_| br#"{"error":{"code":"internal"}}"#.to_vec());
    let mut response = Response::new(ResBody::from(Bytes::from(body)));
    *response.status_mut() = status(error.kind());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A boxed error's answer: tollgate's errors as [`error_response`] does, anything else as a
/// bare `500` that does not repeat the error's text.
fn boxed_error_response<ResBody: From<Bytes>>(error: &BoxError) -> Response<ResBody> {
    match error.downcast_ref::<Error>() {
        Some(error) => error_response(error),
        None => {
            tracing::error!(error = %error, "the gated service failed");
            error_response(&Error::new(ErrorKind::ServiceFailed))
        }
    }
}

/// For axum's `HandleErrorLayer` around services that fail with a [`BoxError`], such as
/// [`RequireApproval`] itself: tollgate's errors become their JSON answers, others a `500`.
///
/// ```
/// use std::time::Duration;
/// use axum::{error_handling::HandleErrorLayer, routing::post, Router};
/// use tower::ServiceBuilder;
/// # fn app(gate: tollgate::Gate) -> Router {
/// // The timeout fails with a `BoxError`; `handle_error` answers it.
/// let refund = post(|| async { "refunded" }).layer(
///     ServiceBuilder::new()
///         .layer(HandleErrorLayer::new(tollgate::http::handle_error))
///         .layer(gate.require("payments.refund"))
///         .timeout(Duration::from_secs(30)),
/// );
/// Router::new().route("/refunds", refund)
/// # }
/// ```
pub async fn handle_error(error: BoxError) -> Response<axum::body::Body> {
    boxed_error_response(&error)
}

impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        error_response(&self)
    }
}
