//! The store writer: the write-ahead queue between a gate and its store.
//!
//! Every store operation of a gate goes through one queue, in the order the gate's registry made
//! the changes: a request's insert is written before its expiry, a decision before the transition
//! that follows it. Writes are queued while the registry lock is held, so queue order is registry
//! order. Reads go through the same queue and so see every earlier write.
//!
//! One runner at a time takes jobs off the queue, in order. The runner is whoever queued work
//! when nobody was running: it runs jobs on the spot, after the registry lock is released, for as
//! long as each finishes on its first poll, so the common path takes no hop through another
//! task; a write that the store can apply at once ([`Store::write_now`]: a store in memory) is
//! applied then and there, with no future made for it. A job that has to wait (a database round
//! trip) is handed to the writer's task, which finishes it and then runs the queue until it is
//! empty; from then on the task runs the queue whenever there is work, since the store is one
//! that waits. Writes that queue up while the store is busy go to it together, in one
//! [`Store::write_batch`]: a store on disk commits them with one sync (group commit), and each
//! one's registry step follows in order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};
use std::time::{Duration, Instant, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};

use super::record::{self, Write};
use super::registry::Event;
use super::{Gate, Shared};
use crate::boxed::BoxFuture;
use crate::error::{Error, ErrorKind};
use crate::meters::Timing;
use crate::request::Status;
use crate::store::{Revocation, Store};
use crate::time::to_millis;

/// One unit of work on the store, in queue order.
pub(super) enum Job {
    /// A write, and the registry step that waits for it, kept as data: a store in memory
    /// applies it on the spot ([`Store::write_now`]), and one that waits commits it together
    /// with the writes queued beside it.
    Write(Arc<Shared>, Write),
    /// Any other work (a read, a purge): a future that does nothing until the queue polls it.
    Run(BoxFuture<'static, ()>),
}

impl Job {
    /// The job as one future: the write and the step after it, or the work.
    fn start(self) -> BoxFuture<'static, ()> {
        match self {
            Job::Write(shared, write) => shared.perform(write),
            Job::Run(work) => work,
        }
    }
}

/// What the writer's task is handed.
enum Handed {
    /// A job that did not finish on its first poll: the task finishes it, then runs the queue.
    Started(BoxFuture<'static, ()>),
    /// The queue, from its head.
    Queue,
}

/// What a runner takes off the queue: one job, or writes to commit together.
enum Next {
    One(Job),
    Together(Vec<(Arc<Shared>, Write)>),
}

/// The most writes committed together.
const MOST_TOGETHER: usize = 256;

/// How often the writer deletes expired rules and finished requests, at most.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Jobs between two looks at the clock for the purge.
const PURGE_CHECK: u32 = 64;

pub(super) struct StoreWriter {
    core: Arc<Core>,
}

/// What the writer's task shares with the gate.
struct Core {
    store: Arc<dyn Store>,
    /// Whether the store is shared: its inserts may join another replica's request, and are not
    /// committed together with other writes.
    shared: bool,
    queue: Mutex<Queue>,
    /// Signalled when a job is handed to the task, or the writer is dropped.
    handed: Notify,
    /// Whether the task runs: cleared when it ends with its runtime, so the next drain starts
    /// it again.
    started: AtomicBool,
    /// A job had to wait for the store: the task runs the queue from now on, and writes are
    /// queued as data, so that those queued meanwhile are committed together.
    waits: AtomicBool,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Someone runs the queue: a caller on the spot, or the task. Whoever set it takes every
    /// job until the queue is empty, then clears it.
    running: bool,
    /// Work for the task: a job that did not finish on its first poll, or the queue to run.
    handed: Option<Handed>,
    /// The gate is gone: the task ends once nothing is left.
    closed: bool,
    /// Jobs taken since the clock was last read, and when the store was last purged.
    since_check: u32,
    purged: Instant,
}

impl StoreWriter {
    pub(super) fn new(store: Arc<dyn Store>) -> Self {
        StoreWriter {
            core: Arc::new(Core {
                shared: store.shared(),
                store,
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    running: false,
                    handed: None,
                    closed: false,
                    since_check: 0,
                    purged: Instant::now(),
                }),
                handed: Notify::new(),
                started: AtomicBool::new(false),
                waits: AtomicBool::new(false),
            }),
        }
    }

    /// The store, for a job to use.
    pub(super) fn store(&self) -> Arc<dyn Store> {
        self.core.store.clone()
    }

    pub(super) fn store_ref(&self) -> &dyn Store {
        &*self.core.store
    }

    /// Queues `job` behind every job queued before it. Nothing runs it until [`drain`](Self::drain).
    pub(super) fn push(&self, job: Job) {
        self.core.queue().jobs.push_back(job);
    }

    /// Queues `write` as [`push`](Self::push) does.
    fn push_write(&self, shared: &Arc<Shared>, write: Write) {
        self.push(Job::Write(shared.clone(), write));
    }

    /// Runs the queue on the spot if nobody runs it, inside a Tokio runtime: jobs that finish on
    /// their first poll here, the first that does not in the writer's task, with the rest after
    /// it. Once a job has had to wait, the task runs the queue instead. Outside a runtime jobs
    /// wait for the first drain inside one. Returns whether this call started the writer's task.
    /// Never call it with the registry lock held: jobs take it.
    pub(super) fn drain(&self) -> bool {
        let Ok(runtime) = Handle::try_current() else {
            return false;
        };
        let started = self.start_on(&runtime);
        let core = &self.core;
        let mut runner = Runner {
            core,
            running: false,
        };
        let mut next = core.next(false, false);
        while let Some(Next::One(job)) = next {
            runner.running = true;
            let work = match job {
                Job::Write(shared, write) => shared.write_now(write),
                Job::Run(work) => Some(work),
            };
            let mut cx = Context::from_waker(Waker::noop());
            if let Some(mut work) = work
                && work.as_mut().poll(&mut cx).is_pending()
            {
                // The task polls it again, with a waker of its own, and runs the queue on.
                let mut queue = core.queue();
                queue.handed = Some(Handed::Started(work));
                core.waits.store(true, Ordering::Relaxed);
                drop(queue);
                core.handed.notify_one();
                runner.running = false;
                break;
            }
            next = core.next(true, false);
            runner.running = next.is_some();
        }
        started
    }

    /// Starts the writer's task if it has not started and a runtime is at hand. Returns whether
    /// this call started it.
    pub(super) fn start(&self) -> bool {
        match Handle::try_current() {
            Ok(runtime) => self.start_on(&runtime),
            Err(_) => false,
        }
    }

    fn start_on(&self, runtime: &Handle) -> bool {
        let started = &self.core.started;
        if started.load(Ordering::Acquire) || started.swap(true, Ordering::AcqRel) {
            return false;
        }
        runtime.spawn(serve(Started(self.core.clone())));
        true
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.core.queue().closed = true;
        self.core.handed.notify_one();
    }
}

impl Core {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job, for a runner (`running`) or for a caller that would become one; with
    /// `together`, every write waiting at the head of the queue that can be committed with the
    /// others. A runner that finds the queue empty stops being one. A caller gets nothing if
    /// someone runs the queue, or if the store is one that waits: then the task is handed the
    /// queue to run. Every so often a purge is queued first.
    fn next(&self, running: bool, together: bool) -> Option<Next> {
        let mut queue = self.queue();
        if !running && queue.running {
            return None;
        }
        if !running && self.waits.load(Ordering::Relaxed) {
            if !queue.jobs.is_empty() {
                queue.running = true;
                queue.handed = Some(Handed::Queue);
                drop(queue);
                self.handed.notify_one();
            }
            return None;
        }
        let Some(job) = queue.jobs.pop_front() else {
            if running {
                queue.running = false;
            }
            return None;
        };
        queue.running = true;
        let next = if together {
            self.together(&mut queue, job)
        } else {
            Next::One(job)
        };
        let taken = match &next {
            Next::One(_) => 1,
            Next::Together(writes) => writes.len() as u32,
        };
        queue.since_check += taken;
        if queue.since_check >= PURGE_CHECK {
            queue.since_check = 0;
            if queue.purged.elapsed() >= PURGE_EVERY {
                queue.purged = Instant::now();
                queue.jobs.push_back(Job::Run(purge(self.store.clone())));
            }
        }
        Some(next)
    }

    /// `job` and the writes queued right after it, while each can be committed together.
    fn together(&self, queue: &mut Queue, job: Job) -> Next {
        let batched = |job: &Job| matches!(job, Job::Write(_, write) if write.batched(self.shared));
        if !batched(&job) || !queue.jobs.front().is_some_and(batched) {
            return Next::One(job);
        }
        let mut writes = Vec::new();
        let mut next = Some(job);
        while let Some(Job::Write(shared, write)) = next {
            writes.push((shared, write));
            next = (writes.len() < MOST_TOGETHER && queue.jobs.front().is_some_and(batched))
                .then(|| queue.jobs.pop_front())
                .flatten();
        }
        Next::Together(writes)
    }

    /// Commits `writes` in one batch, then takes each one's registry step, in order.
    async fn write_together(&self, writes: Vec<(Arc<Shared>, Write)>) {
        let batch: Vec<_> = writes
            .iter()
            .filter_map(|write| write.1.to_store())
            .collect();
        let timing = Timing::start();
        let results = self.store.write_batch(&batch).await;
        timing.stop(batch.len(), results.iter().filter(|r| r.is_err()).count());
        drop(batch);
        let mut results = results.into_iter();
        for (shared, write) in writes {
            let result = results.next().unwrap_or_else(|| {
                Err(Error::new(ErrorKind::StoreFailed)
                    .with_detail("the store returned fewer results than it was given writes"))
            });
            if let Some(more) = shared.after(write, result) {
                more.await;
            }
        }
    }
}

/// Who runs the queue, on the spot or in the writer's task. If a runner ends while it still holds
/// that role (a store that panicked, a runtime shutting down with the task), the queue is left
/// for the next caller to run; the job it was running is lost.
struct Runner<'a> {
    core: &'a Core,
    running: bool,
}

impl Drop for Runner<'_> {
    fn drop(&mut self) {
        if self.running {
            self.core.queue().running = false;
        }
    }
}

/// The writer's task, while it runs: however it ends (even dropped unpolled, with a runtime
/// shutting down), the next drain starts a task again.
struct Started(Arc<Core>);

impl Drop for Started {
    fn drop(&mut self) {
        self.0.started.store(false, Ordering::Release);
    }
}

/// The writer's task: finishes each job handed to it, then runs the queue until it is empty.
async fn serve(started: Started) {
    let core = &started.0;
    let mut runner = Runner {
        core,
        running: false,
    };
    loop {
        let handed = {
            let mut queue = core.queue();
            match queue.handed.take() {
                Some(work) => Some(work),
                None if queue.closed && !queue.running => return,
                None => None,
            }
        };
        let Some(work) = handed else {
            core.handed.notified().await;
            continue;
        };
        runner.running = true;
        if let Handed::Started(work) = work {
            work.await;
        }
        while let Some(next) = core.next(true, true) {
            match next {
                Next::One(job) => job.start().await,
                Next::Together(writes) => core.write_together(writes).await,
            }
        }
        runner.running = false;
    }
}

fn purge(store: Arc<dyn Store>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        match store.purge(SystemTime::now()).await {
            Ok(n) => tracing::debug!(rules = n.rules, requests = n.requests, "store purged"),
            Err(error) => tracing::warn!(%error, "store purge failed"),
        }
    })
}

impl Gate {
    /// Runs an operation on the store after every write queued before it: reads see them all.
    pub(super) async fn queued<T, F>(&self, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a dyn Store) -> BoxFuture<'a, Result<T, Error>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let store = self.shared.writer.store();
        self.shared.run(Job::Run(Box::pin(async move {
            let _ = tx.send(op(&*store).await);
        })));
        rx.await.unwrap_or_else(|_| Err(queue_stopped()))
    }
}

/// The store queue's task is gone: its runtime shut down.
pub(super) fn queue_stopped() -> Error {
    Error::new(ErrorKind::StoreFailed)
        .with_detail("the gate's store queue stopped (its Tokio runtime shut down)")
}

impl Shared {
    /// Queues a job on the store and runs the queue.
    pub(super) fn run(self: &Arc<Self>, job: Job) {
        self.writer.push(job);
        self.drain();
    }

    /// Runs the store queue on the spot (see [`StoreWriter::drain`]); the first drain inside a
    /// runtime also starts what runs in the background.
    pub(super) fn drain(self: &Arc<Self>) {
        if self.writer.drain() {
            self.announce_abandoned();
            self.follow();
        }
    }

    /// Queues the write a registry event calls for, under the registry lock; the caller drains
    /// the queue once the lock is released.
    pub(super) fn record(self: &Arc<Self>, event: Event) {
        let write = record::write(event, self.settings.audit_args);
        self.writer.push_write(self, write);
    }

    /// Queues a write and runs the queue.
    pub(super) fn write(self: &Arc<Self>, write: Write) {
        self.writer.push_write(self, write);
        self.drain();
    }

    /// Applies `write` on the spot if the store can ([`Store::write_now`]) and takes its registry
    /// step; returns what is left to run: the write's future if the store has to be awaited,
    /// or a step after it that waits.
    fn write_now(self: Arc<Self>, write: Write) -> Option<BoxFuture<'static, ()>> {
        let store = self.writer.store_ref();
        let timing = Timing::start();
        let result = match write.to_store() {
            Some(one) if write.batched(self.writer.core.shared) => store.write_now(&one),
            _ => None,
        };
        if let Some(result) = &result {
            timing.stop(1, usize::from(result.is_err()));
        }
        match result {
            Some(result) => self.after(write, result),
            None => Some(self.perform(write)),
        }
    }

    /// Writes `write` on its own, then takes the registry step that waits for it. (Each kind
    /// of write gets a future of its own, holding only what it needs.)
    fn perform(self: Arc<Self>, write: Write) -> BoxFuture<'static, ()> {
        match write {
            Write::Insert(request, entry) if self.writer.core.shared => Box::pin(async move {
                let store = self.writer.store_ref();
                let audit = std::slice::from_ref(&entry);
                let timing = Timing::start();
                let filed = self.file_or_join(store, &request, audit).await;
                timing.stop(1, usize::from(filed.is_err()));
                let filed = match filed {
                    Ok(false) => return, // joined another replica's request
                    filed => filed,
                };
                if let Some(more) = self.after(Write::Insert(request, entry), filed) {
                    more.await;
                }
            }),
            Write::Leave(cancel, request, holding) => Box::pin(async move {
                let store = self.writer.store_ref();
                let timing = Timing::start();
                let left = store.leave(&cancel, holding).await;
                timing.stop(1, usize::from(left.is_err()));
                self.left(request, left).await;
            }),
            Write::Withdraw(rule) => Box::pin(async move {
                let which = Revocation::Rule(rule);
                let at = to_millis(SystemTime::now());
                let store = self.writer.store_ref();
                if let Err(error) = store.revoke(&which, "tollgate", at).await {
                    tracing::error!(rule_id = %rule, %error, "rule of an unreceived approval not withdrawn");
                }
            }),
            write => Box::pin(async move {
                let Some(one) = write.to_store() else { return };
                let timing = Timing::start();
                let result = one.apply(self.writer.store_ref()).await;
                timing.stop(1, usize::from(result.is_err()));
                if let Some(more) = self.after(write, result) {
                    more.await;
                }
            }),
        }
    }

    /// The registry step that follows `write` once the store has answered with `result`; what
    /// is left to await, if anything (kept apart so that a write's future stays small).
    fn after(
        self: &Arc<Self>,
        write: Write,
        result: Result<bool, Error>,
    ) -> Option<BoxFuture<'static, ()>> {
        // A request this process moved on in a store replicas share: callers here that joined
        // it through the store hear of it from the store (`Shared::mirrored`).
        let shared = self.writer.core.shared;
        match write {
            Write::Insert(request, _) => {
                if let Err(error) = &result {
                    tracing::error!(request_id = %request.id, %error, "the store could not record an access request; its calls fail");
                }
                let announce = self.locked(|registry| registry.stored(request.id, result.is_ok()));
                if announce {
                    let id = request.id;
                    self.deliver(&Handle::current(), id, self.clone().alert(request));
                }
            }
            Write::Decide(change) => {
                if matches!(result, Ok(false)) && shared {
                    let shared = self.clone();
                    return Some(Box::pin(async move {
                        let store = shared.writer.store_ref();
                        shared.decided_elsewhere(store, change).await
                    }));
                }
                let result = applied(result, "the store no longer holds the request as pending");
                if let Err(error) = &result {
                    tracing::error!(request_id = %change.id, %error, "decision not recorded; the request stays pending");
                }
                let now = tokio::time::Instant::now();
                let stored = result.is_ok();
                self.locked(|registry| ((), registry.decided(change.id, result, now)));
                if shared && stored {
                    return self.mirrored(change.id);
                }
            }
            Write::Take(change) => {
                let result = applied(result, "the store did not record the approval being taken");
                if let Err(error) = &result {
                    tracing::error!(request_id = %change.id, %error, "approved call failed: not recorded");
                }
                let stored = result.is_ok();
                self.locked(|registry| ((), registry.taken(change.id, result)));
                if shared && stored {
                    return self.mirrored(change.id);
                }
            }
            Write::Record(change) => match result {
                Ok(true) if shared => return self.mirrored(change.id),
                Ok(true) => {}
                Ok(false) if shared && change.from == Status::Pending => {
                    // Another replica decided first, after the callers here had ended.
                    let shared = self.clone();
                    return Some(Box::pin(async move {
                        let store = shared.writer.store_ref();
                        shared.closed_elsewhere(store, change).await
                    }));
                }
                Ok(false) => {
                    tracing::warn!(request_id = %change.id, from = %change.from, to = %change.to, "store transition did not apply")
                }
                Err(error) => {
                    tracing::error!(request_id = %change.id, to = %change.to, %error, "store transition failed")
                }
            },
            Write::Carry(take, carried) => {
                let (request, outcome) = *carried;
                return self.carried(take, request, outcome, result);
            }
            Write::Append(entry) => {
                if let Err(error) = result {
                    tracing::error!(request_id = ?entry.request, event = %entry.event, %error, "audit entry not written");
                }
            }
            Write::Withdraw(_) | Write::Leave(..) => {}
        }
        None
    }
}

/// A transition the registry waits on: applied, or the `store_failed` its approver hears.
fn applied(result: Result<bool, Error>, otherwise: &'static str) -> Result<(), Error> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::new(ErrorKind::StoreFailed).with_detail(otherwise)),
        Err(cause) if cause.kind() == ErrorKind::StoreFailed => Err(cause),
        Err(cause) => Err(Error::new(ErrorKind::StoreFailed).with_source(cause)),
    }
}
