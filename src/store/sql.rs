//! What the SQL stores share: the audit trail's query, built from an [`AuditFilter`].

use crate::audit::AuditFilter;
use crate::time::millis;

/// One value bound to a query, as the stores' drivers take it.
pub(super) enum Param {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// The audit query of `filter` over `table`: the columns every store reads back in this order
/// (seq, at, event, request, rule, principal, capability, args_digest, args, approver, reason,
/// scope, detail), oldest first, and its values. `placeholder(n)` writes the `n`th (from 1) as
/// the driver wants it: `?1` or `$1`.
pub(super) fn audit_query(
    filter: &AuditFilter,
    table: &str,
    placeholder: fn(usize) -> String,
) -> (String, Vec<Param>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let mut add = |clause: &str, value: Param| {
        values.push(value);
        clauses.push(clause.replace('?', &placeholder(values.len())));
    };
    if let Some(t) = filter.since {
        add("at >= ?", Param::Int(millis(t)));
    }
    if let Some(t) = filter.until {
        add("at < ?", Param::Int(millis(t)));
    }
    if let Some(p) = &filter.principal {
        add("principal = ?", Param::Text(p.clone()));
    }
    if let Some(c) = &filter.capability {
        add("capability = ?", Param::Text(c.clone()));
    }
    if let Some(e) = filter.event {
        add("event = ?", Param::Text(e.as_str().into()));
    }
    if let Some(r) = filter.request {
        add("request = ?", Param::Bytes(r.as_bytes().to_vec()));
    }
    if let Some(s) = filter.after {
        add("seq > ?", Param::Int(i64::try_from(s).unwrap_or(i64::MAX)));
    }
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let sql = format!(
        "SELECT seq, at, event, request, rule, principal, capability, args_digest, args,
                approver, reason, scope, detail
         FROM {table} {filter_sql} ORDER BY seq LIMIT {}",
        filter.effective_limit()
    );
    (sql, values)
}
