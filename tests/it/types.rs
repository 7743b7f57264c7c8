//! Every Arrow type Joinery can produce, in text and binary format, with Postgres's type OIDs.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use joinery_tests::{TestServer, text_rows};
use tokio_postgres::types::{FromSql, Type};

/// Raw binary value, to check encodings tokio-postgres has no Rust type for.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Decode Postgres's binary numeric into its text form.
fn numeric_text(b: &[u8]) -> String {
    let n = |i: usize| i16::from_be_bytes([b[i], b[i + 1]]);
    let (ndigits, weight, sign, dscale) = (n(0) as usize, n(2) as i32, n(4) as u16, n(6) as usize);
    let digits: Vec<i32> = (0..ndigits).map(|i| i32::from(n(8 + 2 * i))).collect();
    let mut int_part = String::new();
    for w in 0..=weight.max(0) {
        let d = if w <= weight {
            digits.get(w as usize).copied().unwrap_or(0)
        } else {
            0
        };
        if int_part.is_empty() {
            if weight >= 0 {
                int_part = d.to_string();
            }
        } else {
            int_part.push_str(&format!("{d:04}"));
        }
    }
    if int_part.is_empty() {
        int_part = "0".into();
    }
    let mut frac = String::new();
    let mut idx = weight + 1;
    while frac.len() < dscale {
        let d = if idx >= 0 {
            digits.get(idx as usize).copied().unwrap_or(0)
        } else {
            0
        };
        frac.push_str(&format!("{d:04}"));
        idx += 1;
    }
    frac.truncate(dscale);
    let s = if dscale > 0 {
        format!("{int_part}.{frac}")
    } else {
        int_part
    };
    if sign == 0x4000 { format!("-{s}") } else { s }
}

const EXPECTED_TEXT: &[(&str, u32, &str)] = &[
    ("c_bool", 16, "t"),
    ("c_int8", 21, "-8"),
    ("c_int16", 21, "-16"),
    ("c_int32", 23, "-32"),
    ("c_int64", 20, "-64"),
    ("c_uint8", 21, "8"),
    ("c_uint16", 23, "16"),
    ("c_uint32", 20, "32"),
    ("c_uint64", 1700, "64"),
    ("c_float32", 700, "1.5"),
    ("c_float64", 701, "20"),
    ("c_decimal", 1700, "123.45"),
    ("c_utf8", 25, "hello"),
    ("c_large_utf8", 25, "large"),
    ("c_utf8_view", 25, "view"),
    ("c_binary", 17, "\\x0001ff"),
    ("c_date32", 1082, "2024-03-10"),
    ("c_date64", 1082, "2024-03-10"),
    ("c_time", 1083, "10:34:56.123456"),
    ("c_timestamp", 1114, "2024-03-10 10:34:56.123456"),
    ("c_timestamptz", 1184, "2024-03-10 10:34:56.123456+00"),
    ("c_interval", 1186, "1 year 2 mons 3 days 01:00:00"),
    ("c_int_list", 1007, "{1,2,NULL}"),
    ("c_text_list", 1009, "{a,\"b,c\",\"d\\\"e\"}"),
    ("c_struct", 114, "{\"a\":1,\"b\":\"x\"}"),
    ("c_map", 114, "{\"x\":1,\"y\":2}"),
    ("c_json", 114, "{\"k\":[1,2,{\"n\":null}]}"),
];

#[tokio::test]
async fn every_type_in_text_format() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    let stmt = c
        .prepare("SELECT * FROM demo.types")
        .await
        .expect("prepare");
    let cols: Vec<(String, u32)> = stmt
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().oid()))
        .collect();
    let want: Vec<(String, u32)> = EXPECTED_TEXT
        .iter()
        .map(|(n, o, _)| (n.to_string(), *o))
        .collect();
    assert_eq!(cols, want);
    let rows = text_rows(&c, "SELECT * FROM demo.types ORDER BY c_int32 NULLS LAST").await;
    assert_eq!(rows.len(), 3);
    for (i, (name, _, text)) in EXPECTED_TEXT.iter().enumerate() {
        assert_eq!(rows[0][i].as_deref(), Some(*text), "text of {name}");
        assert_eq!(rows[2][i], None, "NULL {name}");
    }
    // The second row's edge values.
    let r = &rows[1];
    let get = |n: &str| {
        let i = EXPECTED_TEXT
            .iter()
            .position(|(c, _, _)| *c == n)
            .unwrap_or(usize::MAX);
        r.get(i).cloned().flatten()
    };
    assert_eq!(get("c_uint64").as_deref(), Some("18446744073709551615"));
    assert_eq!(get("c_decimal").as_deref(), Some("-0.05"));
    assert_eq!(get("c_float64").as_deref(), Some("0.1"));
    assert_eq!(get("c_utf8").as_deref(), Some("ünïcödé ✓"));
    assert_eq!(get("c_binary").as_deref(), Some("\\x"));
    assert_eq!(get("c_time").as_deref(), Some("23:59:59"));
    assert_eq!(get("c_timestamp").as_deref(), Some("2000-01-01 00:00:00"));
    assert_eq!(get("c_interval").as_deref(), Some("-1 days +00:00:00.0015"));
    assert_eq!(get("c_text_list").as_deref(), Some("{\"\"}"));
    assert_eq!(get("c_struct").as_deref(), Some("{\"b\":\"y\\\"z\"}"));
}

#[tokio::test]
async fn every_type_in_binary_format() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    // tokio-postgres asks for binary results.
    let rows = c
        .query("SELECT * FROM demo.types ORDER BY c_int32 NULLS LAST", &[])
        .await
        .expect("query");
    let r = &rows[0];
    assert!(r.get::<_, bool>("c_bool"));
    assert_eq!(r.get::<_, i16>("c_int8"), -8);
    assert_eq!(r.get::<_, i16>("c_int16"), -16);
    assert_eq!(r.get::<_, i32>("c_int32"), -32);
    assert_eq!(r.get::<_, i64>("c_int64"), -64);
    assert_eq!(r.get::<_, i16>("c_uint8"), 8);
    assert_eq!(r.get::<_, i32>("c_uint16"), 16);
    assert_eq!(r.get::<_, i64>("c_uint32"), 32);
    assert_eq!(numeric_text(&r.get::<_, Raw>("c_uint64").0), "64");
    assert_eq!(r.get::<_, f32>("c_float32"), 1.5);
    assert_eq!(r.get::<_, f64>("c_float64"), 20.0);
    assert_eq!(numeric_text(&r.get::<_, Raw>("c_decimal").0), "123.45");
    assert_eq!(r.get::<_, &str>("c_utf8"), "hello");
    assert_eq!(r.get::<_, &str>("c_large_utf8"), "large");
    assert_eq!(r.get::<_, &str>("c_utf8_view"), "view");
    assert_eq!(r.get::<_, Vec<u8>>("c_binary"), vec![0u8, 1, 255]);
    let day = NaiveDate::from_ymd_opt(2024, 3, 10).expect("date");
    assert_eq!(r.get::<_, NaiveDate>("c_date32"), day);
    assert_eq!(r.get::<_, NaiveDate>("c_date64"), day);
    let t = NaiveTime::from_hms_micro_opt(10, 34, 56, 123_456).expect("time");
    assert_eq!(r.get::<_, NaiveTime>("c_time"), t);
    assert_eq!(r.get::<_, NaiveDateTime>("c_timestamp"), day.and_time(t));
    assert_eq!(
        r.get::<_, DateTime<Utc>>("c_timestamptz"),
        day.and_time(t).and_utc()
    );
    let iv = r.get::<_, Raw>("c_interval").0;
    assert_eq!(iv.len(), 16);
    let micros = i64::from_be_bytes(iv[0..8].try_into().expect("8"));
    let days = i32::from_be_bytes(iv[8..12].try_into().expect("4"));
    let months = i32::from_be_bytes(iv[12..16].try_into().expect("4"));
    assert_eq!((months, days, micros), (14, 3, 3_600_000_000));
    assert_eq!(
        r.get::<_, Vec<Option<i32>>>("c_int_list"),
        vec![Some(1), Some(2), None]
    );
    assert_eq!(
        r.get::<_, Vec<Option<String>>>("c_text_list"),
        vec![Some("a".into()), Some("b,c".into()), Some("d\"e".into())]
    );
    assert_eq!(
        r.get::<_, serde_json::Value>("c_struct"),
        serde_json::json!({"a": 1, "b": "x"})
    );
    assert_eq!(
        r.get::<_, serde_json::Value>("c_map"),
        serde_json::json!({"x": 1, "y": 2})
    );
    assert_eq!(
        r.get::<_, serde_json::Value>("c_json"),
        serde_json::json!({"k": [1, 2, {"n": null}]})
    );
    // Edge values of row 2.
    let r = &rows[1];
    assert_eq!(r.get::<_, i16>("c_int8"), 127);
    assert_eq!(r.get::<_, i64>("c_uint32"), 4_294_967_295);
    assert_eq!(
        numeric_text(&r.get::<_, Raw>("c_uint64").0),
        "18446744073709551615"
    );
    assert_eq!(numeric_text(&r.get::<_, Raw>("c_decimal").0), "-0.05");
    // NULLs everywhere in row 3, whatever the type.
    let r = &rows[2];
    for i in 0..r.len() {
        assert!(
            r.get::<_, Option<Raw>>(i).is_none(),
            "column {i} should be NULL"
        );
    }
}

#[tokio::test]
async fn computed_types_match_postgres_oids() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    let cases: &[(&str, u32)] = &[
        ("SELECT 1", 23),
        ("SELECT 3000000000", 20),
        ("SELECT 1::int8", 20),
        ("SELECT 1.5", 1700),
        ("SELECT 1.5::float8", 701),
        ("SELECT true", 16),
        ("SELECT 'x'", 25),
        ("SELECT DATE '2024-01-01'", 1082),
        ("SELECT now()", 1184),
        ("SELECT count(*) FROM demo.orders", 20),
        ("SELECT ARRAY[1,2]", 1007),
        ("SELECT NULL", 25),
    ];
    for (sql, oid) in cases {
        let stmt = c
            .prepare(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(stmt.columns()[0].type_().oid(), *oid, "{sql}");
        // The value also decodes in binary with that type.
        let rows = c
            .query(&stmt, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(rows.len(), 1, "{sql}");
    }
    let rows = text_rows(&c, "SELECT 1e20::float8, 0.000015::float8, 'NaN'::float8").await;
    assert_eq!(
        rows[0],
        vec![
            Some("1e+20".into()),
            Some("1.5e-05".into()),
            Some("NaN".into())
        ]
    );
}
