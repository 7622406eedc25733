//! Every schedule of a few actors racing on one request, explored exhaustively: an approver and
//! a denier (each deciding, then hearing its store write end), two callers (one polling, one
//! polling then leaving), the store finishing a caller's take, and the expiry timer.
//!
//! The registry is a synchronous state machine that the gate only touches under one lock, so
//! every operation is atomic and a schedule is an order of operations: this explorer runs each
//! order of the actors' steps from a fresh registry (a schedule explorer such as loom would
//! find no other interleavings of these calls, and has no atomics of ours to reorder). After
//! each schedule, the parts still under way finish and every caller still there polls once
//! more; then there must be one winner, no approval without a caller that received it, every
//! waiter woken for the change that ended its wait, every decider answered, and no slot left.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    /// The approver (`true`) or the denier decides.
    Decide(bool),
    /// The store has that decider's decision.
    Stored(bool),
    /// Caller `i` polls its request.
    Poll(usize),
    /// Caller `i` goes away.
    Leave(usize),
    /// The store has a caller's take of an approval.
    Took,
    /// The request's timer fires, after its deadline.
    Expire,
}

/// The actors' steps, each actor's in its own order.
type Actors = Vec<Vec<Step>>;

/// Every interleaving of the actors' steps, each actor's steps kept in order.
fn schedules(actors: &Actors) -> Vec<Vec<Step>> {
    fn go(actors: &Actors, at: &mut Vec<usize>, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        let mut any = false;
        for a in 0..actors.len() {
            if let Some(&step) = actors[a].get(at[a]) {
                any = true;
                at[a] += 1;
                prefix.push(step);
                go(actors, at, prefix, out);
                prefix.pop();
                at[a] -= 1;
            }
        }
        if !any {
            out.push(prefix.clone());
        }
    }
    let mut out = Vec::new();
    go(
        actors,
        &mut vec![0; actors.len()],
        &mut Vec::new(),
        &mut out,
    );
    out
}

/// A decider's decision: whether the registry took it, and where the decider hears how it ended.
type Decision = (bool, oneshot::Receiver<Result<(), Error>>);

/// One run: the world, the two callers, and what each party heard.
struct Run {
    world: World,
    callers: [Parked; 2],
    /// A caller's answer, once it has one.
    heard: [Option<Result<(), ErrorKind>>; 2],
    left: [bool; 2],
    /// The waker's count at each caller's last `Pending`.
    seen: [usize; 2],
    /// Per decider (approver, denier), once it has decided.
    decisions: [Option<Decision>; 2],
}

fn apply(effects: Effects) {
    for waker in effects.wake {
        waker.wake();
    }
    if let Some((ack, result)) = effects.ack {
        let _ = ack.send(result);
    }
}

impl Run {
    fn new() -> Run {
        let mut world = world();
        let first = world.parked();
        let second = world.join(&first);
        assert!(world.poll(&second).is_pending());
        Run {
            world,
            callers: [first, second],
            heard: [None, None],
            left: [false, false],
            seen: [0, 0],
            decisions: [None, None],
        }
    }

    fn id(&self) -> RequestId {
        self.callers[0].id
    }

    fn poll(&mut self, i: usize) {
        if self.heard[i].is_some() || self.left[i] {
            return;
        }
        let (poll, effects) = self.world.poll_effects(&self.callers[i]);
        apply(effects);
        match poll {
            Poll::Ready(result) => self.heard[i] = Some(result.map_err(|e| e.kind())),
            Poll::Pending => self.seen[i] = self.callers[i].waker.0.load(Ordering::SeqCst),
        }
    }

    fn step(&mut self, step: Step) {
        let id = self.id();
        match step {
            Step::Decide(approve) => {
                let (result, effects, acked) = self.world.decide(id, approve, 1);
                apply(effects);
                self.decisions[usize::from(!approve)] = Some((result.is_ok(), acked));
            }
            Step::Stored(approve) => {
                if let Some((true, _)) = self.decisions[usize::from(!approve)] {
                    let at = self.world.at(1);
                    apply(self.world.registry.decided(id, Ok(()), at));
                }
            }
            Step::Poll(i) => self.poll(i),
            Step::Leave(i) => {
                if self.heard[i].is_none() && !self.left[i] {
                    self.left[i] = true;
                    apply(self.world.registry.leave(id, self.callers[i].key));
                }
            }
            Step::Took => apply(self.world.registry.taken(id, Ok(()))),
            Step::Expire => {
                let at = self.world.at(61);
                apply(self.world.registry.expire(id, at));
            }
        }
    }

    /// Lets what is under way finish, checks the invariants, and says what went wrong if not.
    fn finish_and_check(mut self, schedule: &[Step]) {
        let id = self.id();
        let context = format!("schedule {schedule:?}");
        // Every waiter still there was woken if its wait is over: a poll now changes nothing
        // for a caller that was not woken since it last heard `Pending`.
        for i in 0..2 {
            if self.heard[i].is_none() && !self.left[i] {
                let woken = self.callers[i].waker.0.load(Ordering::SeqCst) > self.seen[i];
                let before = self.world.status(id);
                let (poll, effects) = self.world.poll_effects(&self.callers[i]);
                let moved = poll.is_ready() || !effects.events.is_empty();
                assert!(
                    woken || !moved,
                    "caller {i} was not woken for {before:?}: {context}"
                );
                apply(effects);
                if let Poll::Ready(result) = poll {
                    self.heard[i] = Some(result.map_err(|e| e.kind()));
                } else {
                    self.seen[i] = self.callers[i].waker.0.load(Ordering::SeqCst);
                }
            }
        }
        // The store finishes a take under way; the callers it wakes resume.
        apply(self.world.registry.taken(id, Ok(())));
        for i in 0..2 {
            self.poll(i);
        }
        let ran = self.heard.iter().filter(|h| **h == Some(Ok(()))).count();
        if ran > 0 {
            apply(self.world.registry.finish(id, Status::Executed));
        }

        // Every caller still there heard an answer.
        for i in 0..2 {
            assert!(
                self.left[i] || self.heard[i].is_some(),
                "caller {i} waits forever: {context}"
            );
        }
        // Every decider whose decision was taken heard how it ended; one won at most.
        let mut won = [false, false];
        for (d, decision) in self.decisions.iter_mut().enumerate() {
            if let Some((true, acked)) = decision {
                let heard = acked
                    .try_recv()
                    .unwrap_or_else(|_| panic!("decider {d} never heard: {context}"));
                won[d] = heard.is_ok();
            }
        }
        assert!(!(won[0] && won[1]), "two winners: {context}");
        // An approval is reported exactly when a caller received it, and then nothing else ran.
        assert_eq!(
            won[0],
            ran > 0,
            "approval reported {} but {ran} ran: {context}",
            won[0]
        );
        if won[1] {
            for heard in self.heard.iter().flatten() {
                assert_eq!(*heard, Err(ErrorKind::AccessRequestDenied), "{context}");
            }
        }
        let status = self.world.status(id).expect("remembered");
        assert!(
            !matches!(
                status,
                Status::Pending | Status::Approved | Status::Executing
            ),
            "{status:?} at the end: {context}"
        );
        // Every slot freed: nothing live, nothing parked, nothing pending.
        let registry = &self.world.registry;
        assert_eq!(registry.live.values().count(), 0, "a slot left: {context}");
        assert_eq!((registry.index.total, registry.parked), (0, 0), "{context}");
    }
}

fn explore(actors: Actors) -> usize {
    let all = schedules(&actors);
    for schedule in &all {
        let mut run = Run::new();
        for &step in schedule {
            run.step(step);
        }
        run.finish_and_check(schedule);
    }
    all.len()
}

#[test]
fn an_approval_racing_callers_a_take_and_the_timer() {
    let explored = explore(vec![
        vec![Step::Decide(true), Step::Stored(true)],
        vec![Step::Poll(0), Step::Poll(0)],
        vec![Step::Poll(1), Step::Leave(1)],
        vec![Step::Took],
        vec![Step::Expire],
    ]);
    assert_eq!(explored, 5_040);
}

#[test]
fn an_approval_and_a_denial_racing_callers_and_a_take() {
    let explored = explore(vec![
        vec![Step::Decide(true), Step::Stored(true)],
        vec![Step::Decide(false), Step::Stored(false)],
        vec![Step::Poll(0), Step::Poll(0)],
        vec![Step::Poll(1), Step::Leave(1)],
        vec![Step::Took],
    ]);
    assert_eq!(explored, 22_680);
}

#[test]
fn every_caller_leaving_while_decisions_and_the_timer_race() {
    let explored = explore(vec![
        vec![Step::Decide(true), Step::Stored(true)],
        vec![Step::Decide(false), Step::Stored(false)],
        vec![Step::Leave(0)],
        vec![Step::Poll(1), Step::Leave(1)],
        vec![Step::Took],
        vec![Step::Expire],
    ]);
    assert_eq!(explored, 45_360);
}
