//! API version negotiation: every path may carry `/v1.NN` between the minimum and the maximum;
//! responses say which version the daemon speaks.

use axum::http::{HeaderValue, Request, Uri};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Kind};

/// The newest API version whose shapes berth follows (../shared/reference/engine-api/v1.41.yaml).
pub const API_VERSION: &str = "1.41";
/// Docker's minimum.
pub const MIN_API_VERSION: &str = "1.24";

fn parse(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `/v1.41/containers/json` → `/containers/json`; a version out of range becomes a path the
/// router answers with Docker's message (carried in an extension).
pub fn strip_prefix<B>(mut req: Request<B>) -> Request<B> {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/v") else { return req };
    let (ver, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some(v) = parse(ver) else { return req };
    let error = if v > parse(API_VERSION).unwrap_or_default() {
        Some(format!("client version {ver} is too new. Maximum supported API version is {API_VERSION}"))
    } else if v < parse(MIN_API_VERSION).unwrap_or_default() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(path: &str) -> (String, Option<String>) {
        let req = strip_prefix(Request::builder().uri(path).body(()).unwrap());
        (req.uri().to_string(), req.extensions().get::<VersionError>().map(|e| e.0.clone()))
    }

    #[test]
    fn strips_supported_versions_and_keeps_queries() {
        assert_eq!(strip("/v1.41/containers/json?all=1").0, "/containers/json?all=1");
        assert_eq!(strip("/v1.24/_ping").0, "/_ping");
        assert_eq!(strip("/_ping").0, "/_ping");
        assert_eq!(strip("/version").0, "/version");
    }

    #[test]
    fn refuses_versions_out_of_range_with_dockers_messages() {
        let (uri, err) = strip("/v1.50/version");
        assert_eq!(uri, "/__berth_version_error");
        assert_eq!(err.unwrap(), "client version 1.50 is too new. Maximum supported API version is 1.41");
        assert!(strip("/v1.12/version").1.unwrap().contains("too old"));
    }
}
