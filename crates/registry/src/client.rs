//! Talking to registries: one HTTP client per registry host (its TLS set up from the system's
//! trust store plus `certs.d/<host>/`), plain HTTP for insecure and loopback registries as
//! Docker allows it, and sessions for one repository that answer authentication challenges.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::auth::{Credentials, Token, TokenResponse, parse_challenge};
use crate::error::{RegistryError, Result};

/// Docker Hub's name in references, and where its API is.
pub const HUB_DOMAIN: &str = "docker.io";
pub const HUB_API: &str = "registry-1.docker.io";
/// The key Docker stores Hub credentials under in config.json.
pub const HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// Error bodies and token answers are small; more is refused.
const MAX_SMALL_BODY: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct Options {
    /// Registries (`host[:port]`) or networks (`10.0.0.0/8`) that may be plain HTTP or use
    /// certificates nobody vouches for (dockerd's `insecure-registries`). Loopback always may.
    pub insecure: Vec<String>,
    /// Mirrors for Docker Hub (`https://mirror.example`), tried before it for pulls.
    pub mirrors: Vec<String>,
    /// `<dir>/<host[:port]>/` holds `*.crt` (CAs), `*.cert` + `*.key` (a client certificate).
    pub certs_dir: PathBuf,
    /// Layers fetched at once per pull, and pushed at once per push.
    pub max_concurrent_downloads: usize,
    pub max_concurrent_uploads: usize,
    /// Attempts for a transfer that breaks, with doubling pauses from `retry_pause`.
    pub attempts: u32,
    pub retry_pause: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure: Vec::new(),
            mirrors: Vec::new(),
            certs_dir: PathBuf::from("/etc/docker/certs.d"),
            max_concurrent_downloads: 3,
            max_concurrent_uploads: 5,
            attempts: 5,
            retry_pause: Duration::from_millis(500),
        }
    }
}

/// One registry host as reached: the scheme that worked and the client for it.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// `https://host:port` (or `http://…`).
    pub base: String,
    pub http: reqwest::Client,
}

/// Everything registries share in a daemon: options, clients per host, tokens. Cheap to clone
/// (the clones share all of it), so sessions and transfers own one.
#[derive(Clone)]
pub struct Registry {
    pub(crate) opts: Arc<Options>,
    endpoints: Arc<Mutex<HashMap<String, Arc<Endpoint>>>>,
    tokens: Arc<Mutex<HashMap<String, Token>>>,
    /// Layers being unpacked by a pull in this process, so two pulls of images that share one
    /// unpack it once.
    pub(crate) unpacking: Arc<Mutex<HashMap<berth_store::Digest, Arc<tokio::sync::Mutex<()>>>>>,
}

/// The API host for a reference's domain (`docker.io` is served from `registry-1.docker.io`).
pub fn api_host(domain: &str) -> &str {
    if domain == HUB_DOMAIN || domain == "index.docker.io" { HUB_API } else { domain }
}

/// Where credentials for `domain` live in config.json and `X-Registry-Config`.
pub fn auth_key(domain: &str) -> String {
    if domain == HUB_DOMAIN || domain == "index.docker.io" || domain == HUB_API { HUB_AUTH_KEY.to_string() } else { domain.to_string() }
}

fn host_only(host: &str) -> &str {
    // `[::1]:5000`, `127.0.0.1:5000`, `localhost`
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map(|(h, _)| h).unwrap_or(host)
}

fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else { return false };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else { return false };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Registry {
    pub fn new(opts: Options) -> Registry {
        // One provider for the process: ring (aws-lc would need a long C build).
        let _ = provider().install_default();
        Registry { opts: Arc::new(opts), endpoints: Default::default(), tokens: Default::default(), unpacking: Default::default() }
    }

    /// The same client with new options (a reload of the daemon's settings): what was learnt
    /// about endpoints (which depends on them) starts over; tokens and unpacks in progress stay.
    pub fn with_options(&self, opts: Options) -> Registry {
        Registry {
            opts: Arc::new(opts),
            endpoints: Default::default(),
            tokens: Arc::clone(&self.tokens),
            unpacking: Arc::clone(&self.unpacking),
        }
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// May `host` be reached over plain HTTP or with an unverified certificate? Loopback
    /// (`127.0.0.0/8`, `::1`, `localhost`) and what the daemon's configuration lists, as Docker.
    pub fn is_insecure(&self, host: &str) -> bool {
        let name = host_only(host);
        if name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            return true;
        }
        self.opts.insecure.iter().any(|i| i == host || i == name || name.parse::<IpAddr>().is_ok_and(|ip| in_cidr(ip, i)))
    }

    /// The client for `host`: TLS first; plain HTTP when TLS cannot be had and the host is
    /// insecure. Decided once per daemon and host.
    pub(crate) async fn endpoint(&self, host: &str) -> Result<Arc<Endpoint>> {
        if let Some(e) = self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).get(host) {
            return Ok(Arc::clone(e));
        }
        let insecure = self.is_insecure(host);
        let tls = self.client(host, insecure)?;
        let https = Endpoint { base: format!("https://{host}"), http: tls };
        let chosen = if insecure {
            // A registry that speaks no TLS fails the handshake at once; one that does gets used.
            // A plain server that never answers a TLS hello costs this timeout, once per host.
            match https.http.get(format!("{}/v2/", https.base)).timeout(Duration::from_secs(3)).send().await {
                Ok(_) => https,
                Err(e) => {
                    let http = Endpoint { base: format!("http://{host}"), http: self.client(host, true)? };
                    // A TLS server answers plain HTTP with 400: TLS is what failed (a client
                    // certificate it wants, say), and its error is the one to report.
                    match http.http.get(format!("{}/v2/", http.base)).send().await {
                        Ok(r) if r.status() != StatusCode::BAD_REQUEST => {
                            tracing::debug!(host, "no TLS ({e}); plain HTTP, as the registry is insecure");
                            http
                        }
                        _ => https,
                    }
                }
            }
        } else {
            https
        };
        let chosen = Arc::new(chosen);
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).insert(host.to_string(), Arc::clone(&chosen));
        Ok(chosen)
    }

    fn client(&self, host: &str, insecure: bool) -> Result<reqwest::Client> {
        let tls = tls_config(&self.opts.certs_dir.join(host), insecure)?;
        let mut b = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            // A blob redirect may go to another host (registries use storage services); the
            // client drops credentials on such a hop.
            .redirect(reqwest::redirect::Policy::limited(10));
        let name = host_only(host);
        if name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            b = b.no_proxy();
        }
        b.build().map_err(|e| RegistryError::Tls(format!("setting up a client for {host}: {e}")))
    }

    /// A session for `repo` (`library/busybox`) on the registry at `domain`, asking for
    /// `actions` (`pull`, `push,pull`).
    pub async fn session(&self, domain: &str, repo: &str, actions: &str, creds: Credentials) -> Result<Session> {
        let host = api_host(domain).to_string();
        let endpoint = self.endpoint(&host).await?;
        Ok(Session {
            registry: self.clone(),
            endpoint,
            host,
            repo: repo.to_string(),
            actions: actions.to_string(),
            creds,
            auth: Mutex::new(None),
        })
    }

    /// A session for `repo` on a Docker Hub mirror (`https://mirror.example`, or `http://` for a
    /// plain one), for pulls.
    pub async fn mirror_session(&self, mirror: &str, repo: &str, creds: Credentials) -> Result<Session> {
        let url = reqwest::Url::parse(mirror).map_err(|e| RegistryError::Invalid(format!("registry mirror {mirror:?}: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(RegistryError::Invalid(format!("registry mirror {mirror:?} has no host"))),
        };
        let key = mirror.trim_end_matches('/').to_string();
        let cached = self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let endpoint = match cached {
            Some(e) => e,
            None => {
                let e = Arc::new(Endpoint { base: key.clone(), http: self.client(&host, self.is_insecure(&host))? });
                self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Arc::clone(&e));
                e
            }
        };
        Ok(Session {
            registry: self.clone(),
            endpoint,
            host,
            repo: repo.to_string(),
            actions: "pull".into(),
            creds,
            auth: Mutex::new(None),
        })
    }

    /// Check `creds` against the registry at `domain` (`docker login`): the `/v2/` ping,
    /// answering its challenge.
    pub async fn login(&self, domain: &str, creds: Credentials) -> Result<()> {
        let s = self.session(domain, "", "", creds).await?;
        let url = format!("{}/v2/", s.endpoint.base);
        let res = s.send(|c| c.get(&url)).await?;
        match res.status() {
            s if s.is_success() => Ok(()),
            status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(RegistryError::Unauthorized(format!("login attempt to {url} failed with status: {status}")))
            }
            status => Err(RegistryError::Status { url, status: status.as_u16(), message: error_message(res).await }),
        }
    }
}

/// ring, not aws-lc: rustls 0.23.48 deprecates ring's provider for lacking post-quantum key
/// exchange, but aws-lc needs a long C build (see DEPENDENCIES.md); registries speak classic TLS.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The system's roots plus `dir/*.crt`; a client certificate from `dir/*.cert` and its `.key`.
fn tls_config(dir: &Path, insecure: bool) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    let mut client_cert = None;
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in &files {
            match f.extension().and_then(|e| e.to_str()) {
                Some("crt") => {
                    for c in CertificateDer::pem_file_iter(f).map_err(|e| RegistryError::Tls(format!("reading {}: {e}", f.display())))? {
                        let c = c.map_err(|e| RegistryError::Tls(format!("reading {}: {e}", f.display())))?;
                        roots.add(c).map_err(|e| RegistryError::Tls(format!("adding {}: {e}", f.display())))?;
                    }
                }
                Some("cert") => {
                    let key = f.with_extension("key");
                    let certs = CertificateDer::pem_file_iter(f)
                        .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                        .map_err(|e| RegistryError::Tls(format!("reading {}: {e}", f.display())))?;
                    let key = PrivateKeyDer::from_pem_file(&key)
                        .map_err(|e| RegistryError::Tls(format!("reading {} (the key of {}): {e}", key.display(), f.display())))?;
                    client_cert = Some((certs, key));
                }
                _ => {}
            }
        }
    }
    let provider = Arc::new(provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::Tls(e.to_string()))?;
    let builder = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut cfg = match client_cert {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|e| RegistryError::Tls(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// An insecure registry's certificate is not checked, as dockerd does not check it (the
/// signatures still are, so the handshake is a real one).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Requests to one repository, with what authentication the registry asked for.
pub struct Session {
    registry: Registry,
    pub(crate) endpoint: Arc<Endpoint>,
    host: String,
    pub(crate) repo: String,
    actions: String,
    creds: Credentials,
    /// The `Authorization` value the last challenge called for.
    auth: Mutex<Option<HeaderValue>>,
}

impl Session {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.endpoint.base, self.repo)
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn opts(&self) -> &Options {
        &self.registry.opts
    }

    /// Send what `build` makes, answering one authentication challenge: the request is built
    /// again with the credentials or token the challenge asked for, so `build` must be
    /// repeatable (bodies that stream are sent only after a request that was).
    pub(crate) async fn send(&self, build: impl Fn(&reqwest::Client) -> RequestBuilder) -> Result<Response> {
        let attempt = |auth: Option<HeaderValue>| {
            let mut rb = build(&self.endpoint.http);
            if let Some(a) = auth {
                rb = rb.header(AUTHORIZATION, a);
            }
            rb
        };
        let current = self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let res = attempt(current.clone()).send().await.map_err(http_err("requesting", &self.endpoint.base))?;
        if res.status() != StatusCode::UNAUTHORIZED {
            return Ok(res);
        }
        let Some(challenge) = res.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(parse_challenge) else {
            return Ok(res);
        };
        let value = match challenge.scheme.as_str() {
            "basic" if !self.creds.username.is_empty() => self.creds.basic(),
            "bearer" => {
                let token = self.token(&challenge.params).await?;
                format!("Bearer {token}")
            }
            _ => return Ok(res),
        };
        let value =
            HeaderValue::from_str(&value).map_err(|_| RegistryError::Invalid("the registry's token is not a valid header value".into()))?;
        if current.as_ref() == Some(&value) {
            return Ok(res); // the same answer was refused already
        }
        *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = Some(value.clone());
        attempt(Some(value)).send().await.map_err(http_err("requesting", &self.endpoint.base))
    }

    /// Send a request that cannot be built twice (a streamed body) with the authorization the
    /// session already has: make a repeatable request through [`Session::send`] first.
    pub(crate) async fn send_once(&self, rb: RequestBuilder) -> Result<Response> {
        let (client, req) = rb.build_split();
        let mut req = req.map_err(http_err("building a request to", &self.endpoint.base))?;
        // An upload location may be another host (a storage service): it gets no credentials,
        // as redirects get none.
        let auth = self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(a) = auth
            && reqwest::Url::parse(&self.endpoint.base).is_ok_and(|base| same_origin(&base, req.url()))
        {
            req.headers_mut().insert(AUTHORIZATION, a);
        }
        client.execute(req).await.map_err(http_err("requesting", &self.endpoint.base))
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.endpoint.http
    }

    /// A `Location` the registry answered with, made absolute.
    pub(crate) fn absolute(&self, location: &str) -> Result<reqwest::Url> {
        let base = reqwest::Url::parse(&self.endpoint.base).map_err(|e| RegistryError::Internal(e.to_string()))?;
        base.join(location).map_err(|e| RegistryError::Invalid(format!("the registry's upload location {location:?}: {e}")))
    }

    /// A bearer token for this repository and actions from the challenge's realm; cached.
    async fn token(&self, params: &std::collections::BTreeMap<String, String>) -> Result<String> {
        if !self.creds.registry_token.is_empty() {
            return Ok(self.creds.registry_token.clone());
        }
        let realm = params.get("realm").ok_or_else(|| RegistryError::Invalid("a bearer challenge without a realm".into()))?;
        let service = params.get("service").cloned().unwrap_or_default();
        let scope = if self.repo.is_empty() {
            params.get("scope").cloned().unwrap_or_default()
        } else {
            format!("repository:{}:{}", self.repo, self.actions)
        };
        let key = format!("{}\n{service}\n{scope}\n{}\n{}", self.host, self.creds.username, self.creds.identity_token);
        if let Some(t) = self.registry.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&key).filter(|t| t.fresh()) {
            return Ok(t.value.clone());
        }
        let mut url = reqwest::Url::parse(realm).map_err(|e| RegistryError::Invalid(format!("the token realm {realm:?}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if !service.is_empty() {
                q.append_pair("service", &service);
            }
            if !scope.is_empty() {
                q.append_pair("scope", &scope);
            }
        }
        // The realm may be another host: its own client, with this registry's trust settings.
        let realm_host = url.host_str().map(|h| match url.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        });
        let http = match realm_host {
            Some(h) if h != self.host => self.registry.client(&h, self.registry.is_insecure(&h))?,
            _ => self.endpoint.http.clone(),
        };
        let rb = if !self.creds.identity_token.is_empty() {
            let mut form = reqwest::Url::parse("form:").map_err(|e| RegistryError::Internal(e.to_string()))?;
            form.query_pairs_mut()
                .append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", &self.creds.identity_token)
                .append_pair("service", &service)
                .append_pair("scope", &scope)
                .append_pair("client_id", "berth");
            http.post(realm.as_str())
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.query().unwrap_or("").to_string())
        } else if !self.creds.username.is_empty() {
            http.get(url.clone()).header(AUTHORIZATION, self.creds.basic())
        } else {
            http.get(url.clone())
        };
        let res = rb.send().await.map_err(http_err("fetching a token from", realm))?;
        let status = res.status();
        let body = read_limited(res, MAX_SMALL_BODY, "token", realm).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let why = message_of(&body).unwrap_or_else(|| "incorrect username or password".into());
            return Err(RegistryError::Unauthorized(format!("Get {:?}: unauthorized: {why}", format!("{}/v2/", self.endpoint.base))));
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                url: realm.clone(),
                status: status.as_u16(),
                message: message_of(&body).unwrap_or_default(),
            });
        }
        let token = serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| RegistryError::Invalid(format!("the token server {realm} answered without a token")))?;
        let value = token.value.clone();
        self.registry.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(key, token);
        Ok(value)
    }

    /// `HEAD`/`GET` helpers for the callers in this crate.
    pub(crate) async fn request(&self, method: Method, path: &str, accept: Option<&str>) -> Result<Response> {
        let url = self.url(path);
        self.send(|c| {
            let rb = c.request(method.clone(), &url);
            match accept {
                Some(a) => rb.header(reqwest::header::ACCEPT, a),
                None => rb,
            }
        })
        .await
    }
}

/// Scheme, host and port all the same.
pub(crate) fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

pub(crate) fn http_err<'a>(context: &'static str, url: &'a str) -> impl FnOnce(reqwest::Error) -> RegistryError + 'a {
    move |source| RegistryError::Http { context, url: url.to_string(), source }
}

/// Read a reply's body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(res: Response, limit: u64, what: &'static str, url: &str) -> Result<Vec<u8>> {
    if res.content_length().is_some_and(|n| n > limit) {
        return Err(RegistryError::TooLarge { what, url: url.to_string(), limit });
    }
    let mut out = Vec::new();
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(http_err("reading", url))?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(RegistryError::TooLarge { what, url: url.to_string(), limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The message of a registry's error body (`{"errors": [{"code", "message"}]}`), or of a token
/// server's (`{"details": …}`).
pub(crate) fn message_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(errors) = v.get("errors").and_then(|e| e.as_array()) {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("").to_ascii_lowercase().replace('_', " ");
                let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                if code.is_empty() { msg.to_string() } else { format!("{code}: {msg}") }
            })
            .collect();
        return Some(parts.join(", "));
    }
    v.get("details").or_else(|| v.get("message")).and_then(|d| d.as_str()).map(str::to_string)
}

/// The error code of a registry's error body (`MANIFEST_UNKNOWN`, `DENIED`, …).
pub(crate) fn code_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("errors")?.as_array()?.first()?.get("code")?.as_str().map(str::to_string)
}

pub(crate) async fn error_message(res: Response) -> String {
    let status = res.status();
    let url = res.url().to_string();
    match read_limited(res, MAX_SMALL_BODY, "error", &url).await {
        Ok(body) => message_of(&body).unwrap_or_else(|| status.to_string()),
        Err(_) => status.to_string(),
    }
}

impl Registry {
    /// ADD's URL source: GET `url` (http or https, redirects followed, the registry's TLS
    /// settings for its host) into `to`, at most `limit` bytes, hashing what arrives. Returns
    /// the content's digest and the server's `Last-Modified`, if any.
    pub async fn download(&self, url: &str, to: &mut std::fs::File, limit: u64) -> Result<(berth_store::Digest, Option<String>)> {
        use futures_util::StreamExt;
        use sha2::Digest as _;
        use std::io::Write;
        let parsed = reqwest::Url::parse(url).map_err(|e| RegistryError::Invalid(format!("{url}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RegistryError::Invalid(format!("{url}: only http and https URLs can be fetched")));
        }
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(RegistryError::Invalid(format!("{url}: no host"))),
        };
        let client = self.client(&host, false)?;
        let resp = client.get(parsed).send().await.map_err(http_err("fetching", url))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(RegistryError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                message: format!("failed to GET {url} with status {status}"),
            });
        }
        let modified = resp.headers().get(reqwest::header::LAST_MODIFIED).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut hasher = sha2::Sha256::new();
        let mut total = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(http_err("fetching", url))?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(RegistryError::TooLarge { what: "the download", url: url.to_string(), limit });
            }
            hasher.update(&chunk);
            to.write_all(&chunk).map_err(|e| RegistryError::Invalid(format!("writing what {url} sent: {e}")))?;
        }
        Ok((berth_store::Digest::from_sha256(&hasher.finalize().into()), modified))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names_map_to_its_api_and_auth_key() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("index.docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(auth_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(auth_key("localhost:5000"), "localhost:5000");
    }

    #[test]
    fn loopback_and_listed_registries_are_insecure() {
        let r = Registry::new(Options { insecure: vec!["reg.lan:5000".into(), "10.1.0.0/16".into()], ..Default::default() });
        for h in ["127.0.0.1:5000", "127.9.9.9", "localhost:5000", "localhost", "[::1]:5000", "reg.lan:5000", "10.1.2.3:443"] {
            assert!(r.is_insecure(h), "{h}");
        }
        for h in ["docker.io", "reg.lan:5001", "10.2.0.1", "localhost.example.com"] {
            assert!(!r.is_insecure(h), "{h}");
        }
    }

    #[test]
    fn only_the_registrys_own_origin_is_the_same() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(same_origin(&u("http://127.0.0.1:5000/v2/"), &u("http://127.0.0.1:5000/v2/a/blobs/uploads/x")));
        assert!(same_origin(&u("https://reg.example/"), &u("https://reg.example:443/x")));
        assert!(!same_origin(&u("http://127.0.0.1:5000/"), &u("http://127.0.0.1:5001/x")));
        assert!(!same_origin(&u("https://reg.example/"), &u("http://reg.example/x")));
        assert!(!same_origin(&u("https://reg.example/"), &u("https://storage.example/x")));
    }

    #[test]
    fn registry_error_bodies_read_as_docker_prints_them() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(message_of(body).unwrap(), "manifest unknown: manifest unknown");
        assert_eq!(code_of(body).unwrap(), "MANIFEST_UNKNOWN");
        assert_eq!(message_of(br#"{"details":"incorrect username or password"}"#).unwrap(), "incorrect username or password");
        assert!(message_of(b"<html>").is_none());
    }
}
