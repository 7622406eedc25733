//! A request passed between replicas: when the last caller of a process leaves a request, the
//! request ends only if no other process follows it; otherwise the process holding it hands it
//! to one that does.

use super::failed;
use super::writes::{FeedRow, transition};
use crate::error::Error;
use crate::request::Status;
use crate::store::{Left, Transition};

/// [`Store::leave`](crate::store::Store::leave) in `tx`, for process `origin`.
pub(super) async fn leave(
    tx: &deadpool_postgres::Transaction<'_>,
    origin: &str,
    cancel: &Transition,
    holding: bool,
) -> Result<Left, Error> {
    let id = &cancel.id.as_bytes()[..];
    let Some(row) = tx
        .query_opt(
            "UPDATE tollgate_requests
             SET followers = CASE WHEN $3 THEN followers ELSE array_remove(followers, $2) END
             WHERE id = $1
             RETURNING status, owner, followers, handed",
            &[&id, &origin, &holding],
        )
        .await
        .map_err(failed)?
    else {
        return Ok(Left::Moved);
    };
    let status = super::status_of(row.get(0))?;
    let (owner, followers, handed): (&str, Vec<String>, bool) =
        (row.get(1), row.get(2), row.get(3));
    if !matches!(status, Status::Pending | Status::Approved) {
        return Ok(Left::Moved);
    }
    // This process held it: through the request it filed, or, once it let go of that or was
    // handed it, through the callers that joined it.
    if owner != origin || holding == handed {
        return Ok(if holding {
            Left::Moved
        } else {
            Left::Unfollowed
        });
    }
    let Some(heir) = followers.first() else {
        let cancel = Transition {
            from: status,
            ..cancel.clone()
        };
        return Ok(match transition(tx, origin, &cancel).await? {
            true => Left::Cancelled,
            false => Left::Moved,
        });
    };
    tx.execute(
        "UPDATE tollgate_requests SET owner = followers[1], followers = followers[2:],
                handed = true WHERE id = $1",
        &[&id],
    )
    .await
    .map_err(failed)?;
    if heir == origin {
        // Callers here joined it too: they hold it now.
        return Ok(Left::Kept);
    }
    FeedRow {
        kind: "handover",
        request: Some(cancel.id.as_bytes()),
        status: Some(status.as_str()),
        record: Some(heir),
        ..FeedRow::default()
    }
    .append(tx, origin)
    .await?;
    Ok(Left::HandedOver)
}
