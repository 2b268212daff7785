//! What can go wrong talking to a registry, with the values involved.

use berth_store::images::ImagesError;
use berth_store::{ContentError, Digest};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry does not know the tag or digest (Docker's wording).
    #[error("manifest for {0} not found: manifest unknown: manifest unknown")]
    ManifestUnknown(String),
    /// Credentials missing or refused, or the repository does not exist (registries do not
    /// tell the two apart to anonymous clients).
    #[error("{action} access denied for {repo}, repository does not exist or may require 'docker login': {message}")]
    Denied { action: &'static str, repo: String, message: String },
    #[error("{0}")]
    Unauthorized(String),
    /// Any other error the registry answered with.
    #[error("{url}: {message}")]
    Status { url: String, status: u16, message: String },
    /// A reply larger than it may be (a manifest, a token, an error body).
    #[error("{what} from {url} is larger than {limit} bytes")]
    TooLarge { what: &'static str, url: String, limit: u64 },
    /// A manifest, index or config that is not what it claims to be.
    #[error("{0}")]
    Invalid(String),
    #[error("{what} {digest}: content does not match its digest (got {actual})")]
    DigestMismatch { what: &'static str, digest: Digest, actual: Digest },
    #[error("no matching manifest for {wanted} in the manifest list entries")]
    NoPlatform { wanted: String },
    #[error("{context} {url}: {}", chain(source))]
    Http { context: &'static str, url: String, source: reqwest::Error },
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] ImagesError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("{0}")]
    Internal(String),
}

impl RegistryError {
    /// Worth another attempt (the connection, not the content, failed)?
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Http { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            RegistryError::Content(ContentError::Io { .. }) => true,
            _ => false,
        }
    }
}

/// An error with its causes (reqwest's own message leaves out why a request failed).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// A blocking task that panicked or was cancelled.
pub(crate) fn blocking_err(e: tokio::task::JoinError) -> RegistryError {
    RegistryError::Internal(format!("a blocking task failed: {e}"))
}

pub type Result<T> = std::result::Result<T, RegistryError>;
