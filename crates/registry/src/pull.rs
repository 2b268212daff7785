//! Pulling: resolve a reference to a manifest (through an index for the wanted platform),
//! fetch the config, then the layers not already here, several at once, each streamed into a
//! verified (and resumable) ingest, and unpacked in order as soon as it and the one below it
//! are in, so downloads overlap unpacking. Nothing is recorded until every layer is verified
//! and unpacked; a failure leaves no image and no unreferenced blob.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_store::content::{BLOB_INGEST, ContentError, Writer};
use berth_store::image::{
    self, Descriptor, ImageConfig, Index, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, Manifest, Platform,
};
use berth_store::images::{ImageStore, LayerRecord};
use berth_store::{Digest, Reference};
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RANGE};

use crate::auth::Credentials;
use crate::client::{Registry, Session, code_of, http_err, message_of, read_limited};
use crate::error::{RegistryError, Result, blocking_err};
use crate::progress::{Progress, short_id};

/// Manifests, indexes and configs are small; more is refused.
pub const MAX_MANIFEST: u64 = 4 << 20;
pub const MAX_CONFIG: u64 = 8 << 20;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A reference resolved to one image manifest and its config, ready to fetch.
pub struct Resolved {
    session: Arc<Session>,
    pub reference: Reference,
    /// The digest the reference resolved to: an index's when it named one (what Docker
    /// records as the repository digest), else the manifest's.
    pub digest: Digest,
    manifest_bytes: Vec<u8>,
    pub manifest: Manifest,
    config_bytes: Vec<u8>,
    pub config: ImageConfig,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub id: Digest,
    pub digest: Digest,
    /// The reference named another image (or none) before.
    pub updated: bool,
}

enum Fetched {
    Index(Index),
    Manifest(Box<Manifest>),
}

fn kind_of(content_type: &str, body: &[u8]) -> Result<&'static str> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion", default)]
        schema_version: Option<u32>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(body).map_err(|e| RegistryError::Invalid(format!("the manifest is not valid JSON: {e}")))?;
    if probe.schema_version == Some(1) || ct.starts_with("application/vnd.docker.distribution.manifest.v1") {
        return Err(RegistryError::Invalid(
            "the registry served a Docker schema 1 manifest, which is no longer supported; push the image again with a current client"
                .into(),
        ));
    }
    let known = [MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST];
    let declared = probe.media_type.as_deref().filter(|m| !m.is_empty());
    let from_header = known.iter().find(|k| **k == ct).copied();
    // The body's own media type, when it has one, must be what the registry said it serves.
    if let (Some(h), Some(d)) = (from_header, declared)
        && h != d
    {
        return Err(RegistryError::Invalid(format!("the registry served {h} but the manifest says it is {d}")));
    }
    let kind = match from_header.or(declared) {
        Some(k) => known
            .iter()
            .find(|x| **x == k)
            .copied()
            .ok_or_else(|| RegistryError::Invalid(format!("unsupported manifest media type {k:?}")))?,
        None if probe.manifests.is_some() => MEDIA_OCI_INDEX,
        None if probe.config.is_some() => MEDIA_OCI_MANIFEST,
        None => return Err(RegistryError::Invalid(format!("unsupported manifest media type {ct:?}"))),
    };
    // A manifest must have a config and an index manifests, whatever it is called.
    let is_index = kind == MEDIA_OCI_INDEX || kind == MEDIA_DOCKER_LIST;
    if is_index && probe.manifests.is_none() || !is_index && probe.config.is_none() {
        return Err(RegistryError::Invalid(format!("the manifest is not a valid {kind}")));
    }
    Ok(kind)
}

impl Registry {
    /// Resolve `reference` on its registry to the image manifest for `platform` (the host's
    /// when `None`) and fetch its config. Errors here come before any progress is reported.
    pub async fn resolve(&self, reference: &Reference, platform: Option<&Platform>, creds: Credentials) -> Result<Resolved> {
        // Docker Hub's mirrors first, each in turn; Docker Hub itself when none has the image.
        if reference.domain() == crate::client::HUB_DOMAIN {
            for m in &self.opts.mirrors {
                let tried = async {
                    let session = Arc::new(self.mirror_session(m, reference.path(), creds.clone()).await?);
                    resolve_on(session, reference, platform).await
                };
                match tried.await {
                    Ok(r) => return Ok(r),
                    Err(e) => tracing::info!(mirror = %m, %reference, "the mirror failed, trying the next: {e}"),
                }
            }
        }
        let session = Arc::new(self.session(reference.domain(), reference.path(), "pull", creds).await?);
        resolve_on(session, reference, platform).await
    }
}

/// `GET /v2/<repo>/tags/list`'s answer.
#[derive(serde::Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl Registry {
    /// Every tag of `reference`'s repository (`pull --all-tags`), as the registry lists them.
    pub async fn tags(&self, reference: &Reference, creds: Credentials) -> Result<Vec<String>> {
        let session = self.session(reference.domain(), reference.path(), "pull", creds).await?;
        let res = session.request(reqwest::Method::GET, "tags/list?n=10000", None).await?;
        let url = res.url().to_string();
        let status = res.status();
        let body = read_limited(res, MAX_MANIFEST, "tag list", &url).await?;
        if !status.is_success() {
            return Err(status_error(status, &body, &url, reference, "pull"));
        }
        let list: TagList =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid(format!("the tag list of {}: {e}", reference.name())))?;
        let mut tags = list.tags.unwrap_or_default();
        tags.sort();
        Ok(tags)
    }

    /// `GET /distribution/{name}/json`: what the registry has for `reference` (the top-level
    /// manifest or index) and the platforms it serves, without fetching any layer.
    pub async fn distribution(&self, reference: &Reference, creds: Credentials) -> Result<berth_models::distribution::DistributionInspect> {
        use berth_models::distribution::{Descriptor as Desc, DistributionInspect, Platform as Plat};
        let session = self.session(reference.domain(), reference.path(), "pull", creds).await?;
        let what = match (reference.digest(), reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, t) => t.unwrap_or("latest").to_string(),
        };
        let (bytes, fetched) = fetch_manifest(&session, reference, &what, reference.digest()).await?;
        let plat = |p: &Platform| Plat {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            os_version: p.os_version.clone(),
            os_features: None,
            variant: p.variant.clone(),
        };
        let (media_type, platforms) = match fetched {
            Fetched::Index(i) => (
                i.media_type.clone().unwrap_or_else(|| MEDIA_OCI_INDEX.into()),
                i.manifests.iter().filter_map(|m| m.platform.as_ref().map(plat)).collect(),
            ),
            Fetched::Manifest(m) => {
                let config = fetch_small_blob(&session, &m.config, MAX_CONFIG, "config").await?;
                let c = ImageConfig::parse(&config).map_err(|e| RegistryError::Invalid(format!("the image config: {e}")))?;
                let p = Platform { architecture: c.architecture, os: c.os, variant: c.variant, os_version: None };
                (m.media_type.clone().unwrap_or_else(|| MEDIA_OCI_MANIFEST.into()), vec![plat(&p)])
            }
        };
        Ok(DistributionInspect {
            descriptor: Desc { media_type, digest: Digest::of(&bytes).to_string(), size: bytes.len() as i64, ..Default::default() },
            platforms,
        })
    }
}

async fn resolve_on(session: Arc<Session>, reference: &Reference, platform: Option<&Platform>) -> Result<Resolved> {
    let wanted = platform.cloned().unwrap_or_else(Platform::host);
    let tag_or_digest = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };
    let (mut bytes, mut fetched) = fetch_manifest(&session, reference, &tag_or_digest, reference.digest()).await?;
    let digest = Digest::of(&bytes);
    if let Fetched::Index(index) = &fetched {
        let chosen = index.select(&wanted).map_err(|_| RegistryError::NoPlatform { wanted: wanted.to_string() })?.clone();
        let (b, f) = fetch_manifest(&session, reference, &chosen.digest.to_string(), Some(&chosen.digest)).await?;
        if matches!(f, Fetched::Index(_)) {
            return Err(RegistryError::Invalid(format!("the index entry {} is itself an index", chosen.digest)));
        }
        (bytes, fetched) = (b, f);
    }
    let Fetched::Manifest(manifest) = fetched else { unreachable!("an index was replaced by its manifest above") };
    if manifest.layers.len() > berth_store::snapshot::MAX_LAYER_DEPTH {
        return Err(RegistryError::Invalid(format!(
            "the image has {} layers, more than {}",
            manifest.layers.len(),
            berth_store::snapshot::MAX_LAYER_DEPTH
        )));
    }
    let config_bytes = fetch_small_blob(&session, &manifest.config, MAX_CONFIG, "config").await?;
    let config = ImageConfig::parse(&config_bytes).map_err(|e| RegistryError::Invalid(format!("the image config: {e}")))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(RegistryError::Invalid(format!(
            "the image config lists {} layers but the manifest has {}",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    if let Some(p) = platform
        && (config.os != p.os || config.architecture != p.architecture)
        && !config.os.is_empty()
    {
        return Err(RegistryError::Invalid(format!(
            "image with reference {} was found but does not match the specified platform: wanted {p}, actual: {}/{}",
            reference.familiar(),
            config.os,
            config.architecture
        )));
    }
    Ok(Resolved { session, reference: reference.clone(), digest, manifest_bytes: bytes, manifest: *manifest, config_bytes, config })
}

async fn fetch_manifest(s: &Session, reference: &Reference, what: &str, expected: Option<&Digest>) -> Result<(Vec<u8>, Fetched)> {
    let res = s.request(reqwest::Method::GET, &format!("manifests/{what}"), Some(ACCEPT)).await?;
    let url = res.url().to_string();
    let status = res.status();
    let content_type = res.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = read_limited(res, MAX_MANIFEST, "manifest", &url).await?;
    if !status.is_success() {
        return Err(status_error(status, &body, &url, reference, "pull"));
    }
    let actual = Digest::of(&body);
    if let Some(e) = expected
        && *e != actual
    {
        return Err(RegistryError::DigestMismatch { what: "manifest", digest: e.clone(), actual });
    }
    let fetched = match kind_of(&content_type, &body)? {
        MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST => Fetched::Index(Index::parse(&body).map_err(|e| RegistryError::Invalid(e.to_string()))?),
        _ => Fetched::Manifest(Box::new(Manifest::parse(&body).map_err(|e| RegistryError::Invalid(e.to_string()))?)),
    };
    Ok((body, fetched))
}

/// A registry's error status as Docker reports it.
pub(crate) fn status_error(status: StatusCode, body: &[u8], url: &str, reference: &Reference, action: &'static str) -> RegistryError {
    let message = message_of(body).unwrap_or_else(|| status.to_string());
    let code = code_of(body).unwrap_or_default();
    match status {
        StatusCode::NOT_FOUND if code == "MANIFEST_UNKNOWN" || code.is_empty() || code == "NAME_UNKNOWN" && action == "pull" => {
            if code == "NAME_UNKNOWN" {
                RegistryError::Denied { action, repo: reference.familiar_name(), message }
            } else {
                RegistryError::ManifestUnknown(reference.familiar())
            }
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Denied { action, repo: reference.familiar_name(), message },
        _ => RegistryError::Status { url: url.to_string(), status: status.as_u16(), message },
    }
}

/// A config (or other small blob), checked against its descriptor.
pub(crate) async fn fetch_small_blob(s: &Session, d: &Descriptor, limit: u64, what: &'static str) -> Result<Vec<u8>> {
    if d.size > limit {
        return Err(RegistryError::TooLarge { what, url: s.url(&format!("blobs/{}", d.digest)), limit });
    }
    let res = s.request(reqwest::Method::GET, &format!("blobs/{}", d.digest), None).await?;
    let url = res.url().to_string();
    let status = res.status();
    let body = read_limited(res, limit, what, &url).await?;
    if !status.is_success() {
        return Err(RegistryError::Status {
            url,
            status: status.as_u16(),
            message: message_of(&body).unwrap_or_else(|| status.to_string()),
        });
    }
    let actual = Digest::of(&body);
    if actual != d.digest {
        return Err(RegistryError::DigestMismatch { what, digest: d.digest.clone(), actual });
    }
    Ok(body)
}

impl Resolved {
    /// Fetch and unpack what is missing and record the image under the reference (and its
    /// repository digest). Progress goes to `progress` as Docker's messages.
    pub async fn fetch(self, store: Arc<ImageStore>, progress: Progress) -> Result<Pulled> {
        let Resolved { session, reference, digest, manifest_bytes, manifest, config_bytes, config } = self;
        let registry = session.registry().clone();
        let tag = match reference.tag() {
            Some(t) if reference.digest().is_none() => t.to_string(),
            _ => digest.to_string(),
        };
        // Docker names the repository by its path, without the registry (`library/busybox`).
        progress.status(Some(&tag), &format!("Pulling from {}", reference.path()));
        let _writing = {
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || store.write_guard()).await.map_err(blocking_err)?
        };
        let diff_ids = config.rootfs.diff_ids.clone();
        let chain = image::chain_ids(&diff_ids);
        let present: Vec<bool> = chain.iter().map(|c| store.has_layer(c)).collect();
        for (i, l) in manifest.layers.iter().enumerate() {
            let id = short_id(&l.digest);
            if present[i] {
                progress.status(Some(&id), "Already exists");
            } else {
                progress.status(Some(&id), "Pulling fs layer");
            }
        }
        // Downloads run as tasks of their own, so they go on while earlier layers unpack.
        let permits = Arc::new(tokio::sync::Semaphore::new(registry.opts.max_concurrent_downloads.max(1)));
        let cancel = Arc::new(AtomicBool::new(false));
        let mut downloads = Vec::new();
        for (i, l) in manifest.layers.iter().enumerate() {
            if present[i] {
                downloads.push(None);
                continue;
            }
            let (session, store, progress, permits, cancel, l) =
                (Arc::clone(&session), Arc::clone(&store), progress.clone(), Arc::clone(&permits), Arc::clone(&cancel), l.clone());
            let (chain_id, diff_id) = (chain[i].clone(), diff_ids[i].clone());
            downloads.push(Some(tokio::spawn(async move {
                let id = short_id(&l.digest);
                if permits.available_permits() == 0 {
                    progress.status(Some(&id), "Waiting");
                }
                let _permit = permits.acquire_owned().await.map_err(|e| RegistryError::Internal(e.to_string()))?;
                // One pass where the store allows it: the bytes go to the ingest and, as they
                // come, through decompression into the layer's own snapshot.
                let (feed, extraction) = if store.unpacks_out_of_order() && store.content.info(&l.digest).is_err() {
                    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(32);
                    let store = Arc::clone(&store);
                    let h = tokio::task::spawn_blocking(move || store.unpack_alone(&chain_id, ChannelReader::new(rx), &diff_id));
                    (Some(tx), Some(h))
                } else {
                    (None, None)
                };
                let downloaded = download(&session, &store, &l, &progress, feed, &cancel).await;
                let unstacked = match extraction {
                    Some(h) => Some(h.await.map_err(blocking_err)?),
                    None => None,
                };
                let unstacked = match (downloaded, unstacked) {
                    (Err(e), Some(Ok(u))) => {
                        store.drop_unstacked(u);
                        return Err(e);
                    }
                    (Err(e), _) => return Err(e),
                    // The whole blob went through: the extraction's verdict stands.
                    (Ok(true), Some(Ok(u))) => Some(u),
                    (Ok(true), Some(Err(e))) => return Err(e.into()),
                    // The feed was given up (a restart from the first byte): unpack from the blob.
                    (Ok(_), Some(Ok(u))) => {
                        store.drop_unstacked(u);
                        None
                    }
                    (Ok(_), _) => None,
                };
                let held = store.content.hold(&l.digest);
                progress.status(Some(&id), "Download complete");
                Ok::<_, RegistryError>((held, unstacked))
            })));
        }
        let mut held = Vec::new();
        let mut layers = Vec::new();
        let mut result: Result<()> = Ok(());
        for i in 0..manifest.layers.len() {
            let l = &manifest.layers[i];
            let id = short_id(&l.digest);
            let step = async {
                let mut unstacked = None;
                if let Some(task) = downloads[i].take() {
                    let (h, u) = task.await.map_err(blocking_err)??;
                    held.push(h);
                    unstacked = u;
                }
                let lock = {
                    let mut map = registry.unpacking.lock().unwrap_or_else(|p| p.into_inner());
                    Arc::clone(map.entry(chain[i].clone()).or_default())
                };
                let unpacked = async {
                    let _unpacking = lock.lock().await;
                    let parent = i.checked_sub(1).map(|p| chain[p].clone());
                    let (store, c) = (Arc::clone(&store), chain[i].clone());
                    if let Some(u) = unstacked {
                        let size = tokio::task::spawn_blocking(move || store.stack_layer(u, &c, parent.as_ref()))
                            .await
                            .map_err(blocking_err)??;
                        progress.status(Some(&id), "Pull complete");
                        return Ok(Some(size));
                    }
                    if store.has_layer(&chain[i]) {
                        return Ok(None);
                    }
                    progress.status(Some(&id), "Extracting");
                    let (blob, diff) = (l.digest.clone(), diff_ids[i].clone());
                    let size = tokio::task::spawn_blocking(move || store.unpack(parent.as_ref(), &c, &blob, Some(&diff)))
                        .await
                        .map_err(blocking_err)??;
                    progress.status(Some(&id), "Pull complete");
                    Ok::<_, RegistryError>(size)
                }
                .await;
                // The lock's entry goes with its last user.
                drop(lock);
                registry.unpacking.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, l| Arc::strong_count(l) > 1);
                let size = unpacked?;
                let size = size.unwrap_or_else(|| store.snapshots.usage(&chain[i].to_string()).map(|u| u.size).unwrap_or(0));
                layers.push(LayerRecord {
                    diff_id: diff_ids[i].clone(),
                    chain_id: chain[i].clone(),
                    blob: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size,
                });
                Ok::<_, RegistryError>(())
            };
            if let Err(e) = step.await {
                result = Err(e);
                break;
            }
        }
        if let Err(e) = result {
            // Stop the other downloads and wait for them, so no layer they unpacked is left.
            cancel.store(true, Ordering::Relaxed);
            for task in downloads.into_iter().flatten() {
                if let Ok(Ok((h, u))) = task.await {
                    held.push(h);
                    if let Some(u) = u {
                        let store = Arc::clone(&store);
                        let _ = tokio::task::spawn_blocking(move || store.drop_unstacked(u)).await;
                    }
                }
            }
            let store = Arc::clone(&store);
            let _ = tokio::task::spawn_blocking(move || store.drop_unreferenced(&held)).await;
            return Err(e);
        }
        let mut refs = Vec::new();
        if reference.digest().is_none() {
            refs.push(reference.clone());
        }
        let by_digest = Reference::parse(&format!("{}@{digest}", reference.name()))
            .map_err(|e| RegistryError::Internal(format!("the repository digest of {reference}: {e}")))?;
        refs.push(by_digest.clone());
        let before = store.lookup(refs.first().unwrap_or(&by_digest));
        let id = {
            let store = Arc::clone(&store);
            let index = manifest_bytes.clone();
            // An index's digest names the image; the platform's manifest is what is stored.
            tokio::task::spawn_blocking(move || store.record_pulled(&index, &config_bytes, layers, &refs)).await.map_err(blocking_err)??
        };
        drop(held);
        let updated = before.as_ref() != Some(&id);
        progress.status(None, &format!("Digest: {digest}"));
        let shown = if reference.digest().is_some() { by_digest.familiar() } else { reference.familiar() };
        if updated {
            progress.status(None, &format!("Status: Downloaded newer image for {shown}"));
        } else {
            progress.status(None, &format!("Status: Image is up to date for {shown}"));
        }
        Ok(Pulled { id, digest, updated })
    }
}

/// Fetch one layer blob into the content store, resuming and retrying a broken transfer.
/// With `feed`, every byte also goes there in order, once; returns whether the whole blob went
/// through it (false when the feed had to be given up: a transfer started again from the first
/// byte, or a resume of what an earlier pull left). `cancel` stops it between chunks.
async fn download(
    s: &Session,
    store: &ImageStore,
    d: &Descriptor,
    progress: &Progress,
    mut feed: Option<Feed>,
    cancel: &AtomicBool,
) -> Result<bool> {
    let id = short_id(&d.digest);
    let opts = s.opts();
    let mut pause = opts.retry_pause;
    let mut attempt = 1;
    let mut fed = 0u64;
    loop {
        if store.content.info(&d.digest).is_ok_and(|n| n == d.size) {
            // Here already (a pull that stopped before unpacking, or another pull).
            give_up(&mut feed).await;
            return Ok(false);
        }
        match download_once(s, store, d, progress, &mut feed, &mut fed, cancel).await {
            Ok(()) => return Ok(feed.is_some()),
            Err(RegistryError::Content(ContentError::Locked(_))) => {
                // Another pull is fetching the same blob: wait for it.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) if e.is_transient() && attempt < opts.attempts => {
                tracing::info!(layer = %d.digest, attempt, "download failed, retrying: {e}");
                progress.status(Some(&id), &format!("Retrying in {} seconds", pause.as_secs_f64().ceil() as u64));
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn download_once(
    s: &Session,
    store: &ImageStore,
    d: &Descriptor,
    progress: &Progress,
    feed: &mut Option<Feed>,
    fed: &mut u64,
    cancel: &AtomicBool,
) -> Result<()> {
    let id = short_id(&d.digest);
    let open = |content: berth_store::ContentStore, digest: Digest, size: u64| async move {
        tokio::task::spawn_blocking(move || content.writer(&format!("{BLOB_INGEST}{digest}"), Some((digest.clone(), size))))
            .await
            .map_err(blocking_err)?
            .map_err(RegistryError::from)
    };
    let mut w = open(store.content.clone(), d.digest.clone(), d.size).await?;
    let mut offset = w.offset();
    if offset != *fed {
        give_up(feed).await; // the feed cannot take bytes from the middle
    }
    let url = s.url(&format!("blobs/{}", d.digest));
    let res = s
        .send(|c| {
            let rb = c.get(&url);
            if offset > 0 { rb.header(RANGE, format!("bytes={offset}-")) } else { rb }
        })
        .await?;
    let status = res.status();
    if status == StatusCode::OK && offset > 0 {
        // The registry ignored the range: start again from the first byte.
        tokio::task::spawn_blocking(move || w.abort()).await.map_err(blocking_err)??;
        w = open(store.content.clone(), d.digest.clone(), d.size).await?;
        offset = 0;
        if *fed > 0 {
            give_up(feed).await;
        }
    } else if !status.is_success() {
        let body = read_limited(res, 1 << 20, "error", &url).await.unwrap_or_default();
        return Err(RegistryError::Status {
            url,
            status: status.as_u16(),
            message: message_of(&body).unwrap_or_else(|| status.to_string()),
        });
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let writing = tokio::task::spawn_blocking(move || -> std::io::Result<Writer> {
        use std::io::Write;
        while let Some(chunk) = rx.blocking_recv() {
            w.write_all(&chunk)?;
        }
        Ok(w)
    });
    let mut current = offset;
    let mut last = Instant::now() - Duration::from_secs(1);
    let mut stream = res.bytes_stream();
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        if cancel.load(Ordering::Relaxed) {
            failed = Some(RegistryError::Internal("the pull was given up".into()));
            break;
        }
        match chunk {
            Ok(c) => {
                current += c.len() as u64;
                if current > d.size {
                    failed = Some(RegistryError::TooLarge { what: "layer", url: url.clone(), limit: d.size });
                    break;
                }
                if let Some(f) = feed.as_ref() {
                    if f.send(Ok(c.clone())).await.is_err() {
                        // The unpacking stopped (bad content); its error is what counts.
                        *feed = None;
                    } else {
                        *fed += c.len() as u64;
                    }
                }
                if tx.send(c).await.is_err() {
                    break; // the writer failed; its error is below
                }
                if last.elapsed() >= Duration::from_millis(100) || current == d.size {
                    last = Instant::now();
                    progress.bytes(&id, "Downloading", current, d.size);
                }
            }
            Err(e) => {
                failed = Some(http_err("reading", &url)(e));
                break;
            }
        }
    }
    drop(tx);
    let w = writing.await.map_err(blocking_err)?.map_err(|e| {
        RegistryError::Content(ContentError::Io { context: "writing the layer", path: d.digest.to_string().into(), source: e })
    })?;
    if let Some(e) = failed {
        if matches!(e, RegistryError::TooLarge { .. }) || !e.is_transient() {
            give_up(feed).await;
        }
        // A body longer than the descriptor says is bad content, not worth resuming.
        if matches!(e, RegistryError::TooLarge { .. }) {
            let _ = tokio::task::spawn_blocking(move || w.abort()).await;
        }
        return Err(e);
    }
    progress.status(Some(&id), "Verifying Checksum");
    let committed = tokio::task::spawn_blocking(move || w.commit()).await.map_err(blocking_err)?;
    if committed.is_err() {
        give_up(feed).await;
    }
    committed.map_err(|e| match e {
        ContentError::DigestMismatch { expected, actual } => RegistryError::DigestMismatch { what: "layer", digest: expected, actual },
        e => RegistryError::Content(e),
    })?;
    Ok(())
}

/// Where a download sends its bytes for unpacking as they come.
type Feed = tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>;

/// Tell the unpacking reading the feed that no more (valid) bytes come.
async fn give_up(feed: &mut Option<Feed>) {
    if let Some(f) = feed.take() {
        let _ = f.send(Err(std::io::Error::other("the download started again; unpacked from the stored blob instead"))).await;
    }
}

/// The feed as a blocking reader, for the store's unpack (on a blocking thread).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> ChannelReader {
        ChannelReader { rx, current: bytes::Bytes::new() }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_header_and_must_agree_with_the_body() {
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
        assert_eq!(kind_of(MEDIA_OCI_MANIFEST, manifest).unwrap(), MEDIA_OCI_MANIFEST);
        assert_eq!(kind_of("", manifest).unwrap(), MEDIA_OCI_MANIFEST);
        assert!(kind_of(MEDIA_OCI_INDEX, manifest).is_err(), "served as an index, says it is a manifest");
        let bare_index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(kind_of("application/json", bare_index).unwrap(), MEDIA_OCI_INDEX);
        assert!(kind_of(MEDIA_DOCKER_MANIFEST, bare_index).is_err(), "a manifest without a config");
        let v1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(kind_of("application/vnd.docker.distribution.manifest.v1+prettyjws", v1).unwrap_err().to_string().contains("schema 1"));
        assert!(kind_of(MEDIA_OCI_MANIFEST, b"not json").is_err());
    }
}
