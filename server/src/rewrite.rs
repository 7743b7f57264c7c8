//! SQL rewrites for Postgres constructs DataFusion does not plan, applied after
//! `datafusion-pg-catalog`'s own rules. Each exists because a real client sends it.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArguments, GroupByExpr, SelectItem, SetExpr, Statement, Value,
    visit_expressions_mut,
};
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

/// `x LIKE p ESCAPE '/'` (SQLAlchemy sends it): DataFusion only knows backslash escapes, so
/// the pattern is rewritten by `joinery_like_escape(p, '/')` into backslash form.
fn like_escape(expr: &mut Expr) {
    let (pattern, escape_char) = match expr {
        Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } => (pattern, escape_char),
        _ => return,
    };
    let Some(esc) = escape_char.as_ref() else {
        return;
    };
    let esc_text = match &esc.value {
        Value::SingleQuotedString(s) => s.clone(),
        _ => return,
    };
    if esc_text == "\\" {
        return;
    }
    let call = format!(
        "joinery_like_escape({pattern}, '{}')",
        esc_text.replace('\'', "''")
    );
    let Ok(new_pattern) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&call)
        .and_then(|mut p| p.parse_expr())
    else {
        return;
    };
    **pattern = new_pattern;
    *escape_char = None;
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "first_value",
    "last_value",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
];

fn has_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let mut e = e.clone();
    let _ = visit_expressions_mut(&mut e, |x| {
        if let Expr::Function(f) = x
            && f.name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| AGGREGATES.contains(&i.value.to_ascii_lowercase().as_str()))
        {
            found = true;
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// A scalar subquery that reads a table without aggregating (`(SELECT x FROM t WHERE
/// t.k = outer.k)`, as SQLAlchemy and pgjdbc send) is wrapped in `first_value(x)`: DataFusion
/// only decorrelates aggregated scalar subqueries. Postgres would raise an error if such a
/// subquery returned several rows; catalog lookups by key never do.
fn scalar_subquery(expr: &mut Expr) {
    let Expr::Subquery(q) = expr else { return };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return;
    };
    let no_grouping = match &select.group_by {
        GroupByExpr::Expressions(v, m) => v.is_empty() && m.is_empty(),
        GroupByExpr::All(_) => false,
    };
    if select.from.is_empty()
        || !no_grouping
        || select.having.is_some()
        || select.distinct.is_some()
        || q.limit_clause.is_some()
        || select.projection.len() != 1
    {
        return;
    }
    let (inner, alias) = match &select.projection[0] {
        SelectItem::UnnamedExpr(e) => (e.clone(), None),
        SelectItem::ExprWithAlias { expr, alias } => (expr.clone(), Some(alias.clone())),
        _ => return,
    };
    if has_aggregate(&inner) {
        return;
    }
    let Ok(wrapped) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("first_value({inner})"))
        .and_then(|mut p| p.parse_expr())
    else {
        return;
    };
    select.projection[0] = match alias {
        Some(alias) => SelectItem::ExprWithAlias {
            expr: wrapped,
            alias,
        },
        None => SelectItem::UnnamedExpr(wrapped),
    };
}

pub fn apply(mut stmt: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut stmt, |e| {
        like_escape(e);
        array_subquery(e);
        scalar_subquery(e);
        ControlFlow::<()>::Continue(())
    });
    stmt
}

/// Rewrite a LIKE pattern written with escape character `esc` into backslash-escape form.
pub fn like_pattern_to_backslash(pattern: &str, esc: &str) -> String {
    let mut esc_chars = esc.chars();
    let (Some(e), None) = (esc_chars.next(), esc_chars.next()) else {
        // Postgres: ESCAPE '' means no escape character at all.
        return pattern.replace('\\', "\\\\");
    };
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == e {
            match chars.next() {
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push(c),
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_escape_patterns() {
        assert_eq!(like_pattern_to_backslash("pg/_%", "/"), "pg\\_%");
        assert_eq!(like_pattern_to_backslash("a\\b", "/"), "a\\\\b");
        assert_eq!(like_pattern_to_backslash("//x", "/"), "\\/x");
    }

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
