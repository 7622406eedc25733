//! The gate against a reference model: random sequences of calls (enforced, and watched in
//! observe mode), approvals, denials, wrong codes, departures, revocations, time passing and
//! restarts, run through the public API on a
//! SQLite store, with every answer, status, rule, run and audit entry compared to a small model
//! written from the README's promises, not from the implementation.
//!
//! `TOLLGATE_MODEL_CASES` sets the number of sequences (10,000 unless set). Failures shrink to a
//! minimal sequence, kept in `main.regressions` beside this file and replayed first on every run.

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::json;
use tokio::task::JoinHandle;
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Ask, CapabilityTable, Observe, observe};
use tollgate::rule::RuleEffect;
use tollgate::store::{AuditEvent, AuditFilter, SqliteStore};
use tollgate::{
    Approve, BoxError, Deny, Gate, RequestId, RequireApproval, Revoke, Scope, Status, ToolCall,
};
use tower::{Layer, ServiceExt};

use support::{SECRET, Tools, code, until};

const PRINCIPALS: [&str; 2] = ["ann", "bob"];
const SESSIONS: [&str; 2] = ["s1", "s2"];
/// Capabilities: `pay` asks with at most `session`, `wipe` with at most `global`, `read` is
/// allowed by policy.
const CAPABILITIES: [&str; 3] = ["pay", "wipe", "read"];
const ATTEMPTS: u32 = 3;
/// Whole minutes pass; every TTL ends half a minute off them, so no deadline falls on a step.
const REQUEST_TTL: Duration = Duration::from_secs(30 * 60 + 30);
const SHORT_RULE: Duration = Duration::from_secs(10 * 60 + 30);
const TOO_LONG: Duration = Duration::from_secs(5 * 3600);

fn max_scope(capability: usize) -> Scope {
    [Scope::Session, Scope::Global][capability]
}

fn max_rule_ttl(capability: usize) -> Duration {
    [60 * 60 + 30, 120 * 60 + 30].map(Duration::from_secs)[capability]
}

fn policy() -> CapabilityTable {
    let ask = |c: usize| {
        Ask::new("the model asks")
            .max_scope(max_scope(c))
            .max_rule_ttl(max_rule_ttl(c))
    };
    CapabilityTable::new()
        .ask("pay", ask(0))
        .ask("wipe", ask(1))
        .allow("read")
}

/// A step of a sequence. Indices pick among what exists, modulo its count.
#[derive(Clone, Debug)]
enum Step {
    Call {
        principal: usize,
        session: usize,
        capability: usize,
        arg: u8,
    },
    /// The same call through a layer that observes the policy instead of enforcing it.
    Observe {
        principal: usize,
        session: usize,
        capability: usize,
        arg: u8,
    },
    Approve {
        request: usize,
        scope: Scope,
        ttl: Ttl,
    },
    Deny {
        request: usize,
        remember: Scope,
    },
    WrongCode {
        request: usize,
    },
    Leave {
        caller: usize,
    },
    RevokeAll,
    RevokeCapability {
        capability: usize,
    },
    Advance {
        minutes: u64,
    },
    Restart,
}

#[derive(Clone, Copy, Debug)]
enum Ttl {
    Default,
    Short,
    TooLong,
}

impl Ttl {
    fn get(self) -> Option<Duration> {
        match self {
            Ttl::Default => None,
            Ttl::Short => Some(SHORT_RULE),
            Ttl::TooLong => Some(TOO_LONG),
        }
    }
}

fn scope() -> impl Strategy<Value = Scope> {
    prop::sample::select(Scope::ALL.to_vec())
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..2usize, 0..2usize, 0..3usize, 0..2u8).prop_map(|(principal, session, capability, arg)| Step::Call {
            principal,
            session,
            capability,
            arg
        }),
        2 => (0..2usize, 0..2usize, 0..3usize, 0..2u8).prop_map(|(principal, session, capability, arg)| Step::Observe {
            principal,
            session,
            capability,
            arg
        }),
        3 => (any::<usize>(), scope(), prop_oneof![Just(Ttl::Default), Just(Ttl::Short), Just(Ttl::TooLong)])
            .prop_map(|(request, scope, ttl)| Step::Approve { request, scope, ttl }),
        2 => (any::<usize>(), scope()).prop_map(|(request, remember)| Step::Deny { request, remember }),
        1 => any::<usize>().prop_map(|request| Step::WrongCode { request }),
        1 => any::<usize>().prop_map(|caller| Step::Leave { caller }),
        1 => prop_oneof![Just(Step::RevokeAll), (0..2usize).prop_map(|capability| Step::RevokeCapability { capability })],
        2 => (1..25u64).prop_map(|minutes| Step::Advance { minutes }),
        1 => Just(Step::Restart),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model.

/// Principal, session, capability, argument.
type CallKey = (usize, usize, usize, u8);

/// Where a rule is filed; one rule per key, the newest replacing the older.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum RuleKey {
    Global(usize),
    Capability(usize, usize),
    Session(usize, usize, usize),
    Value(usize, usize, u8),
}

impl RuleKey {
    fn of(scope: Scope, (p, s, c, a): CallKey) -> Option<RuleKey> {
        match scope {
            Scope::Once => None,
            Scope::Value => Some(RuleKey::Value(c, p, a)),
            Scope::Session => Some(RuleKey::Session(c, p, s)),
            Scope::Capability => Some(RuleKey::Capability(c, p)),
            Scope::Global => Some(RuleKey::Global(c)),
        }
    }

    fn covers(self, (p, s, c, a): CallKey) -> bool {
        match self {
            RuleKey::Global(c2) => c2 == c,
            RuleKey::Capability(c2, p2) => (c2, p2) == (c, p),
            RuleKey::Session(c2, p2, s2) => (c2, p2, s2) == (c, p, s),
            RuleKey::Value(c2, p2, a2) => (c2, p2, a2) == (c, p, a),
        }
    }
}

#[derive(Clone, Debug)]
struct MRule {
    request: usize,
    allow: bool,
    scope: Scope,
    ttl: Duration,
    deadline: Duration,
}

#[derive(Debug)]
struct MRequest {
    key: CallKey,
    status: Status,
    /// Callers still waiting.
    callers: Vec<usize>,
    wrong: u32,
    expires: Duration,
    /// The audit events this request should have, in order.
    audit: Vec<AuditEvent>,
}

/// What a caller heard: `Ok` (ran) or an error code; `None` while it waits.
type Heard = Option<Result<(), &'static str>>;

#[derive(Default, Debug)]
struct Model {
    now: Duration,
    requests: Vec<MRequest>,
    /// Rules neither revoked nor replaced, past their TTL or not: what the store holds.
    rules: BTreeMap<RuleKey, MRule>,
    callers: Vec<(CallKey, Heard)>,
    /// Runs of the inner service by capability and argument.
    runs: BTreeMap<(usize, u8), usize>,
    /// The `observed` audit entries: the call, and how its detail begins.
    observed: Vec<(CallKey, &'static str)>,
}

impl Model {
    fn live_rules(&self) -> impl Iterator<Item = (&RuleKey, &MRule)> {
        self.rules.iter().filter(|(_, r)| r.deadline > self.now)
    }

    fn resume(&mut self, request: usize, heard: Result<(), &'static str>) {
        let callers = std::mem::take(&mut self.requests[request].callers);
        let key = self.requests[request].key;
        for caller in callers {
            self.callers[caller].1 = Some(heard);
            if heard.is_ok() {
                *self.runs.entry((key.2, key.3)).or_default() += 1;
            }
        }
    }

    fn close(&mut self, request: usize, status: Status, event: AuditEvent) {
        let r = &mut self.requests[request];
        r.status = status;
        r.audit.push(event);
    }

    /// A call through the observing layer: it runs, and is recorded unless the policy allows
    /// it or a standing approval covers it; a remembered denial covering it is recorded as a
    /// refusal. No request is made, joined or decided.
    fn observe(&mut self, key: CallKey) {
        *self.runs.entry((key.2, key.3)).or_default() += 1;
        if key.2 == 2 {
            return;
        }
        let covering: Vec<bool> = self
            .live_rules()
            .filter(|(k, _)| k.covers(key))
            .map(|(_, r)| r.allow)
            .collect();
        let detail = if covering.contains(&false) {
            "would have been refused"
        } else if covering.is_empty() {
            "would have asked a person"
        } else {
            return;
        };
        self.observed.push((key, detail));
    }

    /// How a new call is answered: at once (ran, or refused), joined to a pending request, or
    /// parked on a new one.
    fn call(&mut self, key: CallKey) -> CallOutcome {
        let caller = self.callers.len();
        self.callers.push((key, None));
        let capability = key.2;
        if capability == 2 {
            self.callers[caller].1 = Some(Ok(()));
            *self.runs.entry((key.2, key.3)).or_default() += 1;
            return CallOutcome::Answered(caller);
        }
        let covering: Vec<bool> = self
            .live_rules()
            .filter(|(k, _)| k.covers(key))
            .map(|(_, r)| r.allow)
            .collect();
        if covering.contains(&false) {
            self.callers[caller].1 = Some(Err("access_request_denied"));
            return CallOutcome::Answered(caller);
        }
        if !covering.is_empty() {
            self.callers[caller].1 = Some(Ok(()));
            *self.runs.entry((key.2, key.3)).or_default() += 1;
            return CallOutcome::Answered(caller);
        }
        if let Some(i) = self
            .requests
            .iter()
            .position(|r| r.key == key && r.status == Status::Pending)
        {
            self.requests[i].callers.push(caller);
            return CallOutcome::Joined;
        }
        self.requests.push(MRequest {
            key,
            status: Status::Pending,
            callers: vec![caller],
            wrong: 0,
            expires: self.now + REQUEST_TTL,
            audit: vec![AuditEvent::Requested, AuditEvent::Notified],
        });
        CallOutcome::Parked
    }

    /// An approval or denial with the right code.
    fn decide(
        &mut self,
        request: usize,
        allow: bool,
        scope: Scope,
        ttl: Option<Duration>,
    ) -> Result<(), &'static str> {
        let r = &self.requests[request];
        if let Some(answer) = support::decided_answer(r.status) {
            return Err(answer);
        }
        let capability = r.key.2;
        let ttl = ttl.unwrap_or(max_rule_ttl(capability));
        if scope > max_scope(capability) || ttl > max_rule_ttl(capability) {
            return Err("scope_not_allowed");
        }
        let key = r.key;
        if allow {
            // Every caller runs at once, and the tools never fail.
            self.close(request, Status::Executed, AuditEvent::Approved);
            self.resume(request, Ok(()));
        } else {
            self.close(request, Status::Denied, AuditEvent::Denied);
            self.resume(request, Err("access_request_denied"));
        }
        if let Some(rule_key) = RuleKey::of(scope, key) {
            self.requests[request].audit.push(AuditEvent::RuleGranted);
            let rule = MRule {
                request,
                allow,
                scope,
                ttl,
                deadline: self.now + ttl,
            };
            self.rules.insert(rule_key, rule);
        }
        Ok(())
    }

    fn wrong_code(&mut self, request: usize) -> &'static str {
        let r = &mut self.requests[request];
        if r.status != Status::Pending {
            return "access_request_not_found";
        }
        r.wrong += 1;
        r.audit.push(AuditEvent::CodeRejected);
        if r.wrong < ATTEMPTS {
            return "access_request_not_found";
        }
        self.close(request, Status::Denied, AuditEvent::Denied);
        self.resume(request, Err("too_many_attempts"));
        "too_many_attempts"
    }

    fn leave(&mut self, caller: usize) {
        self.callers[caller].1 = Some(Err("left"));
        if let Some(i) = self
            .requests
            .iter()
            .position(|r| r.callers.contains(&caller))
        {
            self.requests[i].callers.retain(|&c| c != caller);
            if self.requests[i].callers.is_empty() {
                self.close(i, Status::Cancelled, AuditEvent::Cancelled);
            }
        }
    }

    /// Revokes the rules of `capability`, or all. The store answers on the wall clock, which
    /// stands still in these tests: it revokes, and names, rules past their TTL here as well.
    fn revoke(&mut self, capability: Option<usize>) -> Vec<usize> {
        let mut revoked = Vec::new();
        self.rules.retain(|key, rule| {
            let c = match *key {
                RuleKey::Global(c)
                | RuleKey::Capability(c, _)
                | RuleKey::Session(c, _, _)
                | RuleKey::Value(c, _, _) => c,
            };
            let hit = capability.is_none_or(|want| want == c);
            if hit {
                revoked.push(rule.request);
            }
            !hit
        });
        for &r in &revoked {
            self.requests[r].audit.push(AuditEvent::RuleRevoked);
        }
        revoked.sort_unstable();
        revoked
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        for i in 0..self.requests.len() {
            if self.requests[i].status == Status::Pending && self.requests[i].expires <= self.now {
                self.close(i, Status::Expired, AuditEvent::Expired);
                self.resume(i, Err("access_request_expired"));
            }
        }
    }

    /// A clean shutdown and a new gate on the same store. Rules come back with the time they had
    /// left on the wall clock, which stands still in these tests: their whole TTL.
    fn restart(&mut self) {
        for i in 0..self.requests.len() {
            if self.requests[i].status == Status::Pending {
                self.close(i, Status::Abandoned, AuditEvent::Abandoned);
                self.resume(i, Err("gate_shut_down"));
            }
        }
        let now = self.now;
        for rule in self.rules.values_mut() {
            rule.deadline = now + rule.ttl;
        }
    }
}

/// How a call went: answered at once (the caller's index), joined to a pending request, or
/// parked on a new one.
enum CallOutcome {
    Answered(usize),
    Joined,
    Parked,
}

// ---------------------------------------------------------------------------------------------
// The system under test.

type Svc = RequireApproval<Tools, CapabilityTable>;
type Watched = RequireApproval<Tools, Observe<CapabilityTable>>;

struct Real {
    path: std::path::PathBuf,
    alerts: RecordingNotifier,
    tools: Tools,
    gate: Gate,
    svc: Svc,
    watched: Watched,
    /// Each model request's id and code.
    requests: Vec<(RequestId, String)>,
    callers: Vec<Option<JoinHandle<Result<String, BoxError>>>>,
}

fn build(
    path: &std::path::Path,
    alerts: &RecordingNotifier,
    tools: &Tools,
) -> (Gate, Svc, Watched) {
    let gate = Gate::builder()
        .secret(SECRET)
        .request_ttl(REQUEST_TTL)
        .max_attempts(ATTEMPTS)
        .unlimited_alert_rate()
        .notifier(alerts.clone())
        .store(SqliteStore::open(path).expect("open the store"))
        .build()
        .expect("build the gate");
    let svc = gate.layer(policy()).layer(tools.clone());
    let watched = gate.layer(observe(policy())).layer(tools.clone());
    (gate, svc, watched)
}

fn call_of((p, s, c, a): CallKey) -> ToolCall {
    ToolCall::new(CAPABILITIES[c], json!({ "n": a }))
        .principal(PRINCIPALS[p])
        .session(SESSIONS[s])
}

/// A code that is not `code`: its last character turned to another of the same kind.
fn wrong(code: &str) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    let last = chars.last_mut().expect("codes are not empty");
    *last = match *last {
        '9' => '0',
        'z' => 'a',
        'Z' => 'A',
        c => char::from_u32(c as u32 + 1).unwrap(),
    };
    chars.into_iter().collect()
}

impl Real {
    async fn heard(&mut self, caller: usize) -> Result<(), &'static str> {
        let handle = self.callers[caller].take().expect("a caller is heard once");
        match handle.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(code(&error)),
            Err(_) => Err("left"),
        }
    }

    async fn run(&mut self, model: &mut Model, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Call {
                principal,
                session,
                capability,
                arg,
            } => {
                let key = (principal, session, capability, arg);
                let parked_before = self.gate.stats().parked;
                self.callers
                    .push(Some(tokio::spawn(self.svc.clone().oneshot(call_of(key)))));
                match model.call(key) {
                    CallOutcome::Answered(caller) => {
                        let heard = self.heard(caller).await;
                        prop_assert_eq!(Some(heard), model.callers[caller].1, "the call's answer");
                    }
                    CallOutcome::Joined => {
                        let gate = &self.gate;
                        until(|| gate.stats().parked == parked_before + 1).await;
                    }
                    CallOutcome::Parked => {
                        let alert = self.alerts.next_alert().await;
                        prop_assert_eq!(alert.request().capability(), CAPABILITIES[capability]);
                        prop_assert_eq!(alert.request().principal(), PRINCIPALS[principal]);
                        self.requests
                            .push((alert.request().id(), alert.code().reveal().to_owned()));
                    }
                }
            }
            Step::Observe {
                principal,
                session,
                capability,
                arg,
            } => {
                let key = (principal, session, capability, arg);
                let ran = self.watched.clone().oneshot(call_of(key)).await;
                prop_assert!(ran.is_ok(), "an observed call runs: {:?}", ran.err());
                model.observe(key);
            }
            Step::Approve {
                request,
                scope,
                ttl,
            } => {
                let Some(i) = pick(request, self.requests.len()) else {
                    return Ok(());
                };
                let (id, code) = self.requests[i].clone();
                let mut approve = Approve::new(id, code).scope(scope).by("alice");
                if let Some(ttl) = ttl.get() {
                    approve = approve.ttl(ttl);
                }
                let got = self.gate.approve(approve).await.map(drop);
                let want = model.decide(i, true, scope, ttl.get());
                prop_assert_eq!(got.map_err(|e| e.code()), want, "approve {:?}", step);
            }
            Step::Deny { request, remember } => {
                let Some(i) = pick(request, self.requests.len()) else {
                    return Ok(());
                };
                let (id, code) = self.requests[i].clone();
                let deny = Deny::new(id, code).remember(remember).by("alice");
                let got = self.gate.deny(deny).await.map(drop);
                let want = model.decide(i, false, remember, None);
                prop_assert_eq!(got.map_err(|e| e.code()), want, "deny {:?}", step);
            }
            Step::WrongCode { request } => {
                let Some(i) = pick(request, self.requests.len()) else {
                    return Ok(());
                };
                let (id, code) = self.requests[i].clone();
                let got = self
                    .gate
                    .approve(Approve::new(id, wrong(&code)).by("mallory"))
                    .await;
                let want = model.wrong_code(i);
                prop_assert_eq!(got.map(drop).map_err(|e| e.code()), Err(want));
            }
            Step::Leave { caller } => {
                let waiting: Vec<usize> = (0..model.callers.len())
                    .filter(|&c| model.callers[c].1.is_none())
                    .collect();
                let Some(c) = pick(caller, waiting.len()).map(|i| waiting[i]) else {
                    return Ok(());
                };
                self.callers[c].as_ref().unwrap().abort();
                model.leave(c);
            }
            Step::RevokeAll | Step::RevokeCapability { .. } => {
                let revoke = match *step {
                    Step::RevokeCapability { capability } => {
                        Revoke::capability(CAPABILITIES[capability])
                    }
                    _ => Revoke::all(),
                };
                let revoked = self.gate.revoke(revoke.by("root")).await;
                let revoked = revoked.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut got: Vec<usize> = revoked
                    .iter()
                    .map(|rule| self.index_of(rule.request()))
                    .collect();
                got.sort_unstable();
                let want = model.revoke(match *step {
                    Step::RevokeCapability { capability } => Some(capability),
                    _ => None,
                });
                prop_assert_eq!(got, want, "the rules revoked");
            }
            Step::Advance { minutes } => {
                let by = Duration::from_secs(minutes * 60);
                tokio::time::advance(by).await;
                model.advance(by);
            }
            Step::Restart => {
                self.gate
                    .shutdown()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.restart();
                self.settle(model).await?;
                let (gate, svc, watched) = build(&self.path, &self.alerts, &self.tools);
                self.gate = gate;
                self.svc = svc;
                self.watched = watched;
            }
        }
        self.settle(model).await?;
        self.compare(model).await
    }

    /// Hears every caller the model says has an answer, and checks the others still wait.
    async fn settle(&mut self, model: &Model) -> Result<(), TestCaseError> {
        for c in 0..model.callers.len() {
            if let (Some(want), Some(_)) = (model.callers[c].1, &self.callers[c]) {
                let heard = self.heard(c).await;
                prop_assert_eq!(heard, want, "caller {}'s answer", c);
            }
        }
        let waiting = model.callers.iter().filter(|c| c.1.is_none()).count();
        prop_assert_eq!(self.gate.stats().parked, waiting, "callers still waiting");
        Ok(())
    }

    fn index_of(&self, id: RequestId) -> usize {
        self.requests
            .iter()
            .position(|(r, _)| *r == id)
            .expect("a request the model made")
    }

    /// Statuses, live rules and runs against the model.
    async fn compare(&self, model: &Model) -> Result<(), TestCaseError> {
        for (i, (id, _)) in self.requests.iter().enumerate() {
            let (_, status) = self
                .gate
                .lookup(*id)
                .await
                .map_err(|e| TestCaseError::fail(format!("lookup {i}: {e}")))?;
            prop_assert_eq!(status, model.requests[i].status, "request {}'s status", i);
        }
        let mut got: Vec<(usize, bool, Scope)> = self
            .gate
            .rules()
            .iter()
            .map(|rule| {
                let allow = rule.effect() == RuleEffect::Allow;
                (self.index_of(rule.request()), allow, rule.scope())
            })
            .collect();
        got.sort_unstable();
        let mut want: Vec<(usize, bool, Scope)> = model
            .live_rules()
            .map(|(_, r)| (r.request, r.allow, r.scope))
            .collect();
        want.sort_unstable();
        prop_assert_eq!(got, want, "the live rules");
        for (&(c, a), &runs) in &model.runs {
            prop_assert_eq!(
                self.tools.calls_of(&call_of((0, 0, c, a))),
                runs,
                "runs of {} {}",
                CAPABILITIES[c],
                a
            );
        }
        prop_assert_eq!(
            self.tools.total(),
            model.runs.values().sum::<usize>(),
            "runs"
        );
        Ok(())
    }

    /// The audit trail, request by request, against the model's.
    async fn compare_audit(&self, model: &Model) -> Result<(), TestCaseError> {
        let trail = self
            .gate
            .audit(AuditFilter::new())
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut got: HashMap<usize, Vec<AuditEvent>> = HashMap::new();
        let mut observed = Vec::new();
        for entry in &trail {
            if let Some(id) = entry.request {
                got.entry(self.index_of(id)).or_default().push(entry.event);
            } else if entry.event == AuditEvent::Observed {
                let detail = entry.detail.as_deref().unwrap_or_default();
                observed.push((
                    entry.principal.as_deref().unwrap_or_default().to_owned(),
                    entry.capability.to_string(),
                    detail.split(':').next().unwrap_or_default().to_owned(),
                ));
            }
        }
        let want: Vec<_> = model
            .observed
            .iter()
            .map(|&((p, _, c, _), detail)| {
                (
                    PRINCIPALS[p].to_owned(),
                    CAPABILITIES[c].to_owned(),
                    detail.to_owned(),
                )
            })
            .collect();
        prop_assert_eq!(observed, want, "the observed calls");
        for (i, request) in model.requests.iter().enumerate() {
            let mut events = got.remove(&i).unwrap_or_default();
            events.retain(|e| !matches!(e, AuditEvent::Executing | AuditEvent::Executed));
            prop_assert_eq!(&events, &request.audit, "request {}'s audit trail", i);
        }
        Ok(())
    }
}

fn pick(index: usize, len: usize) -> Option<usize> {
    (len > 0).then(|| index % len)
}

fn run_sequence(steps: &[Step], dir: &std::path::Path) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let path = dir.join(format!("model-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let result = runtime.block_on(async {
        let alerts = RecordingNotifier::new();
        let tools = Tools::default();
        let (gate, svc, watched) = build(&path, &alerts, &tools);
        let mut real = Real {
            path: path.clone(),
            alerts,
            tools,
            gate,
            svc,
            watched,
            requests: Vec::new(),
            callers: Vec::new(),
        };
        let mut model = Model::default();
        for step in steps {
            real.run(&mut model, step).await?;
        }
        real.gate
            .shutdown()
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        model.restart();
        real.settle(&model).await?;
        real.compare_audit(&model).await
    });
    support::remove_sqlite(&path);
    result
}

fn cases() -> u32 {
    support::cases("TOLLGATE_MODEL_CASES", 10_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_gate_agrees_with_the_model(steps in prop::collection::vec(step(), 1..40)) {
        run_sequence(&steps, &support::scratch_dir())?;
    }
}
