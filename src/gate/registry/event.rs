//! What the registry says happened: the [`Event`]s the gate records, the [`Effects`] it carries
//! out once the lock is released, and the [`Ruling`] a decision hands in.

use std::sync::Arc;
use std::task::Waker;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::call::Edit;
use crate::error::Error;
use crate::id::RuleId;
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::Rule;
use crate::scope::Scope;

/// Tells an approver how their decision ended: `Ok` once it is stored and, for an approval, a
/// waiting caller has it.
pub(crate) type Ack = oneshot::Sender<Result<(), Error>>;

/// A person's verified decision on its way to the callers: its outcome (approved or denied), the
/// scope asked for, the rule it files with that rule's deadline, and the approver waiting to hear
/// how it ended. Built, with its rule, before the registry lock is taken.
pub(crate) struct Ruling {
    pub(crate) outcome: Outcome,
    pub(crate) scope: Scope,
    pub(crate) rule: Option<(Rule, Instant)>,
    pub(crate) ack: Ack,
    /// With a store replicas share, an approval's sealed verdict, stored with it: the proof that
    /// a person approved, for replicas whose callers joined the request.
    pub(crate) verdict: Option<Arc<str>>,
    /// The approver's edit of the arguments, checked against the policy: what the callers run.
    pub(crate) edit: Option<Arc<Edit>>,
}

impl Ruling {
    pub(crate) fn approves(&self) -> bool {
        matches!(self.outcome, Outcome::Approved { .. })
    }
}

/// What happened, in the order it happened. The gate writes each to the store, with its audit
/// entries, before the registry lock is released. Rules are boxed: most decisions make none, and
/// every event moves through a vector.
#[derive(Debug)]
pub(crate) enum Event {
    /// A new request: once stored ([`Registry::stored`]), it may be announced.
    Requested(Arc<AccessRequest>),
    /// A wrong code was entered for a pending request: the `attempt`th of at most `of`.
    CodeRejected {
        request: Arc<AccessRequest>,
        attempt: u32,
        of: u32,
        by: Arc<str>,
    },
    /// A verified decision: once stored ([`Registry::decided`]), it takes effect. `rule` is a
    /// denial's remembered rule, filed at once; an approval's is filed when it is taken.
    Decided {
        request: Arc<AccessRequest>,
        outcome: Outcome,
        scope: Scope,
        rule: Option<Box<Rule>>,
        /// Boxed, since most decisions carry neither: every event moves through a vector.
        carried: Option<Box<Carried>>,
    },
    /// A caller took an approval: once stored ([`Registry::taken`]), the callers run.
    Taken {
        request: Arc<AccessRequest>,
        rule: Option<Box<Rule>>,
    },
    /// The request ended `outcome`, from `from`.
    Closed {
        request: Arc<AccessRequest>,
        from: Status,
        outcome: Outcome,
    },
    /// The last caller here left a pending request, with a store replicas share: the store
    /// ends it, or it lives on for callers on other replicas. `holding`: the callers of the
    /// request this process filed, rather than callers that joined it through the store.
    Left {
        request: Arc<AccessRequest>,
        holding: bool,
    },
    /// An approval of a request handed to this process, taken for the callers here that joined
    /// it: once stored, they run.
    Carried {
        request: Arc<AccessRequest>,
        outcome: Outcome,
        rule: Option<Box<Rule>>,
    },
    /// An approved call ended.
    Finished {
        request: Arc<AccessRequest>,
        status: Status,
    },
    /// The rule of an approval nobody received, to revoke again.
    Withdrawn(RuleId),
}

/// What only some approvals carry into the store: with a store replicas share, the sealed
/// verdict; with an edit, the edit, audited beside the original arguments.
#[derive(Debug)]
pub(crate) struct Carried {
    pub(crate) verdict: Option<Arc<str>>,
    pub(crate) edit: Option<Arc<Edit>>,
}

impl Carried {
    /// What `ruling` carries, if anything.
    pub(crate) fn by(ruling: &Ruling) -> Option<Box<Carried>> {
        (ruling.verdict.is_some() || ruling.edit.is_some()).then(|| {
            Box::new(Carried {
                verdict: ruling.verdict.clone(),
                edit: ruling.edit.clone(),
            })
        })
    }
}

/// What a transition calls for once the lock is released; its `events` are recorded before.
#[derive(Default)]
#[must_use]
pub(crate) struct Effects {
    pub(crate) events: Few<Event>,
    pub(crate) wake: Few<Waker>,
    /// A rule to file, with its deadline.
    pub(crate) rule: Option<(Rule, Instant)>,
    pub(crate) ack: Option<(Ack, Result<(), Error>)>,
    pub(crate) resolved: Option<Resolved>,
    /// A new request's deadline is the earliest: the expiry task looks again.
    pub(crate) alarm: bool,
}

impl Effects {
    /// Adds `other`'s work after this one's.
    pub(crate) fn merge(&mut self, other: Effects) {
        self.events.extend(other.events);
        self.wake.extend(other.wake);
        self.rule = other.rule.or(self.rule.take());
        self.ack = other.ack.or(self.ack.take());
        self.resolved = other.resolved.or(self.resolved.take());
        self.alarm |= other.alarm;
    }
}

/// A list that holds its first item in place: most transitions make one event and wake one
/// caller, and then allocate nothing.
#[derive(Default)]
pub(crate) enum Few<T> {
    #[default]
    None,
    One(T),
    Many(Vec<T>),
}

impl<T> Few<T> {
    pub(crate) fn push(&mut self, item: T) {
        *self = match std::mem::take(self) {
            Few::None => Few::One(item),
            Few::One(first) => Few::Many(vec![first, item]),
            Few::Many(mut items) => {
                items.push(item);
                Few::Many(items)
            }
        };
    }

    pub(crate) fn extend(&mut self, items: impl IntoIterator<Item = T>) {
        for item in items {
            self.push(item);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Few::None => 0,
            Few::One(_) => 1,
            Few::Many(items) => items.len(),
        }
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        match self {
            Few::None => [].iter(),
            Few::One(item) => std::slice::from_ref(item).iter(),
            Few::Many(items) => items.iter(),
        }
    }

    /// Takes every item out, in order.
    pub(crate) fn take(&mut self) -> Few<T> {
        std::mem::take(self)
    }
}

impl<T> IntoIterator for Few<T> {
    type Item = T;
    type IntoIter = std::iter::Chain<std::option::IntoIter<T>, std::vec::IntoIter<T>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Few::None => None.into_iter().chain(Vec::new()),
            Few::One(item) => Some(item).into_iter().chain(Vec::new()),
            Few::Many(items) => None.into_iter().chain(items),
        }
    }
}

/// A request that reached its outcome: notifiers and the log hear of it.
pub(crate) struct Resolved {
    /// Where the request's callers ran: the notifiers are told from there.
    pub(crate) runtime: Handle,
    pub(crate) request: Arc<AccessRequest>,
    pub(crate) outcome: Outcome,
}
