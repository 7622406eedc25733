//! Standing rules: approvals and remembered denials that outlive their request.
//!
//! Rules are filed by capability, then principal, then session or args digest, so finding the
//! rules that cover a call takes at most four hash lookups however many rules exist.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::admit::Admission;
use crate::args::ArgsDigest;
use crate::error::{Error, ErrorKind};
use crate::id::RuleId;
use crate::rule::{Rule, RuleEffect};
use crate::scope::Scope;

#[derive(Debug)]
struct Entry {
    rule: Rule,
    deadline: Instant,
}

impl Entry {
    fn live(&self, now: Instant) -> Option<&Rule> {
        (now < self.deadline).then_some(&self.rule)
    }
}

#[derive(Debug, Default)]
struct CapabilityRules {
    global: Option<Entry>,
    principals: HashMap<Arc<str>, PrincipalRules>,
}

#[derive(Debug, Default)]
struct PrincipalRules {
    capability: Option<Entry>,
    sessions: HashMap<Arc<str>, Entry>,
    values: HashMap<ArgsDigest, Entry>,
}

impl PrincipalRules {
    fn is_empty(&self) -> bool {
        self.capability.is_none() && self.sessions.is_empty() && self.values.is_empty()
    }
}

#[derive(Debug, Default)]
pub(crate) struct RuleTable {
    by_capability: HashMap<Arc<str>, CapabilityRules>,
    /// Every rule's id, to its key; what `revoke` and listing walk.
    ids: HashMap<RuleId, Rule>,
    /// Rule count at which expired rules are next swept out.
    sweep_at: usize,
}

/// What a call a remembered denial covers hears.
fn remembered(rule: &Rule) -> Error {
    let detail = match &rule.reason {
        Some(reason) => format!("remembered denial {}: {reason}", rule.id),
        None => format!("remembered denial {}", rule.id),
    };
    Error::new(ErrorKind::AccessRequestDenied).with_detail(detail)
}

impl RuleTable {
    /// How the live rules covering a call answer it, if any covers it: run it, or refuse it
    /// with `access_request_denied`; a denial beats an approval. `digests` (the arguments', and
    /// their key fields' when the policy names some and the call has them all) is called only
    /// when value rules exist for the principal. An approval rule covers the call only if it
    /// `meets` the call's own ask ([`Ask::met_by`](crate::policy::Ask::met_by)).
    pub(crate) fn lookup(
        &self,
        capability: &str,
        principal: &str,
        session: Option<&str>,
        digests: impl FnOnce() -> (ArgsDigest, Option<ArgsDigest>),
        meets: impl Fn(&Rule) -> bool,
        now: Instant,
    ) -> Option<Admission> {
        let rules = self.by_capability.get(capability)?;
        let mine = rules.principals.get(principal);
        let values = mine.filter(|p| !p.values.is_empty());
        let (args, key) = values.map(|_| digests()).unzip();
        let value =
            |digest: Option<ArgsDigest>| values.zip(digest).and_then(|(p, d)| p.values.get(&d));
        let candidates = [
            rules.global.as_ref(),
            mine.and_then(|p| p.capability.as_ref()),
            mine.zip(session).and_then(|(p, s)| p.sessions.get(s)),
            value(args),
            value(key.flatten()),
        ];
        let mut answer = None;
        for rule in candidates.into_iter().flatten().filter_map(|e| e.live(now)) {
            match rule.effect {
                RuleEffect::Deny => return Some(Admission::Refuse(remembered(rule))),
                RuleEffect::Allow if meets(rule) => answer = Some(Admission::Run),
                RuleEffect::Allow => {}
            }
        }
        answer
    }

    /// The error a remembered denial covering the call answers with, if one does (see
    /// [`lookup`](Self::lookup)).
    pub(crate) fn denial(
        &self,
        capability: &str,
        principal: &str,
        session: Option<&str>,
        digests: impl FnOnce() -> (ArgsDigest, Option<ArgsDigest>),
        now: Instant,
    ) -> Option<Error> {
        match self.lookup(capability, principal, session, digests, |_| false, now)? {
            Admission::Refuse(error) => Some(error),
            _ => None,
        }
    }

    /// Files `rule` until `deadline`, replacing any rule with the same key. Returns the replaced one.
    pub(crate) fn insert(&mut self, rule: Rule, deadline: Instant) -> Option<Rule> {
        if self.ids.len() >= self.sweep_at {
            self.sweep(Instant::now());
            self.sweep_at = (self.ids.len() * 2).max(1024);
        }
        self.ids.insert(rule.id, rule.clone());
        let entry = Entry { rule, deadline };
        let caps = self
            .by_capability
            .entry(entry.rule.capability.clone())
            .or_default();
        let replaced = match (&entry.rule.principal, entry.rule.scope) {
            (_, Scope::Global) | (None, _) => caps.global.replace(entry),
            (Some(principal), scope) => {
                let mine = caps.principals.entry(principal.clone()).or_default();
                match scope {
                    Scope::Capability => mine.capability.replace(entry),
                    Scope::Session => {
                        let session = entry.rule.session.clone().unwrap_or_default();
                        mine.sessions.insert(session, entry)
                    }
                    _ => {
                        let digest = entry.rule.args_digest.expect("value rules carry a digest");
                        mine.values.insert(digest, entry)
                    }
                }
            }
        };
        let replaced = replaced.map(|old| old.rule);
        if let Some(old) = &replaced {
            self.ids.remove(&old.id);
        }
        replaced
    }

    /// Removes one rule.
    pub(crate) fn remove(&mut self, id: RuleId) -> Option<Rule> {
        let rule = self.ids.remove(&id)?;
        let Some(caps) = self.by_capability.get_mut(&rule.capability) else {
            return Some(rule);
        };
        match (&rule.principal, rule.scope) {
            (_, Scope::Global) | (None, _) => caps.global = None,
            (Some(principal), scope) => {
                if let Some(mine) = caps.principals.get_mut(principal) {
                    match scope {
                        Scope::Capability => mine.capability = None,
                        Scope::Session => {
                            mine.sessions.remove(rule.session.as_deref().unwrap_or(""));
                        }
                        _ => {
                            if let Some(d) = &rule.args_digest {
                                mine.values.remove(d);
                            }
                        }
                    }
                    if mine.is_empty() {
                        caps.principals.remove(principal);
                    }
                }
            }
        }
        if caps.global.is_none() && caps.principals.is_empty() {
            self.by_capability.remove(&rule.capability);
        }
        Some(rule)
    }

    /// Removes every rule for `capability`.
    pub(crate) fn remove_capability(&mut self, capability: &str) -> Vec<Rule> {
        let ids: Vec<RuleId> = self
            .ids
            .values()
            .filter(|r| &*r.capability == capability)
            .map(|r| r.id)
            .collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Removes every rule.
    pub(crate) fn clear(&mut self) -> Vec<Rule> {
        self.by_capability.clear();
        self.ids.drain().map(|(_, rule)| rule).collect()
    }

    /// The live rules.
    pub(crate) fn list(&self, now: Instant) -> Vec<Rule> {
        let mut rules: Vec<Rule> = self
            .entries()
            .filter_map(|e| e.live(now).cloned())
            .collect();
        rules.sort_by_key(|r| r.granted_at);
        rules
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.by_capability.values().flat_map(|caps| {
            caps.global
                .iter()
                .chain(caps.principals.values().flat_map(|p| {
                    p.capability
                        .iter()
                        .chain(p.sessions.values())
                        .chain(p.values.values())
                }))
        })
    }

    fn sweep(&mut self, now: Instant) {
        let expired: Vec<RuleId> = self
            .entries()
            .filter(|e| e.live(now).is_none())
            .map(|e| e.rule.id)
            .collect();
        for id in expired {
            self.remove(id);
        }
    }
}

/// The longest a rule can last, whatever the policy allows: a hundred years.
pub(super) const LONGEST_RULE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// When `rule` stops applying, on this process's clock; `None` if it already has.
pub(super) fn deadline_of(rule: &Rule) -> Option<Instant> {
    let left = rule.expires_at.duration_since(SystemTime::now()).ok()?;
    Some(Instant::now() + left.min(LONGEST_RULE))
}
