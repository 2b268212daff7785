//! `/volumes`: create, list, inspect, remove, prune.

use std::sync::Arc;

use berth_api::params::Filters;
use berth_api::{ApiError, Kind};
use berth_models::volumes::{Volume, VolumeCreateRequest, VolumeListResponse, VolumePruneResponse};

use super::{ANONYMOUS, VolRecord};
use crate::Engine;

fn join_err(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(Kind::Internal, e.to_string())
}

fn labels_match(labels: &std::collections::BTreeMap<String, String>, f: &Filters, key: &str, want: bool) -> bool {
    f.get(key).iter().all(|l| {
        let has = match l.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
            None => labels.contains_key(l.as_str()),
        };
        has == want
    })
}

impl Engine {
    pub(crate) fn volume_view(&self, v: &VolRecord) -> Volume {
        Volume {
            name: v.name.clone(),
            driver: "local".into(),
            mountpoint: self.vols.path(&v.name).to_string_lossy().into_owned(),
            created_at: v.created.clone(),
            status: None,
            labels: v.labels.clone(),
            scope: "local".into(),
            options: v.options.clone(),
            usage_data: None,
        }
    }

    /// The containers (IDs) that mount volume `name`, running or not.
    pub(crate) fn volume_users(&self, name: &str) -> Vec<String> {
        self.all().iter().map(|c| c.rec()).filter(|r| r.volumes.iter().any(|m| m.name == name)).map(|r| r.id.clone()).collect()
    }

    async fn volume_list(&self, f: Filters) -> Result<VolumeListResponse, ApiError> {
        f.only(&["name", "label", "label!", "dangling", "driver"])?;
        let volumes = self
            .vols
            .all()
            .into_iter()
            .filter(|v| {
                let dangling = |x: &str| {
                    let unused = self.volume_users(&v.name).is_empty();
                    matches!((x, unused), ("true" | "1", true) | ("false" | "0", false))
                };
                let any = |k: &str, pred: &dyn Fn(&str) -> bool| {
                    let vals = f.get(k);
                    vals.is_empty() || vals.iter().any(|x| pred(x))
                };
                any("name", &|x| v.name.contains(x))
                    && any("driver", &|x| x == "local")
                    && any("dangling", &dangling)
                    && labels_match(&v.labels, &f, "label", true)
                    && labels_match(&v.labels, &f, "label!", false)
            })
            .map(|v| self.volume_view(&v))
            .collect();
        Ok(VolumeListResponse { volumes, warnings: Vec::new() })
    }

    async fn volume_create(&self, req: VolumeCreateRequest) -> Result<Volume, ApiError> {
        if !matches!(req.driver.as_str(), "" | "local") {
            return Err(ApiError::new(
                Kind::NotFound,
                format!("error looking up volume plugin {}: plugin \"{}\" not found", req.driver, req.driver),
            ));
        }
        let vols = Arc::clone(&self.vols);
        let (rec, _) = tokio::task::spawn_blocking(move || {
            vols.create(Some(&req.name).filter(|n| !n.is_empty()).map(|n| n.as_str()), req.labels, req.driver_opts)
        })
        .await
        .map_err(join_err)??;
        Ok(self.volume_view(&rec))
    }

    pub(crate) async fn volume_remove(&self, name: &str, force: bool) -> Result<(), ApiError> {
        if self.vols.get(name).is_none() {
            return if force { Ok(()) } else { Err(ApiError::new(Kind::NotFound, format!("get {name}: no such volume"))) };
        }
        let users = self.volume_users(name);
        if !users.is_empty() {
            return Err(ApiError::new(Kind::Conflict, format!("remove {name}: volume is in use - [{}]", users.join(", "))));
        }
        let vols = Arc::clone(&self.vols);
        let name = name.to_string();
        tokio::task::spawn_blocking(move || vols.remove(&name)).await.map_err(join_err)?
    }

    async fn volume_prune(&self, f: Filters) -> Result<VolumePruneResponse, ApiError> {
        f.only(&["label", "label!", "all"])?;
        // Since API 1.42, only anonymous volumes unless `all=true`.
        let all = f.get("all").iter().any(|a| a == "true" || a == "1");
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        for v in self.vols.all() {
            if (!all && !v.labels.contains_key(ANONYMOUS))
                || !labels_match(&v.labels, &f, "label", true)
                || !labels_match(&v.labels, &f, "label!", false)
                || !self.volume_users(&v.name).is_empty()
            {
                continue;
            }
            let vols = Arc::clone(&self.vols);
            let name = v.name.clone();
            let size = tokio::task::spawn_blocking(move || vols.size(&name)).await.map_err(join_err)?;
            if self.volume_remove(&v.name, false).await.is_ok() {
                reclaimed += size;
                deleted.push(v.name.clone());
            }
        }
        Ok(VolumePruneResponse { volumes_deleted: Some(deleted), space_reclaimed: reclaimed })
    }
}

#[async_trait::async_trait]
impl berth_api::volumes::Volumes for Engine {
    async fn list(&self, filters: Filters) -> Result<VolumeListResponse, ApiError> {
        self.volume_list(filters).await
    }
    async fn inspect(&self, name: &str) -> Result<Volume, ApiError> {
        self.vols
            .get(name)
            .map(|v| self.volume_view(&v))
            .ok_or_else(|| ApiError::new(Kind::NotFound, format!("get {name}: no such volume")))
    }
    async fn create(&self, req: VolumeCreateRequest) -> Result<Volume, ApiError> {
        let v = self.volume_create(req).await?;
        self.event("volume", "create", &v.name, &[("driver", v.driver.clone())]);
        Ok(v)
    }
    async fn remove(&self, name: &str, force: bool) -> Result<(), ApiError> {
        self.volume_remove(name, force).await?;
        self.event("volume", "destroy", name, &[("driver", "local".into())]);
        Ok(())
    }
    async fn prune(&self, filters: Filters) -> Result<VolumePruneResponse, ApiError> {
        self.volume_prune(filters).await
    }
}
