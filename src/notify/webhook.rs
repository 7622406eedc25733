//! Signed JSON events over HTTP (feature `webhook`), and the delivery machinery the chat
//! notifier shares: per-attempt timeouts, retries with backoff and jitter.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, StatusCode, Url};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::signature::{self, sign};
use super::{Alert, IncludeCode, Notifier, NotifyError, Resolution};
use crate::boxed::BoxFuture;
use crate::error::{Error, ErrorKind};
use crate::hex;
use crate::id::RequestId;
use crate::request::{AccessRequest, Outcome};
use crate::time::unix_secs;

impl IncludeCode {
    pub(crate) fn applies_to(self, url: &Url) -> bool {
        match self {
            IncludeCode::HttpsOnly => url.scheme() == "https",
            IncludeCode::Always => true,
            IncludeCode::Never => false,
        }
    }
}

/// Posts each access request as a signed JSON event, and again when it ends.
///
/// Events are `access_request.created` (with the code, see [`IncludeCode`]) and
/// `access_request.resolved` (with the outcome):
///
/// ```json
/// {
///   "id": "evt_3b6f…",
///   "type": "access_request.created",
///   "created": 1795265100,
///   "data": {
///     "request": { "id": "areq_…", "capability": "payments.refund", "args": { "amount": 10000 },
///                  "principal": "agent-7", "expires_at": "2026-11-21T12:50:00Z", … },
///     "code": "A3F7C209"
///   }
/// }
/// ```
///
/// The event id is the same on every retry, so receivers can drop duplicates. Each attempt is
/// signed anew in the `Tollgate-Signature` header (see [`signature`](super::signature); check it
/// with [`verify_signature`](super::signature::verify_signature)). An attempt that times out,
/// or is answered 5xx or 429, is retried with exponential backoff and jitter (honouring
/// `Retry-After`); any other 4xx is final. Redirects are not followed, so a payload never goes
/// anywhere but the configured URL.
///
/// The payload is data for a program: the caller's text (capability, principal, session, reason,
/// arguments) is in it as the caller sent it, JSON-escaped and nothing more. A receiver that shows
/// it to a person passes each field through [`visible`](super::visible) first, as the shipped
/// notifiers do.
///
/// ```no_run
/// use tollgate::notify::WebhookNotifier;
///
/// # fn main() -> Result<(), tollgate::Error> {
/// let secret = std::env::var("TOLLGATE_WEBHOOK_SECRET").unwrap_or_default();
/// let webhook = WebhookNotifier::builder("https://hooks.example.com/tollgate")
///     .secret(secret)
///     .build()?;
/// # let _ = webhook;
/// # Ok(())
/// # }
/// ```
pub struct WebhookNotifier {
    url: Url,
    secrets: Vec<Box<[u8]>>,
    include_code: bool,
    delivery: Delivery,
}

impl fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("url", &Redacted(&self.url))
            .field("include_code", &self.include_code)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

/// An event type: `access_request.created`.
pub const CREATED: &str = "access_request.created";
/// An event type: `access_request.resolved`.
pub const RESOLVED: &str = "access_request.resolved";

#[derive(Serialize)]
struct Event<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    created: u64,
    data: EventData<'a>,
}

#[derive(Serialize)]
struct EventData<'a> {
    request: &'a AccessRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    /// Each approver's own code, for a request several approvers must approve: by approver.
    #[serde(skip_serializing_if = "Option::is_none")]
    codes: Option<BTreeMap<&'a str, &'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a Outcome>,
}

/// The id of the event of `kind` about request `id`: the same however often it is sent.
fn event_id(id: RequestId, kind: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"tollgate event\0")
        .chain_update(id.as_bytes())
        .chain_update(kind.as_bytes())
        .finalize();
    format!("evt_{}", hex::lower(&digest[..16]))
}

impl WebhookNotifier {
    /// A notifier posting to `url`.
    pub fn builder(url: impl Into<String>) -> WebhookBuilder {
        WebhookBuilder {
            url: url.into(),
            secrets: Vec::new(),
            include_code: IncludeCode::default(),
            delivery: DeliveryBuilder::default(),
        }
    }

    /// Posts the event of `kind` about `request`.
    async fn send(
        &self,
        kind: &'static str,
        request: &AccessRequest,
        (code, codes): (Option<&str>, Option<BTreeMap<&str, &str>>),
        outcome: Option<&Outcome>,
    ) -> Result<(), NotifyError> {
        let event = Event {
            id: event_id(request.id(), kind),
            kind,
            created: unix_secs(SystemTime::now()),
            data: EventData {
                request,
                code,
                codes,
                outcome,
            },
        };
        let body = serde_json::to_vec(&event).map_err(NotifyError::new)?;
        let secrets: Vec<&[u8]> = self.secrets.iter().map(|s| &**s).collect();
        self.delivery
            .post(&self.url, body, |body| {
                Some(sign(body, &secrets, SystemTime::now()))
            })
            .await
    }
}

impl Notifier for WebhookNotifier {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        // A quorum's approvers each have their own code: the receiver routes each to its owner.
        let quorum = alert.request().quorum() > 1;
        let code = (self.include_code && !quorum).then(|| alert.code().reveal());
        let codes = (self.include_code && quorum)
            .then(|| alert.codes().map(|(a, c)| (a, c.reveal())).collect());
        Box::pin(self.send(CREATED, alert.request(), (code, codes), None))
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        let outcome = Some(resolution.outcome());
        Box::pin(self.send(RESOLVED, resolution.request(), (None, None), outcome))
    }

    fn name(&self) -> &str {
        "webhook"
    }
}

/// Configures a [`WebhookNotifier`]; made by [`WebhookNotifier::builder`].
#[must_use]
pub struct WebhookBuilder {
    url: String,
    secrets: Vec<Box<[u8]>>,
    include_code: IncludeCode,
    delivery: DeliveryBuilder,
}

impl fmt::Debug for WebhookBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookBuilder")
            .field("include_code", &self.include_code)
            .finish_non_exhaustive()
    }
}

impl WebhookBuilder {
    /// The signing secret shared with the receiver, at least 16 bytes. Required.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secrets.insert(0, secret.as_ref().into());
        self
    }

    /// While rotating secrets: also sign with the old one, so receivers not yet moved to the
    /// new secret keep verifying. Each header then carries one `v1` per secret.
    pub fn also_sign_with(mut self, old_secret: impl AsRef<[u8]>) -> Self {
        self.secrets.push(old_secret.as_ref().into());
        self
    }

    /// Whether payloads carry the code. Default: [`IncludeCode::HttpsOnly`].
    pub fn include_code(mut self, include: IncludeCode) -> Self {
        self.include_code = include;
        self
    }

    /// How long one attempt may take. Default: 5 seconds.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.delivery.attempt_timeout = timeout;
        self
    }

    /// How many attempts in all, the first included. Default: 4.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.delivery.max_attempts = attempts;
        self
    }

    /// The wait before the first retry, doubled for each next one up to `max`, each with up
    /// to half of it taken off at random. Default: 250 ms, up to 5 s.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.delivery.first_backoff = first;
        self.delivery.max_backoff = max;
        self
    }

    /// Sends with this client instead of one of tollgate's (rustls on ring, the web PKI roots).
    pub fn client(mut self, client: Client) -> Self {
        self.delivery.client = Some(client);
        self
    }

    /// Checks the URL and secret and builds the notifier.
    pub fn build(self) -> Result<WebhookNotifier, Error> {
        let url = parse_url("webhook", &self.url)?;
        if self.secrets.is_empty() || self.secrets.iter().any(|s| s.len() < 16) {
            return Err(invalid(
                "webhook: a signing secret of at least 16 bytes is required: call `.secret(..)`",
            ));
        }
        Ok(WebhookNotifier {
            include_code: self.include_code.applies_to(&url),
            url,
            secrets: self.secrets,
            delivery: self.delivery.build("webhook")?,
        })
    }
}

fn invalid(detail: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::InvalidConfig).with_detail(detail)
}

/// Parses an `http` or `https` URL; errors do not repeat it, since it may hold a secret.
pub(crate) fn parse_url(what: &str, url: &str) -> Result<Url, Error> {
    match Url::parse(url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => Err(invalid(format!(
            "{what}: the URL must be an absolute http:// or https:// URL"
        ))),
    }
}

/// Shows a URL's origin only: paths and queries of webhook URLs are often secrets.
pub(crate) struct Redacted<'a>(pub(crate) &'a Url);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}/…\"", self.0.origin().ascii_serialization())
    }
}

/// Retry and timeout settings, before the client is made.
#[derive(Debug)]
pub(crate) struct DeliveryBuilder {
    pub(crate) attempt_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) first_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) client: Option<Client>,
}

impl Default for DeliveryBuilder {
    fn default() -> Self {
        DeliveryBuilder {
            attempt_timeout: Duration::from_secs(5),
            max_attempts: 4,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            client: None,
        }
    }
}

impl DeliveryBuilder {
    pub(crate) fn build(self, what: &str) -> Result<Delivery, Error> {
        if self.attempt_timeout.is_zero() || self.max_attempts == 0 {
            return Err(invalid(format!(
                "{what}: attempt_timeout and max_attempts must be more than zero"
            )));
        }
        let client = match self.client {
            Some(client) => client,
            None => default_client()
                .map_err(|e| invalid(format!("{what}: the HTTP client could not be built: {e}")))?,
        };
        Ok(Delivery {
            client,
            attempt_timeout: self.attempt_timeout,
            max_attempts: self.max_attempts,
            first_backoff: self.first_backoff,
            max_backoff: self.max_backoff.max(self.first_backoff),
        })
    }
}

/// The client tollgate makes: rustls on ring with the web PKI roots, no redirects.
fn default_client() -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Posts a body until it is accepted, the attempts run out, or the answer says retrying is
/// pointless.
pub(crate) struct Delivery {
    client: Client,
    attempt_timeout: Duration,
    max_attempts: u32,
    first_backoff: Duration,
    max_backoff: Duration,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &(self.first_backoff, self.max_backoff))
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Posts `body` as JSON, with the header `sign` returns for each attempt.
    pub(crate) async fn post(
        &self,
        url: &Url,
        body: Vec<u8>,
        sign: impl Fn(&[u8]) -> Option<String>,
    ) -> Result<(), NotifyError> {
        let mut backoff = self.first_backoff;
        let mut attempt = 1;
        loop {
            let mut request = self
                .client
                .post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(signature) = sign(&body) {
                request = request.header(signature::HEADER, signature);
            }
            let sent = tokio::time::timeout(self.attempt_timeout, request.send()).await;
            let (failure, retry_after) = match sent {
                Ok(Ok(response)) if response.status().is_success() => return Ok(()),
                Ok(Ok(response)) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    (Failure::Status(status), retry_after)
                }
                // Without the URL: its path or query may be a secret.
                Ok(Err(error)) => (Failure::Transport(error.without_url()), None),
                Err(_) => (Failure::TimedOut(self.attempt_timeout), None),
            };
            if !failure.is_transient() || attempt >= self.max_attempts {
                return Err(failure.into_error(attempt));
            }
            tracing::debug!(attempt, failure = %failure, "webhook attempt failed; retrying");
            let wait = jitter(backoff).max(retry_after.unwrap_or_default().min(self.max_backoff));
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.max_backoff);
            attempt += 1;
        }
    }
}

/// Between half of `d` and all of it, at random, so that retries from many requests spread out.
fn jitter(d: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    let random = match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_ne_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 1.0,
    };
    d.mul_f64(0.5 + random / 2.0)
}

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    Status(StatusCode),
    Transport(reqwest::Error),
    TimedOut(Duration),
}

impl Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Status(status) => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Failure::Transport(_) | Failure::TimedOut(_) => true,
        }
    }

    fn into_error(self, attempts: u32) -> NotifyError {
        let timed_out = matches!(self, Failure::TimedOut(_));
        let error = NotifyError::new(DeliveryFailed {
            attempts,
            failure: self,
        });
        if timed_out {
            error.marked_timeout()
        } else {
            error
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(status) => write!(f, "answered {status}"),
            Failure::Transport(error) => write!(f, "{error}"),
            Failure::TimedOut(limit) => write!(f, "no answer within {limit:?}"),
        }
    }
}

/// A webhook gave up: the last failure, and how many attempts were made.
#[derive(Debug)]
pub struct DeliveryFailed {
    attempts: u32,
    failure: Failure,
}

impl DeliveryFailed {
    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The HTTP status of the last answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self.failure {
            Failure::Status(status) => Some(status.as_u16()),
            _ => None,
        }
    }
}

impl fmt::Display for DeliveryFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.attempts == 1 { "" } else { "s" };
        write!(f, "{} after {} attempt{s}", self.failure, self.attempts)
    }
}

impl std::error::Error for DeliveryFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.failure {
            Failure::Transport(error) => Some(error),
            _ => None,
        }
    }
}
