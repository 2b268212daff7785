//! `GET /events`: the engine's events as they happen (and, with `since`, those it kept),
//! filtered by Docker's rules, one JSON object per line, until `until` or the client goes.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, header};
use axum::response::{IntoResponse, Response};
use berth_models::system::EventMessage;

use crate::error::{ApiError, Kind};
use crate::params::{Filters, Query};

/// Events as they come.
pub type EventStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Arc<EventMessage>> + Send>>;

/// What `/events` needs from the engine.
#[async_trait::async_trait]
pub trait Events: Send + Sync {
    /// Events kept since `since` (unix seconds; none without it), then new ones, until
    /// `until` (None: for as long as the client stays). Unfiltered: the route filters.
    async fn events(&self, since: Option<f64>, until: Option<f64>) -> Result<EventStream, ApiError>;
}

/// The filters `/events` takes (Docker's list).
const FILTERS: &[&str] = &[
    "config",
    "container",
    "daemon",
    "event",
    "image",
    "label",
    "network",
    "node",
    "plugin",
    "scope",
    "secret",
    "service",
    "type",
    "volume",
];

/// Docker's "fuzzy" match: a value equal to `source` or a prefix of it.
fn fuzzy(values: &[String], source: &str) -> bool {
    values.is_empty() || values.iter().any(|v| !v.is_empty() && source.starts_with(v.as_str()))
}

/// An image name without its tag (`busybox:1` → `busybox`), digests left alone.
fn untagged(name: &str) -> &str {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) if !name.contains('@') => &name[..slash + i],
        _ => name,
    }
}

/// Does `ev` pass `f`? Docker's rules: every filter given must match; the per-type ones
/// (`container`, `image`, `network`, `volume`, `daemon`) by the actor's ID or name.
pub fn matches(f: &Filters, ev: &EventMessage) -> bool {
    // Kinds of objects berth has none of: their filters match nothing berth reports.
    if ["config", "node", "plugin", "secret", "service"].iter().any(|k| !f.get(k).is_empty()) {
        return false;
    }
    let attr = |k: &str| ev.actor.attributes.get(k).map(String::as_str).unwrap_or("");
    let by_name = |key: &str| {
        let v = f.get(key);
        v.is_empty() || fuzzy(v, &ev.actor.id) || v.iter().any(|x| x == attr("name"))
    };
    let events = f.get("event");
    let action_ok = events.is_empty() || events.iter().any(|e| *e == ev.action || ev.action.split(':').next() == Some(e.as_str()));
    let type_ok = f.get("type").is_empty() || f.get("type").contains(&ev.typ);
    let scope_ok = f.get("scope").is_empty() || f.get("scope").contains(&ev.scope);
    let labels_ok = f.get("label").iter().all(|l| match l.split_once('=') {
        Some((k, v)) => ev.actor.attributes.get(k).is_some_and(|x| x == v),
        None => ev.actor.attributes.contains_key(l.as_str()),
    });
    let image_ok = {
        let v = f.get("image");
        let names = [ev.actor.id.as_str(), attr("image"), attr("name")];
        v.is_empty()
            || v.iter().any(|x| {
                names.iter().any(|n| {
                    !n.is_empty() && (n == x || untagged(n) == untagged(x) || (ev.typ == "image" && fuzzy(std::slice::from_ref(x), n)))
                })
            })
    };
    let of_type = |key: &str, typ: &str| {
        f.get(key).is_empty()
            || (ev.typ == typ && by_name(key))
            || (key == "container" && ev.typ == "network" && fuzzy(f.get(key), attr("container")))
    };
    action_ok
        && type_ok
        && scope_ok
        && labels_ok
        && image_ok
        && of_type("container", "container")
        && of_type("network", "network")
        && of_type("volume", "volume")
        && of_type("daemon", "daemon")
}

async fn events(State(b): State<Arc<dyn Events>>, req: Request<Body>) -> Result<Response, ApiError> {
    use futures_util::StreamExt;
    let q = Query::parse(req.uri());
    let filters = q.filters()?;
    filters.only(FILTERS)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let time = |k: &str| -> Result<Option<f64>, ApiError> {
        match q.str(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => berth_format::parse_timestamp(v, now).map(Some).map_err(|e| ApiError::new(Kind::InvalidArgument, e.to_string())),
        }
    };
    let (since, until) = (time("since")?, time("until")?);
    let stream = b.events(since, until).await?;
    let body = stream.filter(move |ev| std::future::ready(matches(&filters, ev))).map(|ev| {
        let mut line = serde_json::to_vec(&*ev).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::io::Error>(bytes::Bytes::from(line))
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response())
}

pub fn routes(backend: Arc<dyn Events>) -> Router {
    Router::new().route("/events", axum::routing::get(events)).with_state(backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ev(typ: &str, action: &str, id: &str, attrs: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: typ.into(),
            action: action.into(),
            actor: berth_models::system::EventActor {
                id: id.into(),
                attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            },
            scope: "local".into(),
            ..Default::default()
        }
    }

    fn f(pairs: &[(&str, &str)]) -> Filters {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        Filters(m)
    }

    #[test]
    fn filters_by_dockers_rules() {
        let start = ev("container", "start", "abc123", &[("name", "web"), ("image", "busybox:latest"), ("tier", "front")]);
        let exec = ev("container", "exec_start: sh -c true", "abc123", &[("name", "web")]);
        let pull = ev("image", "pull", "busybox:latest", &[("name", "busybox")]);
        let connect = ev("network", "connect", "net1", &[("name", "bridge"), ("container", "abc123")]);
        assert!(matches(&f(&[]), &start));
        assert!(matches(&f(&[("container", "web")]), &start) && matches(&f(&[("container", "abc")]), &start));
        assert!(!matches(&f(&[("container", "other")]), &start));
        assert!(!matches(&f(&[("container", "web")]), &pull), "a container filter keeps other types out");
        assert!(matches(&f(&[("container", "abc123")]), &connect), "a network event names its container");
        assert!(matches(&f(&[("event", "exec_start")]), &exec), "the action before its `:`");
        assert!(matches(&f(&[("event", "start"), ("event", "die")]), &start));
        assert!(!matches(&f(&[("event", "die")]), &start));
        assert!(matches(&f(&[("type", "image")]), &pull) && !matches(&f(&[("type", "image")]), &start));
        assert!(matches(&f(&[("image", "busybox")]), &start) && matches(&f(&[("image", "busybox")]), &pull));
        assert!(!matches(&f(&[("image", "alpine")]), &start));
        assert!(matches(&f(&[("label", "tier=front")]), &start) && matches(&f(&[("label", "tier")]), &start));
        assert!(!matches(&f(&[("label", "tier=back")]), &start));
        assert!(matches(&f(&[("network", "bridge")]), &connect) && !matches(&f(&[("network", "bridge")]), &start));
        assert!(!matches(&f(&[("service", "x")]), &start), "no services here");
    }
}
