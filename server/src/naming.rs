//! Result column names as PostgreSQL gives them.
//!
//! DataFusion names an unaliased expression by its text (`Int32(1)`, `count(*)`,
//! `current_database()`); PostgreSQL by a rule (`?column?`, `count`, `current_database`), and
//! drivers and BI tools key results by those names. The names are applied to RowDescription
//! only, so DataFusion's own (unique) names keep working inside the plan.

use datafusion::logical_expr::{Expr, LogicalPlan};

/// Postgres's name for an output expression; `None` when Postgres would say `?column?`.
fn expr_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Alias(a) => Some(a.name.clone()),
        Expr::Column(c) => Some(c.name.clone()),
        Expr::ScalarFunction(f) => Some(f.func.name().to_string()),
        Expr::AggregateFunction(f) => Some(f.func.name().to_string()),
        Expr::WindowFunction(w) => Some(w.fun.name().to_string()),
        Expr::Cast(c) => expr_name(&c.expr).or_else(|| type_name(c.field.data_type())),
        Expr::TryCast(c) => expr_name(&c.expr).or_else(|| type_name(c.field.data_type())),
        Expr::Case(_) => Some("case".to_string()),
        Expr::Exists(_) => Some("exists".to_string()),
        _ => None,
    }
}

fn type_name(dt: &datafusion::arrow::datatypes::DataType) -> Option<String> {
    arrow_pg::datatypes::into_pg_type(dt)
        .ok()
        .map(|t| t.name().to_string())
}

/// The expressions an aggregate or window below a projection computes, by output name, so a
/// projected `count(*)` column is named `count` as in Postgres.
fn computed_below(plan: &LogicalPlan) -> Vec<(String, Expr)> {
    match plan {
        LogicalPlan::Aggregate(a) => a
            .aggr_expr
            .iter()
            .chain(a.group_expr.iter())
            .map(|e| (e.schema_name().to_string(), e.clone()))
            .collect(),
        LogicalPlan::Window(w) => {
            let mut v: Vec<(String, Expr)> = w
                .window_expr
                .iter()
                .map(|e| (e.schema_name().to_string(), e.clone()))
                .collect();
            v.extend(computed_below(&w.input));
            v
        }
        LogicalPlan::Filter(f) => computed_below(&f.input),
        LogicalPlan::Sort(s) => computed_below(&s.input),
        _ => vec![],
    }
}

fn expr_name_below(e: &Expr, below: &[(String, Expr)]) -> Option<String> {
    let Expr::Column(c) = e else { return None };
    let found = below
        .iter()
        .find(|(n, _)| n == &c.name)
        .map(|(_, e)| match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        })?;
    match found {
        Expr::AggregateFunction(_) | Expr::WindowFunction(_) | Expr::ScalarFunction(_) => {
            expr_name(found)
        }
        _ => None,
    }
}

/// The Postgres names of a query's output columns, or `None` to keep DataFusion's.
pub fn output_names(plan: &LogicalPlan) -> Option<Vec<String>> {
    match plan {
        LogicalPlan::Projection(p) => {
            let below = computed_below(&p.input);
            Some(
                p.expr
                    .iter()
                    .map(|e| {
                        // DataFusion aliases `count(Int64(1))` as `count(*)`; Postgres says `count`.
                        let e = match e {
                            Expr::Alias(a) if matches!(a.expr.as_ref(), Expr::Column(_)) => {
                                let inner = expr_name_below(&a.expr, &below);
                                match inner {
                                    Some(n) if a.name.starts_with(&format!("{n}(")) => {
                                        a.expr.as_ref()
                                    }
                                    _ => e,
                                }
                            }
                            _ => e,
                        };
                        let resolved = match e {
                            Expr::Column(c) if c.relation.is_none() => below
                                .iter()
                                .find(|(n, _)| n == &c.name)
                                .map(|(_, e)| match e {
                                    Expr::Alias(a) => a.expr.as_ref(),
                                    other => other,
                                }),
                            _ => None,
                        };
                        expr_name(resolved.unwrap_or(e)).unwrap_or_else(|| "?column?".to_string())
                    })
                    .collect(),
            )
        }
        LogicalPlan::Sort(s) => output_names(&s.input),
        LogicalPlan::Limit(l) => output_names(&l.input),
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => {
            output_names(input)
        }
        LogicalPlan::Union(u) => u.inputs.first().and_then(|i| output_names(i)),
        _ => None,
    }
    .filter(|names| names.len() == plan.schema().fields().len())
}
