//! The gate's edits, quorums and key fields against a reference model: random sequences of calls
//! under a policy whose ask depends on the arguments, approvals with and without edits, by one
//! approver or a quorum, denials remembered under key fields, wrong codes, callers leaving and
//! time passing, on a SQLite store, compared after every step with a model of the README's
//! promises ("Scopes": key arguments, edits, quorum), not of the implementation.
//!
//! The policy, for `payout {account, amount, memo}` with key field `/account`:
//! - account `blocked`: denied;
//! - amount above 100: a quorum of two of alice, bob and carol;
//! - account `ops`: carol alone decides;
//! - amount 100: the call must give a reason;
//! - else anyone approves.
//!
//! `TOLLGATE_MODEL_CASES` sets the number of sequences (256 unless set).
//!
//! Long by design, as `tests/model` is: the steps, the model written from the promises and the
//! driver that compares the gate with it after every step read best together.

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use serde_json::json;
use tokio::task::JoinHandle;
use tollgate::gate::Approval;
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Ask, Decision, Policy};
use tollgate::rule::RuleEffect;
use tollgate::store::SqliteStore;
use tollgate::{
    Approve, BoxError, Deny, Gate, RequestId, RequireApproval, Scope, Status, ToolCall,
};
use tower::{Layer, ServiceExt};

use support::{SECRET, Tools, until};

const PRINCIPALS: [&str; 2] = ["agent-1", "agent-2"];
const ACCOUNTS: [&str; 4] = ["a1", "a2", "ops", "blocked"];
const AMOUNTS: [u64; 3] = [10, 100, 500];
/// Who decides: the three a quorum names, and someone no ask names.
const APPROVERS: [&str; 4] = ["alice", "bob", "carol", "mallory"];
const OPS: usize = 2;
const BLOCKED: usize = 3;
const ATTEMPTS: u32 = 3;
/// Whole minutes pass; every TTL and end falls half a minute off them, so none is on a step.
const REQUEST_TTL: Duration = Duration::from_secs(30 * 60 + 30);
const SMALL_TTL: Duration = Duration::from_secs(120 * 60 + 30);
const LIMIT_TTL: Duration = Duration::from_secs(60 * 60 + 30);
const LARGE_TTL: Duration = Duration::from_secs(90 * 60 + 30);
const SHORT: Duration = Duration::from_secs(10 * 60 + 30);
const TOO_LONG: Duration = Duration::from_secs(5 * 3600);

/// `payout` under the rules in the file's docs.
#[derive(Clone, Debug)]
struct Payouts;

impl Policy<ToolCall> for Payouts {
    fn check(&self, call: &ToolCall) -> Decision {
        let account = call.args()["account"].as_str().unwrap_or_default();
        let amount = call.args()["amount"].as_u64().unwrap_or(u64::MAX);
        let ask = |why: &'static str, ttl: Duration| {
            Ask::new(why)
                .max_scope(Scope::Value)
                .max_rule_ttl(ttl)
                .key_fields(["/account"])
                .editable()
        };
        if account == "blocked" {
            return Decision::deny("the account is blocked");
        }
        if amount > 100 {
            let ask = ask("a large payout", LARGE_TTL);
            return Decision::Ask(ask.approvers(["alice", "bob", "carol"]).quorum(2));
        }
        if account == "ops" {
            return Decision::Ask(ask("the operations account", SMALL_TTL).approvers(["carol"]));
        }
        if amount == 100 {
            return Decision::Ask(ask("a payout at the limit", LIMIT_TTL).require_reason());
        }
        Decision::Ask(ask("a payout", SMALL_TTL))
    }
}

/// The model's reading of the policy: what it asks of a call of `account` and `amount`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum MAsk {
    Denied,
    Asks {
        quorum: usize,
        /// Only this approver may decide (`ops`), or only the first three (a quorum).
        only: Option<&'static [usize]>,
        reason: bool,
        max_ttl: Duration,
    },
}

fn ask_of(account: usize, amount: usize) -> MAsk {
    if account == BLOCKED {
        return MAsk::Denied;
    }
    let asks = |quorum, only, reason, max_ttl| MAsk::Asks {
        quorum,
        only,
        reason,
        max_ttl,
    };
    match (account, AMOUNTS[amount]) {
        (_, a) if a > 100 => asks(2, Some(&[0, 1, 2][..]), false, LARGE_TTL),
        (OPS, _) => asks(1, Some(&[2][..]), false, SMALL_TTL),
        (_, 100) => asks(1, None, true, LIMIT_TTL),
        _ => asks(1, None, false, SMALL_TTL),
    }
}

/// When a decision's rule ends.
#[derive(Clone, Copy, Debug)]
enum End {
    Default,
    Ttl(Duration),
    /// `until` this long after the wall clock at the step (which barely moves: time is paused).
    Until(Duration),
}

impl End {
    /// The rule's TTL this end asks for, if no longer than `max`.
    fn ttl(self, max: Duration) -> Result<Duration, &'static str> {
        let ttl = match self {
            End::Default => max,
            End::Ttl(d) | End::Until(d) => d,
        };
        if ttl > max {
            Err("scope_not_allowed")
        } else {
            Ok(ttl)
        }
    }
}

/// Principal, account, amount, memo: a call's fingerprint (one session, one capability).
type CallKey = (usize, usize, usize, u8);
/// Account, amount, memo: the arguments.
type Args = (usize, usize, u8);

fn args_of(key: CallKey) -> Args {
    (key.1, key.2, key.3)
}

#[derive(Clone, Debug)]
enum Step {
    Call {
        principal: usize,
        account: usize,
        amount: usize,
        memo: u8,
        reason: bool,
    },
    Approve {
        request: usize,
        approver: usize,
        scope: Scope,
        end: End,
        edit: Option<Args>,
    },
    Deny {
        request: usize,
        approver: usize,
        remember: Scope,
        end: End,
    },
    WrongCode {
        request: usize,
        approver: usize,
        /// Another approver's own code, rather than a garbled one.
        borrowed: bool,
    },
    Leave {
        caller: usize,
    },
    Advance {
        minutes: u64,
    },
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        3 => Just(Scope::Once),
        4 => Just(Scope::Value),
        1 => Just(Scope::Session),
    ]
}

fn end() -> impl Strategy<Value = End> {
    let minutes = |m: u64| Duration::from_secs(m * 60 + 30);
    prop_oneof![
        3 => Just(End::Default),
        1 => Just(End::Ttl(SHORT)),
        1 => Just(End::Ttl(TOO_LONG)),
        2 => prop::sample::select(vec![minutes(20), minutes(50), minutes(80), TOO_LONG]).prop_map(End::Until),
    ]
}

fn args() -> impl Strategy<Value = Args> {
    (0..4usize, 0..3usize, 0..2u8)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..2usize, args(), any::<bool>()).prop_map(|(principal, (account, amount, memo), reason)| Step::Call {
            principal,
            account,
            amount,
            memo,
            reason,
        }),
        6 => (any::<usize>(), 0..4usize, scope(), end(), prop::option::weighted(0.4, args()))
            .prop_map(|(request, approver, scope, end, edit)| Step::Approve { request, approver, scope, end, edit }),
        2 => (any::<usize>(), 0..4usize, scope(), end())
            .prop_map(|(request, approver, remember, end)| Step::Deny { request, approver, remember, end }),
        1 => (any::<usize>(), 0..4usize, any::<bool>())
            .prop_map(|(request, approver, borrowed)| Step::WrongCode { request, approver, borrowed }),
        1 => any::<usize>().prop_map(|caller| Step::Leave { caller }),
        2 => (1..25u64).prop_map(|minutes| Step::Advance { minutes }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model.

/// One approval of a quorum counted so far: who, how far, and the TTL their end is from the
/// wall clock (which stands still while paused time passes, so every end is measured from it).
#[derive(Clone, Debug)]
struct MVote {
    approver: usize,
    scope: Scope,
    ttl: Duration,
}

#[derive(Debug)]
struct MRequest {
    key: CallKey,
    /// Whether the caller that made it gave a reason.
    reason: bool,
    status: Status,
    callers: Vec<usize>,
    wrong: u32,
    expires: Duration,
    votes: Vec<MVote>,
}

/// A rule under key field `/account`: one per principal and account, the newest replacing.
#[derive(Clone, Debug)]
struct MRule {
    request: usize,
    allow: bool,
    deadline: Duration,
    /// Who decided, and how many approvers' approval made it: an approval rule covers a call
    /// only if that meets the call's own ask (as many approvers, among those it names).
    by: usize,
    approvals: usize,
}

type Heard = Option<Result<(), &'static str>>;

#[derive(Default, Debug)]
struct Model {
    now: Duration,
    requests: Vec<MRequest>,
    rules: BTreeMap<(usize, usize), MRule>,
    callers: Vec<Heard>,
    /// Runs of the inner service by arguments.
    runs: BTreeMap<Args, usize>,
}

/// What a decision the model accepts does: answer Ok, or the error code.
type Answer = Result<(), &'static str>;

impl Model {
    fn live_rule(&self, principal: usize, account: usize) -> Option<&MRule> {
        self.rules
            .get(&(principal, account))
            .filter(|r| r.deadline > self.now)
    }

    fn call(&mut self, key: CallKey, reason: bool) -> CallOutcome {
        let caller = self.callers.len();
        self.callers.push(None);
        let (principal, account, amount, _) = key;
        let answer = match ask_of(account, amount) {
            MAsk::Denied => Some(Err("access_request_denied")),
            MAsk::Asks { reason: true, .. } if !reason => Some(Err("reason_required")),
            MAsk::Asks { quorum, only, .. } => self
                .live_rule(principal, account)
                .filter(|rule| {
                    !rule.allow
                        || (rule.approvals >= quorum
                            && only.is_none_or(|only| only.contains(&rule.by)))
                })
                .map(|rule| {
                    if rule.allow {
                        Ok(())
                    } else {
                        Err("access_request_denied")
                    }
                }),
        };
        if let Some(answer) = answer {
            self.callers[caller] = Some(answer);
            if answer.is_ok() {
                *self.runs.entry(args_of(key)).or_default() += 1;
            }
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
            reason,
            status: Status::Pending,
            callers: vec![caller],
            wrong: 0,
            expires: self.now + REQUEST_TTL,
            votes: Vec::new(),
        });
        CallOutcome::Parked
    }

    fn resume(&mut self, request: usize, heard: Answer, runs: Args) {
        for caller in std::mem::take(&mut self.requests[request].callers) {
            self.callers[caller] = Some(heard);
            if heard.is_ok() {
                *self.runs.entry(runs).or_default() += 1;
            }
        }
    }

    /// Who may decide request `r`: everyone, or those its ask names.
    fn may_decide(&self, r: usize, approver: usize) -> bool {
        let key = self.requests[r].key;
        match ask_of(key.1, key.2) {
            MAsk::Asks { only, .. } => only.is_none_or(|only| only.contains(&approver)),
            MAsk::Denied => unreachable!("no request is made for a denied call"),
        }
    }

    fn asked(&self, r: usize) -> (usize, Duration) {
        let key = self.requests[r].key;
        match ask_of(key.1, key.2) {
            MAsk::Asks {
                quorum, max_ttl, ..
            } => (quorum, max_ttl),
            MAsk::Denied => unreachable!(),
        }
    }

    /// An approval with the right code. `Ok(outstanding)`: how many more approvals it needs,
    /// and for the approval that decides a quorum, the TTL its rule gets.
    fn approve(
        &mut self,
        r: usize,
        approver: usize,
        scope: Scope,
        end: End,
        edit: Option<Args>,
    ) -> Result<Approved, &'static str> {
        if !self.may_decide(r, approver) {
            return Err("access_request_not_found");
        }
        if let Some(answer) = support::decided_answer(self.requests[r].status) {
            return Err(answer);
        }
        let key = self.requests[r].key;
        let (quorum, max_ttl) = self.asked(r);
        // Arguments equal to those asked with are no edit.
        let edit = edit.filter(|&args| args != args_of(key));
        if quorum > 1 {
            if edit.is_some() {
                return Err("edit_not_allowed");
            }
            let ttl = end.ttl(max_ttl)?;
            if scope > Scope::Value {
                return Err("scope_not_allowed");
            }
            let votes = &self.requests[r].votes;
            if votes.iter().any(|v| v.approver == approver) {
                return Err("already_approved");
            }
            if votes.iter().any(|v| scope > v.scope) {
                return Err("scope_not_allowed");
            }
            let vote = MVote {
                approver,
                scope,
                ttl,
            };
            self.requests[r].votes.push(vote);
            let counted = self.requests[r].votes.len();
            if counted < quorum {
                return Ok(Approved {
                    outstanding: quorum - counted,
                    asked: ttl,
                    ttl,
                });
            }
            let earliest = self.requests[r].votes.iter().map(|v| v.ttl).min().unwrap();
            self.decide(r, (true, approver, quorum), scope, earliest, args_of(key));
            return Ok(Approved {
                outstanding: 0,
                asked: ttl,
                ttl: earliest,
            });
        }
        let mut max = max_ttl;
        let runs = match edit {
            None => args_of(key),
            Some(args @ (account, amount, _)) => {
                match ask_of(account, amount) {
                    MAsk::Denied => return Err("edit_not_allowed"),
                    MAsk::Asks {
                        quorum,
                        only,
                        reason,
                        max_ttl,
                    } => {
                        let other_approvers = only.is_some_and(|only| !only.contains(&approver));
                        if quorum > 1 || other_approvers || (reason && !self.requests[r].reason) {
                            return Err("edit_not_allowed");
                        }
                        max = max.min(max_ttl);
                    }
                }
                if self
                    .live_rule(key.0, account)
                    .is_some_and(|rule| !rule.allow)
                {
                    return Err("edit_not_allowed");
                }
                args
            }
        };
        let ttl = end.ttl(max)?;
        if scope > Scope::Value {
            return Err("scope_not_allowed");
        }
        self.decide(r, (true, approver, 1), scope, ttl, runs);
        Ok(Approved {
            outstanding: 0,
            asked: ttl,
            ttl,
        })
    }

    fn deny(&mut self, r: usize, approver: usize, remember: Scope, end: End) -> Answer {
        if !self.may_decide(r, approver) {
            return Err("access_request_not_found");
        }
        if let Some(answer) = support::decided_answer(self.requests[r].status) {
            return Err(answer);
        }
        let (_, max_ttl) = self.asked(r);
        let ttl = end.ttl(max_ttl)?;
        if remember > Scope::Value {
            return Err("scope_not_allowed");
        }
        let key = self.requests[r].key;
        self.decide(r, (false, approver, 1), remember, ttl, args_of(key));
        Ok(())
    }

    /// Request `r` decided: its callers resume, running `runs` if approved, and a `value`
    /// decision files a rule about the account that ran (or would have).
    fn decide(
        &mut self,
        r: usize,
        (allow, by, approvals): (bool, usize, usize),
        scope: Scope,
        ttl: Duration,
        runs: Args,
    ) {
        let principal = self.requests[r].key.0;
        if allow {
            self.requests[r].status = Status::Executed;
            self.resume(r, Ok(()), runs);
        } else {
            self.requests[r].status = Status::Denied;
            self.resume(r, Err("access_request_denied"), runs);
        }
        if scope == Scope::Value {
            let rule = MRule {
                request: r,
                allow,
                deadline: self.now + ttl,
                by,
                approvals,
            };
            self.rules.insert((principal, runs.0), rule);
        }
    }

    fn wrong_code(&mut self, r: usize, approver: usize) -> &'static str {
        if !self.may_decide(r, approver) || self.requests[r].status != Status::Pending {
            return "access_request_not_found";
        }
        self.requests[r].wrong += 1;
        if self.requests[r].wrong < ATTEMPTS {
            return "access_request_not_found";
        }
        self.requests[r].status = Status::Denied;
        let key = self.requests[r].key;
        self.resume(r, Err("too_many_attempts"), args_of(key));
        "too_many_attempts"
    }

    fn leave(&mut self, caller: usize) {
        self.callers[caller] = Some(Err("left"));
        if let Some(i) = self
            .requests
            .iter()
            .position(|r| r.callers.contains(&caller))
        {
            self.requests[i].callers.retain(|&c| c != caller);
            if self.requests[i].callers.is_empty() {
                self.requests[i].status = Status::Cancelled;
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        for i in 0..self.requests.len() {
            if self.requests[i].status == Status::Pending && self.requests[i].expires <= self.now {
                self.requests[i].status = Status::Expired;
                let key = self.requests[i].key;
                self.resume(i, Err("access_request_expired"), args_of(key));
            }
        }
    }
}

/// An approval the model accepts: how many more it needs, and the TTL of the rule the
/// deciding one makes (if its scope makes one).
#[derive(Debug, PartialEq)]
struct Approved {
    outstanding: usize,
    /// The TTL this approver asked for (`until` as a TTL from the step).
    asked: Duration,
    /// The TTL of the rule it made: its own, or a quorum's earliest.
    ttl: Duration,
}

enum CallOutcome {
    Answered(usize),
    Joined,
    Parked,
}

// ---------------------------------------------------------------------------------------------
// The system under test.

type Svc = RequireApproval<Tools, Payouts>;

/// A request as its alert gave it: id, the shared code, each approver's own.
struct Alerted {
    id: RequestId,
    code: String,
    codes: HashMap<String, String>,
}

impl Alerted {
    fn code_for(&self, approver: usize) -> String {
        let name = APPROVERS[approver];
        self.codes.get(name).unwrap_or(&self.code).clone()
    }
}

/// A quorum's vote as the gate took it: the earliest and latest end its rule may have had
/// (the wall clock read before and after the approval, plus its TTL; or its `until`).
#[derive(Clone, Copy, Debug)]
struct VoteEnd {
    earliest: SystemTime,
    latest: SystemTime,
    scope: Scope,
}

struct Real {
    alerts: RecordingNotifier,
    tools: Tools,
    gate: Gate,
    svc: Svc,
    requests: Vec<Alerted>,
    /// Each request's counted votes' ends, for the quorum's rule.
    ends: Vec<Vec<VoteEnd>>,
    callers: Vec<Option<JoinHandle<Result<String, BoxError>>>>,
}

fn call_of((principal, account, amount, memo): CallKey, reason: bool) -> ToolCall {
    let args = json!({ "account": ACCOUNTS[account], "amount": AMOUNTS[amount], "memo": memo });
    let call = ToolCall::new("payout", args)
        .principal(PRINCIPALS[principal])
        .session("s1");
    if reason {
        call.reason("ticket 7")
    } else {
        call
    }
}

fn json_of((account, amount, memo): Args) -> serde_json::Value {
    json!({ "account": ACCOUNTS[account], "amount": AMOUNTS[amount], "memo": memo })
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

/// The wall clock to the millisecond, as stores keep it.
fn millis(time: SystemTime) -> SystemTime {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
}

fn pick(index: usize, len: usize) -> Option<usize> {
    (len > 0).then(|| index % len)
}

impl Real {
    async fn heard(&mut self, caller: usize) -> Result<(), &'static str> {
        let handle = self.callers[caller].take().expect("a caller is heard once");
        // An answer the model expects is there without time passing; a caller still parked
        // is told apart rather than waited on.
        support::heard(handle, Duration::from_secs(1)).await
    }

    async fn run(&mut self, model: &mut Model, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Call {
                principal,
                account,
                amount,
                memo,
                reason,
            } => {
                let key = (principal, account, amount, memo);
                let parked_before = self.gate.stats().parked;
                let call = self.svc.clone().oneshot(call_of(key, reason));
                self.callers.push(Some(tokio::spawn(call)));
                match model.call(key, reason) {
                    CallOutcome::Answered(caller) => {
                        let heard = self.heard(caller).await;
                        prop_assert_eq!(Some(heard), model.callers[caller], "the call's answer");
                    }
                    CallOutcome::Joined => {
                        let gate = &self.gate;
                        until(|| gate.stats().parked == parked_before + 1).await;
                    }
                    CallOutcome::Parked => {
                        let alert =
                            tokio::time::timeout(Duration::from_secs(1), self.alerts.next_alert())
                                .await
                                .map_err(|_| {
                                    TestCaseError::fail(
                                        "the model parks a call; the gate alerted nobody",
                                    )
                                })?;
                        prop_assert_eq!(alert.request().principal(), PRINCIPALS[principal]);
                        prop_assert_eq!(alert.request().args(), json_of(args_of(key)));
                        let codes = alert
                            .codes()
                            .map(|(a, c)| (a.to_owned(), c.reveal().to_owned()))
                            .collect();
                        self.requests.push(Alerted {
                            id: alert.request().id(),
                            code: alert.code().reveal().to_owned(),
                            codes,
                        });
                        self.ends.push(Vec::new());
                    }
                }
            }
            Step::Approve {
                request,
                approver,
                scope,
                end,
                edit,
            } => {
                let Some(i) = pick(request, self.requests.len()) else {
                    return Ok(());
                };
                let mut approve =
                    Approve::new(self.requests[i].id, self.requests[i].code_for(approver))
                        .scope(scope)
                        .by(APPROVERS[approver]);
                let before = SystemTime::now();
                let until_end = match end {
                    End::Default => None,
                    End::Ttl(ttl) => {
                        approve = approve.ttl(ttl);
                        None
                    }
                    End::Until(d) => {
                        let at = millis(before + d);
                        approve = approve.until(at);
                        Some(at)
                    }
                };
                if let Some(args) = edit {
                    approve = approve.edit(json_of(args));
                }
                let got = self.gate.approve(approve).await;
                let after = SystemTime::now();
                let want = model.approve(i, approver, scope, end, edit);
                let answer = got.as_ref().map(|a| usize::from(a.outstanding()));
                prop_assert_eq!(
                    answer.map_err(|e| e.code()),
                    want.as_ref().map(|w| w.outstanding).map_err(|e| *e),
                    "approve {:?}",
                    step
                );
                if let (Ok(approval), Ok(approved)) = (&got, &want) {
                    self.check_quorum(i, approval, approved, (before, after), until_end)?;
                }
            }
            Step::Deny {
                request,
                approver,
                remember,
                end,
            } => {
                let Some(i) = pick(request, self.requests.len()) else {
                    return Ok(());
                };
                let mut deny = Deny::new(self.requests[i].id, self.requests[i].code_for(approver))
                    .remember(remember)
                    .by(APPROVERS[approver]);
                match end {
                    End::Default => {}
                    End::Ttl(ttl) => deny = deny.ttl(ttl),
                    End::Until(d) => deny = deny.until(millis(SystemTime::now() + d)),
                }
                let got = self.gate.deny(deny).await.map(drop);
                let want = model.deny(i, approver, remember, end);
                prop_assert_eq!(got.map_err(|e| e.code()), want, "deny {:?}", step);
            }
            Step::WrongCode {
                request,
                approver,
                borrowed,
            } => {
                let Some(i) = pick(request, self.requests.len()) else {
                    return Ok(());
                };
                let alerted = &self.requests[i];
                // Another approver's own code where the request has them; else a garbled one.
                let other = APPROVERS[(approver + 1) % 3];
                let code = match alerted.codes.get(other) {
                    Some(theirs) if borrowed && APPROVERS[approver] != other => theirs.clone(),
                    _ => wrong(&alerted.code_for(approver)),
                };
                let approve = Approve::new(alerted.id, code).by(APPROVERS[approver]);
                let got = self.gate.approve(approve).await.map(drop);
                let want = model.wrong_code(i, approver);
                prop_assert_eq!(got.map_err(|e| e.code()), Err(want), "{:?}", step);
            }
            Step::Leave { caller } => {
                let waiting: Vec<usize> = (0..model.callers.len())
                    .filter(|&c| model.callers[c].is_none())
                    .collect();
                let Some(c) = pick(caller, waiting.len()).map(|i| waiting[i]) else {
                    return Ok(());
                };
                self.callers[c].as_ref().unwrap().abort();
                model.leave(c);
            }
            Step::Advance { minutes } => {
                let by = Duration::from_secs(minutes * 60);
                tokio::time::advance(by).await;
                model.advance(by);
            }
        }
        self.settle(model).await?;
        self.compare(model).await
    }

    /// An approval of request `i` both the gate and the model accepted, made between the wall
    /// clock times `at`: a vote is kept with its end; the one that decides a quorum must have
    /// made a rule no wider than any vote and ending no later than any vote's end.
    fn check_quorum(
        &mut self,
        i: usize,
        approval: &Approval,
        approved: &Approved,
        (before, after): (SystemTime, SystemTime),
        until_end: Option<SystemTime>,
    ) -> Result<(), TestCaseError> {
        let scope = approval.scope();
        let vote = match until_end {
            Some(at) => VoteEnd {
                earliest: at,
                latest: at,
                scope,
            },
            None => VoteEnd {
                earliest: millis(before) + approved.asked,
                latest: millis(after) + approved.asked,
                scope,
            },
        };
        if approved.outstanding > 0 {
            prop_assert!(approval.rule().is_none(), "a vote makes no rule");
            self.ends[i].push(vote);
            return Ok(());
        }
        if self.ends[i].is_empty() {
            return Ok(());
        }
        self.ends[i].push(vote);
        let votes = &self.ends[i];
        for v in votes {
            prop_assert!(
                scope <= v.scope,
                "the quorum's rule is {:?}, wider than a vote's {:?}",
                scope,
                v.scope
            );
        }
        if let Some(rule) = approval.rule() {
            let earliest = votes.iter().map(|v| v.earliest).min().unwrap();
            let latest = votes.iter().map(|v| v.latest).min().unwrap();
            prop_assert!(
                rule.expires_at() <= latest,
                "the quorum's rule ends {:?} after the earliest end an approver allowed",
                rule.expires_at().duration_since(latest).unwrap_or_default()
            );
            prop_assert!(
                rule.expires_at() >= earliest,
                "the quorum's rule ends {:?} before every approver's end",
                earliest
                    .duration_since(rule.expires_at())
                    .unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn settle(&mut self, model: &Model) -> Result<(), TestCaseError> {
        for c in 0..model.callers.len() {
            if let (Some(want), Some(_)) = (model.callers[c], &self.callers[c]) {
                let heard = self.heard(c).await;
                prop_assert_eq!(heard, want, "caller {}'s answer", c);
            }
        }
        let waiting = model.callers.iter().filter(|c| c.is_none()).count();
        prop_assert_eq!(self.gate.stats().parked, waiting, "callers still waiting");
        Ok(())
    }

    fn index_of(&self, id: RequestId) -> usize {
        self.requests
            .iter()
            .position(|r| r.id == id)
            .expect("a request the model made")
    }

    async fn compare(&self, model: &Model) -> Result<(), TestCaseError> {
        for (i, alerted) in self.requests.iter().enumerate() {
            let (_, status) = self
                .gate
                .lookup(alerted.id)
                .await
                .map_err(|e| TestCaseError::fail(format!("lookup {i}: {e}")))?;
            prop_assert_eq!(status, model.requests[i].status, "request {}'s status", i);
            let mut approved_by = self.gate.approved_by(alerted.id);
            approved_by.sort();
            let mut want: Vec<String> = if model.requests[i].status == Status::Pending {
                let votes = &model.requests[i].votes;
                votes
                    .iter()
                    .map(|v| APPROVERS[v.approver].to_owned())
                    .collect()
            } else {
                Vec::new()
            };
            want.sort();
            prop_assert_eq!(approved_by, want, "request {}'s approvers so far", i);
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
            .rules
            .values()
            .filter(|r| r.deadline > model.now)
            .map(|r| (r.request, r.allow, Scope::Value))
            .collect();
        want.sort_unstable();
        prop_assert_eq!(got, want, "the live rules");
        for (&args, &runs) in &model.runs {
            let call = ToolCall::new("payout", json_of(args));
            prop_assert_eq!(self.tools.calls_of(&call), runs, "runs of {:?}", args);
        }
        prop_assert_eq!(
            self.tools.total(),
            model.runs.values().sum::<usize>(),
            "runs"
        );
        Ok(())
    }
}

fn run_sequence(steps: &[Step], dir: &std::path::Path) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let path = dir.join(format!("model-asks-{}.db", std::process::id()));
    support::remove_sqlite(&path);
    let result = runtime.block_on(async {
        let alerts = RecordingNotifier::new();
        let tools = Tools::default();
        let gate = Gate::builder()
            .secret(SECRET)
            .request_ttl(REQUEST_TTL)
            .max_attempts(ATTEMPTS)
            .max_pending_per_principal(64)
            .unlimited_alert_rate()
            .notifier(alerts.clone())
            .store(SqliteStore::open(&path).expect("open the store"))
            .build()
            .expect("build the gate");
        let svc = gate.layer(Payouts).layer(tools.clone());
        let mut real = Real {
            alerts,
            tools,
            gate,
            svc,
            requests: Vec::new(),
            ends: Vec::new(),
            callers: Vec::new(),
        };
        let mut model = Model::default();
        for step in steps {
            real.run(&mut model, step).await?;
        }
        real.gate
            .shutdown()
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))
    });
    support::remove_sqlite(&path);
    result
}

fn cases() -> u32 {
    support::cases("TOLLGATE_MODEL_CASES", 256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn edits_quorums_and_key_fields_agree_with_the_model(steps in prop::collection::vec(step(), 1..40)) {
        run_sequence(&steps, &support::scratch_dir())?;
    }
}
