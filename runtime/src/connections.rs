//! The accept loop's limits: at most MAX_CONNECTIONS open client connections and at most a
//! peer's share of them per address; a connection beyond either is closed at once, so one
//! address cannot keep everyone else from connecting. A connection that sends nothing within
//! READ_TIMEOUT of being accepted (no HTTP/2 preface, no TLS hello) is closed, so silent
//! connections from many addresses cannot hold every place for good.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::limits::{Pool, ServerLimits};
use crate::peers::{Peer, PeerPool, PoolGuard};

/// How long the accept loop pauses after an error that is not one connection's (out of file
/// descriptors, say), instead of spinning or stopping the server.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Accepted connections within the connection limits, with `TCP_NODELAY` set (tonic ignores
/// its builder's setting for an incoming stream: without it, Nagle's algorithm holds some
/// responses back for a delayed ACK, ~40 ms tails).
pub struct LimitedIncoming {
    listener: TcpListener,
    pool: Arc<PeerPool>,
    first_byte_timeout: Duration,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LimitedIncoming {
    /// Accepts from `listener` within `limits.max_connections` and the per-peer share.
    pub fn new(listener: TcpListener, limits: &ServerLimits) -> Self {
        LimitedIncoming {
            listener,
            pool: PeerPool::new(limits.max_connections, limits.peer_share_percent),
            first_byte_timeout: limits.read_timeout,
            pause: None,
        }
    }
}

/// An error of one connection, which the next accept does not repeat.
fn is_one_connections(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

impl tokio_stream::Stream for LimitedIncoming {
    type Item = io::Result<AdmittedConnection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = &mut this.pause {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(this.listener.poll_accept(cx)) {
                Ok((stream, addr)) => match this.pool.try_take(Some(Peer::of(addr.ip())), 1) {
                    Ok(slot) => {
                        if let Err(e) = stream.set_nodelay(true) {
                            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                        }
                        let deadline = tokio::time::sleep(this.first_byte_timeout);
                        return Poll::Ready(Some(Ok(AdmittedConnection {
                            stream,
                            _slot: slot,
                            first_byte_deadline: Some(Box::pin(deadline)),
                        })));
                    }
                    Err(refusal) => {
                        Pool::Connections.count(refusal);
                        tracing::debug!(scope = refusal.scope(), "connection refused: limit");
                    }
                },
                Err(e) if is_one_connections(&e) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    this.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                }
            }
        }
    }
}

/// A client connection holding its place in the connection limits until it closes.
pub struct AdmittedConnection {
    stream: TcpStream,
    _slot: PoolGuard,
    /// Until the first byte arrives: when the connection is given up.
    first_byte_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connected for AdmittedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for AdmittedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Some(deadline) = &mut this.first_byte_deadline {
            match &read {
                Poll::Ready(Ok(())) if buf.filled().len() > before => {
                    this.first_byte_deadline = None;
                }
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nothing sent within READ_TIMEOUT of connecting",
                    )));
                }
                _ => {}
            }
        }
        read
    }
}

impl AsyncWrite for AdmittedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio_stream::StreamExt;

    use super::*;

    /// A connection from `source` (any 127/8 address reaches the loopback listener).
    async fn connect_from(source: &str, to: std::net::SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::new(source.parse().unwrap(), 0))
            .unwrap();
        socket.connect(to).await.unwrap()
    }

    /// Whether the server closed `stream` (EOF) within a moment.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    async fn accept(incoming: &mut LimitedIncoming) -> AdmittedConnection {
        tokio::time::timeout(Duration::from_secs(5), incoming.next())
            .await
            .expect("accepted within 5 s")
            .unwrap()
            .unwrap()
    }

    /// Guards `LimitedIncoming`'s pool: beyond its share an address's connections are closed
    /// at once, another address still connects, and a closed connection frees its place.
    #[tokio::test]
    async fn connections_beyond_an_address_share_are_closed_and_others_still_connect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ServerLimits {
            max_connections: 4,
            peer_share_percent: 50,
            ..ServerLimits::default()
        };
        let mut incoming = LimitedIncoming::new(listener, &limits);
        let mut admitted = Vec::new();
        let mut first = connect_from("127.0.0.1", addr).await;
        admitted.push(accept(&mut incoming).await);
        let _second = connect_from("127.0.0.1", addr).await;
        admitted.push(accept(&mut incoming).await);
        let mut third = connect_from("127.0.0.1", addr).await;
        let _other = connect_from("127.0.0.2", addr).await;
        let from_other = accept(&mut incoming).await;
        assert_eq!(
            from_other.connect_info().remote_addr().unwrap().ip(),
            "127.0.0.2".parse::<std::net::IpAddr>().unwrap()
        );
        assert!(
            closed(&mut third).await,
            "the third from one address is closed"
        );
        assert!(!closed(&mut first).await, "admitted connections stay open");
        admitted.remove(0);
        let _again = connect_from("127.0.0.1", addr).await;
        accept(&mut incoming).await;
    }

    /// Guards `first_byte_deadline` in `AdmittedConnection::poll_read`: a connection that
    /// sends nothing within the read timeout fails its read (the server then drops it and its
    /// place); one whose first bytes came in time may then stay quiet for longer.
    #[tokio::test]
    async fn a_connection_that_sends_nothing_within_the_read_timeout_is_given_up() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ServerLimits {
            read_timeout: Duration::from_millis(200),
            ..ServerLimits::default()
        };
        let mut incoming = LimitedIncoming::new(listener, &limits);
        let _silent = connect_from("127.0.0.1", addr).await;
        let mut silent = accept(&mut incoming).await;
        let mut talking = connect_from("127.0.0.1", addr).await;
        let mut prompt = accept(&mut incoming).await;
        tokio::io::AsyncWriteExt::write_all(&mut talking, b"PRI")
            .await
            .unwrap();

        let mut buf = [0u8; 8];
        let started = std::time::Instant::now();
        let given_up = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
            .await
            .expect("the silent connection is given up within 5 s");
        assert_eq!(given_up.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(150));

        assert_eq!(prompt.read(&mut buf).await.unwrap(), 3);
        let quiet = tokio::time::timeout(Duration::from_millis(600), prompt.read(&mut buf)).await;
        assert!(
            quiet.is_err(),
            "a connection that spoke in time may then be quiet"
        );
    }
}
