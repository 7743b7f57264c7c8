//! Session commands answered by Joinery itself, before DataFusion sees a statement: SET/SHOW/
//! RESET, transaction control, DISCARD, DEALLOCATE, LISTEN. Joinery is read-only, so
//! transactions only track the state drivers expect (`BEGIN` ... `COMMIT`, `E` after an error).

use datafusion::sql::sqlparser::ast::{
    DiscardObject, Expr, Ident, ObjectName, Reset, Set, Statement, UnaryOperator, Value,
};

use crate::errors::{SqlError, SqlState};

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `SET name = value`; `None` means `DEFAULT`.
    Set {
        name: String,
        value: Option<String>,
    },
    /// `RESET name`; `None` means `RESET ALL`.
    Reset(Option<String>),
    Show(String),
    ShowAll,
    Begin(&'static str),
    Commit,
    Rollback,
    Savepoint,
    Release,
    RollbackTo,
    DiscardAll,
    Deallocate(Option<String>),
    /// Accepted and ignored, answering with this tag.
    Noop(&'static str),
    /// `SELECT joinery.refresh('connection')`: re-read a connection's tables and columns.
    Refresh(String),
    /// `SELECT joinery.rotate_secret('name', 'new value')` (admins): replace a stored secret.
    RotateSecret(String, joinery_engine::rest::Secret),
    /// `GRANT USAGE ON SCHEMA c, ... TO x, ...` (`grant`) or `REVOKE ... FROM ...` (admins).
    Grant {
        grant: bool,
        connections: Vec<String>,
        grantees: Vec<String>,
    },
    /// `CREATE POLICY name ON connection.table [FOR SELECT] [TO x, ...] USING (predicate)`
    /// (admins): a row filter made in SQL.
    CreatePolicy {
        name: String,
        schema: String,
        table: String,
        /// The predicate's SQL text.
        filter: String,
        /// Users and roles; empty: PUBLIC (every user who is not an admin).
        to: Vec<String>,
    },
    /// `DROP POLICY [IF EXISTS] name ON connection.table` (admins).
    DropPolicy {
        name: String,
        schema: String,
        table: String,
        if_exists: bool,
    },
}

impl Command {
    /// Commands allowed while a transaction is in the failed state.
    pub fn ends_failed_transaction(&self) -> bool {
        matches!(
            self,
            Command::Commit | Command::Rollback | Command::RollbackTo
        )
    }

    /// Whether the command returns rows (so Describe answers a RowDescription).
    pub fn returns_rows(&self) -> bool {
        matches!(
            self,
            Command::Show(_) | Command::ShowAll | Command::Refresh(_) | Command::RotateSecret(..)
        )
    }
}

fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

fn object_name(n: &ObjectName) -> String {
    n.0.iter()
        .filter_map(|p| p.as_ident().map(ident))
        .collect::<Vec<_>>()
        .join(".")
}

/// The text of a SET value as Postgres would take it.
fn expr_text(e: &Expr) -> Option<String> {
    Some(match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s)
            | Value::DoubleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::NationalStringLiteral(s) => s.clone(),
            Value::Number(n, _) => n.to_string(),
            Value::Boolean(b) => if *b { "on" } else { "off" }.to_string(),
            Value::Null => return None,
            other => other.to_string(),
        },
        Expr::Identifier(i) => {
            if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default") {
                return None;
            }
            i.value.clone()
        }
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => format!("-{}", expr_text(expr)?),
        other => other.to_string(),
    })
}

/// A `search_path` list as PostgreSQL keeps it: unquoted names folded to lower case, quoted
/// names and string literals taken as written, and each shown quoted when it needs to be
/// (`demo, "MixedCase", public`).
fn search_path_text(values: &[Expr]) -> Option<String> {
    let mut names = Vec::with_capacity(values.len());
    for v in values {
        let name = match v {
            Expr::Identifier(i) if i.quote_style.is_none() => {
                if i.value.eq_ignore_ascii_case("default") && values.len() == 1 {
                    return None;
                }
                i.value.to_ascii_lowercase()
            }
            Expr::Identifier(i) => i.value.clone(),
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                _ => expr_text(&Expr::Value(v.clone()))?,
            },
            other => expr_text(other)?,
        };
        names.push(crate::settings::quote_schema_name(&name));
    }
    Some(names.join(", "))
}

fn values_text(values: &[Expr]) -> Option<String> {
    let parts: Option<Vec<String>> = values.iter().map(expr_text).collect();
    parts.map(|p| p.join(", "))
}

/// Recognize a session command; `None` means the statement is for the query engine.
pub fn classify(stmt: &Statement, user: &str) -> Option<Result<Command, SqlError>> {
    Some(Ok(match stmt {
        Statement::Set(set) => match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = object_name(variable);
                let value = if name == "search_path" {
                    search_path_text(values)
                } else {
                    values_text(values)
                };
                Command::Set { name, value }
            }
            Set::MultipleAssignments { assignments } if assignments.len() == 1 => Command::Set {
                name: object_name(&assignments[0].name),
                value: expr_text(&assignments[0].value),
            },
            Set::SetTimeZone { value, .. } => Command::Set {
                name: "timezone".into(),
                value: expr_text(value),
            },
            Set::SetNames { charset_name, .. } => Command::Set {
                name: "client_encoding".into(),
                value: Some(charset_name.value.clone()),
            },
            Set::SetTransaction { .. } => Command::Noop("SET"),
            Set::SetRole { role_name, .. } => match role_name {
                None => Command::Noop("SET"),
                Some(r) if r.value == user => Command::Noop("SET"),
                Some(r) => {
                    return Some(Err(SqlError::new(
                        SqlState::INSUFFICIENT_PRIVILEGE,
                        format!("permission denied to set role \"{}\"", r.value),
                    )));
                }
            },
            Set::SetSessionAuthorization(p) => {
                let s = p.to_string();
                if s.eq_ignore_ascii_case("default") || s.trim_matches('\'') == user {
                    Command::Noop("SET")
                } else {
                    return Some(Err(SqlError::new(
                        SqlState::INSUFFICIENT_PRIVILEGE,
                        "permission denied to set session authorization",
                    )));
                }
            }
            other => {
                return Some(Err(SqlError::new(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    format!("unsupported SET form: {other}"),
                )));
            }
        },
        Statement::Reset(r) => match &r.reset {
            Reset::ALL => Command::Reset(None),
            Reset::ConfigurationParameter(n) => Command::Reset(Some(object_name(n))),
        },
        Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable.iter().map(ident).collect();
            let name = words.join(" ");
            match name.as_str() {
                "all" => Command::ShowAll,
                "transaction isolation level" => Command::Show("transaction_isolation".into()),
                "time zone" => Command::Show("timezone".into()),
                "session authorization" => Command::Show("session_authorization".into()),
                _ => Command::Show(words.join(".")),
            }
        }
        Statement::StartTransaction { begin, .. } => {
            Command::Begin(if *begin { "BEGIN" } else { "START TRANSACTION" })
        }
        Statement::Commit { .. } => Command::Commit,
        Statement::Rollback { savepoint, .. } => {
            if savepoint.is_some() {
                Command::RollbackTo
            } else {
                Command::Rollback
            }
        }
        Statement::Savepoint { .. } => Command::Savepoint,
        Statement::ReleaseSavepoint { .. } => Command::Release,
        Statement::Discard { object_type } => match object_type {
            DiscardObject::ALL => Command::DiscardAll,
            DiscardObject::PLANS => Command::Noop("DISCARD PLANS"),
            DiscardObject::SEQUENCES => Command::Noop("DISCARD SEQUENCES"),
            DiscardObject::TEMP => Command::Noop("DISCARD TEMP"),
        },
        Statement::Deallocate { name, .. } => {
            if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
                Command::Deallocate(None)
            } else {
                Command::Deallocate(Some(name.value.clone()))
            }
        }
        Statement::Query(q) => return refresh_call(q).map(Ok),
        Statement::Grant(g) => {
            return Some(grant_command(true, &g.privileges, &g.objects, &g.grantees));
        }
        Statement::Revoke(r) => {
            return Some(grant_command(false, &r.privileges, &r.objects, &r.grantees));
        }
        Statement::CreatePolicy(p) => return Some(create_policy(p, user)),
        Statement::DropPolicy(p) => {
            return Some(
                policy_table(&p.table_name).map(|(schema, table)| Command::DropPolicy {
                    name: ident(&p.name),
                    schema,
                    table,
                    if_exists: p.if_exists,
                }),
            );
        }
        Statement::LISTEN { .. } => Command::Noop("LISTEN"),
        Statement::UNLISTEN { .. } => Command::Noop("UNLISTEN"),
        Statement::NOTIFY { .. } => Command::Noop("NOTIFY"),
        Statement::Close { .. } => Command::Noop("CLOSE CURSOR ALL"),
        Statement::Declare { .. } | Statement::Fetch { .. } => {
            return Some(Err(SqlError::new(
                SqlState::FEATURE_NOT_SUPPORTED,
                "cursors are not supported; use the extended protocol's row limit (fetch size) instead",
            )));
        }
        _ => return None,
    }))
}

/// The `connection.table` a policy is on (a policy needs both parts: a bare name would
/// depend on `search_path`).
fn policy_table(name: &ObjectName) -> Result<(String, String), SqlError> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(ident))
        .collect();
    match parts.as_slice() {
        [schema, table] | [_, schema, table] => Ok((schema.clone(), table.clone())),
        _ => Err(SqlError::new(
            SqlState::INVALID_PARAMETER_VALUE,
            format!("a policy is on connection.table, not \"{name}\""),
        )),
    }
}

/// `CREATE POLICY`: a row filter for reads. Joinery is read-only, so only `FOR SELECT` (or
/// `ALL`, meaning the same here) with `USING`; every policy that applies to a user narrows what
/// they read (policies combine with AND, like PostgreSQL's `AS RESTRICTIVE`).
fn create_policy(
    p: &datafusion::sql::sqlparser::ast::CreatePolicy,
    user: &str,
) -> Result<Command, SqlError> {
    use datafusion::sql::sqlparser::ast::{CreatePolicyCommand, Owner};
    let unsupported = |m: &str| {
        Err(SqlError::new(SqlState::FEATURE_NOT_SUPPORTED, m.to_string())
            .with_hint("CREATE POLICY name ON connection.table FOR SELECT TO user_or_role USING (predicate)"))
    };
    if !matches!(
        p.command,
        None | Some(CreatePolicyCommand::Select) | Some(CreatePolicyCommand::All)
    ) {
        return unsupported("Joinery is read-only: policies are FOR SELECT");
    }
    if p.with_check.is_some() {
        return unsupported("Joinery is read-only: WITH CHECK has nothing to check");
    }
    let Some(using) = &p.using else {
        return unsupported("a policy needs USING (predicate)");
    };
    let (schema, table) = policy_table(&p.table_name)?;
    let mut to = Vec::new();
    for o in p.to.iter().flatten() {
        match o {
            Owner::Ident(i) => {
                let name = ident(i);
                if name != crate::access::PUBLIC {
                    to.push(name);
                }
            }
            Owner::CurrentUser | Owner::CurrentRole | Owner::SessionUser => {
                to.push(user.to_string())
            }
        }
    }
    // PUBLIC among others still means everyone.
    if p.to
        .iter()
        .flatten()
        .any(|o| matches!(o, Owner::Ident(i) if ident(i) == crate::access::PUBLIC))
    {
        to.clear();
    }
    Ok(Command::CreatePolicy {
        name: ident(&p.name),
        schema,
        table,
        filter: using.to_string(),
        to,
    })
}

/// `GRANT`/`REVOKE`: Joinery's unit of access is a connection (a schema), so USAGE (or ALL) on
/// schemas is what it takes; anything finer is refused with the form that works.
fn grant_command(
    grant: bool,
    privileges: &datafusion::sql::sqlparser::ast::Privileges,
    objects: &Option<datafusion::sql::sqlparser::ast::GrantObjects>,
    grantees: &[datafusion::sql::sqlparser::ast::Grantee],
) -> Result<Command, SqlError> {
    use datafusion::sql::sqlparser::ast::{
        Action, GrantObjects, GranteeName, GranteesType, Privileges,
    };
    let verb = if grant { "GRANT" } else { "REVOKE" };
    let hint = format!(
        "Joinery grants whole connections: {verb} USAGE ON SCHEMA <connection> {} <user|role|PUBLIC>",
        if grant { "TO" } else { "FROM" }
    );
    let usage = match privileges {
        Privileges::All { .. } => true,
        Privileges::Actions(a) => !a.is_empty() && a.iter().all(|a| matches!(a, Action::Usage)),
    };
    let connections = match objects {
        Some(GrantObjects::Schemas(s)) if usage => s.iter().map(object_name).collect::<Vec<_>>(),
        _ => return Err(SqlError::new(SqlState::FEATURE_NOT_SUPPORTED, hint)),
    };
    let mut names = Vec::new();
    for g in grantees {
        match (&g.grantee_type, &g.name) {
            (GranteesType::Public, _) => names.push(crate::access::PUBLIC.to_string()),
            (_, Some(GranteeName::ObjectName(n))) => names.push(object_name(n)),
            _ => return Err(SqlError::new(SqlState::FEATURE_NOT_SUPPORTED, hint)),
        }
    }
    if connections.is_empty() || names.is_empty() {
        return Err(SqlError::new(SqlState::SYNTAX_ERROR, hint));
    }
    Ok(Command::Grant {
        grant,
        connections,
        grantees: names,
    })
}

/// `SELECT joinery.refresh('name')` (nothing else in the statement), as a command: refreshing
/// is async catalog work, which a scalar function cannot do.
fn refresh_call(q: &datafusion::sql::sqlparser::ast::Query) -> Option<Command> {
    use datafusion::sql::sqlparser::ast::{
        FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, SetExpr,
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    if !select.from.is_empty() || select.projection.len() != 1 || select.selection.is_some() {
        return None;
    }
    let expr = match &select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return None,
    };
    let Expr::Function(f) = expr else {
        return None;
    };
    // The compatibility parser drops schema qualifiers from function names.
    let name = object_name(&f.name);
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let strings: Option<Vec<String>> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    match (name.as_str(), strings?.as_slice()) {
        ("joinery.refresh" | "refresh", [conn]) => Some(Command::Refresh(conn.clone())),
        ("joinery.rotate_secret" | "rotate_secret", [secret, value]) => {
            Some(Command::RotateSecret(
                secret.clone(),
                joinery_engine::rest::Secret::new(value.clone()),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    fn cmd(sql: &str) -> Option<Command> {
        let p = PostgresCompatibilityParser::new();
        let stmts = p.parse(sql).ok()?;
        classify(stmts.first()?, "alice")?.ok()
    }

    #[test]
    fn refresh_is_a_command() {
        assert_eq!(
            cmd("SELECT joinery.refresh('wh')"),
            Some(Command::Refresh("wh".into()))
        );
        assert_eq!(cmd("SELECT joinery.refresh('wh') FROM t"), None);
        assert_eq!(cmd("SELECT 1"), None);
    }

    #[test]
    fn recognizes_what_clients_send() {
        assert_eq!(
            cmd("SET search_path TO public, github"),
            Some(Command::Set {
                name: "search_path".into(),
                value: Some("public, github".into())
            })
        );
        assert_eq!(
            cmd("SET TIME ZONE 'Europe/Paris'"),
            Some(Command::Set {
                name: "timezone".into(),
                value: Some("Europe/Paris".into())
            })
        );
        assert_eq!(
            cmd("set extra_float_digits = 3"),
            Some(Command::Set {
                name: "extra_float_digits".into(),
                value: Some("3".into())
            })
        );
        assert_eq!(
            cmd("SET application_name TO DEFAULT"),
            Some(Command::Set {
                name: "application_name".into(),
                value: None
            })
        );
        assert_eq!(
            cmd("SHOW TRANSACTION ISOLATION LEVEL"),
            Some(Command::Show("transaction_isolation".into()))
        );
        assert_eq!(
            cmd("show DateStyle"),
            Some(Command::Show("datestyle".into()))
        );
        assert_eq!(cmd("BEGIN"), Some(Command::Begin("BEGIN")));
        assert_eq!(
            cmd("START TRANSACTION READ ONLY"),
            Some(Command::Begin("START TRANSACTION"))
        );
        assert_eq!(cmd("COMMIT"), Some(Command::Commit));
        assert_eq!(cmd("ROLLBACK"), Some(Command::Rollback));
        assert_eq!(cmd("DISCARD ALL"), Some(Command::DiscardAll));
        assert_eq!(cmd("DEALLOCATE ALL"), Some(Command::Deallocate(None)));
        assert_eq!(
            cmd("DEALLOCATE s1"),
            Some(Command::Deallocate(Some("s1".into())))
        );
        assert_eq!(cmd("RESET ALL"), Some(Command::Reset(None)));
        assert_eq!(cmd("SELECT 1"), None);
    }
}
