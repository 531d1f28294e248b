//! A TCP relay on a loopback port in front of another server, which a test can cut (every
//! connection dropped, the port closed) and restore on the same port: a server that
//! vanishes mid-request, while the server behind it keeps its state.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running relay.
pub struct Relay {
    pub addr: SocketAddr,
    target: SocketAddr,
    token: Arc<std::sync::Mutex<CancellationToken>>,
}

async fn serve(listener: TcpListener, target: SocketAddr, token: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut inbound, _)) = accepted else {
            continue;
        };
        let token = token.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}

impl Relay {
    /// Relays a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let token = CancellationToken::new();
        tokio::spawn(serve(listener, target, token.clone()));
        Self {
            addr,
            target,
            token: Arc::new(std::sync::Mutex::new(token)),
        }
    }

    /// Drops every connection and closes the port.
    pub fn cut(&self) {
        if let Ok(t) = self.token.lock() {
            t.cancel();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("rebinding {}: {e}", self.addr));
        let token = CancellationToken::new();
        if let Ok(mut t) = self.token.lock() {
            *t = token.clone();
        }
        tokio::spawn(serve(listener, self.target, token));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}
