//! Pushing: every layer the registry lacks is uploaded (several at once), after a `HEAD` for
//! each and a cross-repository mount where the image came from another repository of the same
//! registry; then the config, then the manifest under the tag. A layer stored uncompressed
//! (an import, a load of an uncompressed archive) is gzipped once and the result remembered,
//! so the next push sends the same bytes. A pulled image is pushed with its own manifest, so
//! its digest stays the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_models::distribution::PushResult;
use berth_models::messages::JsonMessage;
use berth_store::image::{self, Descriptor, MEDIA_DOCKER_CONFIG, MEDIA_DOCKER_MANIFEST, Manifest};
use berth_store::images::ImageStore;
use berth_store::{Digest, Reference};
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};

use crate::auth::Credentials;
use crate::client::{Registry, Session, error_message};
use crate::error::{RegistryError, Result, blocking_err};
use crate::progress::{Progress, short_id};
use crate::pull::status_error;

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub digest: Digest,
    pub size: u64,
}

/// How a blob got to the registry.
enum Sent {
    Exists,
    Mounted(String),
    Pushed,
}

impl Registry {
    /// Push the image `id` as `target` (its tag, or `latest`). `mount_from` names repositories
    /// of the same registry that may already hold its layers.
    pub async fn push(
        &self,
        store: Arc<ImageStore>,
        id: &Digest,
        target: &Reference,
        mount_from: Vec<String>,
        creds: Credentials,
        progress: Progress,
    ) -> Result<Pushed> {
        progress.status(None, &format!("The push refers to repository [{}]", target.familiar_name()));
        let session = Arc::new(self.session(target.domain(), target.path(), "pull,push", creds).await?);
        let (img, config, manifest) = {
            let store = Arc::clone(&store);
            let id = id.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                let img = store.get(&id)?;
                let (config, _) = store.config(&id)?;
                let manifest = store.manifest(&img)?;
                Ok((img, config, manifest))
            })
            .await
            .map_err(blocking_err)??
        };
        // Top layer first, as Docker lists them.
        for l in img.layers.iter().rev() {
            progress.status(Some(&short_id(&l.diff_id)), "Preparing");
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(self.opts.max_concurrent_uploads.max(1)));
        let mut tasks = Vec::new();
        for l in img.layers.iter().rev() {
            let (session, store, progress, permits, l, mount_from) =
                (Arc::clone(&session), Arc::clone(&store), progress.clone(), Arc::clone(&permits), l.clone(), mount_from.clone());
            tasks.push(tokio::spawn(async move {
                let id = short_id(&l.diff_id);
                if permits.available_permits() == 0 {
                    progress.status(Some(&id), "Waiting");
                }
                let _permit = permits.acquire_owned().await.map_err(|e| RegistryError::Internal(e.to_string()))?;
                let (blob, media_type) = match store.push_blob(&l) {
                    Some(b) => b,
                    None => {
                        let (store, diff) = (Arc::clone(&store), l.diff_id.clone());
                        let blob = tokio::task::spawn_blocking(move || store.compress_layer(&diff)).await.map_err(blocking_err)??;
                        (blob, image::MEDIA_DOCKER_LAYER_GZIP.to_string())
                    }
                };
                let size = store.content.info(&blob)?;
                match send_blob(&session, &store, &blob, size, &mount_from, &progress, &id).await? {
                    Sent::Exists => progress.status(Some(&id), "Layer already exists"),
                    Sent::Mounted(from) => progress.status(Some(&id), &format!("Mounted from {from}")),
                    Sent::Pushed => progress.status(Some(&id), "Pushed"),
                }
                Ok::<_, RegistryError>(Descriptor {
                    media_type,
                    digest: blob,
                    size,
                    platform: None,
                    annotations: Default::default(),
                    urls: Vec::new(),
                })
            }));
        }
        let mut pushed = Vec::new();
        let mut failed = None;
        for t in tasks {
            match t.await.map_err(blocking_err).and_then(|r| r) {
                Ok(d) => pushed.push(d),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        pushed.reverse();
        // The config.
        let config_digest = Digest::of(&config);
        if !exists(&session, &config_digest).await? {
            upload(&session, &config_digest, config.len() as u64, Body::Bytes(config.clone()), &Progress::none(), "").await?;
        }
        // The manifest: the stored one when it names exactly these blobs (a pulled image keeps
        // its digest), else a new Docker schema 2 manifest.
        let stored = Manifest::parse(&manifest).ok();
        let same = stored
            .as_ref()
            .is_some_and(|m| m.config.digest == config_digest && m.layers.iter().map(|l| &l.digest).eq(pushed.iter().map(|d| &d.digest)));
        let (bytes, media_type) = if same {
            let media_type = stored.and_then(|m| m.media_type).unwrap_or_else(|| image::MEDIA_OCI_MANIFEST.to_string());
            (manifest, media_type)
        } else {
            let m = Manifest {
                schema_version: 2,
                media_type: Some(MEDIA_DOCKER_MANIFEST.into()),
                config: Descriptor {
                    media_type: MEDIA_DOCKER_CONFIG.into(),
                    digest: config_digest,
                    size: config.len() as u64,
                    platform: None,
                    annotations: Default::default(),
                    urls: Vec::new(),
                },
                layers: pushed,
                annotations: Default::default(),
            };
            (serde_json::to_vec(&m).map_err(|e| RegistryError::Internal(e.to_string()))?, MEDIA_DOCKER_MANIFEST.to_string())
        };
        let tag = target.tag().unwrap_or("latest").to_string();
        let url = session.url(&format!("manifests/{tag}"));
        let res = session.send(|c| c.put(&url).header(CONTENT_TYPE, media_type.as_str()).body(bytes.clone())).await?;
        let status = res.status();
        if !status.is_success() {
            let body = crate::client::read_limited(res, 1 << 20, "error", &url).await.unwrap_or_default();
            return Err(status_error(status, &body, &url, target, "push"));
        }
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        progress.status(None, &format!("{tag}: digest: {digest} size: {size}"));
        let aux = PushResult { tag, digest: digest.to_string(), size: size as i64 };
        progress.send(JsonMessage { aux: serde_json::to_value(aux).ok(), progress_detail: Some(Default::default()), ..Default::default() });
        Ok(Pushed { digest, size })
    }
}

async fn exists(s: &Session, digest: &Digest) -> Result<bool> {
    let res = s.request(reqwest::Method::HEAD, &format!("blobs/{digest}"), None).await?;
    Ok(res.status().is_success())
}

/// One layer blob to the registry: already there, mounted from another repository, or sent.
async fn send_blob(
    s: &Session,
    store: &ImageStore,
    blob: &Digest,
    size: u64,
    mount_from: &[String],
    progress: &Progress,
    id: &str,
) -> Result<Sent> {
    if exists(s, blob).await? {
        return Ok(Sent::Exists);
    }
    for from in mount_from.iter().filter(|f| **f != s.repo) {
        let url = format!("{}?mount={blob}&from={from}", s.url("blobs/uploads/"));
        let res = s.send(|c| c.post(&url).header(CONTENT_LENGTH, "0")).await?;
        if res.status() == StatusCode::CREATED {
            return Ok(Sent::Mounted(from.clone()));
        }
        // 202: the registry started an upload instead; it is abandoned for a fresh one below.
    }
    let path = store.content.blob_path(blob);
    let opts = s.opts();
    let mut pause = opts.retry_pause;
    for attempt in 1..=opts.attempts {
        match upload(s, blob, size, Body::File(path.clone()), progress, id).await {
            Ok(()) => return Ok(Sent::Pushed),
            Err(e) if e.is_transient() && attempt < opts.attempts => {
                tracing::info!(%blob, attempt, "upload failed, retrying: {e}");
                progress.status(Some(id), &format!("Retrying in {} seconds", pause.as_secs_f64().ceil() as u64));
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Err(RegistryError::Internal(format!("uploading {blob}: no attempts left")))
}

enum Body {
    File(std::path::PathBuf),
    Bytes(Vec<u8>),
}

/// Start an upload and send the whole blob in one `PUT` (a monolithic upload).
async fn upload(s: &Session, digest: &Digest, size: u64, body: Body, progress: &Progress, id: &str) -> Result<()> {
    let start = s.url("blobs/uploads/");
    let res = s.send(|c| c.post(&start).header(CONTENT_LENGTH, "0")).await?;
    if res.status() != StatusCode::ACCEPTED {
        let status = res.status();
        return Err(RegistryError::Status { url: start, status: status.as_u16(), message: error_message(res).await });
    }
    let location = res
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::Invalid("the registry started an upload without a Location".into()))?
        .to_string();
    let mut url = s.absolute(&location)?;
    url.query_pairs_mut().append_pair("digest", &digest.to_string());
    let body = match body {
        Body::Bytes(b) => reqwest::Body::from(b),
        Body::File(path) => {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| RegistryError::Content(berth_store::ContentError::Io { context: "opening", path: path.clone(), source: e }))?;
            let sent = Arc::new(AtomicU64::new(0));
            let (progress, id) = (progress.clone(), id.to_string());
            let mut last = Instant::now() - Duration::from_secs(1);
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
                if let Ok(c) = &chunk {
                    let now = sent.fetch_add(c.len() as u64, Ordering::Relaxed) + c.len() as u64;
                    if last.elapsed() >= Duration::from_millis(100) || now == size {
                        last = Instant::now();
                        progress.bytes(&id, "Pushing", now, size);
                    }
                }
                chunk
            });
            reqwest::Body::wrap_stream(stream)
        }
    };
    let rb = s.http().put(url.clone()).header(CONTENT_TYPE, "application/octet-stream").header(CONTENT_LENGTH, size).body(body);
    let res = s.send_once(rb).await?;
    if res.status() != StatusCode::CREATED {
        let status = res.status();
        return Err(RegistryError::Status { url: url.to_string(), status: status.as_u16(), message: error_message(res).await });
    }
    Ok(())
}
