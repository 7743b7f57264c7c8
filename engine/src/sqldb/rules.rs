//! What may be handed to a database without changing the answer.
//!
//! Joinery's semantics are DataFusion's: text compares byte by byte, functions mean what
//! DataFusion's mean. A database differs where its collation or its functions differ, so a
//! sub-plan is sent whole only if every node and expression in it means the same there:
//!
//! - functions and aggregates: only those on the database's allow-list (same name, same
//!   meaning); anything else stays in Joinery;
//! - text ordering (`<`, `ORDER BY name`, `min(name)`) depends on the collation: stays local;
//! - text equality: exact in PostgreSQL (deterministic collations); in MySQL it is
//!   case-insensitive and pads spaces, so `=`/`LIKE`/`IN` on text are sent *and* re-checked
//!   locally (the database returns a superset), while `<>`, `NOT LIKE`, grouping, joining and
//!   DISTINCT on text stay local.
//!
//! A node that cannot be sent stays in Joinery and its inputs are considered again, so the
//! largest sendable sub-plans below it still run remotely. A filter is split by conjunct.

use std::collections::HashSet;

use datafusion::arrow::datatypes::DataType;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, NullEquality, Result as DfResult};
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    Expr, ExprSchemable, Filter, JoinType, LogicalPlan, Operator, SortExpr, SubqueryAlias,
};

/// How a database's SQL differs from Joinery's where it matters for correctness.
#[derive(Debug, Clone)]
pub struct Semantics {
    /// `a = 'x'` on text is exactly SQL's byte equality (false for case-insensitive
    /// collations).
    pub text_equality_exact: bool,
    /// Scalar functions that exist under the same name with the same meaning.
    pub functions: HashSet<&'static str>,
    /// Aggregates that do.
    pub aggregates: HashSet<&'static str>,
}

impl Semantics {
    pub fn postgres() -> Self {
        Semantics {
            text_equality_exact: true,
            functions: [
                "abs",
                "ceil",
                "floor",
                "coalesce",
                "nullif",
                "lower",
                "upper",
                "length",
                "char_length",
                "character_length",
                "btrim",
                "ltrim",
                "rtrim",
                "trim",
                "date_trunc",
                "date_part",
                "substr",
                "strpos",
                "replace",
                "left",
                "right",
                "starts_with",
                "sqrt",
                "power",
                "concat",
            ]
            .into_iter()
            .collect(),
            aggregates: ["count", "sum", "min", "max", "avg", "bool_and", "bool_or"]
                .into_iter()
                .collect(),
        }
    }

    pub fn mysql() -> Self {
        Semantics {
            text_equality_exact: false,
            functions: [
                "abs",
                "ceil",
                "floor",
                "coalesce",
                "nullif",
                "lower",
                "upper",
                "char_length",
                "character_length",
                "replace",
                "left",
                "right",
                "sqrt",
                "power",
            ]
            .into_iter()
            .collect(),
            aggregates: ["count", "sum", "min", "max", "avg"].into_iter().collect(),
        }
    }
}

/// Whether a conjunct may be sent, and whether it must also be checked locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// Means the same remotely.
    Exact,
    /// The database returns a superset: send it and keep it locally.
    Superset,
    /// Keep it in Joinery.
    Local,
}

fn is_text(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _)
    )
}

fn text_expr(e: &Expr, schema: &DFSchema) -> bool {
    e.get_type(schema).map(|t| is_text(&t)).unwrap_or(true)
}

impl Semantics {
    /// How one expression (a filter conjunct, a projected value) fits the database.
    fn fit(&self, expr: &Expr, schema: &DFSchema) -> Fit {
        let mut fit = Fit::Exact;
        let worst = |a: Fit, b: Fit| match (a, b) {
            (Fit::Local, _) | (_, Fit::Local) => Fit::Local,
            (Fit::Superset, _) | (_, Fit::Superset) => Fit::Superset,
            _ => Fit::Exact,
        };
        let _ = expr.apply(|e| {
            let here = match e {
                Expr::Column(_) | Expr::Literal(..) | Expr::Alias(_) => Fit::Exact,
                Expr::Not(_)
                | Expr::IsNull(_)
                | Expr::IsNotNull(_)
                | Expr::IsTrue(_)
                | Expr::IsFalse(_)
                | Expr::IsNotTrue(_)
                | Expr::IsNotFalse(_)
                | Expr::Negative(_)
                | Expr::Case(_)
                | Expr::Cast(_) => Fit::Exact,
                Expr::BinaryExpr(b) => {
                    let text = text_expr(&b.left, schema) || text_expr(&b.right, schema);
                    match b.op {
                        Operator::And | Operator::Or => Fit::Exact,
                        Operator::Plus
                        | Operator::Minus
                        | Operator::Multiply
                        | Operator::Divide
                        | Operator::Modulo
                            if !text =>
                        {
                            // Integer division and overflow differ between engines.
                            let int = |x: &Expr| {
                                x.get_type(schema).map(|t| t.is_integer()).unwrap_or(true)
                            };
                            if b.op == Operator::Divide && (int(&b.left) || int(&b.right)) {
                                Fit::Local
                            } else {
                                Fit::Exact
                            }
                        }
                        Operator::Eq if text => {
                            if self.text_equality_exact {
                                Fit::Exact
                            } else {
                                Fit::Superset
                            }
                        }
                        Operator::NotEq if text => {
                            if self.text_equality_exact {
                                Fit::Exact
                            } else {
                                Fit::Local
                            }
                        }
                        Operator::Eq
                        | Operator::NotEq
                        | Operator::Lt
                        | Operator::LtEq
                        | Operator::Gt
                        | Operator::GtEq
                            if !text =>
                        {
                            Fit::Exact
                        }
                        _ => Fit::Local,
                    }
                }
                Expr::Between(b) => {
                    if text_expr(&b.expr, schema) {
                        Fit::Local
                    } else {
                        Fit::Exact
                    }
                }
                Expr::InList(i) => {
                    if !text_expr(&i.expr, schema) || self.text_equality_exact {
                        Fit::Exact
                    } else if i.negated {
                        Fit::Local
                    } else {
                        Fit::Superset
                    }
                }
                Expr::Like(l) => {
                    if l.case_insensitive || l.escape_char.is_some() {
                        Fit::Local
                    } else if self.text_equality_exact {
                        Fit::Exact
                    } else if l.negated {
                        Fit::Local
                    } else {
                        Fit::Superset
                    }
                }
                Expr::ScalarFunction(ScalarFunction { func, .. }) => {
                    if self.functions.contains(func.name()) {
                        Fit::Exact
                    } else {
                        Fit::Local
                    }
                }
                _ => Fit::Local,
            };
            fit = worst(fit, here);
            Ok(if fit == Fit::Local {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        });
        fit
    }

    fn aggregate_ok(&self, expr: &Expr, schema: &DFSchema) -> bool {
        let inner = match expr {
            Expr::Alias(a) => a.expr.as_ref(),
            e => e,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return false;
        };
        if !self.aggregates.contains(func.name())
            || params.filter.is_some()
            || !params.order_by.is_empty()
            || params.null_treatment.is_some()
        {
            return false;
        }
        // min/max of text depend on collation; DISTINCT over text on case rules.
        let text_args = params.args.iter().any(|a| text_expr(a, schema));
        if text_args && (matches!(func.name(), "min" | "max") || params.distinct) {
            return false;
        }
        if text_args && !self.text_equality_exact && params.distinct {
            return false;
        }
        params
            .args
            .iter()
            .all(|a| self.fit(a, schema) == Fit::Exact)
    }

    fn sort_ok(&self, sort: &[SortExpr], schema: &DFSchema) -> bool {
        sort.iter()
            .all(|s| !text_expr(&s.expr, schema) && self.fit(&s.expr, schema) == Fit::Exact)
    }

    /// Whether this node alone (not its inputs) means the same remotely.
    fn node_ok(&self, plan: &LogicalPlan) -> bool {
        let input_schema = |i: usize| plan.inputs().get(i).map(|p| p.schema().clone());
        match plan {
            LogicalPlan::TableScan(scan) => scan.filters.is_empty() && scan.fetch.is_none(),
            LogicalPlan::SubqueryAlias(_) | LogicalPlan::Limit(_) => true,
            LogicalPlan::Projection(p) => p
                .expr
                .iter()
                .all(|e| self.fit(e, p.input.schema()) == Fit::Exact),
            LogicalPlan::Filter(f) => self.fit(&f.predicate, f.input.schema()) == Fit::Exact,
            LogicalPlan::Sort(s) => self.sort_ok(&s.expr, s.input.schema()),
            LogicalPlan::Aggregate(a) => {
                let schema = a.input.schema();
                a.group_expr.iter().all(|g| {
                    self.fit(g, schema) == Fit::Exact
                        && (self.text_equality_exact || !text_expr(g, schema))
                }) && a.aggr_expr.iter().all(|e| self.aggregate_ok(e, schema))
            }
            LogicalPlan::Join(j) => {
                let (Some(left), Some(right)) = (input_schema(0), input_schema(1)) else {
                    return false;
                };
                let mut both = left.as_ref().clone();
                both.merge(&right);
                matches!(
                    j.join_type,
                    JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
                ) && j.null_equality == NullEquality::NullEqualsNothing
                    && j.on.iter().all(|(l, r)| {
                        (self.text_equality_exact || !text_expr(l, &left))
                            && self.fit(l, &left) == Fit::Exact
                            && self.fit(r, &right) == Fit::Exact
                    })
                    && j.filter
                        .as_ref()
                        .is_none_or(|f| self.fit(f, &both) == Fit::Exact)
            }
            LogicalPlan::Distinct(d) => {
                self.text_equality_exact
                    || !d
                        .input()
                        .schema()
                        .fields()
                        .iter()
                        .any(|f| is_text(f.data_type()))
            }
            _ => false,
        }
    }

    /// Whether the whole sub-plan can be sent as one statement.
    pub fn plan_ok(&self, plan: &LogicalPlan) -> bool {
        self.node_ok(plan) && plan.inputs().iter().all(|i| self.plan_ok(i))
    }

    /// The conjuncts of a filter: (to send, to keep locally).
    pub fn split_filter(&self, filter: &Filter) -> (Option<Expr>, Option<Expr>) {
        let schema = filter.input.schema();
        let mut remote = Vec::new();
        let mut local = Vec::new();
        for c in split_conjunction(&filter.predicate) {
            match self.fit(c, schema) {
                Fit::Exact => remote.push(c.clone()),
                Fit::Superset => {
                    remote.push(c.clone());
                    local.push(c.clone());
                }
                Fit::Local => local.push(c.clone()),
            }
        }
        (conjunction(remote), conjunction(local))
    }
}

/// `SubqueryAlias(a, Filter(p, x))` as `Filter(p', SubqueryAlias(a, x))`, `p'` naming columns
/// through the alias. DataFusion's unparser writes the first as `FROM x AS a WHERE x.col ...`,
/// which databases reject (the table is only known as `a` there).
fn lift_filters_over_aliases(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    plan.transform_up(|p| {
        let LogicalPlan::SubqueryAlias(sa) = &p else {
            return Ok(Transformed::no(p));
        };
        let LogicalPlan::Filter(f) = sa.input.as_ref() else {
            return Ok(Transformed::no(p));
        };
        let alias = sa.alias.clone();
        let predicate = f
            .predicate
            .clone()
            .transform(|e| {
                Ok(match e {
                    Expr::Column(c) => {
                        Transformed::yes(Expr::Column(Column::new(Some(alias.clone()), c.name)))
                    }
                    other => Transformed::no(other),
                })
            })?
            .data;
        let aliased = SubqueryAlias::try_new(f.input.clone(), alias.clone())?;
        let filter = Filter::try_new(predicate, Arc::new(LogicalPlan::SubqueryAlias(aliased)))?;
        Ok(Transformed::yes(LogicalPlan::Filter(filter)))
    })
    .map(|t| t.data)
}

/// Apply `wrap` to the largest sub-plans of `plan` that `semantics` allows to be sent,
/// keeping the rest in Joinery.
pub fn federate_where_exact(
    plan: LogicalPlan,
    semantics: &Semantics,
    wrap: &dyn Fn(LogicalPlan) -> LogicalPlan,
) -> DfResult<LogicalPlan> {
    if semantics.plan_ok(&plan) {
        return Ok(wrap(lift_filters_over_aliases(plan)?));
    }
    if let LogicalPlan::Filter(filter) = &plan {
        let (remote, local) = semantics.split_filter(filter);
        if remote.is_some() && semantics.plan_ok(&filter.input) {
            let sent = match remote {
                Some(r) => LogicalPlan::Filter(Filter::try_new(r, filter.input.clone())?),
                None => filter.input.as_ref().clone(),
            };
            let sent = wrap(lift_filters_over_aliases(sent)?);
            return Ok(match local {
                Some(l) => LogicalPlan::Filter(Filter::try_new(l, Arc::new(sent))?),
                None => sent,
            });
        }
    }
    if matches!(plan, LogicalPlan::TableScan(_)) {
        // A scan is always sendable; only pushed filters/fetch could stop it (we never accept
        // them), so this is unreachable in practice.
        return Ok(wrap(lift_filters_over_aliases(plan)?));
    }
    let inputs = plan
        .inputs()
        .into_iter()
        .map(|i| federate_where_exact(i.clone(), semantics, wrap))
        .collect::<DfResult<Vec<_>>>()?;
    plan.with_new_exprs(plan.expressions(), inputs)
}
