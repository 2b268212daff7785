//! API versions. Every path may carry `/v1.NN` between the minimum and the maximum; the router
//! strips it and leaves the version in the request's extensions ([`ApiVersion::of`]), where a
//! path without one speaks the newest. The engine answers in the newest shapes; the differences
//! older versions expect (the Engine API's version history) are applied here, in one place, by
//! the routes that serve them.

use axum::http::{HeaderValue, Request, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::{ApiError, Kind};

/// The newest API version berth serves: the docker CLI 28's own.
pub const API_VERSION: &str = "1.50";
/// Docker's minimum.
pub const MIN_API_VERSION: &str = "1.24";

/// A `1.NN` API version, by its minor number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32);

impl ApiVersion {
    pub const MAX: ApiVersion = ApiVersion(50);
    pub const MIN: ApiVersion = ApiVersion(24);

    fn parse(v: &str) -> Option<ApiVersion> {
        let (major, minor) = v.split_once('.')?;
        match major.parse::<u32>().ok()? {
            1 => Some(ApiVersion(minor.parse().ok()?)),
            // Any other major is past every 1.x.
            _ => Some(ApiVersion(u32::MAX)),
        }
    }

    /// The version a request was made with.
    pub fn of<B>(req: &Request<B>) -> ApiVersion {
        req.extensions().get::<ApiVersion>().copied().unwrap_or(ApiVersion::MAX)
    }

    pub fn before(self, minor: u32) -> bool {
        self.0 < minor
    }
}

/// `/v1.41/containers/json` → `/containers/json`; a version out of range becomes a path the
/// router answers with Docker's message (carried in an extension).
pub fn strip_prefix<B>(mut req: Request<B>) -> Request<B> {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/v") else { return req };
    let (ver, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some(v) = ApiVersion::parse(ver) else { return req };
    let error = if v > ApiVersion::MAX {
        Some(format!("client version {ver} is too new. Maximum supported API version is {API_VERSION}"))
    } else if v < ApiVersion::MIN {
        Some(format!(
            "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        ))
    } else {
        None
    };
    let new_path = if tail.is_empty() { "/" } else { tail };
    let pq = match req.uri().query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path.to_string(),
    };
    if let Some(message) = error {
        req.extensions_mut().insert(VersionError(message));
        *req.uri_mut() = Uri::from_static("/__berth_version_error");
        return req;
    }
    req.extensions_mut().insert(v);
    if let Ok(uri) = pq.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    req
}

#[derive(Clone)]
pub struct VersionError(pub String);

pub async fn version_error(req: Request<axum::body::Body>) -> Response {
    let message = req.extensions().get::<VersionError>().map(|e| e.0.clone()).unwrap_or_default();
    ApiError::new(Kind::InvalidArgument, message).into_response()
}

/// Docker's response headers: `Api-Version`, `Server`, `Ostype`.
pub fn add_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Server", HeaderValue::from_static(concat!("Berth/", env!("CARGO_PKG_VERSION"), " (linux)")));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    res
}

/// The fields of a container's `Config` that image configs carried before API 1.50 (Docker's
/// `container.Config`), with the values an image has for them: empty text, false, or null.
const LEGACY_IMAGE_CONFIG: &[(&str, Value)] = &[
    ("Hostname", Value::String(String::new())),
    ("Domainname", Value::String(String::new())),
    ("User", Value::String(String::new())),
    ("AttachStdin", Value::Bool(false)),
    ("AttachStdout", Value::Bool(false)),
    ("AttachStderr", Value::Bool(false)),
    ("Tty", Value::Bool(false)),
    ("OpenStdin", Value::Bool(false)),
    ("StdinOnce", Value::Bool(false)),
    ("Env", Value::Null),
    ("Cmd", Value::Null),
    ("Image", Value::String(String::new())),
    ("Volumes", Value::Null),
    ("WorkingDir", Value::String(String::new())),
    ("Entrypoint", Value::Null),
    ("OnBuild", Value::Null),
    ("Labels", Value::Null),
];

/// Shapes of replies for older clients. Each function takes the newest shape.
pub mod shape {
    use super::*;

    /// `GET /images/json` entries (and `/system/df`'s images).
    pub fn image_summary(v: ApiVersion, img: &mut Value) {
        // 1.44 dropped `VirtualSize` (the same as `Size` since 1.38).
        if v.before(44)
            && let Some(o) = img.as_object_mut()
        {
            let size = o.get("Size").cloned().unwrap_or(json!(0));
            o.insert("VirtualSize".into(), size);
        }
    }

    /// `GET /images/{name}/json`.
    pub fn image_inspect(v: ApiVersion, img: &mut Value) {
        image_summary(v, img);
        let Some(o) = img.as_object_mut() else { return };
        // 1.50 answers the image's config as the OCI image spec has it; before, as a
        // container's config with every field present.
        if v.before(50)
            && let Some(Value::Object(cfg)) = o.get_mut("Config")
        {
            for (k, default) in LEGACY_IMAGE_CONFIG {
                cfg.entry(k.to_string()).or_insert_with(|| default.clone());
            }
        }
        // 1.45 dropped `Container` and `ContainerConfig` (the build step's container).
        if v.before(45) {
            let config = o.get("Config").cloned().unwrap_or(Value::Null);
            o.insert("Container".into(), json!(""));
            o.insert("ContainerConfig".into(), config);
        }
    }

    /// `GET /containers/{id}/json`.
    pub fn container_inspect(v: ApiVersion, ctr: &mut berth_models::containers::ContainerInspect) {
        // 1.42 omits `KernelMemory` and `KernelMemoryTCP` when they are not set; before, zero.
        if v.before(42)
            && let Value::Object(hc) = &mut ctr.host_config
        {
            hc.entry("KernelMemory").or_insert(json!(0));
            hc.entry("KernelMemoryTCP").or_insert(json!(0));
        }
    }

    /// `GET /system/df`.
    pub fn system_df(v: ApiVersion, df: &berth_models::system::DataUsage) -> Value {
        let mut df = serde_json::to_value(df).unwrap_or_default();
        if let Some(Value::Array(images)) = df.get_mut("Images") {
            images.iter_mut().for_each(|i| image_summary(v, i));
        }
        // 1.42 removed `BuilderSize` (unused since 1.40).
        if v.before(42)
            && let Some(o) = df.as_object_mut()
        {
            o.entry("BuilderSize").or_insert(json!(0));
        }
        df
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(path: &str) -> (String, Option<String>, ApiVersion) {
        let req = strip_prefix(Request::builder().uri(path).body(()).unwrap());
        (req.uri().to_string(), req.extensions().get::<VersionError>().map(|e| e.0.clone()), ApiVersion::of(&req))
    }

    #[test]
    fn strips_supported_versions_keeps_queries_and_remembers_the_version() {
        assert_eq!(strip("/v1.41/containers/json?all=1").0, "/containers/json?all=1");
        assert_eq!(strip("/v1.41/containers/json").2, ApiVersion(41));
        assert_eq!(strip("/v1.24/_ping").0, "/_ping");
        assert_eq!(strip("/v1.44/_ping").2, ApiVersion(44));
        assert_eq!(strip("/v1.50/version").2, ApiVersion(50));
        assert_eq!(strip("/_ping"), ("/_ping".into(), None, ApiVersion::MAX));
        assert_eq!(strip("/version").0, "/version");
    }

    #[test]
    fn refuses_versions_out_of_range_with_dockers_messages() {
        let (uri, err, _) = strip("/v1.51/version");
        assert_eq!(uri, "/__berth_version_error");
        assert_eq!(err.unwrap(), "client version 1.51 is too new. Maximum supported API version is 1.50");
        assert!(strip("/v2.0/version").1.unwrap().contains("too new"));
        assert!(strip("/v1.12/version").1.unwrap().contains("too old"));
    }

    #[test]
    fn older_versions_get_the_image_fields_they_had() {
        let newest = json!({"Id": "sha256:1", "Size": 5, "Config": {"Cmd": ["sh"]}});
        let at = |minor| {
            let mut v = newest.clone();
            shape::image_inspect(ApiVersion(minor), &mut v);
            v
        };
        assert_eq!(at(50), newest, "the newest shape is the engine's");
        let v49 = at(49);
        assert_eq!(v49["Config"]["Hostname"], "");
        assert_eq!(v49["Config"]["Cmd"], json!(["sh"]), "what the image has stays");
        assert_eq!(v49["Config"]["Entrypoint"], Value::Null);
        assert!(v49.get("ContainerConfig").is_none() && v49.get("VirtualSize").is_none());
        let v44 = at(44);
        assert_eq!((v44["Container"].clone(), v44["ContainerConfig"]["Cmd"].clone()), (json!(""), json!(["sh"])));
        assert!(v44.get("VirtualSize").is_none());
        assert_eq!(at(43)["VirtualSize"], 5);
        assert_eq!(at(24)["VirtualSize"], 5);
    }

    #[test]
    fn older_versions_get_kernel_memory_and_builder_size_back() {
        let mut c = berth_models::containers::ContainerInspect { host_config: json!({"Memory": 0}), ..Default::default() };
        shape::container_inspect(ApiVersion(42), &mut c);
        assert!(c.host_config.get("KernelMemory").is_none());
        shape::container_inspect(ApiVersion(41), &mut c);
        assert_eq!((c.host_config["KernelMemory"].clone(), c.host_config["KernelMemoryTCP"].clone()), (json!(0), json!(0)));
        let data = berth_models::system::DataUsage {
            layers_size: 3,
            images: vec![berth_models::images::ImageSummary { size: 3, ..Default::default() }],
            ..Default::default()
        };
        assert!(shape::system_df(ApiVersion(42), &data).get("BuilderSize").is_none());
        let df = shape::system_df(ApiVersion(41), &data);
        assert_eq!((df["Images"][0]["VirtualSize"].clone(), df["BuilderSize"].clone()), (json!(3), json!(0)));
    }
}
