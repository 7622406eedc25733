//! A layer in front of an axum router judges the path axum routes: inside the router by the
//! route axum matched, outside it by the literal path, which axum routes as written (it resolves
//! no dot segments, decodes no escapes, merges no slashes).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::routing::get;
use proptest::prelude::*;
use tollgate::Call;
use tollgate::http::HttpCall;
use tollgate::policy::{Decision, policy_fn};
use tower::{Layer, ServiceExt};

/// A recorder of the capability the gate judged, and of the route axum dispatched.
#[derive(Clone, Default)]
struct Seen {
    judged: Arc<Mutex<Vec<String>>>,
    dispatched: Arc<Mutex<Vec<String>>>,
}

fn router(seen: &Seen) -> Router {
    let dispatched = seen.dispatched.clone();
    let handler = get(move |route: MatchedPath| async move {
        dispatched.lock().unwrap().push(route.as_str().to_owned());
    });
    Router::new()
        .route("/v1/customers/{id}/export", handler.clone())
        .route("/v1/customers/{id}", handler)
}

fn layer(
    seen: &Seen,
) -> tollgate::http::HttpApprovalLayer<impl tollgate::policy::Policy<HttpCall<Body>> + use<>> {
    let gate = tollgate::Gate::builder()
        .random_secret()
        .notifier(tollgate::notify::RecordingNotifier::new())
        .build()
        .unwrap();
    let judged = seen.judged.clone();
    gate.http(policy_fn(move |call: &HttpCall<Body>| {
        judged.lock().unwrap().push(call.capability().to_owned());
        Decision::allow("recorded")
    }))
}

/// A spelling of a customer's path or its export: segments maybe escaped, doubled slashes,
/// dot segments, a trailing slash.
fn spellings() -> impl Strategy<Value = String> {
    let segment = |text: &'static str| {
        prop::collection::vec(any::<bool>(), text.len()).prop_map(move |escape| {
            text.chars()
                .zip(escape)
                .map(|(c, e)| {
                    if e {
                        format!("%{:02x}", c as u32)
                    } else {
                        c.to_string()
                    }
                })
                .collect::<String>()
        })
    };
    let separator =
        prop_oneof![4 => Just("/"), 1 => Just("//"), 1 => Just("/./"), 1 => Just("/x/../")];
    (
        segment("v1"),
        segment("customers"),
        segment("c1"),
        prop::option::of(segment("export")),
        prop::collection::vec(separator, 4),
        any::<bool>(),
    )
        .prop_map(|(v1, customers, id, export, separators, trailing)| {
            let mut path = format!(
                "{}{v1}{}{customers}{}{id}",
                separators[0], separators[1], separators[2]
            );
            if let Some(export) = export {
                path.push_str(separators[3]);
                path.push_str(&export);
            }
            if trailing {
                path.push('/');
            }
            path
        })
}

/// Sends `GET path` to `app`: the capabilities the gate judged, and the routes axum dispatched.
fn send_get<S>(app: S, seen: &Seen, path: &str) -> (Vec<String>, Vec<String>)
where
    S: tower::Service<http::Request<Body>, Error = std::convert::Infallible>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let request = http::Request::get(path).body(Body::empty()).unwrap();
    runtime.block_on(app.oneshot(request)).unwrap();
    let judged = seen.judged.lock().unwrap().clone();
    let dispatched = seen.dispatched.lock().unwrap().clone();
    (judged, dispatched)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    /// Inside the router, the capability is the route axum dispatched, for any spelling, and
    /// the literal path when it dispatches none.
    #[test]
    fn inside_a_router_the_capability_is_the_route_dispatched(path in spellings()) {
        let seen = Seen::default();
        let (judged, dispatched) = send_get(router(&seen).layer(layer(&seen)), &seen, &path);
        // No route: the fallback's literal path, which routes nowhere.
        let expected = match dispatched.as_slice() {
            [] => format!("GET {path}"),
            [route] => format!("GET {route}"),
            more => panic!("dispatched twice: {more:?}"),
        };
        prop_assert_eq!(judged, vec![expected], "{}", path);
    }

    /// Outside it, the literal path is judged, and axum dispatches a route only for a path
    /// that is that route's literal spelling: a policy naming `GET /v1/customers/*/export`
    /// sees every request that reaches the export.
    #[test]
    fn in_front_of_a_router_the_literal_path_is_what_axum_routes(path in spellings()) {
        let seen = Seen::default();
        let (judged, dispatched) = send_get(layer(&seen).layer(router(&seen)), &seen, &path);
        prop_assert_eq!(judged, vec![format!("GET {path}")]);
        if dispatched == ["/v1/customers/{id}/export"] {
            prop_assert!(path.starts_with("/v1/customers/") && path.ends_with("/export"), "{}", path);
        }
        if dispatched == ["/v1/customers/{id}"] {
            prop_assert!(path.starts_with("/v1/customers/") && !path.contains("/export"), "{}", path);
        }
    }
}

/// axum answers `HEAD` with the `GET` handler (when the route has no `HEAD` handler of its
/// own): a `HEAD` is judged as the `GET` it runs.
#[tokio::test]
async fn head_is_judged_as_the_get_it_runs() {
    use tollgate::policy::CapabilityTable;

    let seen = Seen::default();
    let gate = tollgate::Gate::builder()
        .random_secret()
        .notifier(tollgate::notify::RecordingNotifier::new())
        .build()
        .unwrap();
    let policy = CapabilityTable::new()
        .allow("*")
        .deny("GET /v1/customers/{id}/export", "exports are done by hand");
    let app = router(&seen).layer(gate.http(policy));
    let head = http::Request::head("/v1/customers/c1/export")
        .body(Body::empty())
        .unwrap();
    let reply = app.oneshot(head).await.unwrap();
    assert_eq!(reply.status(), http::StatusCode::FORBIDDEN);
    assert!(
        seen.dispatched.lock().unwrap().is_empty(),
        "the GET handler never ran"
    );
}
