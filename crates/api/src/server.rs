//! Serving the API on a listener: a task per connection (HTTP/1, upgrades for attach and exec),
//! at most `max_connections` at once (the rest wait in the listener's backlog), a connection
//! closed when it has had no request in flight for `header_timeout` (which bounds half-sent
//! headers and idle keep-alive connections alike, and never a long poll or a hijacked stream),
//! and a graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// What one listener's connections may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once, hijacked and streaming ones included.
    pub max_connections: usize,
    /// How long a connection may go without a request in flight: from its accept, or from the
    /// end of its last response, until the headers of its next request are in.
    pub header_timeout: Duration,
}

/// berthd's defaults: far more connections than Docker's clients open at once (a compose
/// project holds a few per container), few enough to bound what idle ones cost (~7 KiB each).
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

/// Requests of one connection in flight (from the arrival of their headers to the end of
/// their response's body), and when the last one ended. hyper's own header timeout would do
/// this, but with it set hyper reads ahead after every response, which cost 3-10 % of a `run`
/// or an `exec` here (interleaved A/B); a timer per connection costs nothing measurable.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` when the connection last became idle.
    idle_since: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity { epoch: Instant::now(), in_flight: AtomicUsize::new(0), idle_since: AtomicU64::new(0) })
    }

    /// When the connection may be closed if nothing arrives meanwhile; None while busy.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.epoch + Duration::from_millis(self.idle_since.load(Ordering::SeqCst)) + timeout)
    }

    fn ended(&self) {
        self.idle_since.store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that tells its connection's [`Activity`] when it is done with (written out,
/// or dropped with the connection).
struct Tracked {
    inner: Body,
    activity: Arc<Activity>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity.ended();
    }
}

/// The connections being served, with their activity, for the reaper that closes idle ones:
/// one task waking about once a second instead of a timer armed by every connection (those cost
/// 3 % of a `run` and an `exec`, interleaved A/B).
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    conns: std::sync::Mutex<std::collections::HashMap<u64, (Arc<Activity>, tokio::task::AbortHandle)>>,
}

impl Registry {
    /// A connection whose task may already have ended (the next reap forgets it then).
    fn add(&self, id: u64, activity: Arc<Activity>, task: tokio::task::AbortHandle) {
        if !task.is_finished() {
            self.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (activity, task));
        }
    }

    /// Close (abort the tasks of) connections that have had nothing in flight for `timeout`;
    /// forget those that ended.
    fn reap(&self, timeout: Duration) {
        let now = Instant::now();
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, (activity, task)| {
            let idle = activity.idle_deadline(timeout).is_some_and(|at| at <= now);
            if idle {
                task.abort();
            }
            !idle && !task.is_finished()
        });
    }
}

/// Forgets its connection when the connection's task ends or is aborted.
struct Forget {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.registry.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// Serve `app` on `listener` until `stop` resolves; then stop accepting and wait for the
/// connections in flight (the caller bounds how long).
pub async fn serve<L, S>(mut listener: L, app: S, limits: Limits, stop: impl Future<Output = ()>)
where
    L: Listener,
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    // Each connection holds a sender; once ours is dropped, `recv` ends when theirs have all gone.
    let (alive, mut all_gone) = tokio::sync::mpsc::channel::<()>(1);
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let registry = Arc::new(Registry::default());
    let reaper = {
        let registry = Arc::clone(&registry);
        let every = (limits.header_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                registry.reap(limits.header_timeout);
            }
        })
    };
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
        let activity = Activity::new();
        let (arrived, finished) = (Arc::clone(&activity), Arc::clone(&activity));
        let svc = tower::ServiceExt::map_response(
            tower::ServiceExt::map_request(app.clone(), move |req: Request<Incoming>| {
                arrived.in_flight.fetch_add(1, Ordering::SeqCst);
                req.map(Body::new)
            }),
            // hyper takes the wrapper as the body type itself: no second box per response.
            move |resp: Response<Body>| resp.map(|inner| Tracked { inner, activity: Arc::clone(&finished) }),
        );
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), hyper_util::service::TowerToHyperService::new(svc))
            .with_upgrades();
        let (alive, mut stopped, idle) = (alive.clone(), stopped.clone(), Arc::clone(&activity));
        let id = registry.next.fetch_add(1, Ordering::Relaxed);
        let forget = Forget { registry: Arc::clone(&registry), id };
        // The task's captures (the connection, its slot) go when it ends or the reaper aborts it.
        let task = tokio::spawn(async move {
            let _held = (slot, alive, forget);
            tokio::pin!(conn);
            let done = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stopped.wait_for(|s| *s) => None,
            };
            let done = match done {
                Some(r) => r,
                // Stopping: a request in flight is answered, then the connection closes; one
                // with none closes at once (hyper's graceful stop would wait for a first one).
                None if idle.idle_deadline(limits.header_timeout).is_some() => return,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = done {
                tracing::debug!("connection: {e}");
            }
        });
        registry.add(id, activity, task.abort_handle());
    }
    drop(listener);
    reaper.abort();
    let _ = stopping.send(true);
    drop(alive);
    let _ = all_gone.recv().await;
}
