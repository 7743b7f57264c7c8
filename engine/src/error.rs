//! Error kinds shared by every layer.
//!
//! Errors raised inside DataFusion (a scan, a UDF) travel as `DataFusionError::External` wrapping a
//! [`JoineryError`]; the server downcasts them back and maps [`ErrorKind`] to a SQLSTATE in one
//! place (`joinery_server::errors`). Messages never carry secrets: callers redact before building
//! them.

use std::fmt;

use datafusion::error::DataFusionError;

pub type Result<T, E = JoineryError> = std::result::Result<T, E>;

/// What went wrong, independent of where: this is what decides the SQLSTATE and whether a
/// retry could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The configuration file or a connection's settings are invalid.
    Config,
    /// The user's SQL or a value in it is wrong (bad literal, missing required filter).
    InvalidInput,
    /// A schema, table or column that does not exist.
    NotFound,
    /// The user may not do this.
    PermissionDenied,
    /// The upstream API rejected our credentials.
    Unauthenticated,
    /// The upstream API (or our own limiter) says slow down.
    RateLimited,
    /// The upstream API cannot be reached or answered 5xx.
    Unavailable,
    /// A deadline passed.
    Timeout,
    /// The upstream API answered something we could not understand.
    BadResponse,
    /// The statement was canceled by the client.
    Canceled,
    /// Memory or another resource ran out.
    ResourceExhausted,
    /// A feature Joinery does not support.
    Unsupported,
    /// A bug: an invariant did not hold.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Config => "configuration error",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::NotFound => "not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unauthenticated => "authentication failed",
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timed out",
            ErrorKind::BadResponse => "bad response",
            ErrorKind::Canceled => "canceled",
            ErrorKind::ResourceExhausted => "resource exhausted",
            ErrorKind::Unsupported => "not supported",
            ErrorKind::Internal => "internal error",
        };
        f.write_str(s)
    }
}

/// A Joinery error: a kind, a message for the user, and optionally the connection and table it
/// concerns (so the user knows which tool failed).
#[derive(Debug, Clone)]
pub struct JoineryError {
    pub kind: ErrorKind,
    pub message: String,
    pub connection: Option<String>,
    pub table: Option<String>,
    pub hint: Option<String>,
}

impl JoineryError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            connection: None,
            table: None,
            hint: None,
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn with_connection(mut self, connection: impl Into<String>) -> Self {
        self.connection = Some(connection.into());
        self
    }

    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Wrap into a DataFusion error so it can cross `TableProvider`/`ExecutionPlan` boundaries.
    pub fn into_datafusion(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }

    /// Find a `JoineryError` inside a DataFusion error, however deeply DataFusion wrapped it.
    pub fn find_in(err: &DataFusionError) -> Option<&JoineryError> {
        let mut current: &(dyn std::error::Error + 'static) = err;
        loop {
            if let Some(j) = current.downcast_ref::<JoineryError>() {
                return Some(j);
            }
            if let Some(DataFusionError::External(inner)) =
                current.downcast_ref::<DataFusionError>()
                && let Some(j) = inner.downcast_ref::<JoineryError>()
            {
                return Some(j);
            }
            current = current.source()?;
        }
    }
}

impl fmt::Display for JoineryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.connection, &self.table) {
            (Some(c), Some(t)) => write!(f, "{c}.{t}: {}", self.message),
            (Some(c), None) => write!(f, "{c}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for JoineryError {}

impl From<JoineryError> for DataFusionError {
    fn from(e: JoineryError) -> Self {
        e.into_datafusion()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_through_datafusion_wrapping() {
        let e = JoineryError::new(ErrorKind::RateLimited, "slow down").with_connection("github");
        let df = DataFusionError::Context(
            "while scanning".into(),
            Box::new(DataFusionError::Shared(std::sync::Arc::new(
                e.into_datafusion(),
            ))),
        );
        let found = JoineryError::find_in(&df).map(|e| e.kind);
        assert_eq!(found, Some(ErrorKind::RateLimited));
        assert_eq!(
            JoineryError::find_in(&DataFusionError::Plan("x".into())).map(|e| e.kind),
            None
        );
    }
}
