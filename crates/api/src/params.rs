//! Query strings and bodies as Docker clients send them, and the streaming pieces (hijacked
//! connections, streamed bodies) that attach, exec, logs, import and load share.

use std::collections::BTreeMap;
use std::pin::Pin;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ApiError, Kind};

/// A hijacked connection: the client's raw bytes in, ours out.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {
    /// Has the client closed the connection both ways? An end of its input alone is not that:
    /// Docker's clients close their writing half when their input ends (and at once when they
    /// attach no stdin), then read to the end. Where the transport cannot tell, false.
    fn hung_up(&self) -> bool {
        false
    }
}
pub type Io = Box<dyn Duplex>;

/// A hijacked unix-socket connection: what hyper read past the request first, then the socket.
struct UnixClient {
    read_buf: Bytes,
    stream: tokio::net::UnixStream,
}

impl AsyncRead for UnixClient {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.read_buf.is_empty() {
            let n = self.read_buf.len().min(buf.remaining());
            buf.put_slice(&self.read_buf.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UnixClient {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Duplex for UnixClient {
    /// A unix socket whose peer closed shows POLLHUP; one whose peer only shut its writing half
    /// shows POLLRDHUP without it.
    fn hung_up(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd { fd: self.stream.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
        // SAFETY: one valid pollfd, a zero timeout; the socket stays open while we hold it.
        let n = unsafe { libc::poll(&mut fd, 1, 0) };
        n > 0 && fd.revents & (libc::POLLHUP | libc::POLLERR) != 0
    }
}

/// Any other hijacked connection (TCP: a peer's close and its half-close look the same).
impl Duplex for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {}

/// No client: input ends at once, output goes nowhere (a detached exec).
pub fn nobody() -> Io {
    Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink()))
}

impl Duplex for tokio::io::Join<tokio::io::Empty, tokio::io::Sink> {}

/// The upgraded connection as the handler's [`Io`]: the socket itself where it is a unix one
/// (served by [`crate::server`]), so a hang-up can be told from a half-close.
async fn client_io(up: hyper::upgrade::Upgraded) -> Io {
    match up.downcast::<hyper_util::rt::TokioIo<tokio::net::UnixStream>>() {
        Ok(parts) => {
            let stream = parts.io.into_inner();
            headers_read(&stream).await;
            Box::new(UnixClient { read_buf: parts.read_buf, stream })
        }
        Err(up) => Box::new(hyper_util::rt::TokioIo::new(up)),
    }
}

/// The longest a hijacked stream waits for its client to read the 101 response.
const HEADERS_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long it yields the CPU to the client before it sleeps in timer ticks.
const HEADERS_READ_SPIN: std::time::Duration = std::time::Duration::from_micros(500);

/// Wait until the client has read everything sent so far (the 101 response's headers), up to
/// [`HEADERS_READ_WAIT`]. docker-py reads the headers through a buffered reader, then reads the
/// stream from the raw socket: output that arrived together with the headers sat in that buffer
/// and was lost (an exec's whole output, under load). dockerd is never fast enough to hit this;
/// berth is. On a unix socket, SIOCOUTQ counts the bytes the peer has not read yet.
async fn headers_read(stream: &tokio::net::UnixStream) {
    use std::os::fd::AsRawFd;
    let unread = || {
        let mut n: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int; the socket stays open while we hold it.
        let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        r == 0 && n > 0
    };
    let start = std::time::Instant::now();
    while unread() {
        let waited = start.elapsed();
        if waited >= HEADERS_READ_WAIT {
            break;
        }
        if waited < HEADERS_READ_SPIN {
            // A client that reads at once (Go's, berth's) is being woken right now: give it
            // the CPU rather than wait a timer tick (tokio's timer counts milliseconds).
            std::thread::yield_now();
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

/// A streamed body.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Request bodies are parsed here so bad JSON gets Docker's 400 with a message.
pub fn json_body<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    berth_models::decode::from_slice(bytes).map_err(|e| ApiError::new(Kind::InvalidArgument, format!("invalid JSON in request body: {e}")))
}

/// Query parameters, with Docker's spelling of booleans (`1`, `true`, `True`).
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(uri: &axum::http::Uri) -> Query {
        let q = uri.query().unwrap_or("");
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    pub fn str(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter (`names=a&names=b`).
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0.iter().filter(|(key, _)| key == k).map(|(_, v)| v.clone()).collect()
    }

    pub fn bool(&self, k: &str) -> bool {
        matches!(self.str(k).map(|v| v.to_ascii_lowercase()).as_deref(), Some("1" | "true" | "yes"))
    }

    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.str(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| ApiError::new(Kind::InvalidArgument, format!("invalid value for {k}: {v:?}"))),
        }
    }

    /// `filters={"status":["running"]}` (or the old `{"status":{"running":true}}`).
    pub fn filters(&self) -> Result<Filters, ApiError> {
        let Some(raw) = self.str("filters").filter(|v| !v.is_empty()) else { return Ok(Filters::default()) };
        let bad = |e: String| ApiError::new(Kind::InvalidArgument, format!("invalid filter {raw:?}: {e}"));
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let obj = v.as_object().ok_or_else(|| bad("not an object".into()))?;
        let mut out = BTreeMap::new();
        for (k, vals) in obj {
            let list: Vec<String> = match vals {
                serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                serde_json::Value::Object(m) => m.iter().filter(|(_, on)| on.as_bool() == Some(true)).map(|(s, _)| s.clone()).collect(),
                _ => return Err(bad(format!("values of {k} must be a list"))),
            };
            out.insert(k.clone(), list);
        }
        Ok(Filters(out))
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Docker's list filters: name → accepted values.
#[derive(Debug, Default, Clone)]
pub struct Filters(pub BTreeMap<String, Vec<String>>);

impl Filters {
    pub fn get(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Refuse filters the endpoint does not know, as Docker does.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::new(Kind::InvalidArgument, format!("invalid filter '{k}'"))),
            None => Ok(()),
        }
    }
}

/// Answer an attach/exec request by upgrading the connection, then hand the raw connection to `f`.
/// Clients send `Upgrade: tcp`; berth always switches protocols.
pub fn hijack<F, Fut>(req: Request<Body>, tty: bool, f: F) -> Response
where
    F: FnOnce(Io) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let wants_upgrade = req.headers().get(header::UPGRADE).is_some();
    if !wants_upgrade {
        return ApiError::new(Kind::InvalidArgument, "this endpoint hijacks the connection: send Connection: Upgrade and Upgrade: tcp")
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => f(client_io(up).await).await,
            Err(e) => tracing::debug!("upgrade failed: {e}"),
        }
    });
    let mut headers = HeaderMap::new();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(stream_type(tty)));
    (StatusCode::SWITCHING_PROTOCOLS, headers).into_response()
}

/// Docker's media types for raw (TTY) and multiplexed output.
pub fn stream_type(tty: bool) -> &'static str {
    if tty { "application/vnd.docker.raw-stream" } else { "application/vnd.docker.multiplexed-stream" }
}

/// A request body as a stream of chunks, for endpoints that take tars.
pub fn body_stream(body: Body) -> ByteStream {
    use futures_util::TryStreamExt;
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_filters_parse_like_docker() {
        let q = Query::parse(&"/x?all=1&size=True&filters=%7B%22status%22%3A%5B%22running%22%5D%7D&n=3&x=a+b".parse().unwrap());
        assert!(q.bool("all") && q.bool("size") && !q.bool("missing"));
        assert_eq!(q.int("n").unwrap(), Some(3));
        assert_eq!(q.str("x"), Some("a b"));
        assert_eq!(q.filters().unwrap().get("status"), ["running"]);
        let old = Query::parse(&"/x?filters=%7B%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%7D".parse().unwrap());
        assert_eq!(old.filters().unwrap().get("label"), ["a=b"]);
        assert!(Query::parse(&"/x?filters=nope".parse().unwrap()).filters().is_err());
        assert!(Query::parse(&"/x?n=abc".parse().unwrap()).int("n").is_err());
        assert_eq!(Query::parse(&"/x?a=%zz%4".parse().unwrap()).str("a"), Some("%zz%4"));
    }
}
