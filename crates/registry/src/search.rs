//! `GET /images/search`: a registry's v1 search API (Docker Hub's index unless the term names
//! a registry, `reg.example/term`). Offline it fails with the transport's error, as dockerd.

use berth_models::images::SearchResult;
use serde::Deserialize;

use crate::client::{HUB_DOMAIN, Registry, http_err, message_of, read_limited};
use crate::error::{RegistryError, Result};

/// Where Docker Hub answers searches.
const HUB_INDEX: &str = "index.docker.io";
/// Search answers are small lists; more is refused.
const MAX_ANSWER: u64 = 4 << 20;

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<SearchResult>,
}

/// `reg.example:5000/term` → (`reg.example:5000`, `term`); a bare term goes to Docker Hub.
pub fn split_term(term: &str) -> (String, String) {
    match term.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            let host = if host == HUB_DOMAIN { HUB_INDEX } else { host };
            (host.to_string(), rest.to_string())
        }
        _ => (HUB_INDEX.to_string(), term.to_string()),
    }
}

impl Registry {
    pub async fn search(&self, term: &str, limit: u32) -> Result<Vec<SearchResult>> {
        let (host, q) = split_term(term);
        let endpoint = self.endpoint(&host).await?;
        let mut url = reqwest::Url::parse(&format!("{}/v1/search", endpoint.base)).map_err(|e| RegistryError::Internal(e.to_string()))?;
        url.query_pairs_mut().append_pair("q", &q).append_pair("n", &limit.to_string());
        let shown = url.to_string();
        let res = endpoint.http.get(url).send().await.map_err(http_err("searching", &shown))?;
        let status = res.status();
        let body = read_limited(res, MAX_ANSWER, "search answer", &shown).await?;
        if !status.is_success() {
            let message = message_of(&body).unwrap_or_else(|| status.to_string());
            return Err(RegistryError::Status { url: shown, status: status.as_u16(), message });
        }
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid(format!("the search answer from {host}: {e}")))?;
        Ok(answer.results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_name_their_registry_or_go_to_docker_hub() {
        assert_eq!(split_term("busybox"), ("index.docker.io".into(), "busybox".into()));
        assert_eq!(split_term("user/app"), ("index.docker.io".into(), "user/app".into()));
        assert_eq!(split_term("127.0.0.1:5000/app"), ("127.0.0.1:5000".into(), "app".into()));
        assert_eq!(split_term("docker.io/app"), ("index.docker.io".into(), "app".into()));
    }
}
