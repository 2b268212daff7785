//! Registry authentication: credentials as the API receives them (`X-Registry-Auth`), the
//! `WWW-Authenticate` challenges registries answer with, and bearer tokens fetched from the
//! realm a challenge names (cached per registry, scope and user until they expire).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

/// What a client gave for one registry. Empty means anonymous.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// An OAuth refresh token (`docker login` with a credential helper may give one).
    pub identity_token: String,
    /// A bearer token to send as it is.
    pub registry_token: String,
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.password.is_empty() && self.identity_token.is_empty() && self.registry_token.is_empty()
    }

    /// From the API's `AuthConfig` (`auth` is base64 `user:password`, as in config.json).
    pub fn from_auth_config(a: &berth_models::system::AuthConfig) -> Credentials {
        let (mut username, mut password) = (a.username.clone(), a.password.clone());
        if username.is_empty()
            && !a.auth.is_empty()
            && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(a.auth.trim())
            && let Ok(text) = String::from_utf8(raw)
            && let Some((u, p)) = text.split_once(':')
        {
            (username, password) = (u.to_string(), p.to_string());
        }
        Credentials { username, password, identity_token: a.identitytoken.clone(), registry_token: a.registrytoken.clone() }
    }

    pub(crate) fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-case: `basic` or `bearer`.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parse a `WWW-Authenticate` value (`Bearer realm="…",service="…",scope="…"`): the scheme,
/// then `key=value` pairs, values plain or quoted with backslash escapes.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.trim().is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string();
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge { scheme: scheme.to_ascii_lowercase(), params })
}

/// A token endpoint's answer (Docker's token spec; OAuth2 servers say `access_token`).
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<Token> {
        let value = if self.token.is_empty() { self.access_token } else { self.token };
        // The spec's minimum lifetime is 60 s; a token that claims less is still used once.
        let life = Duration::from_secs(self.expires_in.unwrap_or(60).max(60));
        (!value.is_empty()).then(|| Token { value, expires: Instant::now() + life })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: String,
    pub expires: Instant,
}

impl Token {
    /// Usable for one more request: a margin, so it does not expire on the way.
    pub fn fresh(&self) -> bool {
        Instant::now() + Duration::from_secs(5) < self.expires
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hubs_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull");
    }

    #[test]
    fn parses_basic_unquoted_and_escaped_values() {
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!((c.scheme.as_str(), c.params["realm"].as_str()), ("basic", "Registry Realm"));
        let c = parse_challenge(r#"Bearer realm=https://a/t, error="insufficient_scope", x="q\"uote""#).unwrap();
        assert_eq!(c.params["realm"], "https://a/t");
        assert_eq!(c.params["error"], "insufficient_scope");
        assert_eq!(c.params["x"], "q\"uote");
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn auth_config_credentials_come_from_the_fields_or_the_auth_string() {
        let a = berth_models::system::AuthConfig { auth: "dTpwOng=".into(), ..Default::default() }; // u:p:x
        let c = Credentials::from_auth_config(&a);
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:x"));
        let a = berth_models::system::AuthConfig { username: "me".into(), password: "pw".into(), ..Default::default() };
        assert_eq!(Credentials::from_auth_config(&a).basic(), "Basic bWU6cHc=");
        assert!(Credentials::default().is_empty());
    }

    #[test]
    fn tokens_use_either_field_and_live_at_least_a_minute() {
        let t = TokenResponse { token: String::new(), access_token: "abc".into(), expires_in: Some(1) }.into_token().unwrap();
        assert_eq!(t.value, "abc");
        assert!(t.fresh());
        assert!(TokenResponse { token: String::new(), access_token: String::new(), expires_in: None }.into_token().is_none());
    }
}
