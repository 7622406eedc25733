//! The registry alone: every transition, and every order in which an approval, a denial, the
//! expiry, wrong codes and the last caller leaving can arrive, with and without a store write
//! in flight. No runtime drives anything here; the clock is passed in.
//!
//! Longer than the crate's other files: one test per transition, and tables of every order.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;
use std::time::{Duration, SystemTime};

use super::*;
use crate::args::ArgsDigest;
use crate::id::RuleId;
use crate::rule::{Rule, RuleEffect};
use crate::scope::Scope;
use crate::time::Millis;
use tokio::sync::oneshot;

mod schedules;

const TTL: Duration = Duration::from_secs(60);
const LIMITS: Limits = Limits {
    per_principal: 2,
    total: 3,
    attempts: 2,
    waiters: 2,
};

/// Counts its wakes.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn request(principal: &str, args: &str) -> AccessRequest {
    let now = SystemTime::now();
    AccessRequest {
        id: RequestId::random(),
        capability: "payments.refund".into(),
        args: args.into(),
        args_digest: ArgsDigest::of_canonical(args),
        principal: principal.into(),
        session: None,
        reason: None,
        reasoning: Cow::Borrowed("refunds move money"),
        max_scope: Scope::Global,
        max_rule_ttl_ms: TTL.as_millis() as u64,
        approvers: None,
        key_fields: None,
        editable: false,
        quorum: 1,
        extended_secs: 0,
        created_at: Millis::of(now),
        expires_at: Millis::of(now) + TTL,
        approval_url: None,
    }
}

/// One registry, one runtime handle, one clock.
struct World {
    registry: Registry,
    runtime: tokio::runtime::Runtime,
    start: Instant,
}

/// A request admitted and stored, with one caller parked on it.
struct Parked {
    id: RequestId,
    key: usize,
    waker: Arc<Counter>,
}

fn world() -> World {
    World {
        registry: Registry::new(16, None),
        runtime: tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime"),
        start: Instant::now(),
    }
}

/// The names of what happened, in order.
fn events(effects: &Effects) -> Vec<String> {
    effects
        .events
        .iter()
        .map(|event| match event {
            Event::Requested(_) => "requested".into(),
            Event::CodeRejected { attempt, of, .. } => format!("code_rejected {attempt}/{of}"),
            Event::Decided { outcome, rule, .. } => {
                format!("decided {} rule={}", outcome.status(), rule.is_some())
            }
            Event::Taken { rule, .. } => format!("taken rule={}", rule.is_some()),
            Event::Closed { from, outcome, .. } => format!("closed {from}→{}", outcome.status()),
            Event::Finished { status, .. } => format!("finished {status}"),
            Event::Withdrawn(_) => "withdrawn".into(),
            Event::Left { holding, .. } => format!("left holding={holding}"),
            Event::Carried { rule, .. } => format!("carried rule={}", rule.is_some()),
        })
        .collect()
}

fn kind(result: Result<impl Sized, Error>) -> Option<ErrorKind> {
    result.err().map(|e| e.kind())
}

fn rule(effect: RuleEffect, request: &AccessRequest) -> Rule {
    let now = SystemTime::now();
    Rule {
        id: RuleId::random(),
        effect,
        scope: Scope::Capability,
        capability: request.capability.clone(),
        principal: Some(request.principal.clone()),
        session: None,
        args_digest: None,
        granted_by: "alice".into(),
        granted_at: now,
        expires_at: now + TTL,
        request: request.id,
        reason: None,
        approvals: 1,
        seal: None,
    }
}

/// An approval (or a denial) of `request` by alice, with a rule if `with_rule`, and the
/// receiver on which alice hears how it ended.
fn ruling(
    approve: bool,
    request: &AccessRequest,
    with_rule: bool,
) -> (Ruling, oneshot::Receiver<Result<(), Error>>) {
    let (ack, acked) = oneshot::channel();
    let (outcome, effect) = if approve {
        let until = with_rule.then(|| SystemTime::now() + TTL);
        let outcome = Outcome::Approved {
            approver: "alice".into(),
            scope: Scope::Capability,
            until,
        };
        (outcome, RuleEffect::Allow)
    } else {
        let outcome = Outcome::Denied {
            approver: "alice".into(),
            reason: Some("no".into()),
        };
        (outcome, RuleEffect::Deny)
    };
    let rule = with_rule.then(|| (rule(effect, request), Instant::now() + TTL));
    let ruling = Ruling {
        outcome,
        scope: Scope::Capability,
        rule,
        ack,
        verdict: None,
        edit: None,
    };
    (ruling, acked)
}

impl World {
    fn at(&self, secs: u64) -> Instant {
        self.start + Duration::from_secs(secs)
    }

    fn admit(&mut self, request: AccessRequest) -> (Result<Admitted, Error>, Effects) {
        let (now, deadline) = (self.at(0), self.at(0) + TTL);
        let runtime = self.runtime.handle().clone();
        self.registry
            .admit(request, now, deadline, runtime, LIMITS, None)
    }

    /// Admits a new request and stores it: one caller parked.
    fn parked(&mut self) -> Parked {
        let (admitted, effects) = self.admit(request("agent-7", "{}"));
        let (request, key, new) = admitted.expect("admitted");
        assert!(new);
        assert_eq!(events(&effects), ["requested"]);
        let (announce, effects) = self.registry.stored(request.id, true);
        assert!(announce && effects.events.is_empty());
        let parked = Parked {
            id: request.id,
            key,
            waker: Arc::default(),
        };
        assert!(self.poll(&parked).is_pending());
        parked
    }

    /// Admits a request whose callers join `held`, another replica's: one caller parked.
    fn following(&mut self, held: &Arc<AccessRequest>) -> Parked {
        let (admitted, _) = self.admit(request("agent-7", "{}"));
        let (req, key, _) = admitted.expect("admitted");
        self.registry
            .joined(req.id, held.clone(), [0; 32], "ticket".into());
        Parked {
            id: req.id,
            key,
            waker: Arc::default(),
        }
    }

    fn join(&mut self, on: &Parked) -> Parked {
        let request = self.request(on.id);
        let mut twin = (*request).clone();
        twin.id = RequestId::random();
        let (admitted, effects) = self.admit(twin);
        let (joined, key, new) = admitted.expect("joined");
        assert!(!new && joined.id == on.id && effects.events.is_empty());
        Parked {
            id: on.id,
            key,
            waker: Arc::default(),
        }
    }

    fn request(&self, id: RequestId) -> Arc<AccessRequest> {
        match self.registry.look(id) {
            Known::Live(request) | Known::Remembered(request, _) => request,
            Known::Nowhere => panic!("unknown request"),
        }
    }

    fn poll(&mut self, parked: &Parked) -> Poll<Result<(), Error>> {
        self.poll_effects(parked).0
    }

    /// A poll, with what it calls for; these requests are never edited.
    fn poll_effects(&mut self, parked: &Parked) -> (Poll<Result<(), Error>>, Effects) {
        let waker = Waker::from(parked.waker.clone());
        let (poll, effects) = self.registry.poll(parked.id, parked.key, &waker);
        let poll = poll.map_ok(|edit| assert!(edit.is_none(), "nobody edited"));
        (poll, effects)
    }

    fn status(&self, id: RequestId) -> Option<Status> {
        self.registry.status(id)
    }

    /// Starts a decision at `secs`: the registry takes the ruling or says why not; the
    /// receiver is where the approver hears how it ended.
    fn decide(&mut self, id: RequestId, approve: bool, secs: u64) -> Started {
        let (ruling, acked) = ruling(approve, &self.request(id), true);
        let now = self.at(secs);
        let (result, effects) = self.registry.decide(id, Ok(ruling), now);
        (result, effects, acked)
    }
}

/// A decision started: what the registry answered, its effects, and the approver's receiver.
type Started = (
    Result<Arc<AccessRequest>, Error>,
    Effects,
    oneshot::Receiver<Result<(), Error>>,
);

/// What an arrival did: the error its sender heard, if any, and the events it caused.
type Heard = (Option<ErrorKind>, Vec<String>);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Arrival {
    /// An approval, stored at once.
    Approve,
    /// A denial, stored at once.
    Deny,
    /// The request's timer fires after its deadline.
    Expire,
    /// Wrong codes until the limit (the first is enough once the request is not pending).
    WrongCodes,
    /// The only caller goes away.
    Leave,
}

const ARRIVALS: [Arrival; 5] = [
    Arrival::Approve,
    Arrival::Deny,
    Arrival::Expire,
    Arrival::WrongCodes,
    Arrival::Leave,
];

impl World {
    fn arrive(&mut self, parked: &Parked, arrival: Arrival) -> Heard {
        let id = parked.id;
        let mut effects = Effects::default();
        let error = match arrival {
            Arrival::Approve | Arrival::Deny => {
                let (result, decided, mut acked) = self.decide(id, arrival == Arrival::Approve, 1);
                effects.merge(decided);
                match result {
                    Ok(_) => {
                        effects.merge(self.registry.decided(id, Ok(()), self.at(1)));
                        // An approval's approver hears only once a caller takes it.
                        match acked.try_recv() {
                            Ok(Err(error)) => Some(error.kind()),
                            _ => None,
                        }
                    }
                    Err(error) => Some(error.kind()),
                }
            }
            Arrival::Expire => {
                effects.merge(self.registry.expire(id, self.at(61)));
                None
            }
            Arrival::WrongCodes => {
                let by: Arc<str> = "mallory".into();
                let mut heard = None;
                for _ in 0..LIMITS.attempts {
                    let (error, wrong) = self.registry.wrong_code(id, &by, LIMITS.attempts);
                    let counted = !wrong.events.is_empty();
                    effects.merge(wrong);
                    heard = Some(error.kind());
                    if !counted {
                        break;
                    }
                }
                heard
            }
            Arrival::Leave => {
                effects.merge(self.registry.leave(id, parked.key));
                None
            }
        };
        (error, events(&effects))
    }
}

/// The status after `first` alone, and what `first` caused.
fn expected_first(first: Arrival) -> (Status, Heard) {
    let none = |events: &[&str]| (None, events.iter().map(|e| (*e).to_owned()).collect());
    match first {
        Arrival::Approve => (Status::Approved, none(&["decided approved rule=false"])),
        Arrival::Deny => (Status::Denied, none(&["decided denied rule=true"])),
        Arrival::Expire => (Status::Expired, none(&["closed pending→expired"])),
        Arrival::WrongCodes => (
            Status::Denied,
            (
                Some(ErrorKind::TooManyAttempts),
                vec![
                    "code_rejected 1/2".into(),
                    "code_rejected 2/2".into(),
                    "closed pending→denied".into(),
                ],
            ),
        ),
        Arrival::Leave => (Status::Cancelled, none(&["closed pending→cancelled"])),
    }
}

/// What `second` hears and causes once `first` has decided the request, and the status after.
fn expected_second(first: Arrival, second: Arrival) -> (Heard, Status) {
    let (status, _) = expected_first(first);
    let quiet = |kind: Option<ErrorKind>| (kind, Vec::new());
    let heard = match second {
        Arrival::Approve | Arrival::Deny => quiet(Some(match status {
            Status::Expired => ErrorKind::AccessRequestExpired,
            Status::Cancelled => ErrorKind::AccessRequestCancelled,
            _ => ErrorKind::AlreadyResolved,
        })),
        Arrival::Expire => quiet(None),
        Arrival::WrongCodes => quiet(Some(ErrorKind::AccessRequestNotFound)),
        // The last caller leaving an approval nobody took cancels it.
        Arrival::Leave if first == Arrival::Approve => {
            return (
                (None, vec!["closed approved→cancelled".into()]),
                Status::Cancelled,
            );
        }
        Arrival::Leave => quiet(None),
    };
    (heard, status)
}

#[test]
fn every_order_of_two_arrivals_ends_with_the_first() {
    for first in ARRIVALS {
        for second in ARRIVALS {
            if first == Arrival::Leave && second == Arrival::Leave {
                continue; // the only caller leaves once
            }
            let mut world = world();
            let parked = world.parked();
            let (status, heard) = expected_first(first);
            // An approval's rule is filed when it is taken: nothing names it before.
            assert_eq!(world.arrive(&parked, first), heard, "{first:?} alone");
            assert_eq!(world.status(parked.id), Some(status), "{first:?} alone");
            let (heard, status) = expected_second(first, second);
            assert_eq!(
                world.arrive(&parked, second),
                heard,
                "{first:?} then {second:?}"
            );
            assert_eq!(
                world.status(parked.id),
                Some(status),
                "{first:?} then {second:?}"
            );
        }
    }
}

#[test]
fn arrivals_while_a_decision_is_being_stored_wait_for_it() {
    for second in ARRIVALS {
        for approve in [true, false] {
            let mut world = world();
            let parked = world.parked();
            let (result, effects, mut acked) = world.decide(parked.id, approve, 1);
            assert!(result.is_ok());
            let decided = if approve { "approved" } else { "denied" };
            assert_eq!(
                events(&effects),
                [format!("decided {decided} rule={}", !approve)]
            );
            assert_eq!(world.status(parked.id), Some(Status::Pending));
            let heard = world.arrive(&parked, second);
            let expected = match second {
                Arrival::Approve | Arrival::Deny => Some(ErrorKind::AlreadyResolved),
                Arrival::WrongCodes => Some(ErrorKind::AccessRequestNotFound),
                Arrival::Expire | Arrival::Leave => None,
            };
            assert_eq!(heard, (expected, vec![]), "{second:?} while deciding");
            // The stored decision then takes effect; with no caller left, an approval is
            // cancelled and its approver told so.
            let effects = world.registry.decided(parked.id, Ok(()), world.at(1));
            let left = second == Arrival::Leave;
            // What the approver hears now: nothing yet (an approval waits to be taken), or
            // `Ok`, or an error.
            let (status, events_then, ack) = match (approve, left) {
                (true, true) => (
                    Status::Cancelled,
                    vec!["closed approved→cancelled".to_owned()],
                    Some(Some(ErrorKind::AccessRequestCancelled)),
                ),
                (true, false) => (Status::Approved, vec![], None),
                (false, _) => (Status::Denied, vec![], Some(None)),
            };
            assert_eq!(
                events(&effects),
                events_then,
                "{second:?}, approve {approve}"
            );
            assert_eq!(world.status(parked.id), Some(status));
            let heard = effects.ack.map(|(_, result)| kind(result));
            assert_eq!(heard, ack, "{second:?}, approve {approve}");
            assert!(
                acked.try_recv().is_err(),
                "acks are sent by the gate, not the registry"
            );
        }
    }
}

#[test]
fn a_decision_the_store_refused_leaves_the_request_pending() {
    let mut world = world();
    let parked = world.parked();
    let (result, _, _) = world.decide(parked.id, true, 1);
    assert!(result.is_ok());
    let refused = Error::new(ErrorKind::StoreFailed);
    let effects = world.registry.decided(parked.id, Err(refused), world.at(1));
    let (_, result) = effects.ack.expect("the approver hears");
    assert_eq!(kind(result), Some(ErrorKind::StoreFailed));
    assert!(effects.events.is_empty());
    assert_eq!(world.status(parked.id), Some(Status::Pending));
    // Decidable again, and by anyone with the code.
    let (result, _, _) = world.decide(parked.id, false, 2);
    assert!(result.is_ok());

    // Refused after the deadline passed, the request expires instead.
    let mut world = self::world();
    let parked = world.parked();
    let _ = world.decide(parked.id, true, 1);
    let refused = Error::new(ErrorKind::StoreFailed);
    let effects = world
        .registry
        .decided(parked.id, Err(refused), world.at(61));
    assert_eq!(events(&effects), ["closed pending→expired"]);
    assert_eq!(effects.wake.len(), 1);
}

#[test]
fn a_decision_after_the_deadline_expires_the_request() {
    let mut world = world();
    let parked = world.parked();
    let (result, effects, _) = world.decide(parked.id, true, 60);
    assert_eq!(kind(result), Some(ErrorKind::AccessRequestExpired));
    assert_eq!(events(&effects), ["closed pending→expired"]);
    assert_eq!(
        kind(ready(world.poll(&parked))),
        Some(ErrorKind::AccessRequestExpired)
    );
}

#[test]
fn a_refused_ruling_is_answered_only_while_the_request_is_pending() {
    let mut world = world();
    let parked = world.parked();
    let scope = || Err(Error::new(ErrorKind::ScopeNotAllowed));
    let (result, effects) = world.registry.decide(parked.id, scope(), world.at(1));
    let error = result.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::ScopeNotAllowed);
    assert_eq!(error.request_id(), Some(parked.id));
    assert!(effects.events.is_empty());
    assert_eq!(world.status(parked.id), Some(Status::Pending));
    // Once decided, the request's state is the answer, whatever the ruling asked for.
    world.arrive(&parked, Arrival::Deny);
    let (result, _) = world.registry.decide(parked.id, scope(), world.at(1));
    assert_eq!(kind(result), Some(ErrorKind::AlreadyResolved));
}

fn ready(poll: Poll<Result<(), Error>>) -> Result<(), Error> {
    match poll {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("still pending"),
    }
}

#[test]
fn an_approval_runs_once_a_caller_takes_it_and_the_store_has_that() {
    let mut world = world();
    let first = world.parked();
    let second = world.join(&first);
    assert!(world.poll(&second).is_pending());
    let (_, _, mut acked) = world.decide(first.id, true, 1);
    let effects = world.registry.decided(first.id, Ok(()), world.at(1));
    assert_eq!(effects.wake.len(), 2, "both callers are woken");
    assert_eq!(world.registry.counts().pending, 0);

    // The first caller to look takes the approval; the store hears of it, the rule with it.
    let (poll, effects) = world.poll_effects(&first);
    assert!(poll.is_pending());
    assert_eq!(events(&effects), ["taken rule=true"]);
    assert!(world.poll(&second).is_pending(), "the take is being stored");
    assert!(world.registry.writing());

    let effects = world.registry.taken(first.id, Ok(()));
    assert_eq!(effects.wake.len(), 2);
    assert_eq!(world.status(first.id), Some(Status::Executing));
    // The first to resume receives it: the rule is filed, the approver hears, notifiers too.
    let (poll, effects) = world.poll_effects(&second);
    assert!(ready(poll).is_ok());
    assert!(effects.rule.is_some() && effects.resolved.is_some());
    let (_, result) = effects.ack.expect("the approver hears");
    assert!(result.is_ok());
    let (poll, effects) = world.poll_effects(&first);
    assert!(ready(poll).is_ok());
    assert!(effects.ack.is_none() && effects.rule.is_none(), "told once");
    assert!(
        acked.try_recv().is_err(),
        "the ack is in the effects, not sent here"
    );

    // Finished once; the history keeps the end.
    let effects = world.registry.finish(first.id, Status::Executed);
    assert_eq!(events(&effects), ["finished executed"]);
    assert!(
        world
            .registry
            .finish(first.id, Status::Failed)
            .events
            .is_empty()
    );
    assert_eq!(world.status(first.id), Some(Status::Executed));
    assert_eq!(world.registry.counts().live, 0);
}

#[test]
fn an_approval_whose_callers_left_while_it_was_taken_is_withdrawn() {
    let mut world = world();
    let parked = world.parked();
    let _ = world.decide(parked.id, true, 1);
    let _ = world.registry.decided(parked.id, Ok(()), world.at(1));
    let (_, effects) = world.poll_effects(&parked);
    assert_eq!(events(&effects), ["taken rule=true"]);
    let effects = world.registry.leave(parked.id, parked.key);
    assert!(effects.events.is_empty(), "the take's write decides");
    let effects = world.registry.taken(parked.id, Ok(()));
    assert_eq!(
        events(&effects),
        ["closed executing→cancelled", "withdrawn"]
    );
    let (_, result) = effects.ack.expect("the approver hears");
    assert_eq!(kind(result), Some(ErrorKind::AccessRequestCancelled));
    assert_eq!(world.status(parked.id), Some(Status::Cancelled));
}

#[test]
fn an_approval_whose_take_the_store_refused_fails_its_callers() {
    let mut world = world();
    let parked = world.parked();
    let _ = world.decide(parked.id, true, 1);
    let _ = world.registry.decided(parked.id, Ok(()), world.at(1));
    let _ = world.poll_effects(&parked);
    let effects = world
        .registry
        .taken(parked.id, Err(Error::new(ErrorKind::StoreFailed)));
    assert_eq!(events(&effects), ["closed approved→failed"]);
    let (_, result) = effects.ack.expect("the approver hears");
    assert_eq!(kind(result), Some(ErrorKind::StoreFailed));
    assert_eq!(
        kind(ready(world.poll(&parked))),
        Some(ErrorKind::StoreFailed)
    );
}

#[test]
fn an_approval_received_by_one_caller_survives_the_others_leaving() {
    let mut world = world();
    let first = world.parked();
    let second = world.join(&first);
    let _ = world.decide(first.id, true, 1);
    let _ = world.registry.decided(first.id, Ok(()), world.at(1));
    let _ = world.poll_effects(&first);
    let _ = world.registry.taken(first.id, Ok(()));
    assert!(ready(world.poll(&first)).is_ok());
    let effects = world.registry.leave(second.id, second.key);
    assert!(effects.events.is_empty() && effects.ack.is_none());
    assert_eq!(world.status(first.id), Some(Status::Executing));
}

#[test]
fn wrong_codes_count_only_against_a_stored_pending_request() {
    let mut world = world();
    let by: Arc<str> = "mallory".into();
    let (admitted, _) = world.admit(request("agent-7", "{}"));
    let (request, key, _) = admitted.expect("admitted");
    // Not yet stored: nobody can decide it, and a guess is not counted.
    let (error, effects) = world.registry.wrong_code(request.id, &by, 2);
    assert_eq!(error.kind(), ErrorKind::AccessRequestNotFound);
    assert!(effects.events.is_empty());
    let (result, _) =
        world
            .registry
            .decide(request.id, Ok(ruling(true, &request, false).0), world.at(1));
    assert_eq!(kind(result), Some(ErrorKind::AccessRequestNotFound));
    let _ = world.registry.stored(request.id, true);
    let (error, effects) = world.registry.wrong_code(request.id, &by, 2);
    assert_eq!(error.kind(), ErrorKind::AccessRequestNotFound);
    assert_eq!(events(&effects), ["code_rejected 1/2"]);
    // Unknown ids count nothing anywhere.
    let (error, effects) = world.registry.wrong_code(RequestId::random(), &by, 2);
    assert_eq!(error.kind(), ErrorKind::AccessRequestNotFound);
    assert!(effects.events.is_empty());
    // Nor does a request whose only caller left.
    let _ = world.registry.leave(request.id, key);
    let (_, effects) = world.registry.wrong_code(request.id, &by, 2);
    assert!(effects.events.is_empty());
}

#[test]
fn a_request_the_store_refused_fails_its_callers_unannounced() {
    let mut world = world();
    let (admitted, _) = world.admit(request("agent-7", "{}"));
    let (request, key, _) = admitted.expect("admitted");
    let parked = Parked {
        id: request.id,
        key,
        waker: Arc::default(),
    };
    assert!(world.poll(&parked).is_pending());
    let (announce, effects) = world.registry.stored(request.id, false);
    assert!(!announce);
    assert!(
        effects.events.is_empty() && effects.resolved.is_none(),
        "nobody heard of it"
    );
    assert_eq!(effects.wake.len(), 1);
    assert_eq!(
        kind(ready(world.poll(&parked))),
        Some(ErrorKind::StoreFailed)
    );
    assert_eq!(world.registry.counts().pending, 0);
}

#[test]
fn identical_calls_join_one_request_up_to_the_cap() {
    let mut world = world();
    let first = world.parked();
    let second = world.join(&first);
    let mut third = (*world.request(first.id)).clone();
    third.id = RequestId::random();
    let (result, _) = world.admit(third.clone());
    assert_eq!(kind(result), Some(ErrorKind::TooManyPending));
    // A caller that leaves frees its place, and the place is reused.
    let effects = world.registry.leave(second.id, second.key);
    assert!(effects.events.is_empty(), "a caller is still waiting");
    let (result, _) = world.admit(third);
    let (_, key, new) = result.expect("joined");
    assert_eq!((key, new), (second.key, false));
    assert_eq!(world.registry.counts().parked, 2);
}

/// Calls that differ in any one of principal, session, capability or arguments are different
/// requests, and a session named "" is not the absence of one. A request that is no longer
/// pending is joined by nobody: an identical call then makes a new one.
#[test]
fn only_identical_calls_join_and_only_while_pending() {
    let mut world = world();
    let first = world.parked();
    let base = (*world.request(first.id)).clone();
    let variants: [fn(&mut AccessRequest); 5] = [
        |r| r.principal = "agent-8".into(),
        |r| r.session = Some("".into()),
        |r| r.capability = "payments.charge".into(),
        |r| r.args_digest = ArgsDigest::of_canonical("{\"n\":1}"),
        |r| r.session = Some("s-1".into()),
    ];
    let limits = Limits {
        per_principal: 10,
        total: 10,
        ..LIMITS
    };
    let admit_new = |world: &mut World, mut request: AccessRequest| {
        request.id = RequestId::random();
        let (now, deadline) = (world.at(0), world.at(0) + TTL);
        let runtime = world.runtime.handle().clone();
        let (admitted, _) = world
            .registry
            .admit(request, now, deadline, runtime, limits, None);
        let (request, _, new) = admitted.expect("admitted");
        assert!(new && request.id != first.id);
    };
    for change in variants {
        let mut other = base.clone();
        change(&mut other);
        admit_new(&mut world, other);
    }
    let effects = world.registry.leave(first.id, first.key);
    assert_eq!(events(&effects), ["closed pending→cancelled"]);
    admit_new(&mut world, base);
}

/// The first caller's place, kept in the slot itself, is freed and reused like any other;
/// a change wakes only the callers polled since they joined, and keeps the others' places.
#[test]
fn the_first_place_is_reused_and_only_polled_callers_are_woken() {
    let mut world = world();
    let first = world.parked();
    assert_eq!(first.key, 0);
    let second = world.join(&first);
    assert_eq!(second.key, 1);
    let effects = world.registry.leave(first.id, first.key);
    assert!(effects.events.is_empty(), "a caller is still waiting");
    let third = world.join(&first);
    assert_eq!(third.key, 0, "the first place is taken again");
    assert!(world.poll(&third).is_pending());
    let effects = world.registry.expire(first.id, world.at(61));
    assert_eq!(effects.wake.len(), 1, "the second caller was never polled");
    for waker in effects.wake {
        waker.wake();
    }
    assert_eq!(third.waker.0.load(Ordering::SeqCst), 1);
    assert_eq!(second.waker.0.load(Ordering::SeqCst), 0);
    assert!(world.poll(&second).is_ready(), "its place is still its own");
}

/// The pending requests of one principal hold one copy of its name between them, and those of
/// one capability one copy of theirs; a name no pending request has is not kept.
#[test]
fn pending_requests_share_the_names_of_principal_and_capability() {
    let mut world = world();
    let (first, first_key, _) = world.admit(request("agent-7", "1")).0.expect("admitted");
    let (second, second_key, _) = world.admit(request("agent-7", "2")).0.expect("admitted");
    assert!(Arc::ptr_eq(&first.principal, &second.principal));
    assert!(Arc::ptr_eq(&first.capability, &second.capability));
    let other = world.admit(request("agent-8", "3")).0.expect("admitted").0;
    assert_eq!(&*other.principal, "agent-8");
    assert!(Arc::ptr_eq(&first.capability, &other.capability));

    for (id, key) in [
        (first.id, first_key),
        (second.id, second_key),
        (other.id, 0),
    ] {
        let effects = world.registry.leave(id, key);
        assert_eq!(events(&effects), ["closed pending→cancelled"]);
    }
    let again = world.admit(request("agent-7", "4")).0.expect("admitted").0;
    assert!(!Arc::ptr_eq(&first.principal, &again.principal));
    assert!(!Arc::ptr_eq(&first.capability, &again.capability));
}

#[test]
fn new_requests_count_against_the_caps_and_the_alert_rate() {
    let mut world = world();
    for args in ["1", "2"] {
        assert!(world.admit(request("agent-7", args)).0.is_ok());
    }
    let (result, _) = world.admit(request("agent-7", "3"));
    assert_eq!(
        kind(result),
        Some(ErrorKind::TooManyPending),
        "per principal"
    );
    assert!(world.admit(request("agent-8", "1")).0.is_ok());
    let (result, _) = world.admit(request("agent-9", "1"));
    assert_eq!(kind(result), Some(ErrorKind::TooManyPending), "in all");

    let mut world = self::world();
    let rate = super::super::rate::AlertRate {
        alerts: 1,
        window: Duration::from_secs(60),
    };
    world.registry = Registry::new(16, Some(RateLimiter::new(rate)));
    assert!(world.admit(request("agent-7", "1")).0.is_ok());
    let (result, effects) = world.admit(request("agent-7", "2"));
    assert_eq!(kind(result), Some(ErrorKind::TooManyAlerts));
    assert!(effects.events.is_empty());
}

#[test]
fn shutdown_parks_nothing_more_and_names_what_is_pending() {
    let mut world = world();
    let parked = world.parked();
    let other = world.parked_other("agent-8");
    let deciding = world.parked_other("agent-9");
    let _ = world.decide(deciding.id, true, 1);
    let mut pending = world.registry.shut_down();
    pending.sort();
    let mut expected = vec![parked.id, other.id];
    expected.sort();
    assert_eq!(pending, expected);
    assert!(
        world.registry.writing(),
        "the decision being stored finishes as usual"
    );
    let (result, _) = world.admit(request("agent-7", "new"));
    assert_eq!(kind(result), Some(ErrorKind::ShutDown));
    let effects = world.registry.close(parked.id, Outcome::Abandoned);
    assert_eq!(events(&effects), ["closed pending→abandoned"]);
    assert_eq!(kind(ready(world.poll(&parked))), Some(ErrorKind::ShutDown));
}

impl World {
    fn parked_other(&mut self, principal: &str) -> Parked {
        let (admitted, _) = self.admit(request(principal, "{}"));
        let (request, key, _) = admitted.expect("admitted");
        let _ = self.registry.stored(request.id, true);
        Parked {
            id: request.id,
            key,
            waker: Arc::default(),
        }
    }
}

#[test]
fn listings_keep_the_order_requests_were_made_in_and_show_only_stored_ones() {
    let mut world = world();
    let mut ids = Vec::new();
    for principal in ["a", "b", "c"] {
        let (admitted, _) = world.admit(request(principal, "{}"));
        ids.push(admitted.expect("admitted").0.id);
    }
    assert!(world.registry.pending().is_empty(), "none is stored yet");
    assert!(world.registry.request(ids[0]).is_none());
    for id in ids.iter().rev() {
        let _ = world.registry.stored(*id, true);
    }
    let listed: Vec<RequestId> = world.registry.pending().iter().map(|r| r.id).collect();
    assert_eq!(listed, ids);
    assert!(world.registry.pending_request(ids[1]).is_some());
}

#[test]
fn decided_requests_are_remembered_up_to_the_history_capacity() {
    let mut world = world();
    world.registry = Registry::new(1, None);
    let first = world.parked_other("a");
    let _ = world.registry.leave(first.id, first.key);
    assert!(matches!(
        world.registry.look(first.id),
        Known::Remembered(_, Status::Cancelled)
    ));
    let second = world.parked_other("b");
    let _ = world.registry.leave(second.id, second.key);
    assert!(matches!(world.registry.look(first.id), Known::Nowhere));
    assert_eq!(world.status(second.id), Some(Status::Cancelled));
}

#[test]
fn wakers_are_woken_once_per_change_and_kept_when_unchanged() {
    let mut world = world();
    let parked = world.parked();
    assert!(world.poll(&parked).is_pending());
    let effects = world.registry.expire(parked.id, world.at(61));
    assert_eq!(effects.wake.len(), 1);
    for waker in effects.wake {
        waker.wake();
    }
    assert_eq!(parked.waker.0.load(Ordering::SeqCst), 1);
    // Not yet at the deadline: nothing happens.
    let mut world = self::world();
    let parked = world.parked();
    assert!(
        world
            .registry
            .expire(parked.id, world.at(59))
            .events
            .is_empty()
    );
    assert_eq!(world.status(parked.id), Some(Status::Pending));
}

/// Another replica's approval of a pending request: the caller here takes it as it would a
/// local one (its take is written here), and nothing is written for the approval itself.
#[test]
fn an_approval_stored_elsewhere_is_taken_here() {
    let mut w = world();
    let parked = w.parked();
    let (ruling, _acked) = ruling(true, &w.request(parked.id), true);
    let effects = w
        .registry
        .remote(parked.id, Remote::Approved(Box::new(ruling)));
    assert!(events(&effects).is_empty(), "the other replica wrote it");
    assert_eq!(effects.wake.len(), 1);
    let (poll, effects) = w.poll_effects(&parked);
    assert!(poll.is_pending());
    assert_eq!(events(&effects), ["taken rule=true"]);
    assert_eq!(w.status(parked.id), Some(Status::Approved));
}

/// Another replica's denial ends the request here without a write; the callers fail with it
/// and the notifiers hear it from here. An abandonment by another replica is told by that one.
#[test]
fn an_ending_stored_elsewhere_closes_the_request_here() {
    for (outcome, told) in [
        (
            Outcome::Denied {
                approver: "bob".into(),
                reason: None,
            },
            true,
        ),
        (Outcome::Abandoned, false),
    ] {
        let mut w = world();
        let parked = w.parked();
        let effects = w
            .registry
            .remote(parked.id, Remote::Closed(outcome.clone()));
        assert!(events(&effects).is_empty());
        assert_eq!(effects.resolved.is_some(), told, "{outcome:?}");
        let Poll::Ready(Err(error)) = w.poll(&parked) else {
            panic!("the caller hears the ending");
        };
        assert_eq!(
            Some(error.kind()),
            outcome.error(parked.id).map(|e| e.kind())
        );
        // Once closed, a late change from elsewhere changes nothing.
        let (ruling, _acked) = ruling(true, &w.request(parked.id), false);
        let late = w
            .registry
            .remote(parked.id, Remote::Approved(Box::new(ruling)));
        assert!(late.wake.is_empty() && late.events.is_empty());
    }
}

/// A decision of this process being written is not overtaken by one from elsewhere: the gate
/// reads the store again once that write fails.
#[test]
fn a_change_from_elsewhere_waits_for_a_local_write() {
    let mut w = world();
    let parked = w.parked();
    let (result, _, _acked) = w.decide(parked.id, true, 1);
    assert!(result.is_ok());
    let effects = w.registry.remote(
        parked.id,
        Remote::Closed(Outcome::Denied {
            approver: "bob".into(),
            reason: None,
        }),
    );
    assert!(effects.wake.is_empty() && effects.resolved.is_none());
    assert_eq!(w.status(parked.id), Some(Status::Pending), "still deciding");
}

/// Callers that joined another replica's request: never stored or announced; they run once that
/// request is taken after a verified approval, end as it ends otherwise, and leave silently.
#[test]
fn callers_following_another_replicas_request() {
    let held = Arc::new(request("agent-7", "{}"));
    let other = held.id;
    // Taken elsewhere, approved: they run.
    let mut w = world();
    let parked = w.following(&held);
    assert_eq!(w.registry.counts().following, 1);
    assert_eq!(
        w.registry.counts().pending,
        0,
        "not a request of this replica"
    );
    assert!(w.registry.pending().is_empty(), "never listed here");
    assert!(w.poll(&parked).is_pending());
    // An `executing` whose verdict did not verify moves nobody.
    let unverified = w.registry.followed(other, Status::Executing, None, false);
    assert!(unverified.wake.is_empty());
    assert!(w.poll(&parked).is_pending());
    let taken = w.registry.followed(other, Status::Executing, None, true);
    assert_eq!(taken.wake.len(), 1);
    assert!(taken.events.is_empty());
    assert!(matches!(w.poll(&parked), Poll::Ready(Ok(()))));
    let finished = w.registry.finish(parked.id, Status::Executed);
    assert!(finished.events.is_empty(), "the owner records how it ended");

    // Denied elsewhere: they fail the same way.
    let mut w = world();
    let parked = w.following(&held);
    let denied = Outcome::Denied {
        approver: "bob".into(),
        reason: None,
    };
    let effects = w
        .registry
        .followed(other, Status::Denied, Some(&denied), false);
    assert!(effects.events.is_empty() && effects.resolved.is_none());
    let Poll::Ready(Err(error)) = w.poll(&parked) else {
        panic!("the follower fails");
    };
    assert_eq!(error.kind(), ErrorKind::AccessRequestDenied);

    // The last follower leaving tells the store, which ends or hands on the request, and
    // tells no notifier.
    let mut w = world();
    let parked = w.following(&held);
    let effects = w.registry.leave(parked.id, parked.key);
    assert_eq!(events(&effects), ["left holding=false"]);
    assert!(effects.resolved.is_none());
    assert_eq!(w.registry.counts().following, 0);
}

/// A request handed to this process (the last caller of the replica holding it left): its
/// approval is taken here once, its callers here run, the first to end records how it ended,
/// and the notifiers hear its ending from here.
#[test]
fn a_request_handed_to_this_replica_is_carried_out_here() {
    let held = Arc::new(request("agent-7", "{}"));
    let other = held.id;
    let approved = Outcome::Approved {
        approver: "alice".into(),
        scope: Scope::Once,
        until: None,
    };
    let mut w = world();
    w.registry = Registry::new(16, None).shared(true);
    let parked = w.following(&held);
    assert!(w.poll(&parked).is_pending());
    // Not held here: an approval is the holder's to take.
    let effects = w.registry.carry(other, approved.clone(), None);
    assert!(effects.events.is_empty());
    assert!(w.registry.handed(other, Instant::now() + TTL).0);
    assert!(
        !w.registry
            .handed(RequestId::random(), Instant::now() + TTL)
            .0,
        "nobody here follows it"
    );
    let effects = w.registry.carry(other, approved.clone(), None);
    assert_eq!(events(&effects), ["carried rule=false"]);
    let again = w.registry.carry(other, approved.clone(), None);
    assert!(again.events.is_empty(), "taken once");
    let taken = w.registry.followed(other, Status::Executing, None, true);
    assert_eq!(taken.wake.len(), 1);
    assert!(matches!(w.poll(&parked), Poll::Ready(Ok(()))));
    let finished = w.registry.finish(parked.id, Status::Executed);
    assert_eq!(events(&finished), ["finished executed"], "recorded here");
    assert!(
        w.registry
            .finish(parked.id, Status::Executed)
            .events
            .is_empty()
    );

    // Held here and denied elsewhere: the notifiers hear it from here.
    let mut w = world();
    w.following(&held);
    assert!(w.registry.handed(other, Instant::now() + TTL).0);
    let denied = Outcome::Denied {
        approver: "bob".into(),
        reason: None,
    };
    let effects = w
        .registry
        .followed(other, Status::Denied, Some(&denied), false);
    assert_eq!(effects.resolved.map(|r| r.outcome), Some(denied));

    // Held here, it expires with its callers here, for everyone.
    let mut w = world();
    let parked = w.following(&held);
    assert!(w.registry.handed(other, Instant::now() + TTL).0);
    let effects = w.registry.close(parked.id, Outcome::Expired);
    assert_eq!(events(&effects), ["closed pending→expired"]);
    let resolved = effects.resolved.expect("the notifiers hear it");
    assert_eq!(
        (resolved.request.id, resolved.outcome),
        (other, Outcome::Expired)
    );
}

/// With a store replicas share, once a request is stored (and so may be decided elsewhere) an
/// identical call does not attach to it here, but makes a request of its own (which joins it
/// through the store); and the last caller leaving a request held here does not end it: the
/// store says whether callers elsewhere keep it; nothing is told or remembered here.
#[test]
fn the_last_caller_here_leaving_a_shared_request_asks_the_store() {
    let mut w = world();
    w.registry = Registry::new(16, None).shared(true);
    let parked = w.parked();
    let (admitted, _) = w.admit(request("agent-7", "{}"));
    let (twin, _, new) = admitted.expect("admitted");
    assert!(
        new && twin.id != parked.id,
        "not attached to a stored request"
    );
    let effects = w.registry.leave(parked.id, parked.key);
    assert_eq!(events(&effects), ["left holding=true"]);
    assert!(
        effects.resolved.is_none(),
        "the store's answer decides what is told"
    );
    assert_eq!(
        w.registry.status(parked.id),
        None,
        "not remembered as cancelled"
    );
    assert_eq!(w.registry.counts().pending, 1, "the twin's request alone");
}

/// Deadlines are kept as ticks from the registry's epoch: instants before it (a paused clock may
/// stand behind it) order and convert back as well as those after it.
#[test]
fn ticks_order_and_convert_back_either_side_of_the_epoch() {
    let start = Instant::now() + Duration::from_secs(3600);
    let epoch = index::Epoch::at(start);
    let instants = [
        start - Duration::from_secs(60),
        start - Duration::from_nanos(1),
        start,
        start + Duration::from_nanos(1),
        start + Duration::from_secs(60),
    ];
    let ticks: Vec<_> = instants.iter().map(|&at| epoch.ticks(at)).collect();
    assert!(ticks.windows(2).all(|pair| pair[0] < pair[1]));
    for (at, ticks) in instants.iter().zip(ticks) {
        assert_eq!(epoch.instant(ticks), *at);
    }
}
