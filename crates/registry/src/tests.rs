//! Pulls against a registry played by a test server: bearer tokens, tampered and broken
//! transfers, endless replies, cross-host redirects. (The real registry's tests are in
//! tests/tests/registry.rs.)

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use berth_store::images::{Driver, ImageStore};
use berth_store::{Digest, Reference};

use crate::{Credentials, Options, Progress, Registry, RegistryError};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

/// What the server does with a request.
enum Reply {
    Send {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Headers saying `length` bytes, then only `body`, then the connection closes.
    Cut {
        length: usize,
        body: Vec<u8>,
    },
    /// A body that never ends (until the client goes).
    Endless,
}

fn ok(body: &[u8], content_type: &str) -> Reply {
    Reply::Send { status: 200, headers: vec![("Content-Type".into(), content_type.into())], body: body.to_vec() }
}

type Handler = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

/// An HTTP/1.1 server on 127.0.0.1 answering each request with `handler(request, n)` (n counts
/// requests to the same path), one connection per request.
struct Server {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (s, h) = (Arc::clone(&s), Arc::clone(&handler));
                std::thread::spawn(move || serve(conn, &s, &h));
            }
        });
        Server { addr, seen }
    }

    fn seen(&self, path_part: &str) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|r| r.path.contains(path_part)).cloned().collect()
    }
}

fn serve(mut conn: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Handler) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        // A TLS hello (the client tries TLS first): not HTTP, hang up as a plain server would.
        if buf.is_empty() && byte[0] == 0x16 {
            return;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or("").to_string(), first.next().unwrap_or("").to_string());
    let headers: HashMap<String, String> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    if let Some(n) = headers.get("content-length").and_then(|n| n.parse::<usize>().ok()) {
        let mut body = vec![0u8; n];
        let _ = conn.read_exact(&mut body);
    }
    let req = Seen { method, path, headers };
    let n = {
        let mut s = seen.lock().unwrap();
        s.push(req.clone());
        s.iter().filter(|r| r.path == req.path).count()
    };
    match handler(&req, n) {
        Reply::Send { status, headers, body } => {
            let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
        Reply::Cut { length, body } => {
            let _ = conn.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n").as_bytes());
            let _ = conn.write_all(&body);
        }
        Reply::Endless => {
            let _ =
                conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n");
            let chunk = vec![b' '; 64 * 1024];
            while conn.write_all(&chunk).is_ok() {}
        }
    }
}

/// A one-layer image as a registry would hold it: (manifest, config, layer blob).
struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
}

fn image() -> Image {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    let data = vec![b'x'; 300_000];
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1);
    tar.append_data(&mut h, "file", &data[..]).unwrap();
    let raw = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": berth_store::image::Platform::host().architecture, "os": "linux",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": [Digest::of(&raw).to_string()]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(&config).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::of(&layer).to_string(), "size": layer.len()}],
    }))
    .unwrap();
    Image { manifest, config, layer }
}

/// The registry's usual answers for `img`; `blob` decides what the layer's request gets.
fn registry_of(
    img: Arc<Image>,
    blob: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
) -> impl Fn(&Seen, usize) -> Reply + Send + Sync {
    move |r, n| {
        if r.path == "/v2/" {
            return ok(b"{}", "application/json");
        }
        if r.path.contains("/manifests/") {
            return ok(&img.manifest, "application/vnd.oci.image.manifest.v1+json");
        }
        if r.path.ends_with(&Digest::of(&img.config).to_string()) {
            return ok(&img.config, "application/octet-stream");
        }
        if r.path.ends_with(&Digest::of(&img.layer).to_string()) {
            return blob(r, n);
        }
        Reply::Send { status: 404, headers: vec![], body: br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#.to_vec() }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
}

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<ImageStore>,
    registry: Registry,
}

fn env() -> Option<Env> {
    env_on(Driver::Vfs)
}

/// Overlay unpacks layers as they download (one pass); vfs from the stored blob after.
fn env_on(driver: Driver) -> Option<Env> {
    if !is_root() {
        eprintln!("SKIP: unpacking layers needs root");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ImageStore::open(dir.path(), driver).unwrap());
    let registry = Registry::new(Options { retry_pause: std::time::Duration::from_millis(10), ..Default::default() });
    Some(Env { _dir: dir, store, registry })
}

impl Env {
    async fn pull(&self, addr: &str, creds: Credentials) -> Result<crate::Pulled, RegistryError> {
        self.pull_seeing(addr, creds).await.0
    }

    /// The pull and its progress messages as `id: status`.
    async fn pull_seeing(&self, addr: &str, creds: Credentials) -> (Result<crate::Pulled, RegistryError>, Vec<String>) {
        let reference = Reference::parse(&format!("{addr}/test/img:1")).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let result = match self.registry.resolve(&reference, None, creds).await {
            Ok(resolved) => resolved.fetch(Arc::clone(&self.store), Progress::new(tx)).await,
            Err(e) => Err(e),
        };
        let mut seen = Vec::new();
        while let Ok(m) = rx.try_recv() {
            seen.push(format!("{}: {}", m.id.unwrap_or_default(), m.status.unwrap_or_default()));
        }
        (result, seen)
    }

    /// Nothing half-stored: no image, no blob but what `keep` names, no ingest.
    fn assert_empty(&self, keep: &[Digest]) {
        assert!(self.store.list().unwrap().is_empty(), "an image was recorded");
        let blobs: Vec<Digest> = self.store.content.list().unwrap().into_iter().map(|(d, _)| d).filter(|d| !keep.contains(d)).collect();
        assert!(blobs.is_empty(), "blobs left: {blobs:?}");
        assert!(self.store.content.ingests().unwrap().is_empty(), "ingests left: {:?}", self.store.content.ingests());
        assert!(self.store.snapshots.walk().unwrap().is_empty(), "layers left: {:?}", self.store.snapshots.walk());
    }
}

#[tokio::test]
async fn bearer_tokens_are_fetched_once_and_sent() {
    let Some(e) = env_on(Driver::Overlay) else { return };
    let img = Arc::new(image());
    let token_calls = Arc::new(Mutex::new(0));
    let calls = Arc::clone(&token_calls);
    let inner = registry_of(Arc::clone(&img), {
        let img = Arc::clone(&img);
        move |_, _| ok(&img.layer, "application/octet-stream")
    });
    let port = Arc::new(Mutex::new(String::new()));
    let p = Arc::clone(&port);
    let server = Server::start(move |r, n| {
        if r.path.starts_with("/token") {
            *calls.lock().unwrap() += 1;
            assert!(r.path.contains("scope=repository%3Atest%2Fimg%3Apull"), "{}", r.path);
            assert!(r.path.contains("service=mock"), "{}", r.path);
            return ok(br#"{"token": "T0K3N", "expires_in": 300}"#, "application/json");
        }
        if r.headers.get("authorization").map(String::as_str) != Some("Bearer T0K3N") {
            let realm = format!("Bearer realm=\"http://{}/token\",service=\"mock\"", p.lock().unwrap());
            return Reply::Send {
                status: 401,
                headers: vec![("WWW-Authenticate".into(), realm)],
                body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
            };
        }
        inner(r, n)
    });
    *port.lock().unwrap() = server.addr.clone();
    let pulled = e.pull(&server.addr, Credentials::default()).await.unwrap();
    assert_eq!(pulled.digest, Digest::of(&img.manifest));
    assert_eq!(*token_calls.lock().unwrap(), 1, "one token for the pull's scope, then cached");
    assert!(e.store.resolve(&format!("{}/test/img:1", server.addr)).is_ok());
    assert!(e.registry.unpacking.lock().unwrap().is_empty(), "no lock is kept for a layer once it is unpacked");
}

#[tokio::test]
async fn a_tampered_layer_is_refused_and_nothing_is_stored() {
    for driver in [Driver::Vfs, Driver::Overlay] {
        tampered(driver).await;
    }
}

async fn tampered(driver: Driver) {
    let Some(e) = env_on(driver) else { return };
    let img = Arc::new(image());
    let mut evil = img.layer.clone();
    let last = evil.len() - 20;
    evil[last] ^= 0xff;
    let server = Server::start(registry_of(Arc::clone(&img), move |_, _| ok(&evil, "application/octet-stream")));
    let err = e.pull(&server.addr, Credentials::default()).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { what: "layer", .. }), "{err}");
    // Not retried: the content, not the connection, was wrong.
    assert_eq!(server.seen(&Digest::of(&img.layer).to_string()).len(), 1);
    e.assert_empty(&[Digest::of(&img.config)]);
}

#[tokio::test]
async fn a_broken_transfer_resumes_where_it_stopped() {
    for driver in [Driver::Vfs, Driver::Overlay] {
        broken(driver).await;
    }
}

async fn broken(driver: Driver) {
    let Some(e) = env_on(driver) else { return };
    let img = Arc::new(image());
    let layer = img.layer.clone();
    let half = layer.len() / 2;
    let server = Server::start(registry_of(Arc::clone(&img), move |r, n| match n {
        1 => Reply::Cut { length: layer.len(), body: layer[..half].to_vec() },
        _ => {
            let from: usize = r.headers.get("range").and_then(|v| v.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()).unwrap_or(0);
            let body = layer[from..].to_vec();
            let range = format!("bytes {from}-{}/{}", layer.len() - 1, layer.len());
            Reply::Send { status: if from > 0 { 206 } else { 200 }, headers: vec![("Content-Range".into(), range)], body }
        }
    }));
    e.pull(&server.addr, Credentials::default()).await.unwrap();
    let tries = server.seen(&Digest::of(&img.layer).to_string());
    assert_eq!(tries.len(), 2, "one retry");
    assert_eq!(tries[1].headers.get("range").map(String::as_str), Some(format!("bytes={half}-").as_str()), "resumed, not restarted");
    assert!(e.store.content.ingests().unwrap().is_empty());
    let id = e.store.resolve(&format!("{}/test/img:1", server.addr)).unwrap();
    let layer = e.store.get(&id).unwrap().layers[0].clone();
    assert_eq!(std::fs::read(e.store.snapshots.dir(&layer.chain_id.to_string()).unwrap().join("file")).unwrap().len(), 300_000);
    assert_eq!(e.store.snapshots.walk().unwrap().len(), 1, "one layer, nothing else");
}

/// Where layers unpack as they download, they are stacked in order whatever order they
/// arrive in, and a restart of a transfer from its first byte unpacks from the blob instead.
#[tokio::test]
async fn layers_unpacked_as_they_arrive_are_stacked_in_order() {
    let Some(e) = env_on(Driver::Overlay) else { return };
    // Two layers; the first is slow to come, so the second is unpacked before it.
    let mk = |name: &str, data: &[u8]| {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1);
        tar.append_data(&mut h, name, data).unwrap();
        tar.into_inner().unwrap()
    };
    let (raw1, raw2) = (mk("one", &vec![b'1'; 200_000]), mk("two", b"2"));
    let gz = |raw: &[u8]| {
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        g.write_all(raw).unwrap();
        g.finish().unwrap()
    };
    let (l1, l2) = (gz(&raw1), gz(&raw2));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": berth_store::image::Platform::host().architecture, "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&raw1).to_string(), Digest::of(&raw2).to_string()]},
    }))
    .unwrap();
    let desc = |b: &[u8]| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::of(b).to_string(), "size": b.len()});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(&config).to_string(), "size": config.len()},
        "layers": [desc(&l1), desc(&l2)],
    }))
    .unwrap();
    let (d1, d2, dc) = (Digest::of(&l1).to_string(), Digest::of(&l2).to_string(), Digest::of(&config).to_string());
    let (s1, s2) = (crate::progress::short_id(&Digest::of(&l1)), crate::progress::short_id(&Digest::of(&l2)));
    let server = Server::start(move |r, n| {
        if r.path == "/v2/" {
            ok(b"{}", "application/json")
        } else if r.path.contains("/manifests/") {
            ok(&manifest, "application/vnd.oci.image.manifest.v1+json")
        } else if r.path.ends_with(&dc) {
            ok(&config, "application/octet-stream")
        } else if r.path.ends_with(&d1) {
            std::thread::sleep(std::time::Duration::from_millis(300));
            // The first attempt breaks; the registry then ignores the range (a fresh 200).
            if n == 1 { Reply::Cut { length: l1.len(), body: l1[..l1.len() / 3].to_vec() } } else { ok(&l1, "application/octet-stream") }
        } else if r.path.ends_with(&d2) {
            ok(&l2, "application/octet-stream")
        } else {
            Reply::Send { status: 404, headers: vec![], body: vec![] }
        }
    });
    let (pulled, seen) = e.pull_seeing(&server.addr, Credentials::default()).await;
    pulled.unwrap();
    assert!(seen.contains(&format!("{s1}: Extracting")), "the restarted layer unpacks from its blob: {seen:?}");
    assert!(
        !seen.contains(&format!("{s2}: Extracting")) && seen.contains(&format!("{s2}: Pull complete")),
        "the other unpacked as it came: {seen:?}"
    );
    let id = e.store.resolve(&format!("{}/test/img:1", server.addr)).unwrap();
    let layers = e.store.get(&id).unwrap().layers;
    let top = e.store.snapshots.stat(&layers[1].chain_id.to_string()).unwrap();
    assert_eq!(top.parent, Some(layers[0].chain_id.to_string()), "stacked on the first layer");
    assert_eq!(e.store.snapshots.walk().unwrap().len(), 2, "two layers, no leftover");
    let first = e.store.snapshots.dir(&layers[0].chain_id.to_string()).unwrap();
    assert_eq!(std::fs::read(first.join("one")).unwrap().len(), 200_000, "the restarted layer is whole");
    assert!(e.store.content.ingests().unwrap().is_empty());
}

#[tokio::test]
async fn endless_replies_and_huge_tokens_are_bounded() {
    let Some(e) = env() else { return };
    let server = Server::start(|r, _| if r.path == "/v2/" { ok(b"{}", "application/json") } else { Reply::Endless });
    let err = e.pull(&server.addr, Credentials::default()).await.unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { what: "manifest", .. }), "{err}");
    let port = Arc::new(Mutex::new(String::new()));
    let p = Arc::clone(&port);
    let token_server = Server::start(move |r, _| {
        if r.path.starts_with("/token") {
            let huge = format!("{{\"token\": \"{}\"}}", "a".repeat(2 << 20));
            return ok(huge.as_bytes(), "application/json");
        }
        let realm = format!("Bearer realm=\"http://{}/token\"", p.lock().unwrap());
        Reply::Send { status: 401, headers: vec![("WWW-Authenticate".into(), realm)], body: vec![] }
    });
    *port.lock().unwrap() = token_server.addr.clone();
    let err = e.pull(&token_server.addr, Credentials::default()).await.unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { what: "token", .. }), "{err}");
    e.assert_empty(&[]);
}

#[tokio::test]
async fn a_blob_redirect_to_another_host_gets_no_credentials() {
    let Some(e) = env() else { return };
    let img = Arc::new(image());
    let layer = img.layer.clone();
    let storage = Server::start(move |_, _| ok(&layer, "application/octet-stream"));
    let target = format!("http://{}/storage/blob", storage.addr);
    let inner = registry_of(Arc::clone(&img), move |_, _| Reply::Send {
        status: 307,
        headers: vec![("Location".into(), target.clone())],
        body: vec![],
    });
    // The registry wants basic auth on everything, as docker-registry with htpasswd does.
    let server = Server::start(move |r, n| match r.headers.get("authorization") {
        Some(a) if a == "Basic dTpw" => inner(r, n),
        _ => Reply::Send { status: 401, headers: vec![("WWW-Authenticate".into(), "Basic realm=\"mock\"".into())], body: vec![] },
    });
    let creds = Credentials { username: "u".into(), password: "p".into(), ..Default::default() };
    e.pull(&server.addr, creds).await.unwrap();
    let hops = storage.seen("/storage/blob");
    assert_eq!(hops.len(), 1, "the redirect was followed");
    assert_eq!(hops[0].method, "GET");
    assert!(!hops[0].headers.contains_key("authorization"), "credentials went to another host: {hops:?}");
}

/// An upload location on another host (a storage service) gets the blob but not the
/// credentials, which the registry's own requests carry.
#[tokio::test]
async fn an_upload_elsewhere_gets_no_credentials() {
    let Some(e) = env() else { return };
    let layer = image();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer.layer[..]), &mut raw).unwrap();
    let id = e.store.import(&raw[..], None, "", Default::default()).unwrap();
    let storage = Server::start(|r, _| {
        assert_eq!(r.method, "PUT");
        Reply::Send { status: 201, headers: vec![], body: vec![] }
    });
    let upload = format!("http://{}/upload/1", storage.addr);
    let server = Server::start(move |r, _| match r.headers.get("authorization") {
        Some(a) if a == "Basic dTpw" => match r.method.as_str() {
            "HEAD" => Reply::Send { status: 404, headers: vec![], body: vec![] },
            "POST" => Reply::Send { status: 202, headers: vec![("Location".into(), upload.clone())], body: vec![] },
            _ => Reply::Send { status: 201, headers: vec![], body: vec![] },
        },
        _ => Reply::Send { status: 401, headers: vec![("WWW-Authenticate".into(), "Basic realm=\"mock\"".into())], body: vec![] },
    });
    let target = Reference::parse(&format!("{}/test/pushed:1", server.addr)).unwrap();
    let creds = Credentials { username: "u".into(), password: "p".into(), ..Default::default() };
    e.registry.push(Arc::clone(&e.store), &id, &target, Vec::new(), creds, Progress::none()).await.unwrap();
    let puts = storage.seen("/upload/1");
    assert_eq!(puts.len(), 2, "the layer and the config");
    assert!(puts.iter().all(|p| !p.headers.contains_key("authorization")), "credentials went to another host: {puts:?}");
    assert!(server.seen("/manifests/1").iter().all(|m| m.headers.contains_key("authorization")));
}
