//! SQL rewrites for Postgres constructs DataFusion does not plan, applied after
//! `datafusion-pg-catalog`'s own rules. Each exists because a real client sends it.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, FunctionArguments, Statement, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// `ARRAY(SELECT x ...)` (psql's `\d+` sends it) becomes
/// `(SELECT array_agg(a) FROM (SELECT x ...) AS t(a))`.
fn array_subquery(expr: &mut Expr) {
    let Expr::Function(f) = expr else { return };
    let is_array = f
        .name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case("array"));
    if !is_array {
        return;
    }
    let FunctionArguments::Subquery(q) = &f.args else {
        return;
    };
    let sql = format!("SELECT array_agg(__joinery_a) FROM ({q}) AS __joinery_arr(__joinery_a)");
    let Ok(mut stmts) = Parser::parse_sql(&PostgreSqlDialect {}, &sql) else {
        return;
    };
    if let Some(Statement::Query(query)) = stmts.pop() {
        *expr = Expr::Subquery(query);
    }
}

pub fn apply(mut stmt: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut stmt, |e| {
        array_subquery(e);
        ControlFlow::<()>::Continue(())
    });
    stmt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_subquery_becomes_array_agg() {
        let stmts =
            Parser::parse_sql(&PostgreSqlDialect {}, "SELECT array(SELECT 1)").unwrap_or_default();
        let out = stmts
            .into_iter()
            .map(apply)
            .map(|s| s.to_string())
            .collect::<Vec<_>>();
        assert_eq!(
            out,
            vec![
                "SELECT (SELECT array_agg(__joinery_a) FROM (SELECT 1) AS __joinery_arr (__joinery_a))"
            ]
        );
    }
}
