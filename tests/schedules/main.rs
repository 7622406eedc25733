//! Every schedule of the gate's asynchronous parts, explored through its public API: callers
//! parked through the layer (who may leave), an approver waiting for a caller to take its
//! approval (who may leave too), a denier, a store that finishes each write only when the
//! schedule says so, and the expiry timer.
//!
//! The actors are futures this test polls by hand, each with a waker of its own, on a
//! current-thread runtime with time paused. A schedule is a sequence of actions: poll an actor
//! its waker woke (or one not yet polled), let an actor go (drop its future), let the store
//! finish one write, or let the request's time run out. The gate's own tasks (the store queue,
//! the expiry timer, alert deliveries) run until they wait after every action, so the
//! explored nondeterminism is the order in which callers, deciders, the store and the clock
//! move. A depth-first search replays each schedule from a fresh gate and tries every enabled
//! action at every point, as loom does for threads; shuttle and loom cannot drive Tokio's
//! timer and tasks, and the gate's futures are Tokio futures, so the search is written here.
//!
//! When no action is enabled, every actor still there is polled once more (a future that is
//! ready then was never told: a lost wake-up), the rest of the request's time passes, and the
//! store is opened. Then every actor must have its answer, one decision at most won, an
//! approval was reported only if a caller ran it, a call ran only with an approval reported (or
//! an approver gone before hearing), the statuses, the answers and the audit trail agree, and
//! the gate holds nothing.

#[path = "../support/mod.rs"]
mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::sync::Semaphore;
use tollgate::notify::RecordingNotifier;
use tollgate::policy::CapabilityTable;
use tollgate::store::{
    AuditEntry, AuditEvent, AuditFilter, BoxFuture, MemoryStore, Store, Transition,
};
use tollgate::{
    AccessRequest, Approve, Deny, Error, Gate, RequestId, RequireApproval, Scope, Status,
};
use tower::{Layer, ServiceExt};

use support::{SECRET, TTL, Tools, policy, refund};

/// What an actor heard: `Ok` for a call that ran or a decision that won, else the error's code
/// and the request it names.
type Answer = Result<(), (&'static str, Option<RequestId>)>;

fn answer<T>(result: Result<T, &Error>) -> Answer {
    result.map(drop).map_err(|e| (e.code(), e.request_id()))
}

type Actor = Pin<Box<dyn Future<Output = Answer>>>;

/// A waker that counts how often it was woken.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Caller,
    Approver,
    Denier,
}

/// Who takes part in a schedule, and whether each may leave.
#[derive(Clone, Copy, Debug)]
struct Cast {
    role: Role,
    may_leave: bool,
}

const fn stays(role: Role) -> Cast {
    Cast {
        role,
        may_leave: false,
    }
}

const fn leaves(role: Role) -> Cast {
    Cast {
        role,
        may_leave: true,
    }
}

/// How the store writes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Writes {
    /// In memory, on the spot: a write never waits.
    OnTheSpot,
    /// Each write waits until the schedule lets the store finish it.
    Held,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Poll(usize),
    Leave(usize),
    /// The store finishes the write it is on.
    Store,
    /// The request's time runs out.
    Expire,
}

/// One actor's part in a run.
struct Part {
    cast: Cast,
    future: Option<Actor>,
    count: Arc<Count>,
    waker: Waker,
    /// The wakes counted when it last returned `Pending`; `None` before its first poll.
    seen: Option<usize>,
    answer: Option<Answer>,
    left: bool,
}

impl Part {
    fn new(cast: Cast) -> Part {
        let count = Arc::new(Count::default());
        Part {
            cast,
            future: None,
            waker: Waker::from(count.clone()),
            count,
            seen: None,
            answer: None,
            left: false,
        }
    }

    fn done(&self) -> bool {
        self.answer.is_some() || self.left
    }

    fn woken(&self) -> bool {
        self.seen
            .is_none_or(|seen| self.count.0.load(Ordering::SeqCst) > seen)
    }

    /// Polls the actor once; whether it answered.
    fn poll(&mut self) -> bool {
        let future = self.future.as_mut().expect("made before its first poll");
        let seen = self.count.0.load(Ordering::SeqCst);
        match future.as_mut().poll(&mut Context::from_waker(&self.waker)) {
            Poll::Ready(answer) => {
                self.answer = Some(answer);
                self.future = None;
                true
            }
            Poll::Pending => {
                self.seen = Some(seen);
                false
            }
        }
    }
}

/// A store in memory whose writes each wait for a permit the schedule hands out.
#[derive(Debug)]
struct HeldStore {
    inner: MemoryStore,
    permits: Arc<Semaphore>,
    /// Writes waiting for a permit.
    waiting: Arc<AtomicUsize>,
}

impl HeldStore {
    async fn hold(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.permits.acquire().await.expect("never closed").forget();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Store for HeldStore {
    fn insert<'a>(
        &'a self,
        request: &'a AccessRequest,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.hold().await;
            self.inner.insert(request, audit).await
        })
    }
    fn transition<'a>(&'a self, change: &'a Transition) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            self.hold().await;
            self.inner.transition(change).await
        })
    }
    fn append<'a>(&'a self, audit: &'a [AuditEntry]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.hold().await;
            self.inner.append(audit).await
        })
    }
    store_reads!();
}

/// Rounds of yielding that let the gate's tasks run until they wait.
const SETTLE: usize = 4;

async fn settle() {
    for _ in 0..SETTLE {
        tokio::task::yield_now().await;
    }
}

/// One run of a schedule: a fresh gate and the actors.
struct World {
    gate: Gate,
    svc: RequireApproval<Tools, CapabilityTable>,
    tools: Tools,
    parts: Vec<Part>,
    /// The held store's permits and waiting writes.
    held: Option<(Arc<Semaphore>, Arc<AtomicUsize>)>,
    expiry: bool,
    expired: bool,
    /// The request and its code, once a caller has made it.
    request: Option<(RequestId, String)>,
}

impl World {
    fn new(cast: &[Cast], writes: Writes, expiry: bool) -> World {
        let builder = Gate::builder()
            .secret(SECRET)
            .request_ttl(TTL)
            .notifier(RecordingNotifier::new());
        let (builder, held) = match writes {
            Writes::OnTheSpot => (builder.store(MemoryStore::new()), None),
            Writes::Held => {
                let permits = Arc::new(Semaphore::new(0));
                let waiting = Arc::new(AtomicUsize::new(0));
                let store = HeldStore {
                    inner: MemoryStore::new(),
                    permits: permits.clone(),
                    waiting: waiting.clone(),
                };
                (builder.store(store), Some((permits, waiting)))
            }
        };
        let gate = builder.build().expect("a valid gate");
        let tools = Tools::default();
        let svc = gate.layer(policy(Scope::Value)).layer(tools.clone());
        World {
            gate,
            svc,
            tools,
            parts: cast.iter().copied().map(Part::new).collect(),
            held,
            expiry,
            expired: false,
            request: None,
        }
    }

    /// Learns the request and its code once it is pending.
    fn look(&mut self) {
        if self.request.is_none()
            && let Some(request) = self.gate.pending().first()
            && let Some(code) = self.gate.verification_code(request.id())
        {
            self.request = Some((request.id(), code.reveal().to_owned()));
        }
    }

    fn enabled(&self) -> Vec<Action> {
        let mut enabled = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            if part.done() {
                continue;
            }
            let can_start = part.cast.role == Role::Caller || self.request.is_some();
            if part.woken() && (part.seen.is_some() || can_start) {
                enabled.push(Action::Poll(i));
            }
            if part.cast.may_leave && part.seen.is_some() {
                enabled.push(Action::Leave(i));
            }
        }
        if let Some((_, waiting)) = &self.held
            && waiting.load(Ordering::SeqCst) > 0
        {
            enabled.push(Action::Store);
        }
        if self.expiry && !self.expired && self.request.is_some() {
            enabled.push(Action::Expire);
        }
        enabled
    }

    /// The future of actor `i`, made at its first poll.
    fn start(&self, i: usize) -> Actor {
        match self.parts[i].cast.role {
            Role::Caller => {
                let call = self.svc.clone().oneshot(refund(500));
                Box::pin(async move {
                    match call.await {
                        Ok(_) => Ok(()),
                        Err(e) => answer::<()>(Err(e.downcast_ref().expect("the gate's error"))),
                    }
                })
            }
            role => {
                let (id, code) = self.request.clone().expect("enabled once known");
                let gate = self.gate.clone();
                Box::pin(async move {
                    if role == Role::Approver {
                        let approve = Approve::new(id, code).scope(Scope::Once).by("alice");
                        answer(gate.approve(approve).await.as_ref())
                    } else {
                        answer(gate.deny(Deny::new(id, code).by("bob")).await.as_ref())
                    }
                })
            }
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Poll(i) => {
                if self.parts[i].future.is_none() {
                    self.parts[i].future = Some(self.start(i));
                }
                self.parts[i].poll();
            }
            Action::Leave(i) => {
                self.parts[i].future = None;
                self.parts[i].left = true;
            }
            Action::Store => {
                let (permits, _) = self.held.as_ref().expect("a held store");
                permits.add_permits(1);
            }
            Action::Expire => {
                self.expired = true;
                tokio::time::advance(TTL + Duration::from_secs(1)).await;
            }
        }
        settle().await;
        self.look();
    }

    /// Lets what is under way finish, then checks the invariants.
    async fn finish_and_check(mut self, schedule: &[Action]) {
        let context = format!("schedule {schedule:?}");
        // No actor is woken now, so a poll must change nothing: one that answers was never told.
        for (i, part) in self.parts.iter_mut().enumerate() {
            if part.future.is_some() && !part.done() {
                assert!(!part.poll(), "actor {i} was never woken: {context}");
            }
        }
        // The rest of the time passes and the store takes every write; everyone still there
        // is polled whenever woken.
        if let Some((permits, _)) = &self.held {
            permits.add_permits(Semaphore::MAX_PERMITS / 2);
        }
        tokio::time::advance(TTL * 2).await;
        loop {
            settle().await;
            let woken: Vec<usize> = (0..self.parts.len())
                .filter(|&i| {
                    let part = &self.parts[i];
                    part.future.is_some() && !part.done() && part.woken()
                })
                .collect();
            if woken.is_empty() {
                break;
            }
            for i in woken {
                self.parts[i].poll();
            }
        }
        for (i, part) in self.parts.iter().enumerate() {
            // A decider that never started had no request to decide: every caller left first.
            let absent = part.seen.is_none() && part.cast.role != Role::Caller;
            assert!(part.done() || absent, "actor {i} waits forever: {context}");
        }
        self.check(&context).await;
    }

    async fn check(&self, context: &str) {
        let answers = |role: Role| {
            self.parts
                .iter()
                .filter(move |p| p.cast.role == role)
                .filter_map(|p| p.answer)
        };
        let won = |role: Role| answers(role).any(|a| a.is_ok());
        let approver_left = self
            .parts
            .iter()
            .any(|p| p.cast.role == Role::Approver && p.left);
        let ran = answers(Role::Caller).filter(|a| a.is_ok()).count();

        assert!(
            !(won(Role::Approver) && won(Role::Denier)),
            "two winners: {context}"
        );
        assert_eq!(self.tools.total(), ran, "runs and callers told: {context}");
        let stats = self.gate.stats();
        assert_eq!(
            (stats.pending, stats.parked, stats.live),
            (0, 0, 0),
            "the gate still holds something: {context}"
        );

        // Every request the trail knows ended once, and its callers heard how.
        let trail = self
            .gate
            .audit(AuditFilter::new())
            .await
            .expect("the audit trail");
        let mut requests: Vec<RequestId> = Vec::new();
        for id in trail.iter().filter_map(|e| e.request) {
            if !requests.contains(&id) {
                requests.push(id);
            }
        }
        let mut executed = 0;
        for &id in &requests {
            let entries: Vec<&AuditEntry> =
                trail.iter().filter(|e| e.request == Some(id)).collect();
            let count = |event: AuditEvent| entries.iter().filter(|e| e.event == event).count();
            let ended: usize = [
                AuditEvent::Denied,
                AuditEvent::Expired,
                AuditEvent::Cancelled,
                AuditEvent::Executed,
                AuditEvent::Failed,
            ]
            .map(count)
            .iter()
            .sum();
            assert_eq!(ended, 1, "one ending for {id} in {entries:?}: {context}");
            assert!(count(AuditEvent::Approved) <= 1, "{context}");
            for entry in &entries {
                if matches!(entry.event, AuditEvent::Approved | AuditEvent::Denied) {
                    assert!(
                        entry.approver.is_some(),
                        "a decision without its approver: {context}"
                    );
                }
            }
            let status = self.gate.status(id).expect("remembered");
            let told = match status {
                Status::Executed => None,
                Status::Denied => Some("access_request_denied"),
                Status::Expired => Some("access_request_expired"),
                Status::Cancelled => Some("access_request_cancelled"),
                other => panic!("{id} is {other:?} at the end: {context}"),
            };
            // A take is written before the call runs; a caller may still leave in between.
            let taken = count(AuditEvent::Executing);
            assert!(
                taken <= count(AuditEvent::Approved)
                    && taken >= usize::from(status == Status::Executed),
                "the take of {id} ({status:?}) in {entries:?}: {context}"
            );
            executed += usize::from(status == Status::Executed);
            for (code, _) in answers(Role::Caller)
                .filter_map(Result::err)
                .filter(|e| e.1 == Some(id))
            {
                assert_eq!(Some(code), told, "a caller of {id}, {status:?}: {context}");
            }
        }
        for (code, id) in answers(Role::Caller).filter_map(Result::err) {
            assert!(
                id.is_some_and(|id| requests.contains(&id)),
                "a caller told {code} of a request not in the trail: {context}"
            );
        }

        // Only the deciders decide, and only the first request: an approval is reported
        // exactly when its callers ran, and nothing runs without it.
        assert!(
            ran >= executed && (ran > 0) == (executed > 0),
            "{ran} ran, {executed} executed: {context}"
        );
        assert!(executed <= 1, "{context}");
        if let Some((first, _)) = &self.request {
            let status = self.gate.status(*first).expect("remembered");
            // The approver hears of success when a caller receives the approval, and that caller
            // runs in the same poll.
            if won(Role::Approver) {
                assert_eq!(
                    status,
                    Status::Executed,
                    "an approval reported that no caller ran: {context}"
                );
            }
            if won(Role::Denier) {
                assert_eq!(status, Status::Denied, "{context}");
            }
            if status == Status::Executed {
                assert!(
                    won(Role::Approver) || approver_left,
                    "a call ran without a reported approval: {context}"
                );
            }
        }
    }
}

/// A depth-first search over schedules: each run replays the choices made so far, then takes
/// the first enabled action wherever it goes further than before.
#[derive(Default)]
struct Search {
    /// Per step of the current run: the choice taken and how many there were.
    path: Vec<(usize, usize)>,
    depth: usize,
}

impl Search {
    fn choose(&mut self, options: usize) -> usize {
        let step = self.depth;
        self.depth += 1;
        match self.path.get(step) {
            Some(&(chosen, seen)) => {
                assert_eq!(
                    seen, options,
                    "a replay saw other choices: not deterministic"
                );
                chosen
            }
            None => {
                self.path.push((0, options));
                0
            }
        }
    }

    /// Moves to the next schedule; `false` once every one has run.
    fn advance(&mut self) -> bool {
        self.depth = 0;
        while let Some((chosen, options)) = self.path.pop() {
            if chosen + 1 < options {
                self.path.push((chosen + 1, options));
                return true;
            }
        }
        false
    }
}

/// Runs every schedule of `cast`; how many there were.
fn explore(cast: &[Cast], writes: Writes, expiry: bool) -> usize {
    let mut search = Search::default();
    let mut schedules = 0;
    loop {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let mut world = World::new(cast, writes, expiry);
            let mut schedule = Vec::new();
            loop {
                let enabled = world.enabled();
                if enabled.is_empty() {
                    break;
                }
                let action = enabled[search.choose(enabled.len())];
                schedule.push(action);
                world.act(action).await;
            }
            world.finish_and_check(&schedule).await;
        });
        schedules += 1;
        if !search.advance() {
            return schedules;
        }
    }
}

// The two explorations with a store that makes writes wait run hundreds of thousands of
// schedules: seconds when optimised, many minutes in a debug build. `scripts/test` runs them
// with `--release`.

#[test]
#[cfg_attr(debug_assertions, ignore = "exhaustive: run with --release")]
fn an_approval_and_a_denial_race_two_callers_and_a_slow_store() {
    let schedules = explore(
        &[
            stays(Role::Caller),
            leaves(Role::Caller),
            stays(Role::Approver),
            stays(Role::Denier),
        ],
        Writes::Held,
        false,
    );
    assert!(schedules > 20_000, "only {schedules} schedules");
}

#[test]
#[cfg_attr(debug_assertions, ignore = "exhaustive: run with --release")]
fn an_approver_and_callers_leave_while_the_time_runs_out() {
    let schedules = explore(
        &[
            leaves(Role::Caller),
            leaves(Role::Caller),
            leaves(Role::Approver),
        ],
        Writes::Held,
        true,
    );
    assert!(schedules > 400_000, "only {schedules} schedules");
}

#[test]
fn writes_on_the_spot_race_an_approval_a_denial_and_the_timer() {
    let schedules = explore(
        &[
            stays(Role::Caller),
            leaves(Role::Caller),
            stays(Role::Approver),
            stays(Role::Denier),
        ],
        Writes::OnTheSpot,
        true,
    );
    assert!(schedules > 1_000, "only {schedules} schedules");
}
