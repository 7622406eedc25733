//! How an HTTP request reads as a call: capability, arguments, principal, session, reason.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use axum::extract::{MatchedPath, RawPathParams};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::args;
use crate::call::{Call, Edit};
use crate::error::{Error, ErrorKind};
use crate::id::RequestId;

/// Who makes the request, put in the request's extensions by your own authentication layer.
/// The gate reads it as the call's principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub String);

/// The session the request belongs to, put in the request's extensions by your own layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session(pub String);

/// Why the caller makes the request, shown to the approver, put in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason(pub String);

/// The access request whose approval let this request run, put in its extensions just before
/// it reaches the service (absent for requests the policy or a standing rule let through): to
/// name the request in the service's own answers and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Approved(pub RequestId);

/// Operation classes: what an HTTP method does to the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `GET`, `HEAD`, `OPTIONS`: reads.
    Receive,
    /// `POST`, `PUT`, `PATCH`, `DELETE` and any other method: changes something.
    Send,
}

impl Operation {
    /// The class of `method`. Methods not listed count as `Send`, the cautious answer.
    pub fn of(method: &Method) -> Self {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            Operation::Receive
        } else {
            Operation::Send
        }
    }
}

/// Where the principal, session and reason come from.
pub(crate) struct Sources {
    pub(crate) principal_header: Option<HeaderName>,
    pub(crate) session_header: Option<HeaderName>,
    pub(crate) reason_header: Option<HeaderName>,
}

impl Sources {
    /// A header the call would be read from that the request sends more than once: the gate
    /// reads the first value, and a service may read the last, or all of them joined.
    pub(crate) fn repeated(&self, parts: &Parts) -> Option<&HeaderName> {
        let extensions = &parts.extensions;
        [
            (
                &self.principal_header,
                extensions.get::<Principal>().is_none(),
            ),
            (&self.session_header, extensions.get::<Session>().is_none()),
            (&self.reason_header, extensions.get::<Reason>().is_none()),
        ]
        .into_iter()
        .filter_map(|(header, read)| header.as_ref().filter(|_| read))
        .find(|name| parts.headers.get_all(*name).iter().nth(1).is_some())
    }
}

/// An HTTP request as the gate and the policy see it.
///
/// The capability is the method and route pattern (`POST /v1/refunds/{id}`) unless the layer
/// names another. The arguments are an object with the path parameters under `path`, the query
/// under `query` (a repeated key gives an array), and the body; parts that are absent are left
/// out. Distinct bytes never read as the same arguments, so each form of a body has keys of its
/// own: a JSON body (by its content type) is under `body`, other UTF-8 text is a string under
/// `body_text`, and anything else is its length and SHA-256 under `body_bytes` and
/// `body_sha256`. A query whose bytes are not UTF-8 once decoded is its text as sent under
/// `query_raw`.
pub struct HttpCall<B> {
    pub(crate) request: Request<B>,
    pub(crate) capability: Box<str>,
    pub(crate) route: Option<MatchedPath>,
    pub(crate) params: Option<RawPathParams>,
    pub(crate) body: Option<BodyArgs>,
    pub(crate) sources: Arc<Sources>,
}

/// A body as arguments: each form under keys of its own, so that no two forms meet.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum BodyArgs {
    /// JSON, under `body`.
    Json(Value),
    /// Other UTF-8 text, a string under `body_text`.
    Text(Value),
    /// Other bytes: their length and lowercase hex SHA-256, under `body_bytes` and `body_sha256`.
    Bytes { length: usize, sha256: String },
}

impl<B> fmt::Debug for HttpCall<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCall")
            .field("capability", &self.capability)
            .field("method", self.request.method())
            .field("path", &self.request.uri().path())
            .finish_non_exhaustive()
    }
}

impl<B> HttpCall<B> {
    /// The method.
    pub fn method(&self) -> &Method {
        self.request.method()
    }

    /// The operation class of the method.
    pub fn operation(&self) -> Operation {
        Operation::of(self.request.method())
    }

    /// The route pattern that matched, such as `/v1/refunds/{id}`, when the router knows it.
    pub fn route(&self) -> Option<&str> {
        self.route.as_ref().map(MatchedPath::as_str)
    }

    /// The request, whose body has not been touched unless it was read for the arguments.
    pub fn request(&self) -> &Request<B> {
        &self.request
    }

    /// The body as JSON (UTF-8 text as a string), when one was read and is text.
    pub fn body(&self) -> Option<&Value> {
        match &self.body {
            Some(BodyArgs::Json(value) | BodyArgs::Text(value)) => Some(value),
            _ => None,
        }
    }

    pub(crate) fn into_request(self) -> Request<B> {
        self.request
    }

    fn extension_or_header<T: Send + Sync + 'static>(
        &self,
        get: impl Fn(&T) -> &str,
        header: Option<&HeaderName>,
    ) -> Option<&str> {
        if let Some(value) = self.request.extensions().get::<T>() {
            return Some(get(value));
        }
        let value = self.request.headers().get(header?)?.to_str().ok()?.trim();
        (!value.is_empty()).then_some(value)
    }
}

/// Edits of an HTTP request change its body only: its path and query are its capability's
/// place and stay as they were. A JSON body is written from the edited `body`, a text body from
/// the edited `body_text`; a binary body cannot be edited. The rebuilt request carries the [`Edit`]
/// in its extensions, and the gate's response to an edited request has a `tollgate-edited`
/// header naming the access request.
impl<B: From<Bytes>> Call for HttpCall<B> {
    fn capability(&self) -> &str {
        &self.capability
    }

    fn args(&self) -> Cow<'_, Value> {
        let mut args = Map::new();
        if let Some(params) = self.params.as_ref().filter(|p| p.iter().next().is_some()) {
            let path = params.iter().map(|(k, v)| (k.to_owned(), Value::from(v)));
            args.insert("path".into(), Value::Object(path.collect()));
        }
        if let Some(query) = self.request.uri().query().filter(|q| !q.is_empty()) {
            match query_object(query) {
                Some(object) => args.insert("query".into(), object),
                None => args.insert("query_raw".into(), Value::from(query)),
            };
        }
        match &self.body {
            Some(BodyArgs::Json(body)) => {
                args.insert("body".into(), body.clone());
            }
            Some(BodyArgs::Text(text)) => {
                args.insert("body_text".into(), text.clone());
            }
            Some(BodyArgs::Bytes { length, sha256 }) => {
                args.insert("body_bytes".into(), Value::from(*length));
                args.insert("body_sha256".into(), Value::from(sha256.as_str()));
            }
            None => {}
        }
        Cow::Owned(Value::Object(args))
    }

    fn principal(&self) -> Option<&str> {
        self.extension_or_header(|p: &Principal| &p.0, self.sources.principal_header.as_ref())
    }

    fn session(&self) -> Option<&str> {
        self.extension_or_header(|s: &Session| &s.0, self.sources.session_header.as_ref())
    }

    fn reason(&self) -> Option<&str> {
        self.extension_or_header(|r: &Reason| &r.0, self.sources.reason_header.as_ref())
    }

    fn approved(&mut self, request: RequestId) {
        self.request.extensions_mut().insert(Approved(request));
    }

    fn edited(&self, edit: &Edit) -> Result<Self, Error> {
        let refuse =
            |detail: &'static str| Error::new(ErrorKind::EditNotAllowed).with_detail(detail);
        if let Some(BodyArgs::Bytes { .. }) = self.body {
            return Err(Error::new(ErrorKind::EditUnsupported)
                .with_detail("a binary body cannot be edited"));
        }
        let original = self.args();
        let (Value::Object(new), Value::Object(old)) = (edit.args(), &*original) else {
            return Err(refuse("an HTTP request's arguments are an object"));
        };
        let parts_kept = ["path", "query", "query_raw"]
            .iter()
            .all(|part| new.get(*part) == old.get(*part));
        if !parts_kept
            || new.keys().any(|key| {
                !matches!(
                    key.as_str(),
                    "path" | "query" | "query_raw" | "body" | "body_text"
                )
            })
        {
            return Err(refuse("an edit may change an HTTP request's body only"));
        }
        let (bytes, body) = match (&self.body, new.get("body"), new.get("body_text")) {
            (None, None, None) => (Bytes::new(), None),
            (Some(BodyArgs::Json(_)), Some(body), None) => (
                Bytes::from(
                    serde_json::to_vec(body)
                        .map_err(|e| Error::new(ErrorKind::InvalidArguments).with_source(e))?,
                ),
                Some(BodyArgs::Json(body.clone())),
            ),
            (Some(BodyArgs::Text(_)), None, Some(Value::String(text))) => (
                Bytes::from(text.clone()),
                Some(BodyArgs::Text(Value::from(text.as_str()))),
            ),
            _ => return Err(refuse("an edit may not add, remove or retype the body")),
        };
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = self.request.method().clone();
        parts.uri = self.request.uri().clone();
        parts.version = self.request.version();
        parts.headers = self.request.headers().clone();
        if self.body.is_some() {
            // The body is whole now, and of another length.
            parts.headers.remove(TRANSFER_ENCODING);
            let length = HeaderValue::from(bytes.len());
            parts.headers.insert(CONTENT_LENGTH, length);
        }
        parts.extensions = self.request.extensions().clone();
        parts.extensions.insert(edit.clone());
        let params = super::path_params(&mut parts)?;
        Ok(HttpCall {
            request: Request::from_parts(parts, B::from(bytes)),
            capability: self.capability.clone(),
            route: self.route.clone(),
            params,
            body,
            sources: self.sources.clone(),
        })
    }
}

/// The request's content type, if it is readable.
pub(crate) fn content_type<B>(request: &Request<B>) -> Option<&str> {
    request.headers().get(CONTENT_TYPE)?.to_str().ok()
}

/// Whether a body of `content_type` reads as JSON: `application/json` or any `+json` type.
fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .is_some_and(|t| t == "application/json" || t.ends_with("+json"))
}

/// `a=1&b=2&b=3` as `{"a": "1", "b": ["2", "3"]}`; `None` if a key or value is not UTF-8 once
/// decoded (decoding it lossily would give `%FF` and `%FE` one meaning).
fn query_object(query: &str) -> Option<Value> {
    let mut object = Map::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (form_decoded(key)?, form_decoded(value)?);
        let value = Value::String(value.into_owned());
        match object.get_mut(&*key) {
            None => {
                object.insert(key.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    Some(Value::Object(object))
}

/// `text` form-decoded as `form_urlencoded` does (`+` is a space; an escape that is not two hex
/// digits stays as written), or `None` if the bytes it decodes to are not UTF-8.
fn form_decoded(text: &str) -> Option<Cow<'_, str>> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|hex| bytes[i] == b'%' && hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                i += 1;
            }
            (byte, None) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok().map(Cow::Owned)
}

/// The body as arguments: JSON (strictly: a repeated key is refused) when the content type says
/// JSON, other UTF-8 text as a string, anything else as its length and digest. Empty is `None`.
pub(crate) fn body_value(
    content_type: Option<&str>,
    bytes: &Bytes,
) -> Result<Option<BodyArgs>, Error> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes);
    if is_json(content_type) {
        let text = text.map_err(|_| {
            Error::new(ErrorKind::InvalidArguments).with_detail("the JSON body is not UTF-8")
        })?;
        return args::parse_strict(text).map(|value| Some(BodyArgs::Json(value)));
    }
    Ok(Some(match text {
        Ok(text) => BodyArgs::Text(Value::String(text.to_owned())),
        Err(_) => BodyArgs::Bytes {
            length: bytes.len(),
            sha256: crate::hex::lower(&Sha256::digest(bytes)),
        },
    }))
}
