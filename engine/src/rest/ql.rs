//! Filters as clauses of an API's query language (Jira's JQL, Salesforce's SOQL), with every
//! literal quoted and escaped so that no value can change the query's meaning.
//!
//! Values arrive as strings already formatted by the rule's `format` (ISO 8601 for
//! timestamps). JQL compares times at minute precision in the user's time zone (UTC here): a
//! lower bound is rounded down and an upper bound up, so the API returns a superset that
//! DataFusion narrows (such rules are never `exact`).

use super::spec::{FilterOp, QlDialect, ValueFormat};

/// A string literal: JQL `"..."`, SOQL `'...'`, with backslash escapes. Control characters are
/// refused (`None`): neither language has a safe spelling for all of them.
pub fn quote(dialect: QlDialect, s: &str) -> Option<String> {
    if s.chars().any(|c| c.is_control()) {
        return None;
    }
    let q = match dialect {
        QlDialect::Jql => '"',
        QlDialect::Soql => '\'',
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str("\\'"),
            other => out.push(other),
        }
    }
    out.push(q);
    Some(out)
}

/// `2024-01-15T10:30:45Z` as JQL's `"2024-01-15 10:30"`, rounded down (`up = false`) or up.
fn jql_minute(iso: &str, up: bool) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(iso)
        .ok()?
        .with_timezone(&chrono::Utc);
    let floor = t.format("%Y-%m-%d %H:%M").to_string();
    let exact_minute = t.timestamp() % 60 == 0 && t.timestamp_subsec_micros() == 0;
    if up && !exact_minute {
        let t = t + chrono::Duration::minutes(1);
        return Some(format!("\"{}\"", t.format("%Y-%m-%d %H:%M")));
    }
    Some(format!("\"{floor}\""))
}

/// One value as a literal of `dialect`.
fn literal(dialect: QlDialect, format: ValueFormat, v: &str, op: FilterOp) -> Option<String> {
    match (dialect, format) {
        (QlDialect::Jql, ValueFormat::Iso8601) => {
            jql_minute(v, matches!(op, FilterOp::Lt | FilterOp::Lte))
        }
        // SOQL datetimes are unquoted ISO 8601.
        (QlDialect::Soql, ValueFormat::Iso8601) => {
            chrono::DateTime::parse_from_rfc3339(v).ok()?;
            Some(v.to_string())
        }
        (_, ValueFormat::EpochSeconds | ValueFormat::EpochMillis) => {
            v.parse::<i64>().ok().map(|n| n.to_string())
        }
        (_, ValueFormat::Number) => v
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|_| v.to_string()),
        _ => quote(dialect, v),
    }
}

/// The clause for `field op values`, or `None` when it cannot be written safely (the filter then
/// stays with DataFusion).
pub fn clause(
    dialect: QlDialect,
    field: &str,
    op: FilterOp,
    format: ValueFormat,
    values: &[String],
) -> Option<String> {
    let lit = |v: &String| literal(dialect, format, v, op);
    let (empty, not_empty) = match dialect {
        QlDialect::Jql => ("is EMPTY", "is not EMPTY"),
        QlDialect::Soql => ("= null", "!= null"),
    };
    Some(match op {
        FilterOp::Eq | FilterOp::Contains => format!("{field} = {}", lit(values.first()?)?),
        FilterOp::Ne => format!("{field} != {}", lit(values.first()?)?),
        FilterOp::NotIn => {
            let items = values.iter().map(lit).collect::<Option<Vec<_>>>()?;
            let kw = match dialect {
                QlDialect::Jql => "not in",
                QlDialect::Soql => "NOT IN",
            };
            format!("{field} {kw} ({})", items.join(", "))
        }
        FilterOp::In => {
            let items = values.iter().map(lit).collect::<Option<Vec<_>>>()?;
            let kw = match dialect {
                QlDialect::Jql => "in",
                QlDialect::Soql => "IN",
            };
            format!("{field} {kw} ({})", items.join(", "))
        }
        FilterOp::Gt => format!("{field} > {}", lit(values.first()?)?),
        FilterOp::Gte => format!("{field} >= {}", lit(values.first()?)?),
        FilterOp::Lt => format!("{field} < {}", lit(values.first()?)?),
        FilterOp::Lte => format!("{field} <= {}", lit(values.first()?)?),
        FilterOp::IsNull => format!("{field} {empty}"),
        FilterOp::IsNotNull => format!("{field} {not_empty}"),
        FilterOp::Prefix => match dialect {
            // SOQL LIKE: escape its own wildcards in the prefix.
            QlDialect::Soql => {
                let p = values
                    .first()?
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                format!("{field} LIKE {}", quote(dialect, &format!("{p}%"))?)
            }
            QlDialect::Jql => return None,
        },
    })
}

/// The whole query: the template with `{where}` / `{where_clause}` filled.
pub fn render(
    template: &str,
    clauses: &[String],
    default_where: Option<&str>,
    extra: &[(&str, &str)],
) -> String {
    let joined = clauses.join(" AND ");
    let where_ = if clauses.is_empty() {
        default_where.unwrap_or("").to_string()
    } else {
        joined.clone()
    };
    let where_clause = if clauses.is_empty() {
        default_where
            .map(|d| format!(" WHERE {d}"))
            .unwrap_or_default()
    } else {
        format!(" WHERE {joined}")
    };
    let mut slots: Vec<(&str, &str)> = vec![("where_clause", &where_clause), ("where", &where_)];
    slots.extend_from_slice(extra);
    fill(template, &slots)
}

/// Replace each `{name}` of `template` in one pass: text that a slot brings in (a quoted
/// literal holding `{limit}`, say) is never scanned again. Unknown `{...}` stay as written.
pub fn fill(template: &str, slots: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('}').and_then(|j| {
            slots
                .iter()
                .find(|(k, _)| *k == &after[..j])
                .map(|(_, v)| (j, *v))
        }) {
            Some((j, v)) => {
                out.push_str(v);
                rest = &after[j + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_cannot_escape_their_quotes() {
        assert_eq!(
            quote(QlDialect::Jql, r#"a" OR project = "X"#).as_deref(),
            Some(r#""a\" OR project = \"X""#)
        );
        assert_eq!(
            quote(QlDialect::Soql, r"O'Brien \ Co").as_deref(),
            Some(r"'O\'Brien \\ Co'")
        );
        assert_eq!(quote(QlDialect::Jql, "line\nbreak"), None);
    }

    #[test]
    fn jql_times_round_outwards() {
        let c = |op| {
            clause(
                QlDialect::Jql,
                "updated",
                op,
                ValueFormat::Iso8601,
                &["2024-01-15T10:30:45Z".to_string()],
            )
        };
        assert_eq!(
            c(FilterOp::Gte).as_deref(),
            Some(r#"updated >= "2024-01-15 10:30""#)
        );
        assert_eq!(
            c(FilterOp::Lt).as_deref(),
            Some(r#"updated < "2024-01-15 10:31""#)
        );
    }

    #[test]
    fn whole_queries() {
        let clauses = vec![
            clause(
                QlDialect::Jql,
                "project",
                FilterOp::In,
                ValueFormat::Plain,
                &["PAY".into(), "WEB".into()],
            )
            .unwrap_or_default(),
            clause(
                QlDialect::Jql,
                "assignee",
                FilterOp::IsNull,
                ValueFormat::Plain,
                &[],
            )
            .unwrap_or_default(),
        ];
        assert_eq!(
            render(
                "{where} ORDER BY created DESC",
                &clauses,
                Some("created >= 0"),
                &[]
            ),
            r#"project in ("PAY", "WEB") AND assignee is EMPTY ORDER BY created DESC"#
        );
        assert_eq!(
            render("SELECT Id FROM Account{where_clause}", &[], None, &[]),
            "SELECT Id FROM Account"
        );
        // A literal spelling a placeholder is not filled again.
        let c = clause(
            QlDialect::Soql,
            "Name",
            FilterOp::Eq,
            ValueFormat::Plain,
            &["{limit} {where}".into()],
        )
        .unwrap_or_default();
        assert_eq!(
            render(
                "SELECT Id FROM Account{where_clause}{limit}",
                &[c],
                None,
                &[("limit", " LIMIT 5")]
            ),
            "SELECT Id FROM Account WHERE Name = '{limit} {where}' LIMIT 5"
        );
    }
}
