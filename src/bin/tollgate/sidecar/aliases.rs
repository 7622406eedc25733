//! The other names an upstream may run a request under, and a policy that judges them all.

use std::borrow::Cow;

use axum::body::Body;
use serde_json::Value;
use tollgate::Call;
use tollgate::http::HttpCall;
use tollgate::policy::{Decision, Policy, and};

/// Judges a request under each name the upstream may run it as, and the strictest decision
/// wins: `HEAD` runs the `GET` handler on most servers, and many route `/x/` as `/x`. The
/// request keeps its own name; the others only add their rules.
#[derive(Clone, Debug)]
pub(crate) struct Aliased<P>(pub(crate) P);

impl<P> Policy<HttpCall<Body>> for Aliased<P>
where
    P: Policy<HttpCall<Body>> + for<'a> Policy<Renamed<'a>>,
{
    fn check(&self, call: &HttpCall<Body>) -> Decision {
        let decision = self.0.check(call);
        let Some((method, path)) = call.capability().split_once(' ') else {
            return decision;
        };
        let head = method == "HEAD";
        let slashless = path.len() > 1 && path.ends_with('/');
        if !head && !slashless || matches!(decision, Decision::Deny(_)) {
            return decision;
        }
        let trimmed = if slashless {
            &path[..path.len() - 1]
        } else {
            path
        };
        let mut names = Vec::with_capacity(3);
        if slashless {
            names.push(format!("{method} {trimmed}"));
        }
        if head {
            names.push(format!("GET {path}"));
            if slashless {
                names.push(format!("GET {trimmed}"));
            }
        }
        names.into_iter().fold(decision, |decision, name| {
            if let Decision::Deny(_) = decision {
                return decision;
            }
            let alias = self.0.check(&Renamed {
                call,
                capability: &name,
            });
            and(decision, alias).check(&())
        })
    }
}

/// A call under another capability name; the rest is the call's own.
pub(crate) struct Renamed<'a> {
    call: &'a HttpCall<Body>,
    capability: &'a str,
}

impl Call for Renamed<'_> {
    fn capability(&self) -> &str {
        self.capability
    }

    fn args(&self) -> Cow<'_, Value> {
        self.call.args()
    }

    fn principal(&self) -> Option<&str> {
        self.call.principal()
    }

    fn session(&self) -> Option<&str> {
        self.call.session()
    }

    fn reason(&self) -> Option<&str> {
        self.call.reason()
    }
}
