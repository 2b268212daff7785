//! The engine's error type. Failures keep what kind they are from where they happen (a shim's
//! reply carries the runtime's kind; the store's errors are typed) to the one conversion into
//! the API's error, so nothing is guessed back from message text.

use berth_api::{ApiError, Kind};
use berth_shim::ErrorKind;
use berth_store::images::ImagesError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("container is not running ({0})")]
    NotRunning(String),
    /// What a shim (or the runtime under it) reported, with the runtime's classification.
    #[error("{message}")]
    Runtime { kind: ErrorKind, message: String },
    #[error(transparent)]
    Images(#[from] ImagesError),
    #[error(transparent)]
    Registry(#[from] berth_registry::RegistryError),
    #[error("{0}")]
    Internal(String),
    /// Raised where the API's own kinds are already known (checks shared with berth-api).
    #[error(transparent)]
    Api(#[from] ApiError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The API's kind of failure (its HTTP status).
    pub fn kind(&self) -> Kind {
        match self {
            Error::NoSuchContainer(_) | Error::NoSuchImage(_) => Kind::NotFound,
            Error::Conflict(_) | Error::NotRunning(_) => Kind::Conflict,
            Error::Invalid(_) => Kind::InvalidArgument,
            Error::Runtime { kind, .. } => match kind {
                ErrorKind::NotFound => Kind::NotFound,
                ErrorKind::Conflict => Kind::Conflict,
                ErrorKind::InvalidArgument | ErrorKind::ExecNotFound | ErrorKind::ExecPermission => Kind::InvalidArgument,
                ErrorKind::Internal => Kind::Internal,
            },
            Error::Images(e) => match e {
                ImagesError::NotFound(_) => Kind::NotFound,
                ImagesError::Ambiguous(_)
                | ImagesError::Reference(_)
                | ImagesError::BadArchive(_)
                | ImagesError::Archive(_)
                | ImagesError::Image(_) => Kind::InvalidArgument,
                _ => Kind::Internal,
            },
            Error::Registry(e) => {
                use berth_registry::RegistryError as R;
                match e {
                    // dockerd answers both with 404, so `docker run` says what failed.
                    R::ManifestUnknown(_) | R::Denied { .. } | R::NoPlatform { .. } => Kind::NotFound,
                    R::Unauthorized(_) => Kind::Unauthorized,
                    _ => Kind::Internal,
                }
            }
            Error::Internal(_) => Kind::Internal,
            Error::Api(e) => e.kind,
        }
    }

    /// The same failure, its message after `prefix`.
    pub fn prefixed(self, prefix: &str) -> Error {
        match self {
            Error::Runtime { kind, message } => Error::Runtime { kind, message: format!("{prefix}{message}") },
            e => Error::Api(ApiError::new(e.kind(), format!("{prefix}{e}"))),
        }
    }

    /// Docker's exit code for a program that could not be run: 127 when it was not found, 126
    /// when it cannot be executed; None for any other failure.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Error::Runtime { kind: ErrorKind::ExecNotFound, .. } => Some(127),
            Error::Runtime { kind: ErrorKind::ExecPermission, .. } => Some(126),
            _ => None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::Api(e) => e,
            Error::Images(ImagesError::NotFound(n)) => ApiError::new(Kind::NotFound, format!("No such image: {n}")),
            e => ApiError::new(e.kind(), e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_exit_codes_come_from_the_failure_not_its_words() {
        let runtime = |kind, message: &str| Error::Runtime { kind, message: message.into() };
        // The words would say otherwise: the kind decides.
        let e = runtime(ErrorKind::ExecPermission, "exec: \"/x\": no such file or directory");
        assert_eq!((e.exit_code(), e.kind()), (Some(126), Kind::InvalidArgument));
        assert_eq!(runtime(ErrorKind::ExecNotFound, "permission denied").exit_code(), Some(127));
        assert_eq!(runtime(ErrorKind::Internal, "executable file not found").exit_code(), None);
        let e = runtime(ErrorKind::ExecNotFound, "exec: \"x\": executable file not found in $PATH").prefixed("failed: ");
        assert_eq!((e.exit_code(), e.to_string().as_str()), (Some(127), "failed: exec: \"x\": executable file not found in $PATH"));
        assert_eq!(Error::Internal("x".into()).prefixed("p: ").to_string(), "p: x");
        let api: ApiError = runtime(ErrorKind::Conflict, "busy").into();
        assert_eq!((api.kind, api.message.as_str()), (Kind::Conflict, "busy"));
        let api: ApiError = Error::Images(ImagesError::NotFound("x".into())).into();
        assert_eq!((api.kind, api.message.as_str()), (Kind::NotFound, "No such image: x"));
        assert_eq!(ApiError::from(Error::NotRunning("shim gone".into())).kind, Kind::Conflict);
        let passed = ApiError::new(Kind::NotImplemented, "later");
        assert_eq!(ApiError::from(Error::from(passed)).kind, Kind::NotImplemented);
    }
}
