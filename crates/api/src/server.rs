//! Serving the API on a listener: a task per connection (HTTP/1, upgrades for attach and exec),
//! at most `max_connections` at once (the rest wait in the listener's backlog), a timeout for
//! a request's headers that also closes keep-alive connections left idle (hyper starts it
//! whenever it waits for a request, never while a response streams), and a graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

/// What one listener's connections may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once, hijacked and streaming ones included.
    pub max_connections: usize,
    /// Time for a client to send a request's headers, counted from when the connection is
    /// ready for the request (accepted, or done with the previous response).
    pub header_timeout: Duration,
}

/// berthd's defaults: far more connections than Docker's clients open at once (a compose
/// project holds a few per container), few enough to bound what idle ones cost (~9 KiB each).
pub const DEFAULT_LIMITS: Limits = Limits { max_connections: 2048, header_timeout: Duration::from_secs(60) };

impl Default for Limits {
    fn default() -> Self {
        DEFAULT_LIMITS
    }
}

/// A listener whose connections the API is served on.
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> std::io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> std::io::Result<Self::Io> {
        let (s, _) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

/// Serve `app` on `listener` until `stop` resolves; then stop accepting and wait for the
/// connections in flight (the caller bounds how long).
pub async fn serve<L, S>(mut listener: L, app: S, limits: Limits, stop: impl Future<Output = ()>)
where
    L: Listener,
    S: tower::Service<Request<axum::body::Body>, Response = axum::response::Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    // Each connection holds a sender; once ours is dropped, `recv` ends when theirs have all gone.
    let (alive, mut all_gone) = tokio::sync::mpsc::channel::<()>(1);
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    tokio::pin!(stop);
    loop {
        // A slot first: over the cap, connections wait in the kernel's backlog, unread.
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => match s { Ok(s) => s, Err(_) => break },
            () = &mut stop => break,
        };
        let io = tokio::select! {
            r = listener.accept() => match r {
                Ok(io) => io,
                Err(e) => {
                    // Out of descriptors, say: wait a moment rather than spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let svc = hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(app.clone(), |req: Request<Incoming>| {
            req.map(axum::body::Body::new)
        }));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        let (alive, mut stopped) = (alive.clone(), stopped.clone());
        tokio::spawn(async move {
            tokio::pin!(conn);
            let done = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stopped.wait_for(|s| *s) => None,
            };
            // Stopping: the request in flight is answered, then the connection closes.
            let done = match done {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = done {
                tracing::debug!("connection: {e}");
            }
            drop((slot, alive));
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    drop(alive);
    let _ = all_gone.recv().await;
}
