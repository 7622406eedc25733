//! Edits on approve: how the gate checks an approver's new arguments against the policy of the
//! call they were written for, before the approval counts.
//!
//! The gate knows neither the policy nor the call's type; the middleware that parked the call
//! does. When it parks a call whose policy allows edits, it hands the registry an [`Edits`]: a
//! copy of the call and the policy behind one object. An approval with new arguments asks it
//! first; only a call the policy would still let a person approve goes on to the registry.

use std::sync::Arc;

use super::Shared;
use super::approver::NewArgs;
use crate::args::{ArgsDigest, canonical_json};
use crate::call::Edit;
use crate::error::{Error, ErrorKind};
use crate::policy::Ask;
use crate::request::AccessRequest;
use crate::time::duration_millis;

/// Checks edits of one parked call.
pub(crate) trait Edits: Send + Sync {
    /// Rebuilds the call with `edit`'s arguments and asks the policy about it: refused with
    /// `edit_unsupported` if the call cannot be rebuilt, `edit_not_allowed` if it changed more
    /// than its arguments or the policy denies it.
    fn check(&self, edit: &Edit) -> Result<Checked, Error>;
}

/// An edit the policy accepts.
pub(crate) struct Checked {
    /// The rebuilt call's arguments: what runs, and what a `value` rule binds.
    pub(crate) args: serde_json::Value,
    /// The policy's ask about the rebuilt call, whose limits hold for the approval too; `None`
    /// if the policy allows it outright.
    pub(crate) ask: Option<Ask>,
}

impl Shared {
    /// Checks an approver's new arguments `args` for `request`, held here, whose code they
    /// entered correctly. Arguments equal to those asked with are no edit (`None`), on any
    /// request. Otherwise the request must be editable, decided by one approver and held by a
    /// gate whose store no replica shares, and its call rebuilt and accepted by its policy (see
    /// [`Edits`]); an edited call the policy asks about again must need no more than this one
    /// approval, by `approver`, and no reason the caller did not give; no remembered denial may
    /// cover it.
    /// Returns the edit and the request as edited, whose limits are the narrower of the two
    /// asks, for the ruling.
    pub(super) fn edit(
        &self,
        request: &AccessRequest,
        args: &NewArgs,
        approver: &Arc<str>,
    ) -> Result<Option<(Arc<Edit>, AccessRequest)>, Error> {
        let id = request.id;
        let refuse = |detail: &'static str| {
            Error::new(ErrorKind::EditNotAllowed)
                .with_request(id)
                .with_detail(detail)
        };
        let args = args.value().map_err(|error| error.with_request(id))?;
        let args = &*args;
        if ArgsDigest::of(args) == request.args_digest {
            return Ok(None);
        }
        if !request.editable {
            return Err(refuse(
                "the policy does not let approvers edit this request",
            ));
        }
        if request.quorum > 1 {
            // Each approver approves the call as asked: their approvals could not be counted
            // together for different arguments.
            return Err(refuse(
                "the approvers of a quorum approve the call as asked",
            ));
        }
        if self.settings.shared_store {
            // Callers on other replicas may have joined the request; they would run it as asked.
            return Err(refuse(
                "edits need a gate whose store is not shared by replicas",
            ));
        }
        let edits = self.registry().edits(id).ok_or_else(|| {
            Error::new(ErrorKind::EditUnsupported)
                .with_request(id)
                .with_detail("this request's call cannot be rebuilt from arguments")
        })?;
        let original = request.args();
        let asked = Edit::new(id, approver.clone(), original.clone(), args.clone());
        let checked = edits
            .check(&asked)
            .map_err(|error| error.with_request(id))?;
        // The edited call's whole ask must be met by the approval in hand: one approver, this
        // one, with the caller's reason; its narrower limits apply below.
        if let Some(ask) = &checked.ask {
            if !ask.met(request.quorum, approver) {
                return Err(refuse(
                    "the edited call needs more approvers, or other ones, than this approval",
                ));
            }
            if ask.require_reason && request.reason.is_none() {
                return Err(refuse(
                    "the edited call needs a reason the caller did not give",
                ));
            }
        }
        let edited = edited(request, &checked);
        // A remembered denial of the edited call refuses the edit, as it would the call itself.
        let key = || {
            edited
                .key_fields
                .as_ref()
                .and_then(|f| f.digest(&checked.args))
        };
        let denied = self.rules_table().denial(
            &edited.capability,
            &edited.principal,
            edited.session.as_deref(),
            || (edited.args_digest, key()),
            tokio::time::Instant::now(),
        );
        if let Some(denied) = denied {
            return Err(refuse("a remembered denial covers the edited call").with_source(denied));
        }
        let edit = Edit::new(id, approver.clone(), original, checked.args);
        Ok(Some((Arc::new(edit), edited)))
    }
}

/// `request` with the checked edit's arguments, what an approval of it binds: their digest, the
/// key fields of the policy's ask about the edited call (the request's, if it allows it outright)
/// if the new arguments have them all, and the narrower limits of the request and that ask.
fn edited(request: &AccessRequest, checked: &Checked) -> AccessRequest {
    let args = canonical_json(&checked.args);
    let mut edited = request.clone();
    edited.args_digest = ArgsDigest::of_canonical(&args);
    edited.args = args.into_boxed_str();
    // A `value` rule is about the key fields the edited call's own ask names, if it asks.
    let fields = match &checked.ask {
        Some(ask) => &ask.key_fields,
        None => &request.key_fields,
    };
    edited.key_fields = fields
        .clone()
        .filter(|fields| fields.digest(&checked.args).is_some());
    if let Some(ask) = &checked.ask {
        edited.max_scope = edited.max_scope.min(ask.max_scope);
        edited.max_rule_ttl_ms = edited
            .max_rule_ttl_ms
            .min(duration_millis(ask.max_rule_ttl));
    }
    edited
}
