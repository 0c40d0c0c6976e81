//! A TCP proxy between userinfo-service and auth-service that a test can cut: while cut, it
//! forwards nothing in either direction and keeps every connection open (a half-open link,
//! the hard case: no FIN, no RST), and new connections hang the same way. Healing closes the
//! held connections, so clients reconnect through it.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// See the module doc.
pub struct LinkProxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, _) = watch::channel(false);
        let cut_rx = cut.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pipe(client, upstream, cut_rx.clone()));
            }
        });
        LinkProxy { addr, cut, task }
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    if !*cut.borrow() {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        {
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            tokio::select! {
                _ = tokio::io::copy(&mut cr, &mut sw) => return,
                _ = tokio::io::copy(&mut sr, &mut cw) => return,
                _ = cut.wait_for(|cut| *cut) => {}
            }
        }
        // Cut: hold both ends silent until healed, then close them.
        let _ = cut.wait_for(|cut| !*cut).await;
        let _ = server.shutdown().await;
    } else {
        let _ = cut.wait_for(|cut| !*cut).await;
    }
    let _ = client.shutdown().await;
}
