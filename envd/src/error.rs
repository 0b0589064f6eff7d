//! envd's one error type. The API maps each variant to an HTTP problem, the CLI to a message.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a template, answers, a request field. `field` is a dotted path.
    #[error("{source_name}: {field}: {reason}")]
    Invalid {
        source_name: String,
        field: String,
        reason: String,
    },
    /// Bad answers: every bad field at once, so one round trip fixes them all.
    #[error("{source_name}: {}", list_fields(fields))]
    InvalidFields {
        source_name: String,
        fields: Vec<FieldError>,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// A create or clone would cross the owner's quota.
    #[error(
        "quota {quota} of owner `{owner}` would be exceeded: in use {usage}, limit {limit}; remove an env (envd rm) or ask an admin for more"
    )]
    Quota {
        owner: String,
        quota: String,
        usage: String,
        limit: String,
    },
    #[error("the IP pool {0} has no free address: free an environment or widen the pool")]
    PoolExhausted(String),
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("docker, {context}: {source}")]
    Docker {
        context: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("network: {0}")]
    Net(#[from] netcfg::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A step of an environment could not complete (a pod not ready, a deadline).
    #[error("{step}: {reason}")]
    Step { step: String, reason: String },
}

/// One bad field of an [`Error::InvalidFields`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl Error {
    pub fn invalid(source_name: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            source_name: source_name.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn step(step: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Step {
            step: step.into(),
            reason: reason.into(),
        }
    }

    /// A 404 from Docker: the object is already gone, which teardown counts as success.
    pub fn is_docker_not_found(&self) -> bool {
        matches!(
            self,
            Error::Docker {
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                },
                ..
            }
        )
    }
}

/// `a: reason; b: reason`, for messages and logs.
fn list_fields(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Adds context to a Docker error at the call site.
pub trait DockerContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> DockerContext<T> for std::result::Result<T, bollard::errors::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Docker {
            context: context(),
            source,
        })
    }
}

/// Adds context to an I/O error at the call site.
pub trait IoContext<T> {
    fn io_ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, std::io::Error> {
    fn io_ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
