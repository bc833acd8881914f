//! Listening sockets and the accept loop shared by the front ends.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::session::{SessionLimiter, Shutdown};

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Binding a TCP address failed.
    #[error("cannot listen on {addr}: {source}")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// The system error.
        source: io::Error,
    },
    /// Binding a Unix socket failed.
    #[error("cannot listen on {}: {source}", path.display())]
    Unix {
        /// The socket path.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
}

/// Binds a TCP listener (with SO_REUSEADDR, as tokio does by default on Unix).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError::Tcp { addr, source })
}

/// The address of `service.listenaddr` (all addresses when empty) and `port`.
pub fn listen_addr(config: &msgconf::Config, port: u16) -> SocketAddr {
    let ip = config
        .get_str(msgconf::registry::names::LISTEN_ADDR)
        .parse()
        .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    SocketAddr::new(ip, port)
}

/// Binds a Unix stream socket at `path`, removing a stale socket file
/// left by an earlier run (but not any other kind of file).
pub fn bind_unix(path: &Path) -> Result<UnixListener, BindError> {
    use std::os::unix::fs::FileTypeExt;
    let err = |source| BindError::Unix {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(err)?;
        }
    }
    UnixListener::bind(path).map_err(err)
}

/// A listener [`serve`] can accept from: TCP or Unix.
pub trait Acceptor: Send + 'static {
    /// The connection type.
    type Stream: Send + 'static;
    /// The peer address type.
    type Peer: Send + 'static;
    /// Accepts one connection.
    fn accept_one(&self) -> impl Future<Output = io::Result<(Self::Stream, Self::Peer)>> + Send;
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;
    type Peer = SocketAddr;
    async fn accept_one(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, peer) = self.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((s, peer))
    }
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    type Peer = tokio::net::unix::SocketAddr;
    async fn accept_one(&self) -> io::Result<(UnixStream, tokio::net::unix::SocketAddr)> {
        self.accept().await
    }
}

/// Accepts connections until `shutdown` fires, spawning one task per
/// connection. A connection admitted by `limiter` runs `session(stream,
/// peer)`, holding its place until that future completes; at the cap it
/// runs `busy(stream, peer)`
/// instead, which should write the protocol's busy reply and return.
/// Accept errors (such as running out of descriptors) are logged and
/// retried after a short pause, never ending the loop.
pub async fn serve<L, F, Fut, B, BFut>(
    listener: L,
    limiter: SessionLimiter,
    shutdown: Shutdown,
    session: F,
    busy: B,
) where
    L: Acceptor,
    F: Fn(L::Stream, L::Peer) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    B: Fn(L::Stream, L::Peer) -> BFut + Send + Sync + 'static,
    BFut: Future<Output = ()> + Send + 'static,
{
    let mut logged_busy = false;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            r = listener.accept_one() => r,
        };
        match accepted {
            Ok((stream, peer)) => match limiter.try_acquire() {
                Some(permit) => {
                    logged_busy = false;
                    let run = session(stream, peer);
                    tokio::spawn(async move {
                        run.await;
                        drop(permit);
                    });
                }
                None => {
                    if !logged_busy {
                        tracing::warn!(
                            "session limit reached ({} sessions); refusing new connections",
                            limiter.cap()
                        );
                        logged_busy = true;
                    }
                    tokio::spawn(busy(stream, peer));
                }
            },
            Err(e) => {
                tracing::error!("accept failed: {e}");
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn serve_runs_sessions_then_busy_at_the_cap_and_stops_on_shutdown() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limiter = SessionLimiter::new(1);
        let shutdown = Shutdown::new();
        let sd = shutdown.clone();
        let server = tokio::spawn(serve(
            listener,
            limiter.clone(),
            shutdown.clone(),
            move |mut s: TcpStream, _peer| {
                let sd = sd.clone();
                async move {
                    let _ = s.write_all(b"* OK hello\r\n").await;
                    sd.wait().await;
                    let _ = s.write_all(b"* BYE shutting down\r\n").await;
                }
            },
            |mut s: TcpStream, _peer| async move {
                let _ = s.write_all(b"* BYE busy\r\n").await;
            },
        ));
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let n = first.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"* OK hello\r\n");
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut text = String::new();
        second.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "* BYE busy\r\n");
        assert_eq!(limiter.active(), 1);

        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        let mut text = String::new();
        first.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "* BYE shutting down\r\n");
        assert_eq!(limiter.wait_idle(Duration::from_secs(5)).await, 0);
        // the listener is closed: new connections are refused
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn unix_socket_serves_and_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmtp.sock");
        drop(bind_unix(&path).unwrap()); // leaves a stale socket file
        let listener = bind_unix(&path).unwrap();
        let shutdown = Shutdown::new();
        let server = tokio::spawn(serve(
            listener,
            SessionLimiter::new(4),
            shutdown.clone(),
            |mut s: UnixStream, _peer| async move {
                let _ = s.write_all(b"220 ready\r\n").await;
            },
            |_s: UnixStream, _peer| async {},
        ));
        let mut c = UnixStream::connect(&path).await.unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "220 ready\r\n");
        shutdown.trigger();
        server.await.unwrap();
        // a regular file is not removed
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(bind_unix(&file).is_err());
        assert!(file.exists());
    }

    #[test]
    fn listen_addr_defaults_to_all_addresses() {
        let c = msgconf::Config::new();
        assert_eq!(listen_addr(&c, 143).to_string(), "[::]:143");
        let mut c = msgconf::Config::new();
        c.set("service.listenaddr", "127.0.0.1").unwrap();
        assert_eq!(listen_addr(&c, 993).to_string(), "127.0.0.1:993");
    }
}
