//! A small blocking HTTP/1.1 client over the daemon's unix socket (or loopback TCP): requests,
//! streamed bodies (chunked or not) and hijacked connections for attach and exec.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use anyhow::{Context, bail};

/// The API version the CLI speaks: the docker CLI 28's.
pub const API_VERSION: &str = "1.50";
pub const API: &str = "/v1.50";

pub enum Conn {
    Unix(UnixStream),
    Tcp(std::net::TcpStream),
}

impl Read for Conn {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(b),
            Conn::Tcp(s) => s.read(b),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(b),
            Conn::Tcp(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn {
    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }

    pub fn shutdown_write(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }
}

#[derive(Clone)]
pub struct Client {
    host: String,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

pub struct Body {
    reader: BufReader<Conn>,
    chunked: bool,
    remaining: Option<u64>,
    chunk_left: u64,
    done: bool,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.chunked {
            if self.chunk_left == 0 {
                let mut line = String::new();
                self.reader.read_line(&mut line)?;
                let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).map_err(io::Error::other)?;
                if size == 0 {
                    self.done = true;
                    return Ok(0);
                }
                self.chunk_left = size;
            }
            let want = buf.len().min(self.chunk_left as usize);
            let n = self.reader.read(&mut buf[..want])?;
            if n == 0 {
                self.done = true;
                return Ok(0);
            }
            self.chunk_left -= n as u64;
            if self.chunk_left == 0 {
                let mut crlf = String::new();
                self.reader.read_line(&mut crlf)?;
            }
            return Ok(n);
        }
        let want = match self.remaining {
            Some(0) => {
                self.done = true;
                return Ok(0);
            }
            Some(r) => buf.len().min(r as usize),
            None => buf.len(),
        };
        let n = self.reader.read(&mut buf[..want])?;
        if let Some(r) = self.remaining.as_mut() {
            *r -= n as u64;
        }
        Ok(n)
    }
}

impl Response {
    /// A header's value (names compare without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(mut self) -> anyhow::Result<String> {
        let mut s = String::new();
        self.body.read_to_string(&mut s)?;
        Ok(s)
    }

    /// The JSON body of a successful answer, or the daemon's message as the error.
    pub fn json(self) -> anyhow::Result<serde_json::Value> {
        let status = self.status;
        let text = self.text()?;
        if status >= 400 {
            bail!(ApiError::from_body(&text));
        }
        let body = if text.trim().is_empty() { "null" } else { &text };
        serde_json::from_str(body).with_context(|| format!("the daemon's answer is not JSON: {text}"))
    }

    /// The body as `T` (an empty body reads as JSON `null`), or the daemon's message as the error.
    pub fn json_as<T: serde::de::DeserializeOwned>(self) -> anyhow::Result<T> {
        let status = self.status;
        let text = self.text()?;
        if status >= 400 {
            bail!(ApiError::from_body(&text));
        }
        let body = if text.trim().is_empty() { "null" } else { &text };
        // Go's rules, as the docker CLI reads answers: any daemon's null is an absent field.
        berth_models::decode::from_slice(body.as_bytes()).with_context(|| format!("the daemon's answer is not the JSON expected: {text}"))
    }

    /// Fail with the daemon's message unless the status is a success.
    pub fn ok(self) -> anyhow::Result<Response> {
        if self.status >= 400 {
            let text = self.text()?;
            bail!(ApiError::from_body(&text));
        }
        Ok(self)
    }

    /// The connection itself (after a 101 or a hijacked 200).
    pub fn into_conn(self) -> (BufReader<Conn>, Vec<u8>) {
        let buffered = self.body.reader.buffer().to_vec();
        (self.body.reader, buffered)
    }
}

/// An error answer from the daemon: its status and message.
#[derive(Debug)]
pub struct ApiError {
    pub message: String,
}

impl ApiError {
    fn from_body(text: &str) -> ApiError {
        let message = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        ApiError { message }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Error response from daemon: {}", self.message)
    }
}

impl std::error::Error for ApiError {}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `a=1&b=x%20y` from pairs.
pub fn query(pairs: &[(&str, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join("&")
}

impl Client {
    pub fn new(host: Option<String>) -> Client {
        let host = host.or_else(|| std::env::var("DOCKER_HOST").ok()).unwrap_or_else(|| "unix:///run/berth/berth.sock".into());
        Client { host }
    }

    fn connect(&self) -> anyhow::Result<Conn> {
        if let Some(p) = self.host.strip_prefix("unix://") {
            return UnixStream::connect(p)
                .map(Conn::Unix)
                .with_context(|| format!("Cannot connect to the berth daemon at {}. Is berthd running?", self.host));
        }
        if let Some(a) = self.host.strip_prefix("tcp://") {
            return std::net::TcpStream::connect(a)
                .map(Conn::Tcp)
                .with_context(|| format!("Cannot connect to the berth daemon at {}", self.host));
        }
        bail!("unsupported host {:?}: use unix:///path or tcp://HOST:PORT", self.host)
    }

    /// Send a request; `body` is streamed with chunked encoding.
    pub fn send(&self, method: &str, path: &str, body: Option<(&str, &mut dyn Read)>, upgrade: bool) -> anyhow::Result<Response> {
        let mut conn = self.connect()?;
        let mut head = self.head(method, path, upgrade);
        match body {
            None => head.push_str("Content-Length: 0\r\n\r\n"),
            Some((ctype, _)) => head.push_str(&format!("Content-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n")),
        }
        conn.write_all(head.as_bytes())?;
        let head_only = method == "HEAD";
        if let Some((_, r)) = body {
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                conn.write_all(format!("{n:x}\r\n").as_bytes())?;
                conn.write_all(&buf[..n])?;
                conn.write_all(b"\r\n")?;
            }
            conn.write_all(b"0\r\n\r\n")?;
        }
        let mut answer = Self::answer(conn)?;
        if head_only {
            // An answer to HEAD has headers only, whatever its Content-Length says.
            answer.body.remaining = Some(0);
            answer.body.chunked = false;
        }
        Ok(answer)
    }

    /// A `POST` without a body and with `headers` (`X-Registry-Auth`).
    pub fn post_with(&self, path: &str, headers: &[(&str, String)]) -> anyhow::Result<Response> {
        let mut conn = self.connect()?;
        let mut head = self.head("POST", path, false);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("Content-Length: 0\r\n\r\n");
        conn.write_all(head.as_bytes())?;
        Self::answer(conn)
    }

    /// Send a request with a JSON body, in one write with its length (no chunks for the daemon
    /// to wait for and decode).
    pub fn send_json(&self, method: &str, path: &str, json: &[u8], upgrade: bool) -> anyhow::Result<Response> {
        let mut conn = self.connect()?;
        let mut req = self.head(method, path, upgrade);
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", json.len()));
        let mut req = req.into_bytes();
        req.extend_from_slice(json);
        conn.write_all(&req)?;
        Self::answer(conn)
    }

    fn head(&self, method: &str, path: &str, upgrade: bool) -> String {
        let mut head = format!("{method} {API}{path} HTTP/1.1\r\nHost: berth\r\nUser-Agent: berth-cli\r\n");
        head.push_str(if upgrade { "Connection: Upgrade\r\nUpgrade: tcp\r\n" } else { "Connection: close\r\n" });
        head
    }

    /// Read the answer's status line and headers; the body is read from the returned response.
    fn answer(conn: Conn) -> anyhow::Result<Response> {
        // Large enough that a body streamed in big chunks (cp, save) takes few reads.
        let mut reader = BufReader::with_capacity(256 << 10, conn);
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("bad HTTP answer from the daemon")?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let find = |n: &str| headers.iter().find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
        let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let remaining =
            if status == 101 || status == 204 || status == 304 { Some(0) } else { find("content-length").and_then(|v| v.parse().ok()) };
        let remaining = if status == 101 { None } else { remaining };
        Ok(Response { status, headers, body: Body { reader, chunked: chunked && status != 101, remaining, chunk_left: 0, done: false } })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.send("GET", path, None, false)?.json()
    }

    pub fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send("GET", path, None, false)?.json_as()
    }

    pub fn post(&self, path: &str) -> anyhow::Result<Response> {
        self.send("POST", path, None, false)?.ok()
    }

    pub fn post_json(&self, path: &str, v: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let data = serde_json::to_vec(v)?;
        self.send_json("POST", path, &data, false)?.json()
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.send("DELETE", path, None, false)?.json()
    }
}
