//! PostgreSQL types as Arrow types, and rows (binary format) as Arrow arrays.
//!
//! Values are read in PostgreSQL's binary wire format through one raw accessor and decoded here,
//! so every supported type (enums, domains, arrays, numeric of any precision) goes through the
//! same code; the arrays are then cast to the types the plan expects.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, IntervalUnit, TimeUnit};
use datafusion::common::ScalarValue;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Kind, Type};

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A PostgreSQL type Joinery can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    /// With precision and scale when the column declares them.
    Numeric(Option<(u8, i8)>),
    /// text, varchar, char, name, citext, enums, xml: UTF-8 in binary format too.
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    Json,
    Jsonb,
    Inet,
    MacAddr,
    Array(Box<PgType>),
}

impl PgType {
    /// By the type's name (`pg_type.typname`) and kind (`typtype`: `e` for enums).
    pub fn from_name(name: &str, typtype: &str, typmod: i32) -> Option<PgType> {
        if typtype == "e" {
            return Some(PgType::Text);
        }
        Some(match name {
            "bool" => PgType::Bool,
            "int2" => PgType::Int2,
            "int4" => PgType::Int4,
            "int8" => PgType::Int8,
            "oid" => PgType::Oid,
            "float4" => PgType::Float4,
            "float8" => PgType::Float8,
            "numeric" => {
                // typmod = ((precision << 16) | scale) + 4; -1 when unconstrained.
                if typmod >= 4 {
                    let m = typmod - 4;
                    let p = ((m >> 16) & 0xffff) as u8;
                    let s = (m & 0xffff) as i8;
                    PgType::Numeric(Some((p, s)))
                } else {
                    PgType::Numeric(None)
                }
            }
            "text" | "varchar" | "bpchar" | "name" | "char" | "citext" | "xml" => PgType::Text,
            "bytea" => PgType::Bytea,
            "date" => PgType::Date,
            "time" => PgType::Time,
            "timestamp" => PgType::Timestamp,
            "timestamptz" => PgType::TimestampTz,
            "interval" => PgType::Interval,
            "uuid" => PgType::Uuid,
            "json" => PgType::Json,
            "jsonb" => PgType::Jsonb,
            "inet" | "cidr" => PgType::Inet,
            "macaddr" => PgType::MacAddr,
            _ => return None,
        })
    }

    /// The type of a result column as the driver describes it.
    pub fn from_type(ty: &Type) -> Option<PgType> {
        match ty.kind() {
            Kind::Enum(_) => Some(PgType::Text),
            Kind::Domain(base) => PgType::from_type(base),
            Kind::Array(elem) => {
                let e = PgType::from_type(elem)?;
                (!matches!(e, PgType::Array(_))).then(|| PgType::Array(Box::new(e)))
            }
            _ => PgType::from_name(ty.name(), "b", -1),
        }
    }

    /// The Arrow type a table column of this type is declared as.
    pub fn declared(&self) -> DataType {
        match self {
            PgType::Numeric(Some((p, s))) if *p >= 1 && *p <= 38 => DataType::Decimal128(*p, *s),
            // Unconstrained numeric: 38 digits, 10 after the point.
            PgType::Numeric(_) => DataType::Decimal128(38, 10),
            PgType::Array(e) => DataType::List(Arc::new(Field::new("item", e.declared(), true))),
            other => other.natural(),
        }
    }

    /// The Arrow type values are decoded into before the final cast.
    pub fn natural(&self) -> DataType {
        match self {
            PgType::Bool => DataType::Boolean,
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 | PgType::Oid => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric(_)
            | PgType::Text
            | PgType::Uuid
            | PgType::Json
            | PgType::Jsonb
            | PgType::Inet
            | PgType::MacAddr => DataType::Utf8,
            PgType::Bytea => DataType::Binary,
            PgType::Date => DataType::Date32,
            PgType::Time => DataType::Time64(TimeUnit::Microsecond),
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            PgType::Array(e) => DataType::List(Arc::new(Field::new("item", e.natural(), true))),
        }
    }

    pub fn is_json(&self) -> bool {
        matches!(self, PgType::Json | PgType::Jsonb)
    }
}

/// Any value, as its raw binary bytes.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

pub type DecodeResult<T> = std::result::Result<T, String>;

fn take<const N: usize>(b: &[u8], at: usize) -> DecodeResult<[u8; N]> {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| "value shorter than its type".to_string())
}

fn be_i16(b: &[u8], at: usize) -> DecodeResult<i16> {
    Ok(i16::from_be_bytes(take::<2>(b, at)?))
}
fn be_i32(b: &[u8], at: usize) -> DecodeResult<i32> {
    Ok(i32::from_be_bytes(take::<4>(b, at)?))
}
fn be_i64(b: &[u8], at: usize) -> DecodeResult<i64> {
    Ok(i64::from_be_bytes(take::<8>(b, at)?))
}

fn utf8(b: &[u8]) -> DecodeResult<&str> {
    std::str::from_utf8(b).map_err(|_| "text is not valid UTF-8".to_string())
}

/// numeric's binary form: digit count, weight (base-10000 exponent of the first digit), sign,
/// display scale, then base-10000 digits. Written as a plain decimal string.
pub fn numeric_to_string(b: &[u8]) -> DecodeResult<String> {
    let ndigits = be_i16(b, 0)? as usize;
    let weight = be_i16(b, 2)? as i32;
    let sign = u16::from_be_bytes(take::<2>(b, 4)?);
    let dscale = be_i16(b, 6)?.max(0) as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(be_i16(b, 8 + 2 * i)?);
    }
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    // Integer part: groups 0..=weight.
    if weight < 0 {
        out.push('0');
    } else {
        for g in 0..=weight {
            let d = digits.get(g as usize).copied().unwrap_or(0);
            if g == 0 {
                out.push_str(&d.to_string());
            } else {
                out.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::new();
        let mut g = weight + 1;
        while frac.len() < dscale {
            let d = if g < 0 {
                0
            } else {
                digits.get(g as usize).copied().unwrap_or(0)
            };
            frac.push_str(&format!("{d:04}"));
            g += 1;
        }
        frac.truncate(dscale);
        out.push_str(&frac);
    }
    Ok(out)
}

fn uuid_to_string(b: &[u8]) -> DecodeResult<String> {
    if b.len() != 16 {
        return Err("uuid is not 16 bytes".into());
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn inet_to_string(b: &[u8]) -> DecodeResult<String> {
    let family = *b.first().ok_or("empty inet")?;
    let bits = *b.get(1).ok_or("short inet")?;
    let is_cidr = *b.get(2).ok_or("short inet")? == 1;
    let n = *b.get(3).ok_or("short inet")? as usize;
    let addr = b.get(4..4 + n).ok_or("short inet")?;
    let (text, full) = match (family, n) {
        (2, 4) => (
            std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string(),
            32,
        ),
        (3, 16) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(addr);
            (std::net::Ipv6Addr::from(a).to_string(), 128)
        }
        _ => return Err("unknown inet family".into()),
    };
    Ok(if is_cidr || bits != full {
        format!("{text}/{bits}")
    } else {
        text
    })
}

fn text_of(ty: &PgType, b: &[u8]) -> DecodeResult<String> {
    Ok(match ty {
        PgType::Numeric(_) => numeric_to_string(b)?,
        PgType::Uuid => uuid_to_string(b)?,
        PgType::Jsonb => {
            // Version byte (1), then the JSON text.
            utf8(b.get(1..).ok_or("empty jsonb")?)?.to_string()
        }
        PgType::Inet => inet_to_string(b)?,
        PgType::MacAddr => b
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        _ => utf8(b)?.to_string(),
    })
}

/// One value of an array element, as a scalar of the element's natural type.
fn scalar(ty: &PgType, b: Option<&[u8]>) -> DecodeResult<ScalarValue> {
    let dt = ty.natural();
    let Some(b) = b else {
        return ScalarValue::try_from(&dt).map_err(|e| e.to_string());
    };
    Ok(match ty {
        PgType::Bool => ScalarValue::Boolean(Some(*b.first().ok_or("empty bool")? != 0)),
        PgType::Int2 => ScalarValue::Int16(Some(be_i16(b, 0)?)),
        PgType::Int4 => ScalarValue::Int32(Some(be_i32(b, 0)?)),
        PgType::Int8 => ScalarValue::Int64(Some(be_i64(b, 0)?)),
        PgType::Oid => ScalarValue::Int64(Some(u32::from_be_bytes(take::<4>(b, 0)?) as i64)),
        PgType::Float4 => ScalarValue::Float32(Some(f32::from_be_bytes(take::<4>(b, 0)?))),
        PgType::Float8 => ScalarValue::Float64(Some(f64::from_be_bytes(take::<8>(b, 0)?))),
        PgType::Bytea => ScalarValue::Binary(Some(b.to_vec())),
        PgType::Date => ScalarValue::Date32(Some(date(b)?)),
        PgType::Time => ScalarValue::Time64Microsecond(Some(be_i64(b, 0)?)),
        PgType::Timestamp => ScalarValue::TimestampMicrosecond(Some(timestamp(b)?), None),
        PgType::TimestampTz => {
            ScalarValue::TimestampMicrosecond(Some(timestamp(b)?), Some("UTC".into()))
        }
        PgType::Interval => ScalarValue::IntervalMonthDayNano(Some(interval(b)?)),
        PgType::Array(_) => return Err("nested arrays are not supported".into()),
        other => ScalarValue::Utf8(Some(text_of(other, b)?)),
    })
}

fn date(b: &[u8]) -> DecodeResult<i32> {
    let d = be_i32(b, 0)?;
    match d {
        i32::MAX | i32::MIN => Err("infinite dates have no Arrow value".into()),
        d => Ok(d.saturating_add(PG_EPOCH_DAYS)),
    }
}

fn timestamp(b: &[u8]) -> DecodeResult<i64> {
    let t = be_i64(b, 0)?;
    match t {
        i64::MAX | i64::MIN => Err("infinite timestamps have no Arrow value".into()),
        t => t
            .checked_add(PG_EPOCH_MICROS)
            .ok_or_else(|| "timestamp out of range".to_string()),
    }
}

fn interval(b: &[u8]) -> DecodeResult<IntervalMonthDayNano> {
    let micros = be_i64(b, 0)?;
    let days = be_i32(b, 8)?;
    let months = be_i32(b, 12)?;
    Ok(IntervalMonthDayNano::new(
        months,
        days,
        micros.saturating_mul(1000),
    ))
}

/// A one-dimensional array value's elements (NULL elements as `None`).
fn array_elements(b: &[u8]) -> DecodeResult<Vec<Option<&[u8]>>> {
    let ndim = be_i32(b, 0)?;
    if ndim == 0 {
        return Ok(Vec::new());
    }
    if ndim != 1 {
        return Err("multi-dimensional arrays are not supported".into());
    }
    let len = be_i32(b, 12)?.max(0) as usize;
    let mut at = 20;
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let n = be_i32(b, at)?;
        at += 4;
        if n < 0 {
            out.push(None);
        } else {
            let n = n as usize;
            out.push(Some(b.get(at..at + n).ok_or("array element past its end")?));
            at += n;
        }
    }
    Ok(out)
}

/// Builds one column of a batch.
pub enum ColumnBuilder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder, bool),
    F32(Float32Builder),
    F64(Float64Builder),
    Text(StringBuilder, PgType),
    Bin(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Ts(TimestampMicrosecondBuilder, bool),
    Interval(IntervalMonthDayNanoBuilder),
    List(Vec<ScalarValue>, PgType),
}

impl ColumnBuilder {
    pub fn new(ty: &PgType, capacity: usize) -> Self {
        match ty {
            PgType::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            PgType::Int2 => Self::I16(Int16Builder::with_capacity(capacity)),
            PgType::Int4 => Self::I32(Int32Builder::with_capacity(capacity)),
            PgType::Int8 => Self::I64(Int64Builder::with_capacity(capacity), false),
            PgType::Oid => Self::I64(Int64Builder::with_capacity(capacity), true),
            PgType::Float4 => Self::F32(Float32Builder::with_capacity(capacity)),
            PgType::Float8 => Self::F64(Float64Builder::with_capacity(capacity)),
            PgType::Bytea => Self::Bin(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            PgType::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            PgType::Time => Self::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            PgType::Timestamp => {
                Self::Ts(TimestampMicrosecondBuilder::with_capacity(capacity), false)
            }
            PgType::TimestampTz => {
                Self::Ts(TimestampMicrosecondBuilder::with_capacity(capacity), true)
            }
            PgType::Interval => {
                Self::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity))
            }
            PgType::Array(e) => Self::List(Vec::with_capacity(capacity), (**e).clone()),
            other => Self::Text(
                StringBuilder::with_capacity(capacity, capacity * 16),
                other.clone(),
            ),
        }
    }

    /// Append column `idx` of `row`.
    pub fn push(&mut self, row: &Row, idx: usize) -> DecodeResult<()> {
        let raw: Option<Raw> = row.try_get(idx).map_err(|e| e.to_string())?;
        let b = raw.map(|r| r.0);
        match self {
            Self::Bool(x) => x.append_option(b.map(|b| b.first().copied().unwrap_or(0) != 0)),
            Self::I16(x) => x.append_option(b.map(|b| be_i16(b, 0)).transpose()?),
            Self::I32(x) => x.append_option(b.map(|b| be_i32(b, 0)).transpose()?),
            Self::I64(x, oid) => {
                let v = match b {
                    None => None,
                    Some(b) if *oid => Some(u32::from_be_bytes(take::<4>(b, 0)?) as i64),
                    Some(b) => Some(be_i64(b, 0)?),
                };
                x.append_option(v)
            }
            Self::F32(x) => x.append_option(
                b.map(|b| take::<4>(b, 0).map(f32::from_be_bytes))
                    .transpose()?,
            ),
            Self::F64(x) => x.append_option(
                b.map(|b| take::<8>(b, 0).map(f64::from_be_bytes))
                    .transpose()?,
            ),
            Self::Text(x, ty) => match b {
                None => x.append_null(),
                Some(b) => match ty {
                    PgType::Text | PgType::Json => x.append_value(utf8(b)?),
                    _ => x.append_value(text_of(ty, b)?),
                },
            },
            Self::Bin(x) => x.append_option(b),
            Self::Date(x) => x.append_option(b.map(date).transpose()?),
            Self::Time(x) => x.append_option(b.map(|b| be_i64(b, 0)).transpose()?),
            Self::Ts(x, _) => x.append_option(b.map(timestamp).transpose()?),
            Self::Interval(x) => x.append_option(b.map(interval).transpose()?),
            Self::List(values, elem) => {
                let dt = elem.natural();
                let v = match b {
                    None => ScalarValue::try_from(&DataType::List(Arc::new(Field::new(
                        "item",
                        dt.clone(),
                        true,
                    ))))
                    .map_err(|e| e.to_string())?,
                    Some(b) => {
                        let items = array_elements(b)?
                            .into_iter()
                            .map(|e| scalar(elem, e))
                            .collect::<DecodeResult<Vec<_>>>()?;
                        ScalarValue::List(ScalarValue::new_list(&items, &dt, true))
                    }
                };
                values.push(v);
            }
        }
        Ok(())
    }

    pub fn finish(self, ty: &PgType) -> DecodeResult<ArrayRef> {
        Ok(match self {
            Self::Bool(mut x) => Arc::new(x.finish()),
            Self::I16(mut x) => Arc::new(x.finish()),
            Self::I32(mut x) => Arc::new(x.finish()),
            Self::I64(mut x, _) => Arc::new(x.finish()),
            Self::F32(mut x) => Arc::new(x.finish()),
            Self::F64(mut x) => Arc::new(x.finish()),
            Self::Text(mut x, _) => Arc::new(x.finish()),
            Self::Bin(mut x) => Arc::new(x.finish()),
            Self::Date(mut x) => Arc::new(x.finish()),
            Self::Time(mut x) => Arc::new(x.finish()),
            Self::Ts(mut x, tz) => {
                let a = x.finish();
                if tz {
                    Arc::new(a.with_timezone("UTC"))
                } else {
                    Arc::new(a)
                }
            }
            Self::Interval(mut x) => Arc::new(x.finish()),
            Self::List(values, _) => {
                if values.is_empty() {
                    datafusion::arrow::array::new_empty_array(&ty.natural())
                } else {
                    ScalarValue::iter_to_array(values).map_err(|e| e.to_string())?
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(ndigits.to_be_bytes());
        b.extend(weight.to_be_bytes());
        b.extend(sign.to_be_bytes());
        b.extend(dscale.to_be_bytes());
        for d in digits {
            b.extend(d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numeric_binary_to_text() -> DecodeResult<()> {
        // 12345.678 = [1, 2345, 6780] weight 1, dscale 3
        assert_eq!(
            numeric_to_string(&numeric(3, 1, 0, 3, &[1, 2345, 6780]))?,
            "12345.678"
        );
        // -0.0012 = [12] weight -1, dscale 4
        assert_eq!(
            numeric_to_string(&numeric(1, -1, 0x4000, 4, &[12]))?,
            "-0.0012"
        );
        // 0 with scale 2
        assert_eq!(numeric_to_string(&numeric(0, 0, 0, 2, &[]))?, "0.00");
        // 100000000 = [1, 0, 0] trailing zero groups dropped: [1] weight 2
        assert_eq!(numeric_to_string(&numeric(1, 2, 0, 0, &[1]))?, "100000000");
        assert_eq!(numeric_to_string(&numeric(0, 0, 0xC000, 0, &[]))?, "NaN");
        Ok(())
    }

    #[test]
    fn uuid_and_inet() -> DecodeResult<()> {
        let u: Vec<u8> = (0u8..16).collect();
        assert_eq!(uuid_to_string(&u)?, "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(inet_to_string(&[2, 32, 0, 4, 10, 0, 0, 1])?, "10.0.0.1");
        assert_eq!(inet_to_string(&[2, 24, 1, 4, 10, 0, 0, 0])?, "10.0.0.0/24");
        Ok(())
    }

    #[test]
    fn type_names() {
        assert_eq!(
            PgType::from_name("numeric", "b", (10 << 16 | 2) + 4),
            Some(PgType::Numeric(Some((10, 2))))
        );
        assert_eq!(
            PgType::from_name("numeric", "b", (10 << 16 | 2) + 4).map(|t| t.declared()),
            Some(DataType::Decimal128(10, 2))
        );
        assert_eq!(PgType::from_name("mood", "e", -1), Some(PgType::Text));
        assert_eq!(PgType::from_name("tsvector", "b", -1), None);
    }
}
