//! Who is deciding: the approval API asks an [`Approvers`] hook on every request it serves.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;
use sha2::{Digest, Sha256};

use crate::boxed::BoxFuture;
use crate::error::{Error, ErrorKind};
use crate::gate::Authority;
use crate::policy::Pattern;
use crate::request::AccessRequest;
use crate::scope::Scope;

/// The cookie the approval page's sign-in sets, holding the approver's token.
pub const TOKEN_COOKIE: &str = "tollgate_token";

/// A person the approval API has identified, and what they may decide.
///
/// ```
/// use tollgate::approval::Approver;
/// use tollgate::Scope;
///
/// let alice = Approver::new("alice").capabilities(["payments.*"]).max_scope(Scope::Value);
/// assert!(alice.may_decide("payments.refund") && !alice.may_decide("fs.write"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approver {
    name: Arc<str>,
    /// `None`: every capability.
    capabilities: Option<Arc<[Pattern]>>,
    max_scope: Scope,
}

impl Approver {
    /// An approver who may decide every capability, with any scope the request allows, and
    /// manage rules and read the audit trail.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Approver {
            name: name.into(),
            capabilities: None,
            max_scope: Scope::Global,
        }
    }

    /// Limits the approver to capabilities matching these names or `*` globs (`payments.*`).
    /// An empty pattern matches nothing. A limited approver sees and decides only requests and
    /// rules of these capabilities, and cannot revoke all rules or read the audit trail.
    #[must_use]
    pub fn capabilities<I>(mut self, patterns: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let patterns = patterns
            .into_iter()
            .filter_map(|p| Pattern::new(p.as_ref()).ok())
            .collect();
        self.capabilities = Some(patterns);
        self
    }

    /// The widest scope this approver may grant, whatever a request allows. Default: `global`.
    #[must_use]
    pub fn max_scope(mut self, scope: Scope) -> Self {
        self.max_scope = scope;
        self
    }

    /// The name recorded on every decision this approver makes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The widest scope this approver may grant.
    pub fn widest_scope(&self) -> Scope {
        self.max_scope
    }

    /// Whether this approver may decide requests for `capability`.
    pub fn may_decide(&self, capability: &str) -> bool {
        self.capabilities
            .as_deref()
            .is_none_or(|patterns| patterns.iter().any(|p| p.matches(capability)))
    }

    /// Whether this approver may decide every capability: revoke all rules, read the audit trail.
    pub fn is_unrestricted(&self) -> bool {
        self.capabilities.is_none()
    }

    /// Whether this approver may see and decide `request`: its capability, and the policy's own
    /// list of approvers if it named one.
    pub fn may_see(&self, request: &AccessRequest) -> bool {
        self.may_decide(request.capability()) && request.admits(&self.name)
    }

    pub(crate) fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }
}

/// The gate asks whether this approver may decide a request before it looks at the code, so an
/// approver who may not decide cannot spend the request's attempts.
impl Authority for Approver {
    fn decides(&self, request: &AccessRequest) -> bool {
        self.may_see(request)
    }

    fn grants(&self, scope: Scope) -> Result<(), Error> {
        if scope > self.max_scope {
            return Err(Error::new(ErrorKind::ScopeNotAllowed).with_detail(format!(
                "{} may grant at most scope `{}`",
                self.name, self.max_scope
            )));
        }
        Ok(())
    }
}

/// Tells the approval API who sent a request. Run on every route but `status`, `wait` and the
/// OpenAPI document; the approver it returns is the one recorded on the decision, whatever the
/// request's body says.
///
/// Implement it over your own sign-in (a session cookie, a header your proxy sets after SSO), use
/// [`Tokens`], or pass a closure `Fn(&Parts) -> Option<Approver>`:
///
/// ```
/// use http::request::Parts;
/// use tollgate::approval::Approver;
///
/// // Behind a proxy that authenticates people and sets `x-user`; strip it from outside traffic.
/// let approvers = |parts: &Parts| {
///     let user = parts.headers.get("x-user")?.to_str().ok()?;
///     Some(Approver::new(user).capabilities(["payments.*"]))
/// };
/// # fn takes(_: impl tollgate::approval::Approvers) {}
/// # takes(approvers);
/// ```
pub trait Approvers: Send + Sync + 'static {
    /// The approver who sent `request`, or `None` when nobody is signed in (answered
    /// `401 unauthenticated`). An error is answered as it is, for lookups that can fail.
    fn identify<'a>(&'a self, request: &'a Parts)
    -> BoxFuture<'a, Result<Option<Approver>, Error>>;
}

impl<F> Approvers for F
where
    F: Fn(&Parts) -> Option<Approver> + Send + Sync + 'static,
{
    fn identify<'a>(
        &'a self,
        request: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Approver>, Error>> {
        let approver = self(request);
        Box::pin(async move { Ok(approver) })
    }
}

impl<A: Approvers + ?Sized> Approvers for Arc<A> {
    fn identify<'a>(
        &'a self,
        request: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Approver>, Error>> {
        (**self).identify(request)
    }
}

/// Approvers by bearer token: `Authorization: Bearer <token>` from API clients, or the
/// [`TOKEN_COOKIE`] the approval page's sign-in sets for browsers.
///
/// Tokens are kept as SHA-256 digests and looked up by digest, so neither `Debug` nor timing
/// tells anything about them. Use long random tokens (32 bytes of hex, say).
///
/// ```
/// use tollgate::approval::{Approver, Tokens};
///
/// let approvers = Tokens::new()
///     .token("6f1c…a long random secret…", Approver::new("alice"))
///     .token("93be…another…", Approver::new("bob").capabilities(["fs.*"]));
/// assert_eq!(approvers.len(), 2);
/// ```
#[derive(Clone, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Approver>,
}

impl Tokens {
    /// No tokens: every request is unauthenticated.
    pub fn new() -> Self {
        Tokens::default()
    }

    /// Signs `token`'s bearer in as `approver`; a token given twice keeps the later approver.
    #[must_use]
    pub fn token(mut self, token: impl AsRef<[u8]>, approver: Approver) -> Self {
        self.by_digest.insert(digest(token.as_ref()), approver);
        self
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    fn lookup(&self, token: &str) -> Option<Approver> {
        self.by_digest.get(&digest(token.as_bytes())).cloned()
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.by_digest.values().map(Approver::name).collect();
        f.debug_struct("Tokens").field("approvers", &names).finish()
    }
}

impl Approvers for Tokens {
    fn identify<'a>(
        &'a self,
        request: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Approver>, Error>> {
        let approver = bearer(request)
            .or_else(|| cookie(request, TOKEN_COOKIE))
            .and_then(|token| self.lookup(token));
        Box::pin(async move { Ok(approver) })
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(request: &Parts) -> Option<&str> {
    let value = request.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name`.
pub(crate) fn cookie<'a>(request: &'a Parts, name: &str) -> Option<&'a str> {
    request
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::builder();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn who(tokens: &Tokens, headers: &[(&str, &str)]) -> Option<String> {
        let parts = parts(headers);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match tokens.identify(&parts).as_mut().poll(&mut cx) {
            std::task::Poll::Ready(result) => result.unwrap().map(|a| a.name().to_owned()),
            std::task::Poll::Pending => unreachable!("token lookups never wait"),
        }
    }

    #[test]
    fn tokens_sign_in_by_header_or_cookie() {
        let tokens = Tokens::new().token("t-alice", Approver::new("alice"));
        assert_eq!(
            who(&tokens, &[("authorization", "Bearer t-alice")]).as_deref(),
            Some("alice")
        );
        assert_eq!(
            who(&tokens, &[("authorization", "bearer  t-alice ")]).as_deref(),
            Some("alice")
        );
        assert_eq!(
            who(&tokens, &[("cookie", "theme=dark; tollgate_token=t-alice")]).as_deref(),
            Some("alice")
        );
        assert_eq!(who(&tokens, &[("authorization", "Bearer t-bob")]), None);
        assert_eq!(who(&tokens, &[("authorization", "Basic t-alice")]), None);
        assert_eq!(who(&tokens, &[]), None);
        assert!(!format!("{tokens:?}").contains("t-alice"));
    }

    #[test]
    fn limits_apply_to_capability_and_scope() {
        let bob = Approver::new("bob")
            .capabilities(["fs.*", ""])
            .max_scope(Scope::Value);
        assert!(bob.may_decide("fs.write") && !bob.may_decide("payments.refund"));
        assert!(!bob.is_unrestricted() && Approver::new("root").is_unrestricted());
        let none = Approver::new("nobody").capabilities([""]);
        assert!(!none.may_decide(""), "an empty pattern matches nothing");
    }
}
