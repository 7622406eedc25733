//! A real HTTP/1.1 client for the tests: hyper over a fresh TCP connection per request.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// An answer: status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The stable code of a JSON error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// A body sent in chunks, with no declared length (so it goes `Transfer-Encoding: chunked`).
pub struct Chunked(pub Vec<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.0.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(self.0.remove(0)))))
    }
}

/// A request in flight on its own connection; abort it to close the connection.
pub struct InFlight {
    pub reply: JoinHandle<Reply>,
    connection: JoinHandle<()>,
}

impl InFlight {
    /// Drops the request and closes its TCP connection, as a client that goes away does.
    pub fn disconnect(self) {
        self.reply.abort();
        self.connection.abort();
    }
}

/// Sends `request` to `addr` on a new connection.
pub async fn start<B>(addr: SocketAddr, request: Request<B>) -> InFlight
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the test server");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let reply = tokio::spawn(async move {
        let response = sender.send_request(request).await.expect("an answer");
        let status = response.status();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body")
            .to_bytes();
        Reply {
            status,
            content_type,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    });
    InFlight { reply, connection }
}

/// Sends `request` and waits for the answer.
pub async fn send<B>(addr: SocketAddr, request: Request<B>) -> Reply
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    start(addr, request)
        .await
        .reply
        .await
        .expect("the request task")
}

/// A request with a host header, as HTTP/1.1 requires.
pub fn request(method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost")
}
