//! `/networks`: create, list, inspect, remove, prune, and connect/disconnect of containers.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_api::params::Filters;
use berth_api::{ApiError, Kind};
use berth_models::networks::{
    ConfigReference, EndpointSettings, Ipam as IpamModel, IpamConfig, Network, NetworkConnectRequest, NetworkContainer,
    NetworkCreateRequest, NetworkCreateResponse, NetworkDisconnectRequest, NetworkPruneResponse,
};

use super::{DEFAULT, NetRecord, OPT_BRIDGE_NAME, OPT_MTU, bad, ipam_err, valid_device};
use crate::Engine;

fn blocking_err(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(Kind::Internal, e.to_string())
}

impl Engine {
    /// A network as the API shows it, with the running containers on it.
    fn network_view(&self, n: &NetRecord) -> Network {
        let pool = self.nets.ipam.network(&n.name);
        let config = match (&pool, n.ipam_config.is_empty()) {
            (Some(p), _) => vec![IpamConfig {
                subnet: Some(p.subnet.to_string()),
                gateway: Some(p.gateway.to_string()),
                ip_range: p.range.map(|r| r.to_string()),
                auxiliary_addresses: None,
            }],
            (None, false) => n.ipam_config.clone(),
            (None, true) => Vec::new(),
        };
        let mut containers = BTreeMap::new();
        for c in self.all() {
            let r = c.rec();
            if !r.state.status.is_live() {
                continue;
            }
            if let Some(ep) = r.networks.get(&n.name).filter(|ep| !ep.ip_address.is_empty()) {
                containers.insert(
                    r.id.clone(),
                    NetworkContainer {
                        name: r.name.clone(),
                        endpoint_id: ep.endpoint_id.clone(),
                        mac_address: ep.mac_address.clone().unwrap_or_default(),
                        ipv4_address: format!("{}/{}", ep.ip_address, ep.ip_prefix_len),
                        ipv6_address: String::new(),
                    },
                );
            }
        }
        Network {
            name: n.name.clone(),
            id: n.id.clone(),
            created: n.created.clone(),
            scope: "local".into(),
            driver: n.driver.clone(),
            enable_ipv4: true,
            enable_ipv6: false,
            ipam: IpamModel { driver: "default".into(), config: Some(config), options: Some(BTreeMap::new()) },
            internal: n.internal,
            attachable: n.attachable,
            ingress: false,
            config_from: ConfigReference::default(),
            config_only: false,
            containers,
            options: n.options.clone(),
            labels: n.labels.clone(),
        }
    }

    fn network_in_use(&self, name: &str) -> bool {
        self.all().iter().any(|c| {
            let r = c.rec();
            r.state.status.is_live() && r.networks.contains_key(name)
        })
    }

    fn network_matches(&self, n: &NetRecord, f: &Filters) -> bool {
        let any = |k: &str, pred: &dyn Fn(&str) -> bool| {
            let v = f.get(k);
            v.is_empty() || v.iter().any(|x| pred(x))
        };
        let label = f.get("label").iter().all(|l| match l.split_once('=') {
            Some((k, v)) => n.labels.get(k).is_some_and(|x| x == v),
            None => n.labels.contains_key(l.as_str()),
        });
        let dangling = |x: &str| {
            let used = n.predefined() || self.network_in_use(&n.name);
            matches!((x, used), ("true" | "1", false) | ("false" | "0", true))
        };
        any("name", &|x| n.name.contains(x))
            && any("id", &|x| n.id.starts_with(x))
            && any("driver", &|x| n.driver == x)
            && any("scope", &|x| x == "local")
            && any("type", &|x| if n.predefined() { x == "builtin" } else { x == "custom" })
            && any("dangling", &dangling)
            && label
    }

    pub(crate) async fn network_list(&self, f: Filters) -> Result<Vec<Network>, ApiError> {
        f.only(&["name", "id", "driver", "scope", "type", "label", "dangling"])?;
        Ok(self.nets.all().iter().filter(|n| self.network_matches(n, &f)).map(|n| self.network_view(n)).collect())
    }

    pub(crate) async fn network_inspect(&self, id: &str) -> Result<Network, ApiError> {
        Ok(self.network_view(&self.nets.find(id)?))
    }

    pub(crate) async fn network_create(&self, req: NetworkCreateRequest) -> Result<NetworkCreateResponse, ApiError> {
        let name = req.name.trim().to_string();
        if name.is_empty() {
            return Err(bad("network name is required"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) || !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(bad(format!("invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")));
        }
        if self.nets.all().iter().any(|n| n.name == name) {
            return Err(ApiError::new(Kind::Conflict, format!("network with name {name} already exists")));
        }
        match req.driver.as_deref().unwrap_or("") {
            "" | "bridge" => {}
            d @ ("overlay" | "macvlan" | "ipvlan") => return Err(ApiError::not_implemented(&format!("the {d} network driver"))),
            "host" | "null" => return Err(ApiError::new(Kind::Forbidden, "only one instance of \"host\" network is allowed")),
            d => return Err(ApiError::new(Kind::NotFound, format!("plugin \"{d}\" not found"))),
        }
        if req.enable_ipv6 == Some(true) {
            return Err(ApiError::not_implemented("IPv6 networks"));
        }
        let configs = req.ipam.as_ref().and_then(|i| i.config.clone()).unwrap_or_default();
        if configs.len() > 1 {
            return Err(ApiError::not_implemented("more than one IPAM configuration per network"));
        }
        let cfg = configs.first().cloned().unwrap_or_default();
        let parse_net = |s: &Option<String>, what: &str| -> Result<Option<ipnet::Ipv4Net>, ApiError> {
            s.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<ipnet::Ipv4Net>().map_err(|_| bad(format!("invalid {what}: {s}"))))
                .transpose()
        };
        let subnet = parse_net(&cfg.subnet, "subnet")?;
        let range = parse_net(&cfg.ip_range, "ip range")?;
        let gateway = cfg.gateway.as_deref().filter(|g| !g.is_empty()).map(super::parse_ipv4).transpose()?;
        if (gateway.is_some() || range.is_some()) && subnet.is_none() {
            return Err(bad("a gateway or ip range needs a subnet"));
        }
        let options = req.options.clone().unwrap_or_default();
        let id = crate::names::random_id()?;
        let device = options.get(OPT_BRIDGE_NAME).cloned().unwrap_or_else(|| format!("berth-{}", &id[..9]));
        if !valid_device(&device) {
            return Err(bad(format!("invalid bridge name {device:?}")));
        }
        if self.nets.all().iter().any(|n| n.device == device) {
            return Err(ApiError::new(Kind::Conflict, format!("bridge name {device} is in use by another network")));
        }
        let mtu = match options.get(OPT_MTU) {
            Some(m) => m.parse::<u32>().ok().filter(|m| (68..=65535).contains(m)).ok_or_else(|| bad(format!("invalid MTU {m:?}")))?,
            None => 0,
        };
        let internal = req.internal.unwrap_or(false) || options.get("com.docker.network.internal").is_some_and(|v| v == "true");
        let rec = NetRecord {
            id: id.clone(),
            name: name.clone(),
            driver: "bridge".into(),
            created: crate::record::now(),
            device,
            internal,
            attachable: req.attachable.unwrap_or(false),
            mtu,
            options,
            labels: req.labels.clone().unwrap_or_default(),
            ipam_config: configs,
        };
        let nets = Arc::clone(&self.nets);
        tokio::task::spawn_blocking(move || {
            {
                let _host = super::host_lock();
                nets.ipam.add_network(&rec.name, subnet, gateway, range, &berth_network::routes::host()).map_err(ipam_err)?;
            }
            if let Err(e) = nets.insert(rec.clone()) {
                let _ = nets.ipam.remove_network(&rec.name);
                return Err(e);
            }
            // The bridge now, as Docker's, so the network's resolver has its address.
            if let Err(e) = nets.ensure_up(&rec) {
                nets.take_down(&rec);
                let _ = nets.delete(&rec.id);
                let _ = nets.ipam.remove_network(&rec.name);
                return Err(e);
            }
            Ok(())
        })
        .await
        .map_err(blocking_err)??;
        Ok(NetworkCreateResponse { id, warning: String::new() })
    }

    pub(crate) async fn network_remove(&self, key: &str) -> Result<(), ApiError> {
        let n = self.nets.find(key)?;
        if n.predefined() {
            return Err(ApiError::new(Kind::Forbidden, format!("{} is a pre-defined network and cannot be removed", n.name)));
        }
        if self.network_in_use(&n.name) {
            return Err(ApiError::new(
                Kind::Forbidden,
                format!("error while removing network: network {} id {} has active endpoints", n.name, n.id),
            ));
        }
        let nets = Arc::clone(&self.nets);
        tokio::task::spawn_blocking(move || {
            match nets.ipam.remove_network(&n.name) {
                Ok(()) | Err(berth_network::IpamError::UnknownNetwork(_)) => {}
                Err(berth_network::IpamError::HasEndpoints(_)) => {
                    return Err(ApiError::new(
                        Kind::Forbidden,
                        format!("error while removing network: network {} id {} has active endpoints", n.name, n.id),
                    ));
                }
                Err(e) => return Err(ipam_err(e)),
            }
            nets.delete(&n.id)?;
            nets.take_down(&n);
            Ok(())
        })
        .await
        .map_err(blocking_err)?
    }

    pub(crate) async fn network_prune(&self, f: Filters) -> Result<NetworkPruneResponse, ApiError> {
        f.only(&["until", "label", "label!"])?;
        let until = crate::containers::until_filters(&f)?;
        let mut deleted = Vec::new();
        for n in self.nets.all() {
            if n.predefined() || self.network_in_use(&n.name) {
                continue;
            }
            let created = crate::record::unix_seconds(&n.created);
            if until.iter().any(|u| created >= *u) {
                continue;
            }
            let label_ok = f.get("label").iter().all(|l| match l.split_once('=') {
                Some((k, v)) => n.labels.get(k).is_some_and(|x| x == v),
                None => n.labels.contains_key(l.as_str()),
            }) && f.get("label!").iter().all(|l| match l.split_once('=') {
                Some((k, v)) => n.labels.get(k).is_none_or(|x| x != v),
                None => !n.labels.contains_key(l.as_str()),
            });
            if !label_ok {
                continue;
            }
            // Referenced by a stopped container: kept, as Docker keeps it.
            if self.all().iter().any(|c| c.rec().networks.contains_key(&n.name)) {
                continue;
            }
            if self.network_remove(&n.id).await.is_ok() {
                deleted.push(n.name.clone());
            }
        }
        Ok(NetworkPruneResponse { networks_deleted: deleted })
    }

    pub(crate) async fn network_connect(&self, key: &str, req: NetworkConnectRequest) -> Result<(), ApiError> {
        let n = self.nets.find(key)?;
        let ctr = self.lookup(&req.container)?;
        let _op = ctr.op.lock().await;
        let rec = ctr.rec();
        if !n.is_bridge() || rec.primary_network().is_none() {
            return Err(ApiError::new(
                Kind::Forbidden,
                "container sharing network namespace with another container or host cannot be connected to any other network",
            ));
        }
        if rec.networks.contains_key(&n.name) {
            return Err(ApiError::new(Kind::Forbidden, format!("endpoint with name {} already exists in network {}", rec.name, n.name)));
        }
        let mut cfg = req.endpoint_config.unwrap_or_default();
        if n.name == DEFAULT && cfg.ipam_config.as_ref().is_some_and(|c| c.ipv4_address.as_deref().is_some_and(|a| !a.is_empty())) {
            return Err(bad("user specified IP address is supported on user defined networks only"));
        }
        cfg.network_id = n.id.clone();
        if !rec.state.status.is_live() || rec.state.pid <= 0 {
            return ctr
                .update(|r| {
                    r.networks.insert(n.name.clone(), cfg.clone());
                })
                .map(|_| ());
        }
        let index = rec.networks.len();
        let hostname = rec.config.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| rec.short_id().to_string());
        let want = super::endpoints::Want {
            id: rec.id.clone(),
            name: rec.name.clone(),
            hostname,
            pid: rec.state.pid,
            networks: Vec::new(),
            port_bindings: BTreeMap::new(),
            publish_all: false,
            exposed: Vec::new(),
            dns: rec.host_config.dns.iter().flatten().filter_map(|d| d.parse().ok()).collect(),
        };
        let nets = Arc::clone(&self.nets);
        let net = n.clone();
        let ep: EndpointSettings = tokio::task::spawn_blocking(move || {
            let mut out = super::endpoints::Attached::default();
            // The next free ethN: one a disconnect left unused may come before it.
            let mut last = None;
            for i in index..index + 8 {
                out.endpoints.clear();
                match nets.attach_endpoint(&want, &net, &cfg, i, false, &mut out) {
                    Ok(ep) => return Ok(ep),
                    Err(e) => {
                        if let Some((_, ep)) = out.endpoints.first() {
                            nets.release_one(&want.id, &net, &ep.endpoint_id, ep.ip_address.parse().ok());
                        }
                        if !e.message.contains("File exists") {
                            return Err(e);
                        }
                        last = Some(e);
                    }
                }
            }
            Err(last.unwrap_or_else(|| ApiError::new(Kind::Internal, "no free interface name")))
        })
        .await
        .map_err(blocking_err)??;
        let saved = ctr.update(|r| {
            r.networks.insert(n.name.clone(), ep.clone());
        });
        if let Err(e) = saved {
            let nets = Arc::clone(&self.nets);
            let (id, eid, addr) = (rec.id.clone(), ep.endpoint_id.clone(), ep.ip_address.parse().ok());
            let _ = tokio::task::spawn_blocking(move || nets.release_one(&id, &n, &eid, addr)).await;
            return Err(e);
        }
        Ok(())
    }

    pub(crate) async fn network_disconnect(&self, key: &str, req: NetworkDisconnectRequest) -> Result<(), ApiError> {
        let n = self.nets.find(key)?;
        let ctr = self.lookup(&req.container)?;
        let _op = ctr.op.lock().await;
        let rec = ctr.rec();
        let Some(ep) = rec.networks.get(&n.name).cloned() else {
            return Err(ApiError::new(Kind::Forbidden, format!("container {} is not connected to network {}", rec.id, n.name)));
        };
        if rec.state.status.is_live() {
            let nets = Arc::clone(&self.nets);
            let (id, net, eid, addr) = (rec.id.clone(), n.clone(), ep.endpoint_id.clone(), ep.ip_address.parse().ok());
            tokio::task::spawn_blocking(move || nets.release_one(&id, &net, &eid, addr)).await.map_err(blocking_err)?;
        }
        ctr.update(|r| {
            r.networks.remove(&n.name);
        })
        .map(|_| ())
    }
}

#[async_trait::async_trait]
impl berth_api::networks::Networks for Engine {
    async fn list(&self, filters: Filters) -> Result<Vec<Network>, ApiError> {
        self.network_list(filters).await
    }
    async fn inspect(&self, id: &str) -> Result<Network, ApiError> {
        self.network_inspect(id).await
    }
    async fn create(&self, req: NetworkCreateRequest) -> Result<NetworkCreateResponse, ApiError> {
        let name = req.name.clone();
        let made = self.network_create(req).await?;
        self.event("network", "create", &made.id, &[("name", name), ("type", "bridge".into())]);
        Ok(made)
    }
    async fn remove(&self, id: &str) -> Result<(), ApiError> {
        let net = self.network_inspect(id).await?;
        self.network_remove(id).await?;
        self.event("network", "destroy", &net.id, &[("name", net.name.clone()), ("type", net.driver.clone())]);
        Ok(())
    }
    async fn connect(&self, id: &str, req: NetworkConnectRequest) -> Result<(), ApiError> {
        let container = self.lookup(&req.container).map(|c| c.id.clone()).unwrap_or_else(|_| req.container.clone());
        self.network_connect(id, req).await?;
        self.container_network_event(id, "connect", container).await;
        Ok(())
    }
    async fn disconnect(&self, id: &str, req: NetworkDisconnectRequest) -> Result<(), ApiError> {
        let container = self.lookup(&req.container).map(|c| c.id.clone()).unwrap_or_else(|_| req.container.clone());
        self.network_disconnect(id, req).await?;
        self.container_network_event(id, "disconnect", container).await;
        Ok(())
    }
    async fn prune(&self, filters: Filters) -> Result<NetworkPruneResponse, ApiError> {
        self.network_prune(filters).await
    }
}

impl Engine {
    /// `network connect`/`disconnect` of `container` (by ID) to the network `id`.
    async fn container_network_event(&self, id: &str, action: &str, container: String) {
        if let Ok(net) = self.network_inspect(id).await {
            self.event("network", action, &net.id, &[("name", net.name.clone()), ("type", net.driver.clone()), ("container", container)]);
        }
    }
}
