//! Images over the API, backed by berth-store: list, inspect, history, tag, remove, import,
//! save, load and prune. Store calls that touch the disk run on the blocking pool.

use std::collections::BTreeSet;
use std::sync::Arc;

use berth_api::images::Images;
use berth_api::params::{ByteStream, Filters};
use berth_api::{ApiError, Kind};
use berth_models::images::{DeleteItem, GraphDriver, HistoryItem, ImageInspect, ImageMetadata, ImageSummary, PruneResponse, RootFs};
use berth_store::images::{ImageRecord, ImageStore, ImagesError};
use berth_store::{Digest, Reference};
use futures_util::StreamExt as _;

use crate::Engine;

fn store_err(e: ImagesError) -> ApiError {
    crate::Error::from(e).into()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?
}

fn untagged(r: &Reference) -> DeleteItem {
    DeleteItem { untagged: Some(r.familiar()), ..Default::default() }
}

fn unix(t: Option<&str>) -> i64 {
    t.map(crate::record::unix_seconds).unwrap_or(0.0) as i64
}

/// A body stream as a blocking reader, for the store.
fn reader(body: ByteStream) -> tokio_util::io::SyncIoBridge<tokio_util::io::StreamReader<ByteStream, bytes::Bytes>> {
    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body))
}

impl Engine {
    fn image_id(&self, name: &str) -> Result<Digest, ApiError> {
        self.images.resolve(name).map_err(|e| match e {
            ImagesError::NotFound(_) | ImagesError::Reference(_) => ApiError::new(Kind::NotFound, format!("No such image: {name}")),
            e => store_err(e),
        })
    }

    /// Containers (any state) made from image `id`.
    fn users_of(&self, id: &Digest) -> Vec<(String, bool)> {
        let id = id.to_string();
        self.all().iter().map(|c| c.rec()).filter(|r| r.image == id).map(|r| (r.id.clone(), r.state.status.is_live())).collect()
    }

    pub(crate) fn image_summary(&self, img: &ImageRecord, refs: &[Reference], digests: bool) -> ImageSummary {
        let cfg = self.images.config(&img.id).map(|(_, c)| c).unwrap_or_default();
        ImageSummary {
            id: img.id.to_string(),
            parent_id: String::new(),
            repo_tags: refs.iter().filter(|r| r.digest().is_none()).map(Reference::familiar).collect(),
            repo_digests: if digests {
                refs.iter().filter(|r| r.digest().is_some()).map(Reference::familiar).collect()
            } else {
                Vec::new()
            },
            created: unix(cfg.created.as_deref()),
            size: self.images.layer_sizes(img).iter().sum(),
            shared_size: -1,
            labels: cfg.config.labels.clone().unwrap_or_default(),
            containers: -1,
        }
    }
}

fn filter_images(
    store: &ImageStore,
    list: Vec<(ImageRecord, Vec<Reference>)>,
    f: &Filters,
) -> Result<Vec<(ImageRecord, Vec<Reference>)>, ApiError> {
    f.only(&["dangling", "label", "reference", "before", "since"])?;
    let created_of =
        |id: &Digest| store.config(id).ok().and_then(|(_, c)| c.created).map(|c| crate::record::unix_seconds(&c)).unwrap_or(0.0);
    let mut bounds = Vec::new();
    for (k, cmp) in [("before", std::cmp::Ordering::Less), ("since", std::cmp::Ordering::Greater)] {
        for name in f.get(k) {
            let id = store.resolve(name).map_err(store_err)?;
            bounds.push((created_of(&id), cmp));
        }
    }
    let patterns = f.get("reference");
    Ok(list
        .into_iter()
        // With reference patterns, an image is listed under the names that match only, as in Docker.
        .map(|(img, refs)| {
            let refs = if patterns.is_empty() {
                refs
            } else {
                let matching: Vec<Reference> = refs.iter().filter(|r| patterns.iter().any(|p| reference_matches(p, r))).cloned().collect();
                if matching.is_empty() { refs } else { matching }
            };
            (img, refs)
        })
        .filter(|(img, refs)| {
            let dangling = refs.is_empty();
            let d_ok = f.get("dangling").iter().all(|v| (v == "true" || v == "1") == dangling);
            let labels = store.config(&img.id).ok().and_then(|(_, c)| c.config.labels).unwrap_or_default();
            let l_ok = f.get("label").iter().all(|l| match l.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                None => labels.contains_key(l.as_str()),
            });
            let r_ok = f.get("reference").is_empty() || f.get("reference").iter().any(|pat| refs.iter().any(|r| reference_matches(pat, r)));
            let t = created_of(&img.id);
            let b_ok = bounds.iter().all(|(bt, cmp)| t.partial_cmp(bt) == Some(*cmp));
            d_ok && l_ok && r_ok && b_ok
        })
        .collect())
}

/// `reference=busybox`, `busybox:1*`, `*/app:*` style patterns on the familiar form.
fn reference_matches(pattern: &str, r: &Reference) -> bool {
    let fam = r.familiar();
    let name = r.familiar_name();
    glob(pattern, &fam) || glob(pattern, &name)
}

fn glob(p: &str, s: &str) -> bool {
    match p.split_once('*') {
        None => p == s,
        Some((pre, rest)) => {
            let Some(tail) = s.strip_prefix(pre) else { return false };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

#[async_trait::async_trait]
impl Images for Engine {
    async fn list(&self, _all: bool, filters: Filters, digests: bool) -> Result<Vec<ImageSummary>, ApiError> {
        let list = self.images.list().map_err(store_err)?;
        let mut list = filter_images(&self.images, list, &filters)?;
        list.sort_by_key(|(img, _)| std::cmp::Reverse(self.images.config(&img.id).ok().and_then(|(_, c)| c.created).unwrap_or_default()));
        Ok(list.iter().map(|(img, refs)| self.image_summary(img, refs, digests)).collect())
    }

    async fn inspect(&self, name: &str) -> Result<ImageInspect, ApiError> {
        let id = self.image_id(name)?;
        let img = self.images.get(&id).map_err(store_err)?;
        let (_, cfg) = self.images.config(&id).map_err(store_err)?;
        let refs: Vec<Reference> =
            self.images.list().map_err(store_err)?.into_iter().find(|(i, _)| i.id == id).map(|(_, r)| r).unwrap_or_default();
        let size: u64 = self.images.layer_sizes(&img).iter().sum();
        // The OCI image config's fields that are set (API 1.50's shape; berth-api fills in the
        // container-config fields older versions show).
        let config = serde_json::to_value(&cfg.config).unwrap_or_default();
        Ok(ImageInspect {
            id: id.to_string(),
            repo_tags: refs.iter().filter(|r| r.digest().is_none()).map(Reference::familiar).collect(),
            repo_digests: refs.iter().filter(|r| r.digest().is_some()).map(Reference::familiar).collect(),
            parent: String::new(),
            comment: cfg.comment.clone().unwrap_or_default(),
            created: cfg.created.clone().unwrap_or_default(),
            docker_version: String::new(),
            author: cfg.author.clone().unwrap_or_default(),
            config,
            architecture: cfg.architecture.clone(),
            variant: cfg.variant.clone().filter(|v| !v.is_empty()),
            os: cfg.os.clone(),
            size,
            graph_driver: GraphDriver { name: self.driver_name().into(), data: None },
            root_fs: RootFs { typ: "layers".into(), layers: img.layers.iter().map(|l| l.diff_id.to_string()).collect() },
            metadata: ImageMetadata { last_tag_time: img.stored.clone() },
        })
    }

    async fn history(&self, name: &str) -> Result<Vec<HistoryItem>, ApiError> {
        let id = self.image_id(name)?;
        let img = self.images.get(&id).map_err(store_err)?;
        let (_, cfg) = self.images.config(&id).map_err(store_err)?;
        let refs: Vec<String> = self
            .images
            .list()
            .map_err(store_err)?
            .into_iter()
            .find(|(i, _)| i.id == id)
            .map(|(_, r)| r.iter().filter(|r| r.digest().is_none()).map(Reference::familiar).collect())
            .unwrap_or_default();
        let mut layers = self.images.layer_sizes(&img).into_iter();
        let mut out: Vec<HistoryItem> = Vec::new();
        let history = if cfg.history.is_empty() { vec![Default::default(); img.layers.len()] } else { cfg.history.clone() };
        for h in &history {
            let size = if h.empty_layer { 0 } else { layers.next().unwrap_or(0) };
            out.push(HistoryItem {
                id: "<missing>".into(),
                created: unix(h.created.as_deref()),
                created_by: h.created_by.clone().unwrap_or_default(),
                tags: None,
                size,
                comment: h.comment.clone().unwrap_or_default(),
            });
        }
        out.reverse();
        if let Some(top) = out.first_mut() {
            top.id = id.to_string();
            top.tags = Some(refs);
        }
        Ok(out)
    }

    async fn tag(&self, name: &str, repo: &str, tag: &str) -> Result<(), ApiError> {
        let target = Reference::parse(&format!("{repo}:{tag}")).map_err(|e| ApiError::new(Kind::InvalidArgument, e.to_string()))?;
        let id = self.image_id(name)?;
        self.images.tag(name, &target).map_err(store_err)?;
        self.event("image", "tag", &id.to_string(), &[("name", target.familiar())]);
        Ok(())
    }

    async fn remove(&self, name: &str, force: bool, noprune: bool) -> Result<Vec<DeleteItem>, ApiError> {
        let out = self.remove_image(name, force, noprune).await?;
        for item in &out {
            if let Some(u) = &item.untagged {
                let id = self.image_id(u).map(|d| d.to_string()).unwrap_or_else(|_| u.clone());
                self.event("image", "untag", &id, &[("name", u.clone())]);
            }
            if let Some(d) = &item.deleted {
                self.event("image", "delete", d, &[("name", d.clone())]);
            }
        }
        Ok(out)
    }

    async fn import(
        &self,
        body: ByteStream,
        repo: Option<String>,
        tag: Option<String>,
        message: String,
        changes: Vec<String>,
    ) -> Result<String, ApiError> {
        // Checked before the archive is unpacked, so a bad change makes nothing; the archive is
        // read to its end all the same, as clients write all of it before they read an answer.
        let mut config = berth_store::image::ContainerConfig::default();
        if let Err(e) = crate::changes::apply(&mut config, &changes) {
            let mut body = body;
            while let Some(Ok(_)) = body.next().await {}
            return Err(e);
        }
        let reference = match repo {
            Some(r) => {
                let full = match tag {
                    Some(t) => format!("{r}:{t}"),
                    None => r,
                };
                Some(Reference::parse(&full).map_err(|e| ApiError::new(Kind::InvalidArgument, e.to_string()))?)
            }
            None => None,
        };
        let images = Arc::clone(&self.images);
        let id = blocking(move || images.import(reader(body), reference.as_ref(), &message, config).map_err(store_err)).await?;
        self.event("image", "import", &id.to_string(), &[("name", id.to_string())]);
        Ok(id.to_string())
    }

    async fn save(&self, names: Vec<String>) -> Result<ByteStream, ApiError> {
        for n in &names {
            self.image_id(n)?;
        }
        for n in &names {
            self.event("image", "save", n, &[("name", n.clone())]);
        }
        let (out, stream) = crate::chunks::channel();
        let images = Arc::clone(&self.images);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = berth_store::export::save(&images, &names, out) {
                tracing::warn!("image save: {e}");
            }
        });
        Ok(stream)
    }

    async fn push(
        &self,
        name: &str,
        tag: Option<&str>,
        auth: Option<berth_models::system::AuthConfig>,
    ) -> Result<berth_api::images::MessageStream, ApiError> {
        let creds = auth.as_ref().map(berth_registry::Credentials::from_auth_config).unwrap_or_default();
        self.push_image(name, tag, creds).await
    }

    async fn search(&self, term: &str, limit: u32) -> Result<Vec<berth_models::images::SearchResult>, ApiError> {
        self.registry().search(term, limit).await.map_err(|e| ApiError::from(crate::Error::from(e)))
    }

    async fn distribution(
        &self,
        name: &str,
        auth: Option<berth_models::system::AuthConfig>,
    ) -> Result<berth_models::distribution::DistributionInspect, ApiError> {
        let reference = crate::pull::pull_reference(name, None)?;
        let creds = auth.as_ref().map(berth_registry::Credentials::from_auth_config).unwrap_or_default();
        self.registry().distribution(&reference, creds).await.map_err(|e| ApiError::from(crate::Error::from(e)))
    }

    async fn login(&self, auth: berth_models::system::AuthConfig) -> Result<berth_models::system::AuthResponse, ApiError> {
        Engine::login(self, auth).await
    }

    async fn pull(
        &self,
        image: &str,
        tag: Option<&str>,
        platform: Option<&str>,
        auth: Option<berth_models::system::AuthConfig>,
    ) -> Result<berth_api::images::MessageStream, ApiError> {
        let reference = crate::pull::pull_reference(image, tag)?;
        let platform = platform.map(crate::pull::parse_platform).transpose()?;
        let creds = auth.as_ref().map(berth_registry::Credentials::from_auth_config).unwrap_or_default();
        // No tag, in the request or the name: every tag (`docker pull --all-tags`).
        if tag.is_none() && !crate::pull::names_tag_or_digest(image) {
            return self.pull_all_tags(reference, platform, creds).await;
        }
        self.pull_image(reference, platform, creds).await
    }

    async fn load(&self, body: ByteStream) -> Result<Vec<String>, ApiError> {
        let images = Arc::clone(&self.images);
        let loaded = blocking(move || berth_store::export::load(&images, reader(body)).map_err(store_err)).await?;
        let names: Vec<String> = loaded
            .into_iter()
            .flat_map(|(id, refs)| if refs.is_empty() { vec![id.to_string()] } else { refs.iter().map(Reference::familiar).collect() })
            .collect();
        for n in &names {
            self.event("image", "load", n, &[("name", n.clone())]);
        }
        Ok(names)
    }

    async fn prune(&self, filters: Filters) -> Result<PruneResponse, ApiError> {
        filters.only(&["dangling", "label", "label!", "until"])?;
        let all = filters.get("dangling").iter().any(|v| v == "false" || v == "0");
        let until = crate::containers::until_filters(&filters)?;
        let used: BTreeSet<String> = self.all().iter().map(|c| c.rec().image.clone()).collect();
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        let sizes = self.images.sizes().unwrap_or_default();
        for (img, refs) in self.images.list().map_err(store_err)? {
            if used.contains(&img.id.to_string()) || (!all && !refs.is_empty()) {
                continue;
            }
            let cfg = self.images.config(&img.id).map(|(_, c)| c).unwrap_or_default();
            let created = unix(cfg.created.as_deref()) as f64;
            if until.iter().any(|u| created >= *u) || !crate::containers::labels_match(cfg.config.labels.as_ref(), &filters) {
                continue;
            }
            let images = Arc::clone(&self.images);
            let id = img.id.clone();
            blocking(move || images.remove(&id).map_err(store_err)).await?;
            reclaimed += sizes.get(&img.id).map(|s| s.unique).unwrap_or(0);
            for r in refs {
                deleted.push(untagged(&r));
            }
            deleted.push(DeleteItem { deleted: Some(img.id.to_string()), ..Default::default() });
        }
        reclaimed += self.collect_garbage().await;
        Ok(PruneResponse { images_deleted: (!deleted.is_empty()).then_some(deleted), space_reclaimed: reclaimed })
    }
}

impl Engine {
    /// `rmi`: what it untagged and deleted, in Docker's order.
    async fn remove_image(&self, name: &str, force: bool, _noprune: bool) -> Result<Vec<DeleteItem>, ApiError> {
        let id = self.image_id(name)?;
        let refs: Vec<Reference> =
            self.images.list().map_err(store_err)?.into_iter().find(|(i, _)| i.id == id).map(|(_, r)| r).unwrap_or_default();
        let by_ref = Reference::parse(name).ok().filter(|r| refs.iter().any(|x| x.to_string() == r.to_string()));
        let mut out = Vec::new();
        let users = self.users_of(&id);
        if let Some(r) = by_ref {
            // A repository's last tag takes its digest references with it (`repo@sha256:…`, a
            // pull's), as Docker removes them.
            let mut gone = vec![r.clone()];
            if r.digest().is_none() && !refs.iter().any(|x| *x != r && x.digest().is_none() && x.name() == r.name()) {
                gone.extend(refs.iter().filter(|x| x.digest().is_some() && x.name() == r.name()).cloned());
            }
            // Removing some of several names only untags.
            if refs.len() > gone.len() {
                for g in &gone {
                    self.images.untag(g).map_err(store_err)?;
                }
                return Ok(gone.iter().map(untagged).collect());
            }
            if let Some((cid, running)) = users.first() {
                if *running || !force {
                    return Err(ApiError::new(
                        Kind::Conflict,
                        format!(
                            "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                            &cid[..12],
                            &id.hex()[..12]
                        ),
                    ));
                }
                for g in &gone {
                    self.images.untag(g).map_err(store_err)?;
                }
                return Ok(gone.iter().map(untagged).collect());
            }
        } else {
            if refs.len() > 1 && !force {
                return Err(ApiError::new(
                    Kind::Conflict,
                    format!(
                        "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        &id.hex()[..12]
                    ),
                ));
            }
            if let Some((cid, running)) = users.first() {
                let what = if *running {
                    "cannot be forced) - image is being used by running"
                } else {
                    "must be forced) - image is being used by stopped"
                };
                return Err(ApiError::new(
                    Kind::Conflict,
                    format!("conflict: unable to delete {} ({what} container {}", &id.hex()[..12], &cid[..12]),
                ));
            }
        }
        if !users.is_empty() {
            return Err(ApiError::new(
                Kind::Conflict,
                format!("conflict: unable to delete {}: image is used by a container", &id.hex()[..12]),
            ));
        }
        for r in &refs {
            out.push(untagged(r));
        }
        let images = Arc::clone(&self.images);
        let rid = id.clone();
        blocking(move || images.remove(&rid).map_err(store_err)).await?;
        // What else nothing uses now: blobs a load kept beside the image's own, say.
        self.collect_garbage().await;
        out.push(DeleteItem { deleted: Some(id.to_string()), ..Default::default() });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_patterns() {
        let r = Reference::parse("busybox:1.36").unwrap();
        assert!(reference_matches("busybox", &r));
        assert!(reference_matches("busybox:1*", &r));
        assert!(!reference_matches("alpine", &r));
        assert!(glob("*/app:*", "me/app:v1"));
    }
}
