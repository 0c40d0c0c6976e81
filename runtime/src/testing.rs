//! Test plumbing for other crates' tests: a raw HTTP/2 client (h2) that does what no gRPC
//! client would, sending the HEADERS of its calls and never a body.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::TcpStream;

/// Calls whose request HEADERS were sent and whose body never comes, held open until dropped.
pub struct HalfSentCalls {
    responses: Vec<Option<h2::client::ResponseFuture>>,
    answered: usize,
    _bodies: Vec<h2::SendStream<Bytes>>,
    _connections: tokio::task::JoinSet<()>,
}

impl HalfSentCalls {
    /// Opens `connections` connections to `addr` and on each sends the HEADERS of `per_connection`
    /// calls of `path` (a gRPC method path), waiting for stream credit like a client would.
    ///
    /// # Panics
    /// If a connection or a stream cannot be opened (a test failure).
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        connections: usize,
        per_connection: usize,
    ) -> HalfSentCalls {
        let mut calls = HalfSentCalls {
            responses: Vec::new(),
            answered: 0,
            _bodies: Vec::new(),
            _connections: tokio::task::JoinSet::new(),
        };
        for _ in 0..connections {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let (mut sender, mut connection) =
                h2::client::handshake(tcp).await.expect("h2 handshake");
            let mut ping_pong = connection.ping_pong().expect("a connection's ping handle");
            calls._connections.spawn(async move {
                let _ = connection.await;
            });
            for _ in 0..per_connection {
                sender = sender.ready().await.expect("stream credit");
                let request = http::Request::post(format!("http://{addr}{path}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())
                    .expect("a valid request");
                let (response, body) = sender.send_request(request, false).expect("HEADERS sent");
                calls.responses.push(Some(response));
                calls._bodies.push(body);
            }
            // The server answers a PING after every frame before it: once it does, it has
            // taken every call above.
            ping_pong
                .ping(h2::Ping::opaque())
                .await
                .expect("the server answers PING");
        }
        calls
    }

    /// How many calls the server has answered so far.
    pub fn answered(&mut self) -> usize {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        for slot in &mut self.responses {
            if let Some(response) = slot
                && std::pin::Pin::new(response).poll(&mut cx).is_ready()
            {
                *slot = None;
                self.answered += 1;
            }
        }
        self.answered
    }

    /// Whether the server answers every call within `within` (checked every 10 ms).
    pub async fn all_answered_within(&mut self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.answered() < self.responses.len() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }
}
