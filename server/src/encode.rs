//! Arrow results to Postgres wire rows.
//!
//! `arrow-pg` does the per-value encoding (text and binary); this module decides the wire type
//! of each column and reshapes what arrow-pg does not send the way Postgres clients expect:
//! Struct, Map and nested lists become `json`, JSON-text columns are typed `json`, `Int8` is
//! widened to `int2`, `Float16` to `float4`, untyped NULL to `text`, dictionaries are unpacked.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::json::writer::{EncoderOptions, make_encoder};
use arrow::record_batch::RecordBatch;
use arrow_pg::datatypes::{encode_recordbatch, field_into_pg_type};
use joinery_engine::meta;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::FieldInfo;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;

use crate::errors::{SqlError, SqlState};

#[derive(Debug, Clone)]
enum ColumnPlan {
    AsIs,
    Json,
    Cast(DataType),
    /// Text-format floats, written the way Postgres writes them (`20`, not `20.0`).
    FloatText,
    /// Text-format timestamps/times: no `.000000` when the fraction is zero, timestamptz in
    /// the session's TimeZone.
    TemporalText,
    /// Intervals in Postgres's text style, or its 16-byte binary form (arrow-pg loses NULLs).
    IntervalText,
    IntervalBinary,
}

/// How one result schema goes on the wire.
#[derive(Debug)]
pub struct ResultEncoder {
    pub fields: Arc<Vec<FieldInfo>>,
    plans: Vec<ColumnPlan>,
    target: SchemaRef,
    time_zone: String,
}

fn needs_json(dt: &DataType) -> bool {
    match dt {
        DataType::Struct(_) | DataType::Map(_, _) | DataType::Union(_, _) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => matches!(
            f.data_type(),
            DataType::Struct(_)
                | DataType::Map(_, _)
                | DataType::List(_)
                | DataType::LargeList(_)
                | DataType::FixedSizeList(_, _)
                | DataType::Union(_, _)
        ),
        _ => false,
    }
}

fn plan_for(field: &Field) -> (ColumnPlan, DataType, Option<Type>) {
    let dt = field.data_type();
    if needs_json(dt) {
        return (ColumnPlan::Json, DataType::Utf8, Some(Type::JSON));
    }
    if meta::is_json_field(field)
        && matches!(
            dt,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
    {
        return (ColumnPlan::AsIs, dt.clone(), Some(Type::JSON));
    }
    match dt {
        DataType::Int8 => (ColumnPlan::Cast(DataType::Int16), DataType::Int16, None),
        DataType::Float16 => (ColumnPlan::Cast(DataType::Float32), DataType::Float32, None),
        DataType::Null => (ColumnPlan::Cast(DataType::Utf8), DataType::Utf8, None),
        DataType::Dictionary(_, v) => {
            let (_, inner, ty) = plan_for(&Field::new(field.name(), v.as_ref().clone(), true));
            (ColumnPlan::Cast(inner.clone()), inner, ty)
        }
        DataType::List(f) if f.data_type() == &DataType::Int8 => {
            let t = DataType::List(Arc::new(Field::new_list_field(DataType::Int16, true)));
            (ColumnPlan::Cast(t.clone()), t, None)
        }
        DataType::FixedSizeList(f, _)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => {
            let t = DataType::List(Arc::new(Field::new_list_field(f.data_type().clone(), true)));
            (ColumnPlan::Cast(t.clone()), t, None)
        }
        other => (ColumnPlan::AsIs, other.clone(), None),
    }
}

impl ResultEncoder {
    pub fn try_new(
        schema: &Schema,
        format: &Format,
        options: Arc<FormatOptions>,
    ) -> PgWireResult<Self> {
        Self::with_names(schema, None, format, options)
    }

    /// Like `try_new`, sending `names` (Postgres's column names) instead of the schema's.
    pub fn with_names(
        schema: &Schema,
        names: Option<&[String]>,
        format: &Format,
        options: Arc<FormatOptions>,
    ) -> PgWireResult<Self> {
        let mut fields = Vec::with_capacity(schema.fields().len());
        let mut plans = Vec::with_capacity(schema.fields().len());
        let mut target = Vec::with_capacity(schema.fields().len());
        for (idx, f) in schema.fields().iter().enumerate() {
            let (mut plan, mut dt, mut forced) = plan_for(f);
            let text = format.format_for(idx) == pgwire::api::results::FieldFormat::Text;
            let special = match f.data_type() {
                DataType::Float64 if text => Some((ColumnPlan::FloatText, Type::FLOAT8)),
                DataType::Float32 | DataType::Float16 if text => {
                    Some((ColumnPlan::FloatText, Type::FLOAT4))
                }
                DataType::Timestamp(_, None) if text => {
                    Some((ColumnPlan::TemporalText, Type::TIMESTAMP))
                }
                DataType::Timestamp(_, Some(_)) if text => {
                    Some((ColumnPlan::TemporalText, Type::TIMESTAMPTZ))
                }
                DataType::Time32(_) | DataType::Time64(_) if text => {
                    Some((ColumnPlan::TemporalText, Type::TIME))
                }
                DataType::Interval(_) if text => Some((ColumnPlan::IntervalText, Type::INTERVAL)),
                DataType::Interval(_) => Some((ColumnPlan::IntervalBinary, Type::INTERVAL)),
                _ => None,
            };
            if let Some((p, t)) = special {
                dt = if matches!(p, ColumnPlan::IntervalBinary) {
                    DataType::Binary
                } else {
                    DataType::Utf8
                };
                plan = p;
                forced = Some(t);
            }
            // Keep arrow-pg's semantic metadata (oid aliases, "char") only where nothing changes.
            let tf: FieldRef = match plan {
                ColumnPlan::AsIs => f.clone(),
                _ => Arc::new(Field::new(f.name(), dt, true)),
            };
            let ty = match forced {
                Some(t) => t,
                None => field_into_pg_type(&tf).map_err(|_| {
                    SqlError::new(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        format!(
                            "column \"{}\" has type {} which cannot be sent to a Postgres client",
                            f.name(),
                            f.data_type()
                        ),
                    )
                    .into_pgwire()
                })?,
            };
            fields.push(
                FieldInfo::new(
                    names.and_then(|n| n.get(idx)).unwrap_or(f.name()).clone(),
                    None,
                    None,
                    ty,
                    format.format_for(idx),
                )
                .with_format_options(options.clone()),
            );
            plans.push(plan);
            target.push(tf);
        }
        Ok(Self {
            fields: Arc::new(fields),
            plans,
            target: Arc::new(Schema::new(target)),
            time_zone: options.time_zone.clone(),
        })
    }

    /// Reshape a batch to the wire schema, then encode every row.
    pub fn encode(&self, batch: RecordBatch) -> PgWireResult<Vec<DataRow>> {
        let batch = self.reshape(batch).map_err(|e| e.into_pgwire())?;
        encode_recordbatch(self.fields.clone(), batch).collect()
    }

    fn reshape(&self, batch: RecordBatch) -> Result<RecordBatch, SqlError> {
        if self.plans.iter().all(|p| matches!(p, ColumnPlan::AsIs)) {
            return Ok(batch);
        }
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
        for (i, plan) in self.plans.iter().enumerate() {
            let col = batch.column(i);
            cols.push(match plan {
                ColumnPlan::AsIs => col.clone(),
                ColumnPlan::Cast(t) => cast(col, t).map_err(|e| {
                    SqlError::new(
                        SqlState::DATA_EXCEPTION,
                        format!("cannot encode column {}: {e}", i + 1),
                    )
                })?,
                ColumnPlan::Json => to_json_text(batch.schema().field(i), col)?,
                ColumnPlan::FloatText => float_text(col)?,
                ColumnPlan::TemporalText => temporal_text(col, &self.time_zone)?,
                ColumnPlan::IntervalText => interval_column(col, false)?,
                ColumnPlan::IntervalBinary => interval_column(col, true)?,
            });
        }
        RecordBatch::try_new(self.target.clone(), cols)
            .map_err(|e| SqlError::new(SqlState::INTERNAL_ERROR, format!("reshaping result: {e}")))
    }
}

/// Postgres's text form of a float: shortest round-trip digits, exponent form below 1e-4 and
/// from 1e15 (1e6 for float4), `NaN`, `Infinity`.
pub fn pg_float(v: f64, float4: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // `{:e}` gives the shortest digits that round-trip: "1.5e-5", "2e1".
    let sci = if float4 {
        format!("{:e}", v as f32)
    } else {
        format!("{v:e}")
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let limit = if float4 { 6 } else { 15 };
    if exp < -4 || exp >= limit {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let (neg, digits) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = digits.chars().filter(|c| *c != '.').collect();
    let point = 1 + exp; // position of the decimal point within `digits`
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(&digits);
    } else if (point as usize) >= digits.len() {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
    out
}

fn float_text(col: &ArrayRef) -> Result<ArrayRef, SqlError> {
    let float4 = !matches!(col.data_type(), DataType::Float64);
    let as64 = cast(col, &DataType::Float64)
        .map_err(|e| SqlError::new(SqlState::DATA_EXCEPTION, e.to_string()))?;
    let a = as64
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .ok_or_else(|| SqlError::new(SqlState::INTERNAL_ERROR, "float column"))?;
    let mut out = StringBuilder::with_capacity(a.len(), a.len() * 8);
    for i in 0..a.len() {
        if a.is_null(i) {
            out.append_null();
        } else {
            out.append_value(pg_float(a.value(i), float4));
        }
    }
    Ok(Arc::new(out.finish()))
}

fn data_err(e: impl std::fmt::Display) -> SqlError {
    SqlError::new(SqlState::DATA_EXCEPTION, e.to_string())
}

/// Seconds and a microsecond fraction, Postgres style: `05`, `05.5`, `05.123456`.
fn push_seconds(out: &mut String, secs: u32, micros: u32) {
    use std::fmt::Write;
    let _ = write!(out, "{secs:02}");
    if micros != 0 {
        let frac = format!("{micros:06}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
}

fn offset_text(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    let (h, m, s) = (a / 3600, (a % 3600) / 60, a % 60);
    match (m, s) {
        (0, 0) => format!("{sign}{h:02}"),
        (_, 0) => format!("{sign}{h:02}:{m:02}"),
        _ => format!("{sign}{h:02}:{m:02}:{s:02}"),
    }
}

/// Timestamps and times as Postgres writes them in ISO DateStyle.
fn temporal_text(col: &ArrayRef, session_tz: &str) -> Result<ArrayRef, SqlError> {
    use arrow::array::timezone::Tz;
    use arrow::datatypes::TimeUnit;
    use chrono::{DateTime, Offset, TimeZone, Timelike};
    let n = col.len();
    let mut out = StringBuilder::with_capacity(n, n * 26);
    match col.data_type() {
        DataType::Timestamp(_, tz) => {
            let micros =
                cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(data_err)?;
            let micros = cast(&micros, &DataType::Int64).map_err(data_err)?;
            let a = micros
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .ok_or_else(|| data_err("timestamp column"))?;
            let zone: Option<Tz> = match tz {
                Some(_) => Some(
                    session_tz
                        .parse::<Tz>()
                        .or_else(|_| "+00:00".parse::<Tz>())
                        .map_err(data_err)?,
                ),
                None => None,
            };
            for i in 0..n {
                if a.is_null(i) {
                    out.append_null();
                    continue;
                }
                let Some(utc) = DateTime::from_timestamp_micros(a.value(i)) else {
                    return Err(SqlError::new(
                        SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                        "timestamp out of range",
                    ));
                };
                let mut s = String::with_capacity(32);
                let (naive, offset) = match &zone {
                    Some(z) => {
                        let local = z.from_utc_datetime(&utc.naive_utc());
                        (
                            local.naive_local(),
                            Some(local.offset().fix().local_minus_utc()),
                        )
                    }
                    None => (utc.naive_utc(), None),
                };
                s.push_str(&naive.format("%Y-%m-%d %H:%M:").to_string());
                push_seconds(&mut s, naive.second(), naive.nanosecond() / 1000);
                if let Some(o) = offset {
                    s.push_str(&offset_text(o));
                }
                out.append_value(s);
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            let micros = cast(col, &DataType::Time64(TimeUnit::Microsecond)).map_err(data_err)?;
            let micros = cast(&micros, &DataType::Int64).map_err(data_err)?;
            let a = micros
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .ok_or_else(|| data_err("time column"))?;
            for i in 0..n {
                if a.is_null(i) {
                    out.append_null();
                    continue;
                }
                let us = a.value(i);
                let secs = us.div_euclid(1_000_000);
                let mut s = format!("{:02}:{:02}:", secs / 3600, (secs % 3600) / 60);
                push_seconds(&mut s, (secs % 60) as u32, us.rem_euclid(1_000_000) as u32);
                out.append_value(s);
            }
        }
        other => return Err(data_err(format!("not a temporal type: {other}"))),
    }
    Ok(Arc::new(out.finish()))
}

/// Postgres's `postgres` IntervalStyle text.
pub fn pg_interval(months: i32, days: i32, micros: i64) -> String {
    let mut out = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |v: i64, unit: &str, out: &mut String| {
        if v == 0 {
            return;
        }
        if !is_zero {
            out.push(' ');
        }
        if is_before && v > 0 {
            out.push('+');
        }
        out.push_str(&format!("{v} {unit}{}", if v != 1 { "s" } else { "" }));
        is_before = v < 0;
        is_zero = false;
    };
    part(i64::from(months / 12), "year", &mut out);
    part(i64::from(months % 12), "mon", &mut out);
    part(i64::from(days), "day", &mut out);
    if is_zero || micros != 0 {
        let minus = micros < 0;
        let a = micros.unsigned_abs();
        let secs = a / 1_000_000;
        if !is_zero {
            out.push(' ');
        }
        out.push_str(if minus {
            "-"
        } else if is_before {
            "+"
        } else {
            ""
        });
        out.push_str(&format!("{:02}:{:02}:", secs / 3600, (secs % 3600) / 60));
        push_seconds(&mut out, (secs % 60) as u32, (a % 1_000_000) as u32);
    }
    out
}

fn interval_column(col: &ArrayRef, binary: bool) -> Result<ArrayRef, SqlError> {
    use arrow::datatypes::IntervalUnit;
    let mdn = cast(col, &DataType::Interval(IntervalUnit::MonthDayNano)).map_err(data_err)?;
    let a = mdn
        .as_any()
        .downcast_ref::<arrow::array::IntervalMonthDayNanoArray>()
        .ok_or_else(|| data_err("interval column"))?;
    let parts = (0..a.len()).map(|i| {
        (!a.is_null(i)).then(|| {
            let v = a.value(i);
            (v.months, v.days, v.nanoseconds / 1000)
        })
    });
    if binary {
        let mut out = arrow::array::BinaryBuilder::with_capacity(a.len(), a.len() * 16);
        for p in parts {
            match p {
                None => out.append_null(),
                Some((m, d, us)) => {
                    let mut b = Vec::with_capacity(16);
                    b.extend_from_slice(&us.to_be_bytes());
                    b.extend_from_slice(&d.to_be_bytes());
                    b.extend_from_slice(&m.to_be_bytes());
                    out.append_value(b);
                }
            }
        }
        Ok(Arc::new(out.finish()))
    } else {
        let mut out = StringBuilder::with_capacity(a.len(), a.len() * 16);
        for p in parts {
            match p {
                None => out.append_null(),
                Some((m, d, us)) => out.append_value(pg_interval(m, d, us)),
            }
        }
        Ok(Arc::new(out.finish()))
    }
}

/// The text values of an encoded row (text format), as a client would read them.
pub fn decode_text_row(row: &DataRow) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(row.field_count.max(0) as usize);
    let data = &row.data[..];
    let mut pos = 0usize;
    for _ in 0..row.field_count {
        let Some(len_bytes) = data.get(pos..pos + 4) else {
            break;
        };
        let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        pos += 4;
        if len < 0 {
            out.push(None);
            continue;
        }
        let end = pos + len as usize;
        out.push(
            data.get(pos..end)
                .map(|b| String::from_utf8_lossy(b).into_owned()),
        );
        pos = end;
    }
    out
}

/// Each value of a nested column as JSON text (NULL stays NULL).
fn to_json_text(field: &Field, col: &ArrayRef) -> Result<ArrayRef, SqlError> {
    let fref: FieldRef = Arc::new(field.clone());
    let opts = EncoderOptions::default();
    let mut enc = make_encoder(&fref, col.as_ref(), &opts).map_err(|e| {
        SqlError::new(
            SqlState::DATA_EXCEPTION,
            format!("cannot encode {} as json: {e}", field.name()),
        )
    })?;
    let mut out = StringBuilder::with_capacity(col.len(), col.len() * 16);
    let mut buf = Vec::with_capacity(64);
    for i in 0..col.len() {
        if col.is_null(i) {
            out.append_null();
            continue;
        }
        buf.clear();
        enc.encode(i, &mut buf);
        out.append_value(String::from_utf8_lossy(&buf));
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray, StructArray};

    #[test]
    fn intervals_print_like_postgres() {
        assert_eq!(
            pg_interval(14, 3, 3_600_000_000),
            "1 year 2 mons 3 days 01:00:00"
        );
        assert_eq!(pg_interval(0, -1, 1_500), "-1 days +00:00:00.0015");
        assert_eq!(pg_interval(0, 0, 0), "00:00:00");
        assert_eq!(pg_interval(0, 1, -1_000_000), "1 day -00:00:01");
        assert_eq!(pg_interval(-1, 0, 0), "-1 mons");
        assert_eq!(pg_interval(0, 0, 90_061_000_000), "25:01:01");
    }

    #[test]
    fn offsets_print_like_postgres() {
        assert_eq!(offset_text(0), "+00");
        assert_eq!(offset_text(19_800), "+05:30");
        assert_eq!(offset_text(-28_800), "-08");
    }

    #[test]
    fn floats_print_like_postgres() {
        let cases: &[(f64, &str)] = &[
            (20.0, "20"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e20, "1e+20"),
            (1.5e-5, "1.5e-05"),
            (123456789012345.0, "123456789012345"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (0.0001, "0.0001"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (v, want) in cases {
            assert_eq!(pg_float(*v, false), *want, "{v}");
        }
        assert_eq!(pg_float(1.5, true), "1.5");
        assert_eq!(pg_float(-0.25, true), "-0.25");
        assert_eq!(pg_float(1234567.0, true), "1.234567e+06");
    }
    use arrow::datatypes::Fields;

    #[test]
    fn struct_becomes_json() {
        let fields = Fields::from(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let s = StructArray::try_new(
            fields.clone(),
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
                Arc::new(StringArray::from(vec![Some("x\"y"), None])),
            ],
            Some(vec![true, false].into()),
        )
        .map_err(|e| e.to_string());
        let Ok(s) = s else { panic!("struct") };
        let schema = Schema::new(vec![Field::new("s", DataType::Struct(fields), true)]);
        let enc = ResultEncoder::try_new(
            &schema,
            &Format::UnifiedText,
            Arc::new(FormatOptions::default()),
        )
        .map_err(|e| e.to_string());
        let Ok(enc) = enc else { panic!("encoder") };
        assert_eq!(enc.fields[0].datatype(), &Type::JSON);
        let col: ArrayRef = Arc::new(s);
        let json = to_json_text(schema.field(0), &col).map_err(|e| e.to_string());
        let Ok(json) = json else { panic!("json") };
        let json = json
            .as_any()
            .downcast_ref::<StringArray>()
            .map(|a| (a.value(0).to_string(), a.is_null(1)));
        assert_eq!(json, Some((r#"{"a":1,"b":"x\"y"}"#.to_string(), true)));
    }
}
