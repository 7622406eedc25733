//! A real HTTP receiver for webhook tests: axum on 127.0.0.1:0, checking each signature with the
//! public helper and answering from a script.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;
use tollgate::notify::signature::{DEFAULT_TOLERANCE, SignatureError, verify_signature};

/// The signing secret the receiver checks.
pub const SECRET: &str = "whsec_a-test-secret-for-webhooks";

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Status(u16),
    TooManyRequests { retry_after: u64 },
    Hang,
}

/// One request as the receiver saw it.
#[derive(Debug)]
pub struct Seen {
    pub signature: String,
    pub body: Vec<u8>,
    pub verified: Result<(), SignatureError>,
    pub answer: Answer,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone)]
struct Receiver {
    script: Arc<Mutex<VecDeque<Answer>>>,
    seen: mpsc::UnboundedSender<Seen>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = receiver
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::Status(200));
    let signature = headers
        .get("tollgate-signature")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let verified = verify_signature(&signature, &body, SECRET.as_bytes(), DEFAULT_TOLERANCE);
    let _ = receiver.seen.send(Seen {
        signature,
        body: body.to_vec(),
        verified,
        answer,
    });
    match answer {
        Answer::Status(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Answer::TooManyRequests { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after.to_string())],
        )
            .into_response(),
        Answer::Hang => std::future::pending().await,
    }
}

/// Starts a receiver answering from `script`, then 200 for ever. Returns its URL and what it saw.
pub async fn receiver(script: &[Answer]) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let (seen, log) = mpsc::unbounded_channel();
    let state = Receiver {
        script: Arc::new(Mutex::new(script.iter().copied().collect())),
        seen,
    };
    let app = axum::Router::new()
        .route("/hook/{secret_path}", axum::routing::post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook/T0KEN", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, log)
}
