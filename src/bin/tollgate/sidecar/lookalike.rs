//! Paths that are no configured route, yet that some servers run as one.
//!
//! Servers differ in what they take for the same route: many compare paths without regard to
//! letter case (and any on a case-insensitive file system), some drop a trailing `.`, some take
//! a last segment's `.json` for a format (`/export.json` runs `/export`). The gate judges a path
//! that matches no configured route as itself (under `GET *`, say), so the proxy refuses such a
//! near miss of a configured route rather than forward it judged as something else.

/// One segment of a configured route pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: any one segment.
    Param,
    /// `{*name}`: the rest of the path.
    Rest,
}

/// The configured route patterns, segment by segment.
#[derive(Clone, Debug, Default)]
pub(crate) struct Routes(Vec<Vec<Segment>>);

impl Routes {
    pub(crate) fn new<'a>(patterns: impl IntoIterator<Item = &'a String>) -> Self {
        let parse = |pattern: &str| {
            segments(pattern)
                .map(|s| match s {
                    s if s.starts_with("{*") => Segment::Rest,
                    s if s.starts_with('{') && s.ends_with('}') => Segment::Param,
                    s => Segment::Literal(s.to_owned()),
                })
                .collect()
        };
        Routes(patterns.into_iter().map(|p| parse(p)).collect())
    }

    /// The configured route `path` (canonical) is a near miss of, if it matches none exactly:
    /// equal but for letter case, a trailing `.` or a `.ext` on its last segment.
    pub(crate) fn near_miss(&self, path: &str) -> Option<usize> {
        if self.0.is_empty() || self.matching(path, str::eq).is_some() {
            return None;
        }
        let last = segments(path).last().unwrap_or("");
        let trimmed = last.trim_end_matches('.');
        let stem = trimmed.rsplit_once('.').map_or(trimmed, |(stem, _)| stem);
        let folded = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        [last, trimmed, stem].into_iter().find_map(|end| {
            let head = &path[..path.len() - last.len() - usize::from(path.ends_with('/'))];
            let candidate = format!("{}{end}", head);
            self.matching(&candidate, folded)
        })
    }

    /// The first route `path` matches, comparing literal segments with `same`.
    fn matching(&self, path: &str, same: impl Fn(&str, &str) -> bool) -> Option<usize> {
        let path: Vec<&str> = segments(path).collect();
        self.0.iter().position(|route| {
            let mut at = 0;
            for segment in route {
                match segment {
                    Segment::Rest => return true,
                    _ if at == path.len() => return false,
                    Segment::Param if path[at].is_empty() => return false,
                    Segment::Param => {}
                    Segment::Literal(literal) if !same(literal, path[at]) => return false,
                    Segment::Literal(_) => {}
                }
                at += 1;
            }
            at == path.len()
        })
    }
}

/// The segments of a path, a trailing slash ignored (routes match either way).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/').filter(|_| !path.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_of_a_route_are_found_and_exact_matches_are_not() {
        let routes = Routes::new(&[
            "/v1/customers/{id}/export".to_owned(),
            "/files/{*rest}".to_owned(),
        ]);
        for exact in [
            "/v1/customers/c1/export",
            "/v1/customers/C1/export/",
            "/files/A/b.json",
        ] {
            assert_eq!(routes.near_miss(exact), None, "{exact}");
        }
        for near in [
            "/v1/customers/c1/EXPORT",
            "/V1/customers/c1/export",
            "/v1/Customers/c1/Export/",
            "/v1/customers/c1/export.json",
            "/v1/customers/c1/export.",
            "/v1/customers/c1/Export.JSON",
        ] {
            assert_eq!(routes.near_miss(near), Some(0), "{near}");
        }
        for other in [
            "/v1/customers/c1",
            "/v1/customers/c1/exports",
            "/",
            "/v2/customers/c1/export",
        ] {
            assert_eq!(routes.near_miss(other), None, "{other}");
        }
    }
}
