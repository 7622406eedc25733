//! How far an approval, or a remembered denial, reaches beyond its request.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

/// What a decision covers beyond the request it answers, from narrowest to widest.
///
/// Scopes are ordered by breadth: a request whose policy allows at most `Session` accepts
/// approvals for `Once`, `Value` and `Session`. Every scope but `Global` stays with the principal
/// it was granted to.
///
/// | scope | later calls it covers |
/// |---|---|
/// | `Once` | none: only the callers waiting on this request |
/// | `Value` | same principal, capability and args digest |
/// | `Session` | same principal, session and capability, any arguments |
/// | `Capability` | same principal and capability, any session and arguments |
/// | `Global` | the capability, for every principal |
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Only this request.
    Once,
    /// The same principal, capability and arguments.
    Value,
    /// The same principal, session and capability.
    Session,
    /// The same principal and capability.
    Capability,
    /// The capability, for every principal.
    Global,
}

impl Scope {
    /// Every scope, narrowest first.
    pub const ALL: &'static [Scope] = &[
        Scope::Once,
        Scope::Value,
        Scope::Session,
        Scope::Capability,
        Scope::Global,
    ];

    /// The snake_case name: `once`, `value`, `session`, `capability`, `global`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Once => "once",
            Scope::Value => "value",
            Scope::Session => "session",
            Scope::Capability => "capability",
            Scope::Global => "global",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Scope::ALL
            .iter()
            .copied()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                Error::new(ErrorKind::ScopeNotAllowed)
                    .with_detail("scope must be one of once, value, session, capability, global")
            })
    }
}
