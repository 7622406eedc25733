//! Requests of other replicas that callers here joined (a store replicas share had an identical
//! one pending): the callers follow it, and end or run as it does. A request lives while a
//! caller waits on any replica, so it may be handed to this process when the last caller of the
//! replica holding it leaves: this process then takes its approval for the callers here, and
//! tells the notifiers how it ended.

use std::sync::Arc;

use tokio::time::Instant;

use super::Registry;
use super::event::{Effects, Event, Resolved};
use super::slot::Phase;
use crate::id::RequestId;
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::Rule;

/// Another replica's request that callers here joined.
pub(super) struct Following {
    /// Its seal, checked when they joined.
    asked: [u8; 32],
    /// The request, as it was stored.
    request: Arc<AccessRequest>,
    /// The callers' requests here, each with the ticket of its join: only a verdict that binds
    /// every one of them runs them.
    ids: Vec<(RequestId, Arc<str>)>,
    /// Handed to this process: the last caller of the replica holding it left.
    held: bool,
    /// Held here, and its approval is being taken for the callers here.
    taking: bool,
}

impl Registry {
    /// The store had a request identical to `id` pending, held by another replica, whose seal
    /// (`asked`) the gate checked: `id`'s callers join `other` instead, and follow it
    /// ([`followed`](Self::followed)).
    pub(crate) fn joined(
        &mut self,
        id: RequestId,
        other: Arc<AccessRequest>,
        asked: [u8; 32],
        ticket: Arc<str>,
    ) {
        let Some(slot) = self.live.get_mut(&id) else {
            return;
        };
        if slot.stored || !matches!(slot.phase, Phase::Pending) {
            return;
        }
        slot.joined = true;
        // A later identical call here joins through the store too, with a ticket of its own:
        // attached here, it would run on a verdict that binds only these callers' ticket, though
        // made after that verdict was stored (while the feed had not yet brought it).
        self.index.unjoinable(&slot.request);
        self.follows.insert(id, other.id);
        self.followers
            .entry(other.id)
            .or_insert_with(|| Following {
                asked,
                request: other,
                ids: Vec::new(),
                held: false,
                taking: false,
            })
            .ids
            .push((id, ticket));
    }

    /// The seal of another replica's request `other` that callers here joined, as it was
    /// checked when they joined, and the tickets of their joins.
    pub(crate) fn joined_seal(&self, other: RequestId) -> Option<([u8; 32], Vec<Arc<str>>)> {
        self.followers.get(&other).map(|f| {
            let tickets = f.ids.iter().map(|(_, ticket)| ticket.clone()).collect();
            (f.asked, tickets)
        })
    }

    /// Request `other`, which callers here follow, was handed to this process: its callers here
    /// wait no later than its own `deadline`, when it expires for everyone. `false` if no caller
    /// here follows it any more: the gate then leaves it again.
    pub(crate) fn handed(&mut self, other: RequestId, deadline: Instant) -> (bool, Effects) {
        let mut effects = Effects::default();
        let Some(following) = self.followers.get_mut(&other) else {
            return (false, effects);
        };
        following.held = true;
        let deadline = self.epoch.ticks(deadline);
        for (id, _) in &following.ids {
            if let Some(slot) = self.live.get_mut(id)
                && slot.deadline > deadline
            {
                slot.deadline = deadline;
                self.index.postpone(*id, deadline);
                effects.alarm = true;
            }
        }
        (true, effects)
    }

    /// Request `other`, held here for the callers that joined it, was approved: the request,
    /// the first time, for the gate to take the approval for them ([`Event::Carried`]).
    pub(crate) fn carry(
        &mut self,
        other: RequestId,
        outcome: Outcome,
        rule: Option<Rule>,
    ) -> Effects {
        let mut effects = Effects::default();
        if let Some(following) = self.followers.get_mut(&other)
            && following.held
            && !following.taking
        {
            following.taking = true;
            effects.events.push(Event::Carried {
                request: following.request.clone(),
                outcome,
                rule: rule.map(Box::new),
            });
        }
        effects
    }

    /// Another replica's request `other`, which callers here joined, reached `status`. Taken
    /// (there, or here for a request held here) after an approval whose verdict verified
    /// (`approved`), they run; ended otherwise, they end the same way. Nothing is written: the
    /// store has it. Of a request held here, the notifiers hear how it ended, from here.
    pub(crate) fn followed(
        &mut self,
        other: RequestId,
        status: Status,
        outcome: Option<&Outcome>,
        approved: bool,
    ) -> Effects {
        let mut effects = Effects::default();
        let ran = approved
            && matches!(
                status,
                Status::Executing | Status::Executed | Status::Failed
            );
        let ended = match outcome {
            Some(outcome) if crate::store::is_finished(status) && outcome.status() == status => {
                Some(outcome)
            }
            _ => None,
        };
        if !ran && ended.is_none() {
            return effects;
        }
        let Some(following) = self.followers.remove(&other) else {
            return effects;
        };
        let ended = ended.filter(|_| !ran);
        for &(id, _) in &following.ids {
            let Some(slot) = self.live.get_mut(&id) else {
                continue;
            };
            if !matches!(slot.phase, Phase::Pending) {
                continue;
            }
            self.index.leave(&slot.request);
            effects.wake.extend(slot.wakers());
            if following.held && effects.resolved.is_none() {
                effects.resolved =
                    ended
                        .filter(|outcome| **outcome != Outcome::Abandoned)
                        .map(|outcome| Resolved {
                            runtime: slot.runtime.clone(),
                            request: following.request.clone(),
                            outcome: outcome.clone(),
                        });
            }
            slot.phase = match ended {
                Some(outcome) => Phase::Closed(Box::new(outcome.clone())),
                None => Phase::Executing {
                    finished: None,
                    unreceived: None,
                },
            };
            self.retire_if_done(id);
        }
        if ran && following.held {
            for &(id, _) in &following.ids {
                self.running.insert(id, following.request.clone());
            }
        }
        effects
    }

    /// Caller's request `id` here, which joined another replica's, ended `outcome` before that
    /// one did (its callers left, it expired, the gate shut down). Once no caller here follows
    /// that request, the store hears so ([`Event::Left`]): it may end, or pass to another
    /// replica. Held here, it expires with its callers here, for everyone.
    pub(super) fn unfollow(&mut self, id: RequestId, outcome: &Outcome) -> Effects {
        let mut effects = Effects::default();
        let Some(other) = self.follows.get(&id).copied() else {
            return effects;
        };
        let Some(following) = self.followers.get_mut(&other) else {
            return effects;
        };
        following.ids.retain(|&(i, _)| i != id);
        if following.held
            && *outcome == Outcome::Expired
            && let Some(slot) = self.live.get(&id)
        {
            let (runtime, request) = (slot.runtime.clone(), following.request.clone());
            effects.merge(self.followed(other, Status::Expired, Some(outcome), false));
            effects.resolved = Some(Resolved {
                runtime,
                request: request.clone(),
                outcome: Outcome::Expired,
            });
            effects.events.push(Event::Closed {
                request,
                from: Status::Pending,
                outcome: Outcome::Expired,
            });
        } else if following.ids.is_empty() {
            let following = self.followers.remove(&other).expect("just seen");
            effects.events.push(Event::Left {
                request: following.request,
                holding: false,
            });
        }
        effects
    }

    /// How a call of request `id` here, run on an approval of a request held here that it
    /// joined, ended: the first of them to end records it. `None` for any other call.
    pub(super) fn finished_following(&mut self, id: RequestId, status: Status) -> Option<Effects> {
        let request = self.running.remove(&id)?;
        self.running.retain(|_, r| r.id != request.id);
        let mut effects = Effects::default();
        effects.events.push(Event::Finished { request, status });
        Some(effects)
    }
}
