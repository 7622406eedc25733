//! Composing policies, and the cost threshold.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Ask, Decision, Policy};
use crate::call::Call;

/// Both policies must let the call through: the stricter decision wins (allow < observe < ask <
/// deny; of two observed decisions, the one whose decision observed is stricter).
///
/// When both ask, the approver sees both reasonings and may grant only what both allow: the
/// narrower scope, the shorter TTL, the approvers both accept (if no approver is accepted by
/// both, the call is denied rather than left to expire). A deny from `a` skips `b`.
pub fn and<A, B>(a: A, b: B) -> And<A, B> {
    And { a, b }
}

/// Either policy may let the call through: the more lenient decision wins (allow < ask < deny).
///
/// An observed decision ([`Decision::Observe`]) is not enforced, so it does not loosen the other
/// side: against an ask or a deny, those win; against an allow, the allow. Of two observed
/// decisions, the one whose decision observed is more lenient. When both ask, `a`'s ask is
/// used. An allow from `a` skips `b`.
pub fn or<A, B>(a: A, b: B) -> Or<A, B> {
    Or { a, b }
}

/// The policy made by [`and`].
#[derive(Clone, Debug)]
pub struct And<A, B> {
    a: A,
    b: B,
}

/// The policy made by [`or`].
#[derive(Clone, Debug)]
pub struct Or<A, B> {
    a: A,
    b: B,
}

impl<R: ?Sized, A: Policy<R>, B: Policy<R>> Policy<R> for And<A, B> {
    fn check(&self, call: &R) -> Decision {
        let first = self.a.check(call);
        if let Decision::Deny(_) = first {
            return first;
        }
        match (first, self.b.check(call)) {
            (Decision::Ask(a), Decision::Ask(b)) => match a.narrowed(b) {
                ask if ask.allowed_approvers().is_some_and(<[_]>::is_empty) => {
                    Decision::deny("no approver may decide under both policies")
                }
                ask => Decision::Ask(ask),
            },
            (a, b) if severity(&b) > severity(&a) => b,
            (a, _) => a,
        }
    }
}

impl<R: ?Sized, A: Policy<R>, B: Policy<R>> Policy<R> for Or<A, B> {
    fn check(&self, call: &R) -> Decision {
        let first = self.a.check(call);
        if let Decision::Allow(_) = first {
            return first;
        }
        let second = self.b.check(call);
        if leniency(&second) < leniency(&first) {
            second
        } else {
            first
        }
    }
}

/// How `and` ranks decisions, least severe first: allow < observe < ask < deny, and observed
/// ones by the decision they observe.
fn severity(decision: &Decision) -> (u8, u8) {
    match decision {
        Decision::Observe(observed) => (decision.strictness(), observed.strictness()),
        decision => (decision.strictness(), 0),
    }
}

/// How `or` ranks decisions, most lenient first: an allow, then what is enforced (ask, deny),
/// then an observed decision, which enforces nothing and so yields to either; observed ones by
/// the decision they observe.
fn leniency(decision: &Decision) -> (u8, u8) {
    match decision {
        Decision::Observe(observed) => (4, observed.strictness()),
        decision => (decision.strictness(), 0),
    }
}

type Matcher<R> = Arc<dyn Fn(&R) -> bool + Send + Sync>;
type Boxed<R> = Arc<dyn Policy<R> + Send + Sync>;

/// Starts a list of `(matcher, policy)` arms: the first arm whose matcher accepts the call
/// decides; if none does, the [`otherwise`](FirstMatch::otherwise) policy does, which asks
/// unless set.
pub fn first_match<R: ?Sized>() -> FirstMatch<R> {
    FirstMatch {
        arms: Vec::new(),
        otherwise: Arc::new(Decision::Ask(Ask::new("no policy rule matched this call"))),
    }
}

/// The policy made by [`first_match`].
pub struct FirstMatch<R: ?Sized> {
    arms: Vec<(Matcher<R>, Boxed<R>)>,
    otherwise: Boxed<R>,
}

impl<R: ?Sized> Clone for FirstMatch<R> {
    fn clone(&self) -> Self {
        FirstMatch {
            arms: self.arms.clone(),
            otherwise: self.otherwise.clone(),
        }
    }
}

impl<R: ?Sized> fmt::Debug for FirstMatch<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstMatch")
            .field("arms", &self.arms.len())
            .finish_non_exhaustive()
    }
}

impl<R: ?Sized> FirstMatch<R> {
    /// Adds an arm: calls `matcher` accepts are decided by `policy`.
    #[must_use]
    pub fn when<M, P>(mut self, matcher: M, policy: P) -> Self
    where
        M: Fn(&R) -> bool + Send + Sync + 'static,
        P: Policy<R> + Send + Sync + 'static,
    {
        self.arms.push((Arc::new(matcher), Arc::new(policy)));
        self
    }

    /// The policy for calls no arm accepts.
    #[must_use]
    pub fn otherwise<P: Policy<R> + Send + Sync + 'static>(mut self, policy: P) -> Self {
        self.otherwise = Arc::new(policy);
        self
    }
}

impl<R: ?Sized> Policy<R> for FirstMatch<R> {
    fn check(&self, call: &R) -> Decision {
        self.arms
            .iter()
            .find(|(matcher, _)| matcher(call))
            .map_or(&self.otherwise, |(_, policy)| policy)
            .check(call)
    }
}

/// Reads a number from the call's arguments at a JSON pointer (`/amount`, `/order/total`),
/// for [`threshold`]. Numbers written as strings (`"12.50"`) count too.
pub fn arg<R: Call + ?Sized>(pointer: &'static str) -> impl Fn(&R) -> Option<f64> + Clone {
    move |call: &R| {
        let args = call.args();
        match args.pointer(pointer)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// Alter's cost rule: `cost` reads a number from the call; at or below `ask_above` the call
/// passes, above it a person is asked, and above [`deny_above`](Threshold::deny_above) it is
/// refused. A call whose cost cannot be read is asked about, never passed.
pub fn threshold<F>(cost: F, ask_above: f64) -> Threshold<F> {
    Threshold {
        cost,
        ask_above,
        deny_above: None,
        ask: Ask::new("over the cost threshold"),
    }
}

/// The policy made by [`threshold`].
#[derive(Clone)]
pub struct Threshold<F> {
    cost: F,
    ask_above: f64,
    deny_above: Option<(f64, Cow<'static, str>)>,
    ask: Ask,
}

impl<F> fmt::Debug for Threshold<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Threshold")
            .field("ask_above", &self.ask_above)
            .field("deny_above", &self.deny_above)
            .field("ask", &self.ask)
            .finish_non_exhaustive()
    }
}

impl<F> Threshold<F> {
    /// Costs above `limit` are refused with `reason`.
    #[must_use]
    pub fn deny_above(mut self, limit: f64, reason: impl Into<Cow<'static, str>>) -> Self {
        self.deny_above = Some((limit, reason.into()));
        self
    }

    /// What is asked above the threshold; the cost and limit are added to its reasoning.
    #[must_use]
    pub fn ask(mut self, ask: Ask) -> Self {
        self.ask = ask;
        self
    }
}

impl<R: ?Sized, F: Fn(&R) -> Option<f64>> Policy<R> for Threshold<F> {
    fn check(&self, call: &R) -> Decision {
        let Some(cost) = (self.cost)(call).filter(|c| c.is_finite()) else {
            let mut ask = self.ask.clone();
            ask.reasoning = format!("{}: the cost could not be read", ask.reasoning).into();
            return Decision::Ask(ask);
        };
        if let Some((limit, reason)) = &self.deny_above
            && cost > *limit
        {
            return Decision::Deny(format!("{reason}: {cost} is above {limit}").into());
        }
        if cost <= self.ask_above {
            return Decision::allow("at or below the cost threshold");
        }
        let mut ask = self.ask.clone();
        ask.reasoning = format!("{}: {cost} is above {}", ask.reasoning, self.ask_above).into();
        Decision::Ask(ask)
    }
}
