//! Pulls: the API's `fromImage`/`tag`/`platform` made into a reference and a platform, and
//! the registry's fetch run as a task of its own whose progress is the API's stream.

use std::sync::Arc;

use berth_api::{ApiError, Kind};
use berth_store::Reference;

use crate::Engine;

/// A pull's reference from the API's `fromImage` and `tag` (a tag, or a digest as the docker
/// CLI sends `image@sha256:…`).
pub(crate) fn pull_reference(image: &str, tag: Option<&str>) -> Result<Reference, ApiError> {
    let full = match tag {
        Some(t) if t.contains(':') => format!("{image}@{t}"),
        Some(t) => format!("{image}:{t}"),
        None => image.to_string(),
    };
    Reference::parse(&full).map_err(|e| ApiError::new(Kind::InvalidArgument, e.to_string()))
}

/// Does the image name carry a tag or a digest (`busybox:1`, `reg:5000/a@sha256:…`)? A port
/// is not a tag.
pub(crate) fn names_tag_or_digest(image: &str) -> bool {
    image.contains('@') || image.rsplit('/').next().is_some_and(|last| last.contains(':'))
}

/// `os/arch[/variant]`, as `--platform` gives it (`linux/arm64/v8`, `linux/amd64`).
pub(crate) fn parse_platform(p: &str) -> Result<berth_store::image::Platform, ApiError> {
    let parts: Vec<&str> = p.split('/').map(str::trim).collect();
    let bad = || ApiError::new(Kind::InvalidArgument, format!("invalid platform {p:?}: expected os/arch[/variant]"));
    let (os, arch, variant) = match parts.as_slice() {
        [os, arch] => (*os, *arch, None),
        [os, arch, v] => (*os, *arch, Some(v.to_string())),
        _ => return Err(bad()),
    };
    if os.is_empty() || arch.is_empty() {
        return Err(bad());
    }
    // Go's names, as registries use them.
    let arch = match arch.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        a => a.to_string(),
    };
    let variant = variant.or_else(|| (arch == "arm64").then(|| "v8".to_string()));
    Ok(berth_store::image::Platform { architecture: arch, os: os.to_ascii_lowercase(), variant, os_version: None })
}

/// The registry a login names (`https://index.docker.io/v1/`, `localhost:5000`,
/// `https://reg.example/v2/`), as a reference's domain.
pub(crate) fn login_domain(server: &str) -> String {
    let s = server.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = s.split('/').next().unwrap_or("");
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => berth_store::reference::DEFAULT_DOMAIN.to_string(),
        h => h.to_string(),
    }
}

impl Engine {
    /// `RegistryConfig` in `/info`: loopback and the configured insecure registries, the mirrors
    /// (written with a trailing slash, as dockerd normalises them).
    pub(crate) fn registry_config(&self) -> serde_json::Value {
        let registry = self.registry();
        let opts = registry.options();
        let mirrors: Vec<String> = opts.mirrors.iter().map(|m| format!("{}/", m.trim_end_matches('/'))).collect();
        let mut cidrs = vec!["127.0.0.0/8".to_string()];
        let mut index = serde_json::Map::new();
        index.insert("docker.io".into(), serde_json::json!({"Name": "docker.io", "Mirrors": mirrors, "Secure": true, "Official": true}));
        for i in &opts.insecure {
            if i.contains('/') {
                cidrs.push(i.clone());
            } else {
                index.insert(i.clone(), serde_json::json!({"Name": i, "Mirrors": [], "Secure": false, "Official": false}));
            }
        }
        serde_json::json!({
            "AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": cidrs, "Mirrors": mirrors, "IndexConfigs": index,
        })
    }

    /// The local images to push for `name` and `tag` (every tag of the repository without one),
    /// checked before anything is sent; then the push runs as a task whose progress is the
    /// stream returned.
    pub(crate) async fn push_image(
        &self,
        name: &str,
        tag: Option<&str>,
        creds: berth_registry::Credentials,
    ) -> Result<berth_api::images::MessageStream, ApiError> {
        let bad = |e: berth_store::ReferenceError| ApiError::new(Kind::InvalidArgument, e.to_string());
        let repo = Reference::parse(name).map_err(bad)?;
        let list = self.images.list().map_err(|e| ApiError::from(crate::Error::from(e)))?;
        let mut targets: Vec<(Reference, berth_store::Digest, Vec<String>)> = Vec::new();
        for (img, refs) in &list {
            // Other repositories of the same registry holding the image: its layers may be mounted.
            let mount_from = |target: &Reference| -> Vec<String> {
                refs.iter().filter(|r| r.domain() == target.domain() && r.path() != target.path()).map(|r| r.path().to_string()).collect()
            };
            for r in refs.iter().filter(|r| r.name() == repo.name() && r.tag().is_some() && r.digest().is_none()) {
                if tag.is_none_or(|t| Some(t) == r.tag()) {
                    targets.push((r.clone(), img.id.clone(), mount_from(r)));
                }
            }
        }
        if targets.is_empty() {
            let shown = match tag {
                Some(t) => format!("{}:{t}", repo.familiar_name()),
                None => repo.familiar_name(),
            };
            return Err(ApiError::new(Kind::NotFound, format!("An image does not exist locally with the tag: {shown}")));
        }
        targets.sort_by_key(|t| t.0.to_string());
        let (registry, store, engine) = (self.registry(), Arc::clone(&self.images), self.clone());
        Ok(progress_stream(format!("push of {name}"), move |progress| async move {
            for (target, id, mount_from) in targets {
                registry.push(Arc::clone(&store), &id, &target, mount_from, creds.clone(), progress.clone()).await?;
                engine.event("image", "push", &target.familiar(), &[("name", target.familiar_name())]);
            }
            Ok(())
        }))
    }

    pub(crate) async fn login(&self, auth: berth_models::system::AuthConfig) -> Result<berth_models::system::AuthResponse, ApiError> {
        let domain = login_domain(&auth.serveraddress);
        let creds = berth_registry::Credentials::from_auth_config(&auth);
        self.registry().login(&domain, creds).await.map_err(|e| ApiError::from(crate::Error::from(e)))?;
        Ok(berth_models::system::AuthResponse { status: "Login Succeeded".into(), identity_token: String::new() })
    }

    /// Every tag of the repository, one after the other in one stream (`pull --all-tags`: the
    /// API's `fromImage` without a tag).
    pub(crate) async fn pull_all_tags(
        &self,
        repository: Reference,
        platform: Option<berth_store::image::Platform>,
        creds: berth_registry::Credentials,
    ) -> Result<berth_api::images::MessageStream, ApiError> {
        let err = |e: berth_registry::RegistryError| ApiError::from(crate::Error::from(e));
        let tags = self.registry().tags(&repository, creds.clone()).await.map_err(err)?;
        if tags.is_empty() {
            return Err(ApiError::new(Kind::NotFound, format!("no tags in {}", repository.familiar_name())));
        }
        let (registry, store) = (self.registry(), Arc::clone(&self.images));
        Ok(progress_stream(format!("pull of {repository}"), move |progress| async move {
            let mut updated = false;
            for t in tags {
                let Ok(r) = repository.with_tag(&t) else { continue };
                let resolved = registry.resolve(&r, platform.as_ref(), creds.clone()).await?;
                updated |= resolved.fetch(Arc::clone(&store), progress.clone()).await?.updated;
            }
            let what = if updated { "Downloaded newer image for" } else { "Image is up to date for" };
            progress.status(None, &format!("Status: {what} {}", repository.familiar_name()));
            Ok(())
        }))
    }

    /// Resolve (a failure is the request's), then fetch in a task of its own.
    pub(crate) async fn pull_image(
        &self,
        reference: Reference,
        platform: Option<berth_store::image::Platform>,
        creds: berth_registry::Credentials,
    ) -> Result<berth_api::images::MessageStream, ApiError> {
        let resolved =
            self.registry().resolve(&reference, platform.as_ref(), creds).await.map_err(|e| ApiError::from(crate::Error::from(e)))?;
        let store = Arc::clone(&self.images);
        let engine = self.clone();
        Ok(progress_stream(format!("pull of {reference}"), move |progress| async move {
            resolved.fetch(store, progress).await?;
            engine.event("image", "pull", &reference.familiar(), &[("name", reference.familiar_name())]);
            Ok(())
        }))
    }
}

/// Run `work` as a task of its own (it runs on if the client goes); its progress, then its
/// failure as Docker's error message, are the stream returned.
fn progress_stream<F>(what: String, work: impl FnOnce(berth_registry::Progress) -> F) -> berth_api::images::MessageStream
where
    F: std::future::Future<Output = Result<(), berth_registry::RegistryError>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let job = work(berth_registry::Progress::new(tx.clone()));
    tokio::spawn(async move {
        if let Err(e) = job.await {
            tracing::warn!("{what} failed: {e}");
            let _ = tx.send(berth_models::messages::JsonMessage::error(e.to_string()));
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_from_the_apis_from_image_and_tag() {
        assert_eq!(pull_reference("busybox", Some("1.36")).unwrap().to_string(), "docker.io/library/busybox:1.36");
        assert_eq!(pull_reference("127.0.0.1:5000/a/b", None).unwrap().to_string(), "127.0.0.1:5000/a/b:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(pull_reference("busybox", Some(&d)).unwrap().digest().map(|x| x.to_string()), Some(d));
        assert!(pull_reference("Busybox", None).is_err());
    }

    #[test]
    fn a_port_is_not_a_tag() {
        assert!(names_tag_or_digest("busybox:1"));
        assert!(names_tag_or_digest("127.0.0.1:5000/a/b:2"));
        assert!(names_tag_or_digest("a@sha256:00"));
        assert!(!names_tag_or_digest("127.0.0.1:5000/a/b"));
        assert!(!names_tag_or_digest("busybox"));
    }

    #[test]
    fn login_addresses_name_a_registry() {
        for (server, domain) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("", "docker.io"),
            ("localhost:5000", "localhost:5000"),
            ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
            ("reg.example", "reg.example"),
        ] {
            assert_eq!(login_domain(server), domain, "{server}");
        }
    }

    #[test]
    fn platforms_in_gos_names() {
        let p = parse_platform("linux/arm64").unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()), ("linux", "arm64", Some("v8")));
        assert_eq!(parse_platform("linux/x86_64").unwrap().architecture, "amd64");
        assert_eq!(parse_platform("linux/arm/v7").unwrap().variant.as_deref(), Some("v7"));
        for bad in ["linux", "", "linux/", "a/b/c/d"] {
            assert!(parse_platform(bad).is_err(), "{bad}");
        }
    }
}
