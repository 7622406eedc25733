//! The store writer: the write-ahead queue between a gate and its store.
//!
//! Every store operation of a gate goes through one queue, in the order the gate's registry made
//! the changes: a request's insert is written before its expiry, a decision before the transition
//! that follows it. Writes are queued while the registry lock is held, so queue order is registry
//! order. Reads go through the same queue and so see every earlier write.
//!
//! One runner at a time takes jobs off the queue, in order. The runner is whoever queued work
//! when nobody was running: it runs jobs on the spot, after the registry lock is released, for as
//! long as each finishes on its first poll (a store in memory always does), so the common path
//! takes no hop through another task. A job that has to wait (a database round trip) is handed
//! to the writer's task, which finishes it and then runs the queue until it is empty.

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
use crate::store::{Revocation, Store};
use crate::time::to_millis;

/// One unit of work on the store: a future that does nothing until the queue polls it.
pub(super) type Job = BoxFuture<'static, ()>;

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
    queue: Mutex<Queue>,
    /// Signalled when a job is handed to the task, or the writer is dropped.
    handed: Notify,
    /// Whether the task runs: cleared when it ends with its runtime, so the next drain starts
    /// it again.
    started: AtomicBool,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Someone runs the queue: a caller on the spot, or the task. Whoever set it takes every
    /// job until the queue is empty, then clears it.
    running: bool,
    /// A job that did not finish on its first poll, for the task to finish.
    handed: Option<BoxFuture<'static, ()>>,
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
            }),
        }
    }

    /// The store, for a job to use.
    pub(super) fn store(&self) -> Arc<dyn Store> {
        self.core.store.clone()
    }

    /// Queues `job` behind every job queued before it. Nothing runs it until [`drain`](Self::drain).
    pub(super) fn push(&self, job: Job) {
        self.core.queue().jobs.push_back(job);
    }

    /// Runs the queue on the spot if nobody runs it, inside a Tokio runtime: jobs that finish on
    /// their first poll here, the first that does not in the writer's task, with the rest after
    /// it. Outside a runtime jobs wait for the first drain inside one. Returns whether this call
    /// started the writer's task. Never call it with the registry lock held: jobs take it.
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
        let mut next = core.next(false);
        while let Some(mut work) = next {
            runner.running = true;
            let mut cx = Context::from_waker(Waker::noop());
            if work.as_mut().poll(&mut cx).is_pending() {
                // The task polls it again, with a waker of its own, and runs the queue on.
                core.queue().handed = Some(work);
                core.handed.notify_one();
                runner.running = false;
                break;
            }
            next = core.next(true);
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
        runtime.spawn(serve(self.core.clone()));
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

    /// The next job, for a runner (`running`) or for a caller that would become one. A runner
    /// that finds the queue empty stops being one. Every so often a purge is queued first.
    fn next(&self, running: bool) -> Option<Job> {
        let mut queue = self.queue();
        if !running && queue.running {
            return None;
        }
        let Some(job) = queue.jobs.pop_front() else {
            if running {
                queue.running = false;
            }
            return None;
        };
        queue.running = true;
        queue.since_check += 1;
        if queue.since_check >= PURGE_CHECK {
            queue.since_check = 0;
            if queue.purged.elapsed() >= PURGE_EVERY {
                queue.purged = Instant::now();
                queue.jobs.push_back(purge(self.store.clone()));
            }
        }
        Some(job)
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

/// The writer's task: finishes each job handed to it, then runs the queue until it is empty.
async fn serve(core: Arc<Core>) {
    /// However the task ends, the next drain starts a task again.
    struct Started<'a>(&'a Core);
    impl Drop for Started<'_> {
        fn drop(&mut self) {
            self.0.started.store(false, Ordering::Release);
        }
    }
    let _started = Started(&core);
    let mut runner = Runner {
        core: &core,
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
        work.await;
        while let Some(job) = core.next(true) {
            job.await;
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
        self.shared.run(Box::pin(async move {
            let _ = tx.send(op(&*store).await);
        }));
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
    fn run(self: &Arc<Self>, job: Job) {
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
        self.writer
            .push(self.job(record::write(event, self.settings.audit_args)));
    }

    /// Queues a write and runs the queue.
    pub(super) fn write(self: &Arc<Self>, write: Write) {
        self.run(self.job(write));
    }

    /// The job of a write, with the registry step that follows once the store has it.
    fn job(self: &Arc<Self>, write: Write) -> Job {
        let shared = self.clone();
        let store = self.writer.store();
        match write {
            Write::Insert(request, entry) => Box::pin(async move {
                let audit = std::slice::from_ref(&entry);
                let filed = if store.shared() {
                    // Boxed: the common path's future stays small.
                    match Box::pin(shared.file_or_join(&*store, &request, audit)).await {
                        Ok(false) => return,
                        filed => filed.map(drop),
                    }
                } else {
                    store.insert_arc(&request, audit).await
                };
                if let Err(error) = &filed {
                    tracing::error!(request_id = %request.id, %error, "the store could not record an access request; its calls fail");
                }
                let announce = shared.locked(|registry| registry.stored(request.id, filed.is_ok()));
                if announce {
                    shared.deliver(&Handle::current(), shared.clone().alert(request));
                }
            }),
            Write::Decide(change) => Box::pin(async move {
                let stored = store.transition(&change).await;
                if matches!(stored, Ok(false)) && store.shared() {
                    // Boxed: the common path's future stays small.
                    return Box::pin(shared.decided_elsewhere(&*store, change.id)).await;
                }
                let result = applied(stored, "the store no longer holds the request as pending");
                if let Err(error) = &result {
                    tracing::error!(request_id = %change.id, %error, "decision not recorded; the request stays pending");
                }
                let now = tokio::time::Instant::now();
                shared.locked(|registry| ((), registry.decided(change.id, result, now)));
            }),
            Write::Take(change) => Box::pin(async move {
                let result = applied(
                    store.transition(&change).await,
                    "the store did not record the approval being taken",
                );
                if let Err(error) = &result {
                    tracing::error!(request_id = %change.id, %error, "approved call failed: not recorded");
                }
                shared.locked(|registry| ((), registry.taken(change.id, result)));
            }),
            Write::Record(change) => Box::pin(async move {
                match store.transition(&change).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!(request_id = %change.id, from = %change.from, to = %change.to, "store transition did not apply")
                    }
                    Err(error) => {
                        tracing::error!(request_id = %change.id, to = %change.to, %error, "store transition failed")
                    }
                }
            }),
            Write::Withdraw(rule) => Box::pin(async move {
                let which = Revocation::Rule(rule);
                let at = to_millis(SystemTime::now());
                if let Err(error) = store.revoke(&which, "tollgate", at).await {
                    tracing::error!(rule_id = %rule, %error, "rule of an unreceived approval not withdrawn");
                }
            }),
            Write::Append(entry) => Box::pin(async move {
                if let Err(error) = store.append(std::slice::from_ref(&entry)).await {
                    tracing::error!(event = %entry.event, %error, "audit entry not written");
                }
            }),
        }
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
