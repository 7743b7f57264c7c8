//! The one place errors become SQLSTATEs.
//!
//! Everything a client can see goes through [`SqlError`]: DataFusion's errors are classified by
//! variant, Joinery's own by [`ErrorKind`]. Internal details (XX000) are reserved for real bugs.

use datafusion::error::DataFusionError;
use joinery_engine::{ErrorKind, JoineryError};
use pgwire::error::{ErrorInfo, PgWireError};

/// A SQLSTATE code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlState(pub &'static str);

impl SqlState {
    pub const WARNING: SqlState = SqlState("01000");
    pub const SYNTAX_ERROR: SqlState = SqlState("42601");
    pub const UNDEFINED_TABLE: SqlState = SqlState("42P01");
    pub const UNDEFINED_COLUMN: SqlState = SqlState("42703");
    pub const UNDEFINED_FUNCTION: SqlState = SqlState("42883");
    pub const UNDEFINED_SCHEMA: SqlState = SqlState("3F000");
    pub const UNDEFINED_OBJECT: SqlState = SqlState("42704");
    pub const AMBIGUOUS_COLUMN: SqlState = SqlState("42702");
    pub const DUPLICATE_OBJECT: SqlState = SqlState("42710");
    pub const DATATYPE_MISMATCH: SqlState = SqlState("42804");
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState("42501");
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState("22023");
    pub const INVALID_TEXT_REPRESENTATION: SqlState = SqlState("22P02");
    pub const DIVISION_BY_ZERO: SqlState = SqlState("22012");
    pub const NUMERIC_VALUE_OUT_OF_RANGE: SqlState = SqlState("22003");
    pub const DATA_EXCEPTION: SqlState = SqlState("22000");
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
    pub const CANT_CHANGE_RUNTIME_PARAM: SqlState = SqlState("55P02");
    pub const QUERY_CANCELED: SqlState = SqlState("57014");
    pub const OUT_OF_MEMORY: SqlState = SqlState("53200");
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState("53300");
    pub const CONFIGURATION_LIMIT_EXCEEDED: SqlState = SqlState("53400");
    pub const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState("54000");
    pub const IN_FAILED_TRANSACTION: SqlState = SqlState("25P02");
    pub const READ_ONLY_TRANSACTION: SqlState = SqlState("25006");
    pub const NO_ACTIVE_TRANSACTION: SqlState = SqlState("25P01");
    pub const ACTIVE_TRANSACTION: SqlState = SqlState("25001");
    pub const INVALID_SQL_STATEMENT_NAME: SqlState = SqlState("26000");
    pub const INVALID_CURSOR_NAME: SqlState = SqlState("34000");
    pub const PROTOCOL_VIOLATION: SqlState = SqlState("08P01");
    pub const CONNECTION_FAILURE: SqlState = SqlState("08006");
    pub const INVALID_PASSWORD: SqlState = SqlState("28P01");
    pub const INVALID_AUTHORIZATION: SqlState = SqlState("28000");
    pub const CONFIG_FILE_ERROR: SqlState = SqlState("F0000");
    /// External routine (an upstream API) failed.
    pub const EXTERNAL_ROUTINE_EXCEPTION: SqlState = SqlState("38000");
    pub const FDW_ERROR: SqlState = SqlState("HV000");
    pub const FDW_UNABLE_TO_ESTABLISH_CONNECTION: SqlState = SqlState("HV00N");
    pub const FDW_INVALID_DATA_TYPE: SqlState = SqlState("HV004");
    pub const INTERNAL_ERROR: SqlState = SqlState("XX000");
    pub const ADMIN_SHUTDOWN: SqlState = SqlState("57P01");
}

/// An error as the client sees it.
#[derive(Debug, Clone)]
pub struct SqlError {
    pub state: SqlState,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl SqlError {
    pub fn new(state: SqlState, message: impl Into<String>) -> Self {
        Self {
            state,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn canceled() -> Self {
        Self::new(
            SqlState::QUERY_CANCELED,
            "canceling statement due to user request",
        )
    }

    pub fn timed_out() -> Self {
        Self::new(
            SqlState::QUERY_CANCELED,
            "canceling statement due to statement timeout",
        )
    }

    pub fn in_failed_transaction() -> Self {
        Self::new(
            SqlState::IN_FAILED_TRANSACTION,
            "current transaction is aborted, commands ignored until end of transaction block",
        )
    }

    pub fn into_pgwire(self) -> PgWireError {
        PgWireError::UserError(Box::new(self.into_info()))
    }

    pub fn into_info(self) -> ErrorInfo {
        let mut info = ErrorInfo::new("ERROR".to_string(), self.state.0.to_string(), self.message);
        info.detail = self.detail;
        info.hint = self.hint;
        info
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.state.0)
    }
}

impl From<SqlError> for PgWireError {
    fn from(e: SqlError) -> Self {
        e.into_pgwire()
    }
}

/// SQLSTATE for a Joinery error kind.
pub fn state_for_kind(kind: ErrorKind) -> SqlState {
    match kind {
        ErrorKind::Config => SqlState::CONFIG_FILE_ERROR,
        ErrorKind::InvalidInput => SqlState::INVALID_PARAMETER_VALUE,
        ErrorKind::NotFound => SqlState::UNDEFINED_OBJECT,
        ErrorKind::PermissionDenied => SqlState::INSUFFICIENT_PRIVILEGE,
        ErrorKind::Unauthenticated => SqlState::FDW_UNABLE_TO_ESTABLISH_CONNECTION,
        ErrorKind::RateLimited => SqlState::CONFIGURATION_LIMIT_EXCEEDED,
        ErrorKind::Unavailable => SqlState::FDW_UNABLE_TO_ESTABLISH_CONNECTION,
        ErrorKind::Timeout => SqlState::QUERY_CANCELED,
        ErrorKind::BadResponse => SqlState::FDW_INVALID_DATA_TYPE,
        ErrorKind::Canceled => SqlState::QUERY_CANCELED,
        ErrorKind::ResourceExhausted => SqlState::OUT_OF_MEMORY,
        ErrorKind::Unsupported => SqlState::FEATURE_NOT_SUPPORTED,
        ErrorKind::Internal => SqlState::INTERNAL_ERROR,
    }
}

impl From<&JoineryError> for SqlError {
    fn from(e: &JoineryError) -> Self {
        let mut s = SqlError::new(state_for_kind(e.kind), e.to_string());
        s.hint = e.hint.clone();
        s
    }
}

/// Strip DataFusion's "Error during planning: " style prefixes, which mean nothing to a user.
fn clean(msg: &str) -> String {
    let mut m = msg.trim();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "SQL error: ",
        "Execution error: ",
        "Arrow error: ",
        "This feature is not implemented: ",
        "Optimizer rule",
        "External error: ",
        "Invalid argument error: ",
        "Cast error: ",
        "Parser error: ",
    ] {
        if let Some(rest) = m.strip_prefix(prefix) {
            m = rest.trim();
        }
    }
    if let Some(inner) = m
        .strip_prefix("ParserError(")
        .and_then(|r| r.strip_suffix(')'))
    {
        m = inner.trim_matches('"');
    }
    m.to_string()
}

/// Classify any DataFusion error.
pub fn from_datafusion(err: &DataFusionError) -> SqlError {
    if let Some(j) = JoineryError::find_in(err) {
        return SqlError::from(j);
    }
    use datafusion::common::SchemaError;
    match err {
        DataFusionError::Context(_, inner) => from_datafusion(inner),
        DataFusionError::Shared(inner) => from_datafusion(inner),
        DataFusionError::Diagnostic(_, inner) => from_datafusion(inner),
        DataFusionError::Collection(errs) if !errs.is_empty() => from_datafusion(&errs[0]),
        DataFusionError::SQL(e, _) => SqlError::new(SqlState::SYNTAX_ERROR, clean(&e.to_string())),
        DataFusionError::SchemaError(e, _) => {
            let state = match e.as_ref() {
                SchemaError::FieldNotFound { .. } => SqlState::UNDEFINED_COLUMN,
                SchemaError::AmbiguousReference { .. } => SqlState::AMBIGUOUS_COLUMN,
                SchemaError::DuplicateQualifiedField { .. }
                | SchemaError::DuplicateUnqualifiedField { .. } => SqlState::DUPLICATE_OBJECT,
            };
            SqlError::new(state, clean(&e.to_string()))
        }
        DataFusionError::Plan(m) => classify_plan_message(m),
        DataFusionError::NotImplemented(m) => {
            SqlError::new(SqlState::FEATURE_NOT_SUPPORTED, clean(m))
        }
        DataFusionError::ResourcesExhausted(m) => SqlError::new(
            SqlState::OUT_OF_MEMORY,
            format!("out of memory: {}", clean(m)),
        )
        .with_hint("raise [server] query_memory_limit or narrow the query"),
        DataFusionError::ArrowError(e, _) => classify_arrow(e),
        DataFusionError::ExecutionJoin(e) => {
            if e.is_cancelled() {
                SqlError::canceled()
            } else {
                SqlError::new(SqlState::INTERNAL_ERROR, clean(&e.to_string()))
            }
        }
        DataFusionError::Execution(m) => classify_execution_message(m),
        DataFusionError::External(e) => {
            if let Some(a) = e.downcast_ref::<datafusion::arrow::error::ArrowError>() {
                classify_arrow(a)
            } else {
                SqlError::new(SqlState::EXTERNAL_ROUTINE_EXCEPTION, clean(&e.to_string()))
            }
        }
        DataFusionError::Configuration(m) => {
            SqlError::new(SqlState::INVALID_PARAMETER_VALUE, clean(m))
        }
        other => SqlError::new(SqlState::INTERNAL_ERROR, clean(&other.to_string())),
    }
}

fn classify_arrow(e: &datafusion::arrow::error::ArrowError) -> SqlError {
    use datafusion::arrow::error::ArrowError;
    match e {
        ArrowError::DivideByZero => SqlError::new(SqlState::DIVISION_BY_ZERO, "division by zero"),
        ArrowError::CastError(m) | ArrowError::ParseError(m) => {
            SqlError::new(SqlState::INVALID_TEXT_REPRESENTATION, clean(m))
        }
        ArrowError::ArithmeticOverflow(m) => {
            SqlError::new(SqlState::NUMERIC_VALUE_OUT_OF_RANGE, clean(m))
        }
        ArrowError::ExternalError(inner) => {
            if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                from_datafusion(df)
            } else if let Some(j) = inner.downcast_ref::<JoineryError>() {
                SqlError::from(j)
            } else {
                SqlError::new(SqlState::DATA_EXCEPTION, clean(&inner.to_string()))
            }
        }
        ArrowError::MemoryError(m) => SqlError::new(SqlState::OUT_OF_MEMORY, clean(m)),
        other => SqlError::new(SqlState::DATA_EXCEPTION, clean(&other.to_string())),
    }
}

fn classify_plan_message(m: &str) -> SqlError {
    let msg = clean(m);
    let lower = msg.to_ascii_lowercase();
    let state = if lower.contains("table")
        && (lower.contains("not found")
            || lower.contains("doesn't exist")
            || lower.contains("does not exist"))
    {
        SqlState::UNDEFINED_TABLE
    } else if lower.contains("invalid function")
        || lower.contains("no function matches")
        || lower.contains("function") && lower.contains("not found")
    {
        SqlState::UNDEFINED_FUNCTION
    } else if lower.contains("schema") && lower.contains("not found") {
        SqlState::UNDEFINED_SCHEMA
    } else if lower.contains("cannot be cast")
        || lower.contains("cannot coerce")
        || lower.contains("type coercion")
        || lower.contains("failed to coerce")
    {
        SqlState::DATATYPE_MISMATCH
    } else if lower.contains("placeholder") || lower.contains("parameter") {
        SqlState::INVALID_PARAMETER_VALUE
    } else {
        SqlState::SYNTAX_ERROR
    };
    SqlError::new(state, msg)
}

fn classify_execution_message(m: &str) -> SqlError {
    let msg = clean(m);
    let lower = msg.to_ascii_lowercase();
    let state = if lower.contains("divide by zero") || lower.contains("division by zero") {
        SqlState::DIVISION_BY_ZERO
    } else if lower.contains("cannot cast")
        || lower.contains("cast error")
        || lower.contains("invalid") && lower.contains("value")
    {
        SqlState::INVALID_TEXT_REPRESENTATION
    } else if lower.contains("overflow") {
        SqlState::NUMERIC_VALUE_OUT_OF_RANGE
    } else {
        SqlState::DATA_EXCEPTION
    };
    SqlError::new(state, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joinery_kinds_survive_wrapping() {
        let e = JoineryError::new(ErrorKind::RateLimited, "429 from API").with_connection("github");
        let df = DataFusionError::Context("scan".into(), Box::new(e.into_datafusion()));
        let s = from_datafusion(&df);
        assert_eq!(s.state, SqlState::CONFIGURATION_LIMIT_EXCEEDED);
        assert!(s.message.contains("github"));
    }

    #[test]
    fn plan_errors_are_not_internal() {
        let s = from_datafusion(&DataFusionError::Plan(
            "table 'joinery.public.nope' not found".into(),
        ));
        assert_eq!(s.state, SqlState::UNDEFINED_TABLE);
        let s = from_datafusion(&DataFusionError::Plan("Invalid function 'frob'".into()));
        assert_eq!(s.state, SqlState::UNDEFINED_FUNCTION);
    }
}
