//! The path the gate judges is the path the upstream routes: every spelling of a route (dot
//! segments, escapes of plain characters, repeated slashes, a trailing slash) is judged as that
//! route and forwarded in the form judged, and a path with no one reading is refused.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestCaseError, TestRunner};

use super::support::client::send;
use super::{Sidecar, get_request, sidecar_with};

/// What the upstream dispatched, each as `route path`: `export /v1/customers/c1/export`.
type Dispatched = Arc<Mutex<Vec<String>>>;

/// An axum upstream that, as many servers do, takes a trailing slash as the same route.
async fn upstream() -> (SocketAddr, Dispatched) {
    let dispatched = Dispatched::default();
    let record = |route: &'static str, dispatched: &Dispatched| {
        let dispatched = dispatched.clone();
        move |UrlPath(id): UrlPath<String>, uri: Uri| async move {
            dispatched
                .lock()
                .unwrap()
                .push(format!("{route} {}", uri.path()));
            format!("{route} {id}")
        }
    };
    let export = get(record("export", &dispatched));
    let customer = get(record("customer", &dispatched));
    let missed = dispatched.clone();
    let app = Router::new()
        .route("/v1/customers/{id}/export", export.clone())
        .route("/v1/customers/{id}/export/", export)
        .route("/v1/customers/{id}", customer.clone())
        .route("/v1/customers/{id}/", customer)
        .fallback(move |uri: Uri| async move {
            missed.lock().unwrap().push(format!("none {}", uri.path()));
            StatusCode::NOT_FOUND
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, dispatched)
}

/// Reads pass (`HEAD` by a rule of its own); the export is denied outright, so that a request
/// judged as the export is told apart at once from one that was not.
async fn proxy(name: &str, upstream: SocketAddr) -> Sidecar {
    sidecar_with(name, &format!("http://{upstream}"), "1m", |config| {
        config.replace(
            r#"routes = ["/v1/refunds/{id}"]"#,
            r#"routes = ["/v1/refunds/{id}", "/v1/customers/{id}/export", "/v1/customers/{id}"]"#,
        ) + r#"
        [capabilities."HEAD *"]
        decision = "allow"
        [capabilities."GET /v1/customers/{id}/export"]
        decision = "deny"
        deny_reason = "exports are done by hand"
        "#
    })
    .await
}

/// What a generated path means.
#[derive(Clone, Debug)]
enum Poison {
    /// `%2F` or `%2f` inside a segment: one segment to some servers, two to others.
    EncodedSlash(bool),
    /// `%5C`: a separator to some servers.
    EncodedBackslash,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// A `;`: Java servers cut the segment there.
    Semicolon,
}

#[derive(Clone, Debug)]
struct Spelling {
    export: bool,
    id: String,
    /// Per character of the path's segments, whether to percent-encode it, and in which case.
    escapes: Vec<Option<bool>>,
    /// Per separator, whether to double it.
    doubled: Vec<bool>,
    /// Per separator, a dot segment to put there: `.`, `zz/..`, each dot maybe escaped.
    dots: Vec<Option<(u8, bool)>>,
    trailing_slash: bool,
    poison: Option<(Poison, usize)>,
}

impl Spelling {
    fn segments(&self) -> Vec<String> {
        let mut segments = vec!["v1".to_owned(), "customers".to_owned(), self.id.clone()];
        if self.export {
            segments.push("export".into());
        }
        segments
    }

    /// The path as sent.
    fn path(&self) -> String {
        let mut escapes = self.escapes.iter().cycle();
        let mut spell = |text: &str| -> String {
            text.chars()
                .map(|c| match escapes.next().copied().flatten() {
                    Some(upper) if upper => format!("%{:02X}", c as u32),
                    Some(_) => format!("%{:02x}", c as u32),
                    None => c.to_string(),
                })
                .collect()
        };
        let dot = |escaped: bool| if escaped { "%2E" } else { "." };
        let mut path = String::new();
        let segments = self.segments();
        for (i, segment) in segments.iter().enumerate() {
            let slash = if self.doubled[i % self.doubled.len()] {
                "//"
            } else {
                "/"
            };
            match self.dots[i % self.dots.len()] {
                Some((0, escaped)) => path.push_str(&format!("/{}", dot(escaped))),
                Some((_, escaped)) => {
                    path.push_str(&format!("/zz/{}{}", dot(escaped), dot(!escaped)));
                }
                None => {}
            }
            path.push_str(slash);
            let mut text = spell(segment);
            if let Some((poison, at)) = &self.poison
                && *at % segments.len() == i
            {
                text.push_str(match poison {
                    Poison::EncodedSlash(true) => "%2F",
                    Poison::EncodedSlash(false) => "%2f",
                    Poison::EncodedBackslash => "%5C",
                    Poison::BadEscape => "%G0",
                    Poison::Semicolon => ";jsessionid=1",
                });
            }
            path.push_str(&text);
        }
        if self.trailing_slash {
            path.push('/');
        }
        path
    }
}

fn spellings() -> impl Strategy<Value = Spelling> {
    let poison = prop_oneof![
        any::<bool>().prop_map(Poison::EncodedSlash),
        Just(Poison::EncodedBackslash),
        Just(Poison::BadEscape),
        Just(Poison::Semicolon),
    ];
    (
        any::<bool>(),
        "[a-z0-9][a-z0-9_~-]{0,5}",
        prop::collection::vec(prop::option::weighted(0.2, any::<bool>()), 1..24),
        prop::collection::vec(prop::bool::weighted(0.2), 1..5),
        prop::collection::vec(prop::option::weighted(0.2, (0u8..2, any::<bool>())), 1..5),
        any::<bool>(),
        prop::option::weighted(0.15, (poison, 0usize..4)),
    )
        .prop_map(
            |(export, id, escapes, doubled, dots, trailing_slash, poison)| Spelling {
                export,
                id,
                escapes,
                doubled,
                dots,
                trailing_slash,
                poison,
            },
        )
}

/// For any spelling: a path with no one reading is refused `400 invalid_path` and never
/// forwarded; a spelling of the export is judged as the export (denied) and never forwarded; a
/// spelling of a customer is forwarded in its plain form, and the upstream dispatches the
/// customer route with the same id.
#[test]
fn every_spelling_of_a_route_is_judged_as_that_route() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (sidecar, dispatched) = runtime.block_on(async {
        let (upstream, dispatched) = upstream().await;
        (proxy("spellings", upstream).await, dispatched)
    });
    let mut runner = TestRunner::new(Cases {
        cases: 160,
        failure_persistence: None,
        ..Cases::default()
    });
    let result = runner.run(&spellings(), |spelling| {
        let path = spelling.path();
        dispatched.lock().unwrap().clear();
        let reply = runtime.block_on(send(sidecar.proxy, get_request(&path)));
        let seen = dispatched.lock().unwrap().clone();
        let context = format!(
            "{path} -> {} {} upstream {seen:?}",
            reply.status, reply.body
        );
        if spelling.poison.is_some() {
            prop_assert_eq!(reply.status, 400, "{}", context);
            prop_assert_eq!(reply.code(), "invalid_path", "{}", context);
            prop_assert!(seen.is_empty(), "{}", context);
        } else if spelling.export {
            prop_assert_eq!(reply.status, 403, "{}", context);
            prop_assert_eq!(reply.code(), "access_request_denied", "{}", context);
            // Judged as the export's route, not merely refused.
            prop_assert_eq!(
                &reply.json()["error"]["detail"],
                "exports are done by hand",
                "{}",
                context
            );
            prop_assert!(seen.is_empty(), "{}", context);
        } else {
            prop_assert_eq!(reply.status, 200, "{}", context);
            prop_assert_eq!(
                &reply.body,
                &format!("customer {}", spelling.id),
                "{}",
                context
            );
            let plain = format!(
                "customer /v1/customers/{}{}",
                spelling.id,
                if spelling.trailing_slash { "/" } else { "" }
            );
            prop_assert_eq!(seen, vec![plain], "{}", context);
        }
        Ok::<(), TestCaseError>(())
    });
    drop(sidecar);
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// The spellings the issue named, one by one, for a readable failure.
#[tokio::test]
async fn the_named_spellings_of_the_export_are_denied() {
    let (upstream, dispatched) = upstream().await;
    let sidecar = proxy("named-spellings", upstream).await;
    for path in [
        "/v1/customers/c1/export",
        "/v1/customers/c1/./export",
        "/v1/customers/c1/x/../export",
        "/v1/customers/c1/%65xport",
        "/v1/%63ustomers/c1/export",
        "/v1/customers/c1/export/",
        "/v1/customers//c1/export",
        "//v1/customers/c1/export",
        "/v1/customers/c1/%2e/export",
        "/v1/customers/c1/%2E%2E/c1/export",
    ] {
        let reply = send(sidecar.proxy, get_request(path)).await;
        assert_eq!(reply.status, 403, "{path}: {}", reply.body);
        assert_eq!(reply.code(), "access_request_denied", "{path}");
    }
    for path in [
        "/v1/customers/c1%2Fexport",
        "/v1/customers/c1%2fexport",
        "/v1/customers/c1%5Cexport",
        "/v1/customers/c1/export;x=1",
        "/v1/customers/c1/%zzexport",
        "/v1/customers/c1/export%",
    ] {
        let reply = send(sidecar.proxy, get_request(path)).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert_eq!(reply.code(), "invalid_path", "{path}");
        assert!(
            !reply.json()["error"]["detail"].as_str().unwrap().is_empty(),
            "{path}: says why"
        );
    }
    let reply = send(sidecar.proxy, get_request("/v1/./customers/%63%31?x=%41")).await;
    assert_eq!(
        (reply.status.as_u16(), reply.body.as_str()),
        (200, "customer c1")
    );
    assert_eq!(
        *dispatched.lock().unwrap(),
        ["customer /v1/customers/c1"],
        "forwarded in the form judged"
    );
}

/// `HEAD` runs the `GET` handler on most servers (axum's included): it meets `GET`'s rules, here
/// a denial stricter than its own `HEAD *` allow.
#[tokio::test]
async fn head_is_judged_as_get() {
    let (upstream, dispatched) = upstream().await;
    let sidecar = proxy("head", upstream).await;
    let head = super::support::client::request("HEAD", "/v1/customers/c1/export")
        .body(http_body_util::Full::<bytes::Bytes>::default())
        .unwrap();
    let reply = send(sidecar.proxy, head).await;
    assert_eq!(reply.status, 403);
    assert!(dispatched.lock().unwrap().is_empty());

    let head = super::support::client::request("HEAD", "/v1/customers/c1")
        .body(http_body_util::Full::<bytes::Bytes>::default())
        .unwrap();
    assert_eq!(
        send(sidecar.proxy, head).await.status,
        200,
        "a HEAD of what GET allows passes"
    );
    assert_eq!(*dispatched.lock().unwrap(), ["customer /v1/customers/c1"]);
}

/// Servers that route without regard to letter case (and any on a case-insensitive file
/// system), drop a trailing `.`, or take a `.json` for a format run the export for these
/// spellings: the proxy refuses them rather than judge them as some other path.
#[tokio::test]
async fn near_misses_of_a_route_are_refused_not_judged_as_other_paths() {
    let (upstream, dispatched) = upstream().await;
    let sidecar = proxy("near-misses", upstream).await;
    for path in [
        "/v1/customers/c1/EXPORT",
        "/V1/customers/c1/export",
        "/v1/Customers/c1/Export",
        "/v1/customers/c1/%45xport",
        "/v1/customers/c1/export.json",
        "/v1/customers/c1/export.",
    ] {
        let reply = send(sidecar.proxy, get_request(path)).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert_eq!(reply.code(), "invalid_path", "{path}");
    }
    assert!(
        dispatched.lock().unwrap().is_empty(),
        "nothing was forwarded"
    );
    // A parameter's case is the caller's own: that path is the route itself.
    let reply = send(sidecar.proxy, get_request("/v1/customers/C1")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}
