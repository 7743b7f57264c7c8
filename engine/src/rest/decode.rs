//! JSON records to Arrow, by each column's path and declared type.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

use super::spec::{ColumnSpec, ColumnType, TimeFormat};
use crate::error::{ErrorKind, JoineryError, Result};

/// Follow a dotted path (`a.b.0.c`); `$` or empty is the value itself.
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() || path == "$" {
        return Some(v);
    }
    let mut cur = v;
    for part in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Every value a path with `*` segments reaches (`labels.*.name`); a path without `*` that
/// ends on an array yields its elements.
pub fn lookup_all<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut cur: Vec<&Value> = vec![v];
    if !(path.is_empty() || path == "$") {
        for part in path.split('.') {
            let mut next = Vec::new();
            for c in cur {
                match (part, c) {
                    ("*", Value::Array(a)) => next.extend(a.iter()),
                    (_, Value::Object(m)) => next.extend(m.get(part)),
                    (_, Value::Array(a)) => {
                        next.extend(part.parse::<usize>().ok().and_then(|i| a.get(i)))
                    }
                    _ => {}
                }
            }
            cur = next;
        }
    }
    match cur.as_slice() {
        [Value::Array(a)] if !path.contains('*') => a.iter().collect(),
        _ => cur.into_iter().filter(|v| !v.is_null()).collect(),
    }
}

/// The records of a page.
pub fn records<'a>(body: &'a Value, path: &str) -> Result<&'a [Value]> {
    if path == "$" {
        // The body is one record (`GET /repos/{owner}/{repo}`).
        return Ok(std::slice::from_ref(body));
    }
    match lookup(body, path) {
        Some(Value::Array(a)) => Ok(a),
        // Some APIs omit an empty list entirely.
        Some(Value::Null) | None if !path.is_empty() => Ok(&[]),
        _ => Err(JoineryError::new(
            ErrorKind::BadResponse,
            format!(
                "response has no list of records at '{}'",
                if path.is_empty() { "(root)" } else { path }
            ),
        )),
    }
}

/// Parse the timestamp shapes APIs use: RFC 3339, ISO 8601 without a colon in the offset
/// (`+0000`), without an offset (UTC), a bare date, or epoch seconds/milliseconds.
pub fn parse_timestamp(v: &Value, format: TimeFormat) -> Option<i64> {
    match v {
        Value::Number(n) => {
            let f = n.as_f64()?;
            let us = match format {
                TimeFormat::EpochMillis => f * 1_000.0,
                TimeFormat::EpochSeconds => f * 1_000_000.0,
                // An ISO column that sends a number: seconds, unless it is too large to be.
                TimeFormat::Iso8601 if f.abs() > 1e11 => f * 1_000.0,
                TimeFormat::Iso8601 => f * 1_000_000.0,
            };
            us.is_finite().then_some(us as i64)
        }
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<f64>() {
                return parse_timestamp(&serde_json::json!(n), format);
            }
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.timestamp_micros());
            }
            for f in [
                "%Y-%m-%dT%H:%M:%S%.f%z",
                "%Y-%m-%d %H:%M:%S%.f%z",
                "%Y-%m-%dT%H:%M:%S%z",
            ] {
                if let Ok(t) = DateTime::parse_from_str(s, f) {
                    return Some(t.timestamp_micros());
                }
            }
            for f in [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
            ] {
                if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
                    return Some(t.and_utc().timestamp_micros());
                }
            }
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_micros())
        }
        _ => None,
    }
}

fn mismatch(col: &ColumnSpec, v: &Value) -> JoineryError {
    let shown: String = v.to_string().chars().take(60).collect();
    JoineryError::new(
        ErrorKind::BadResponse,
        format!(
            "column {} expects {:?} but the API sent {shown}",
            col.name, col.data_type
        ),
    )
}

fn decode_column(col: &ColumnSpec, recs: &[Value]) -> Result<ArrayRef> {
    let path = col.path();
    let values = recs
        .iter()
        .map(|r| lookup(r, path).filter(|v| !v.is_null()));
    Ok(match col.data_type {
        ColumnType::Text => {
            let mut b = StringBuilder::with_capacity(recs.len(), recs.len() * 16);
            for v in values {
                match v {
                    None => b.append_null(),
                    Some(Value::String(s)) => b.append_value(s),
                    Some(other) => b.append_value(other.to_string()),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Json => {
            let mut b = StringBuilder::with_capacity(recs.len(), recs.len() * 32);
            for v in values {
                match v {
                    None => b.append_null(),
                    Some(other) => b.append_value(other.to_string()),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Bigint => {
            let mut b = Int64Builder::with_capacity(recs.len());
            for v in values {
                match v {
                    None => b.append_null(),
                    Some(Value::Number(n)) => match n.as_i64().or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                            .map(|f| f as i64)
                    }) {
                        Some(i) => b.append_value(i),
                        None => return Err(mismatch(col, &Value::Number(n.clone()))),
                    },
                    Some(Value::String(s)) => match s.trim().parse::<i64>() {
                        Ok(i) => b.append_value(i),
                        Err(_) => return Err(mismatch(col, &Value::String(s.clone()))),
                    },
                    Some(other) => return Err(mismatch(col, other)),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Double => {
            let mut b = Float64Builder::with_capacity(recs.len());
            for v in values {
                match v {
                    None => b.append_null(),
                    Some(Value::Number(n)) => b.append_option(n.as_f64()),
                    Some(Value::String(s)) => match s.trim().parse::<f64>() {
                        Ok(f) => b.append_value(f),
                        Err(_) => return Err(mismatch(col, &Value::String(s.clone()))),
                    },
                    Some(other) => return Err(mismatch(col, other)),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(recs.len());
            for v in values {
                match v {
                    None => b.append_null(),
                    Some(Value::Bool(x)) => b.append_value(*x),
                    Some(Value::String(s)) if s == "true" || s == "false" => {
                        b.append_value(s == "true")
                    }
                    Some(other) => return Err(mismatch(col, other)),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(recs.len()).with_timezone("UTC");
            for v in values {
                match v {
                    None => b.append_null(),
                    Some(Value::String(s)) if s.is_empty() => b.append_null(),
                    Some(v) => match parse_timestamp(v, col.format) {
                        Some(us) => b.append_value(us),
                        None => return Err(mismatch(col, v)),
                    },
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::TextList | ColumnType::BigintList => return decode_list(col, recs),
        ColumnType::Date => {
            let mut b = Date32Builder::with_capacity(recs.len());
            for v in values {
                match v {
                    None => b.append_null(),
                    Some(v) => {
                        let us = parse_timestamp(v, col.format).ok_or_else(|| mismatch(col, v))?;
                        b.append_value(us.div_euclid(86_400_000_000) as i32);
                    }
                }
            }
            Arc::new(b.finish())
        }
    })
}

fn decode_list(col: &ColumnSpec, recs: &[Value]) -> Result<ArrayRef> {
    /// One list per record: NULL when the value is missing or null, else the element values.
    fn build<B: arrow::array::ArrayBuilder>(
        col: &ColumnSpec,
        recs: &[Value],
        values: B,
        mut push: impl FnMut(&mut B, &Value) -> Result<()>,
    ) -> Result<ArrayRef> {
        let path = col.path();
        let head = path.split(".*").next().unwrap_or(path);
        let mut b = arrow::array::ListBuilder::new(values);
        for r in recs {
            if lookup(r, head).is_none_or(Value::is_null) {
                b.append(false);
                continue;
            }
            for v in lookup_all(r, path) {
                push(b.values(), v)?;
            }
            b.append(true);
        }
        Ok(Arc::new(b.finish()))
    }
    match col.data_type {
        ColumnType::BigintList => build(col, recs, Int64Builder::new(), |b, v| {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse::<i64>().ok(),
                _ => None,
            };
            b.append_value(n.ok_or_else(|| mismatch(col, v))?);
            Ok(())
        }),
        _ => build(col, recs, StringBuilder::new(), |b, v| {
            match v {
                Value::String(s) => b.append_value(s),
                other => b.append_value(other.to_string()),
            }
            Ok(())
        }),
    }
}

/// Decode `recs` into a batch of `schema` (a projection of the table's columns, in order).
pub fn decode(columns: &[&ColumnSpec], schema: SchemaRef, recs: &[Value]) -> Result<RecordBatch> {
    let arrays = columns
        .iter()
        .map(|c| decode_column(c, recs))
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        schema,
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(recs.len())),
    )
    .map_err(|e| JoineryError::internal(format!("building a batch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_shape() {
        let want = 1_710_066_896_000_000;
        for v in [
            serde_json::json!("2024-03-10T10:34:56Z"),
            serde_json::json!("2024-03-10T10:34:56.000+00:00"),
            serde_json::json!("2024-03-10T11:34:56.000+0100"),
            serde_json::json!("2024-03-10T10:34:56"),
            serde_json::json!(1_710_066_896),
        ] {
            assert_eq!(parse_timestamp(&v, TimeFormat::Iso8601), Some(want), "{v}");
        }
        assert_eq!(
            parse_timestamp(
                &serde_json::json!(1_710_066_896_000i64),
                TimeFormat::EpochMillis
            ),
            Some(want)
        );
        assert_eq!(
            parse_timestamp(&serde_json::json!("1710066896"), TimeFormat::EpochSeconds),
            Some(want)
        );
        assert_eq!(
            parse_timestamp(&serde_json::json!("yesterday"), TimeFormat::Iso8601),
            None
        );
    }

    #[test]
    fn list_paths() {
        let v = serde_json::json!({"labels": [{"name": "bug"}, {"name": "p0"}], "ids": [1, 2]});
        let names: Vec<&Value> = lookup_all(&v, "labels.*.name");
        assert_eq!(
            names,
            vec![&serde_json::json!("bug"), &serde_json::json!("p0")]
        );
        assert_eq!(lookup_all(&v, "ids").len(), 2);
    }

    #[test]
    fn paths_reach_nested_values() {
        let v = serde_json::json!({"a": {"b": [{"c": 1}]}});
        assert_eq!(lookup(&v, "a.b.0.c"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&v, "a.x"), None);
    }
}
