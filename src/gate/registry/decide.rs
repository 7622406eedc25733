//! The registry's side of a person's decision: what it knows of the request, a wrong code
//! counted, a ruling taken while the request is pending, and the store's answer to it.

use std::sync::Arc;

use tokio::time::Instant;

use super::event::{Carried, Effects, Event, Ruling};
use super::slot::Phase;
use super::{Known, Registry, already, not_found};
use crate::error::{Error, ErrorKind};
use crate::id::RequestId;
use crate::request::{AccessRequest, Outcome, Status};

impl Registry {
    /// What an approver's decision on `id` starts from: the request, if this registry knows it.
    pub(crate) fn look(&self, id: RequestId) -> Known {
        match (self.live.get(&id), self.history.entries.get(&id)) {
            (Some(slot), _) => Known::Live(slot.request.clone()),
            (None, Some((request, status))) => Known::Remembered(request.clone(), *status),
            (None, None) => Known::Nowhere,
        }
    }

    /// A wrong code `by` someone who may decide the request: counted against it while it is
    /// stored and pending, and at `limit` it closes with `too_many_attempts`. Returns what the
    /// approver hears: what an unknown id hears, until the limit.
    pub(crate) fn wrong_code(
        &mut self,
        id: RequestId,
        by: &Arc<str>,
        limit: u32,
    ) -> (Error, Effects) {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            return (not_found(), effects);
        };
        if !slot.stored || !matches!(slot.phase, Phase::Pending) {
            return (not_found(), effects);
        }
        slot.wrong_codes += 1;
        let attempt = u32::from(slot.wrong_codes);
        effects.events.push(Event::CodeRejected {
            request: slot.request.clone(),
            attempt,
            of: limit,
            by: by.clone(),
        });
        if attempt < limit {
            return (not_found(), effects);
        }
        effects.merge(self.close(id, Outcome::TooManyAttempts));
        let error = Error::new(ErrorKind::TooManyAttempts).with_request(id);
        (error, effects)
    }

    /// A verified decision, its rule built (or the reason it may not be made: a scope or TTL
    /// beyond what the request or the approver allows). The request must still be stored,
    /// pending and unexpired; those answers come first, as they would for any decision. It takes
    /// effect once the store has it ([`decided`](Self::decided)).
    pub(crate) fn decide(
        &mut self,
        id: RequestId,
        ruling: Result<Ruling, Error>,
        now: Instant,
    ) -> (Result<Arc<AccessRequest>, Error>, Effects) {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            let error = match self.history.entries.get(&id) {
                Some((_, status)) => already(*status, id),
                None => not_found(),
            };
            return (Err(error), effects);
        };
        if !slot.stored {
            return (Err(not_found()), effects);
        }
        let result = match slot.phase {
            Phase::Pending if self.epoch.ticks(now) >= slot.deadline => {
                effects = self.close(id, Outcome::Expired);
                Err(Error::new(ErrorKind::AccessRequestExpired))
            }
            Phase::Pending => ruling.map(|ruling| {
                effects.events.push(Event::Decided {
                    request: slot.request.clone(),
                    outcome: ruling.outcome.clone(),
                    scope: ruling.scope,
                    rule: match &ruling.rule {
                        Some((rule, _)) if !ruling.approves() => Some(Box::new(rule.clone())),
                        _ => None,
                    },
                    carried: Carried::by(&ruling),
                });
                slot.phase = Phase::Deciding(Box::new(ruling));
                slot.request.clone()
            }),
            Phase::Deciding(_) => Err(Error::new(ErrorKind::AlreadyResolved)
                .with_detail("another decision on this request is being recorded")),
            _ => Err(already(slot.phase.status(), id)),
        };
        (result.map_err(|error| error.with_request(id)), effects)
    }

    /// The store has, or could not record, a decision. Stored, it takes effect: a denial closes
    /// the request; an approval waits for a caller to take it, or ends cancelled if none is left.
    /// Not stored, the request is pending again and the approver hears `error`.
    pub(crate) fn decided(
        &mut self,
        id: RequestId,
        result: Result<(), Error>,
        now: Instant,
    ) -> Effects {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            return effects;
        };
        let Some(ruling) = slot.phase.take(|p| matches!(p, Phase::Deciding(_))) else {
            return effects;
        };
        match result {
            Ok(()) if ruling.approves() => {
                self.index.leave(&slot.request);
                slot.phase = Phase::Approved(ruling);
                if slot.attached == 0 {
                    let ruling = slot.phase.take(|p| matches!(p, Phase::Approved(_)));
                    return self.cancel(id, Status::Approved, ruling.expect("just set"));
                }
                effects.wake.extend(slot.wakers());
            }
            Ok(()) => {
                let Ruling {
                    outcome, rule, ack, ..
                } = *ruling;
                self.index.leave(&slot.request);
                slot.phase = Phase::Closed(Box::new(outcome.clone()));
                effects.wake.extend(slot.wakers());
                effects.resolved = Some(slot.resolved(outcome));
                effects.rule = rule;
                effects.ack = Some((ack, Ok(())));
                self.retire_if_done(id);
            }
            Err(error) => {
                effects.ack = Some((ruling.ack, Err(error.with_request(id))));
                if slot.attached == 0 {
                    effects.merge(self.close(id, Outcome::Cancelled));
                } else if self.epoch.ticks(now) >= slot.deadline {
                    effects.merge(self.close(id, Outcome::Expired));
                }
            }
        }
        effects
    }
}
