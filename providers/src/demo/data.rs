//! The demo tables' contents.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Date64Array, Decimal128Array,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array,
    IntervalMonthDayNanoArray, LargeStringArray, ListBuilder, MapBuilder, StringArray,
    StringBuilder, StringViewArray, StructArray, Time64MicrosecondArray, TimestampMicrosecondArray,
    UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow::array::{Int32Builder, types::IntervalMonthDayNano};
use arrow::datatypes::{DataType, Field, Fields, IntervalUnit, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use joinery_engine::meta::{described, json_field, with_table_description};
use joinery_engine::{JoineryError, Result};

/// splitmix64: tiny, fast and stable across crate versions, so the demo data never changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        let i = usize::try_from(self.below(xs.len() as u64)).unwrap_or(0);
        xs[i]
    }
}

fn err(e: arrow::error::ArrowError) -> JoineryError {
    JoineryError::internal(format!("demo data: {e}"))
}

const NAMES: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Aperture",
    "Vandelay",
    "Massive",
    "Dunder",
];
const SUFFIX: &[&str] = &["Corp", "Inc", "GmbH", "Ltd", "Labs", "Systems"];
const REGIONS: &[&str] = &["EMEA", "NA", "APAC", "LATAM"];
const PLANS: &[&str] = &["free", "team", "business", "enterprise"];
const STATUSES: &[&str] = &["paid", "open", "refunded", "void"];

/// 2026-01-01T00:00:00Z in microseconds.
const EPOCH_2026_US: i64 = 1_767_225_600_000_000;
const DAY_US: i64 = 86_400_000_000;

pub fn generate(seed: u64, scale: u64) -> Result<Vec<(&'static str, RecordBatch)>> {
    let mut rng = Rng(seed);
    let n_customers = 50 * scale;
    let n_orders = 500 * scale;

    // customers
    let ids: Vec<i64> = (1..=n_customers as i64).collect();
    let names: Vec<String> = ids
        .iter()
        .map(|i| format!("{} {} #{i}", rng.pick(NAMES), rng.pick(SUFFIX)))
        .collect();
    let regions: Vec<&str> = ids.iter().map(|_| rng.pick(REGIONS)).collect();
    let plans: Vec<&str> = ids.iter().map(|_| rng.pick(PLANS)).collect();
    let created: Vec<i64> = ids
        .iter()
        .map(|_| EPOCH_2026_US - (rng.below(1000) as i64) * DAY_US)
        .collect();
    let arr: Vec<i128> = plans
        .iter()
        .map(|p| {
            let base: i128 = match *p {
                "free" => 0,
                "team" => 120_000, // cents
                "business" => 2_400_000,
                _ => 18_000_000,
            };
            base + i128::from(rng.below(500_000) as i32) * i128::from(base != 0)
        })
        .collect();
    let cust_schema = with_table_description(
        Schema::new(vec![
            described(Field::new("id", DataType::Int64, false), "Customer id"),
            described(Field::new("name", DataType::Utf8, false), "Company name"),
            described(
                Field::new("region", DataType::Utf8, false),
                "Sales region: EMEA, NA, APAC or LATAM",
            ),
            described(
                Field::new("plan", DataType::Utf8, false),
                "Subscription plan: free, team, business or enterprise",
            ),
            described(
                Field::new(
                    "created_at",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                "When the customer signed up",
            ),
            described(
                Field::new("arr", DataType::Decimal128(12, 2), false),
                "Annual recurring revenue in USD",
            ),
        ]),
        "Demo customers (generated)",
    );
    let customers = RecordBatch::try_new(
        cust_schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from(names)),
            Arc::new(StringArray::from(regions)),
            Arc::new(StringArray::from(plans)),
            Arc::new(TimestampMicrosecondArray::from(created).with_timezone("UTC")),
            Arc::new(
                Decimal128Array::from(arr)
                    .with_precision_and_scale(12, 2)
                    .map_err(err)?,
            ),
        ],
    )
    .map_err(err)?;

    // orders
    let oids: Vec<i64> = (1..=n_orders as i64).collect();
    let cust: Vec<i64> = oids
        .iter()
        .map(|_| 1 + rng.below(n_customers) as i64)
        .collect();
    let amount: Vec<f64> = oids
        .iter()
        .map(|_| (rng.below(100_000) as f64) / 100.0)
        .collect();
    let status: Vec<&str> = oids.iter().map(|_| rng.pick(STATUSES)).collect();
    // days since 1970 for 2025-01-01 is 20089
    let ordered: Vec<i32> = oids.iter().map(|_| 20089 + rng.below(365) as i32).collect();
    let order_schema = with_table_description(
        Schema::new(vec![
            described(Field::new("id", DataType::Int64, false), "Order id"),
            described(
                Field::new("customer_id", DataType::Int64, false),
                "customers.id of the buyer",
            ),
            described(
                Field::new("amount", DataType::Float64, false),
                "Order amount in USD",
            ),
            described(
                Field::new("status", DataType::Utf8, false),
                "paid, open, refunded or void",
            ),
            described(
                Field::new("ordered_on", DataType::Date32, false),
                "Day the order was placed",
            ),
        ]),
        "Demo orders (generated)",
    );
    let orders = RecordBatch::try_new(
        order_schema,
        vec![
            Arc::new(Int64Array::from(oids)),
            Arc::new(Int64Array::from(cust)),
            Arc::new(Float64Array::from(amount)),
            Arc::new(StringArray::from(status)),
            Arc::new(Date32Array::from(ordered)),
        ],
    )
    .map_err(err)?;

    Ok(vec![
        ("customers", customers),
        ("orders", orders),
        ("types", types_table()?),
    ])
}

/// One column per Arrow type the wire layer must encode; row 3 is all NULLs.
fn types_table() -> Result<RecordBatch> {
    let struct_fields = Fields::from(vec![
        Field::new("a", DataType::Int32, true),
        Field::new("b", DataType::Utf8, true),
    ]);
    let mut fields = vec![
        Field::new("c_bool", DataType::Boolean, true),
        Field::new("c_int8", DataType::Int8, true),
        Field::new("c_int16", DataType::Int16, true),
        Field::new("c_int32", DataType::Int32, true),
        Field::new("c_int64", DataType::Int64, true),
        Field::new("c_uint8", DataType::UInt8, true),
        Field::new("c_uint16", DataType::UInt16, true),
        Field::new("c_uint32", DataType::UInt32, true),
        Field::new("c_uint64", DataType::UInt64, true),
        Field::new("c_float32", DataType::Float32, true),
        Field::new("c_float64", DataType::Float64, true),
        Field::new("c_decimal", DataType::Decimal128(10, 2), true),
        Field::new("c_utf8", DataType::Utf8, true),
        Field::new("c_large_utf8", DataType::LargeUtf8, true),
        Field::new("c_utf8_view", DataType::Utf8View, true),
        Field::new("c_binary", DataType::Binary, true),
        Field::new("c_date32", DataType::Date32, true),
        Field::new("c_date64", DataType::Date64, true),
        Field::new("c_time", DataType::Time64(TimeUnit::Microsecond), true),
        Field::new(
            "c_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new(
            "c_timestamptz",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "c_interval",
            DataType::Interval(IntervalUnit::MonthDayNano),
            true,
        ),
        Field::new(
            "c_int_list",
            DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
            true,
        ),
        Field::new(
            "c_text_list",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        ),
        Field::new("c_struct", DataType::Struct(struct_fields.clone()), true),
    ];

    let mut map_builder = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
    map_builder.keys().append_value("x");
    map_builder.values().append_value(1);
    map_builder.keys().append_value("y");
    map_builder.values().append_value(2);
    map_builder.append(true).map_err(err)?;
    map_builder.append(true).map_err(err)?;
    map_builder.append(false).map_err(err)?;
    let map = map_builder.finish();
    fields.push(Field::new("c_map", map.data_type().clone(), true));
    fields.push(json_field(Field::new("c_json", DataType::Utf8, true)));

    let mut int_list = ListBuilder::new(Int32Builder::new());
    int_list.values().append_value(1);
    int_list.values().append_value(2);
    int_list.values().append_null();
    int_list.append(true);
    int_list.append(true);
    int_list.append(false);
    let mut text_list = ListBuilder::new(StringBuilder::new());
    text_list.values().append_value("a");
    text_list.values().append_value("b,c");
    text_list.values().append_value("d\"e");
    text_list.append(true);
    text_list.values().append_value("");
    text_list.append(true);
    text_list.append(false);

    let structs = StructArray::try_new(
        struct_fields,
        vec![
            Arc::new(Int32Array::from(vec![Some(1), None, None])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("x"), Some("y\"z"), None])),
        ],
        Some(vec![true, true, false].into()),
    )
    .map_err(err)?;

    let columns: Vec<ArrayRef> = vec![
        Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
        Arc::new(Int8Array::from(vec![Some(-8), Some(i8::MAX), None])),
        Arc::new(Int16Array::from(vec![Some(-16), Some(i16::MAX), None])),
        Arc::new(Int32Array::from(vec![Some(-32), Some(i32::MAX), None])),
        Arc::new(Int64Array::from(vec![Some(-64), Some(i64::MAX), None])),
        Arc::new(UInt8Array::from(vec![Some(8), Some(u8::MAX), None])),
        Arc::new(UInt16Array::from(vec![Some(16), Some(u16::MAX), None])),
        Arc::new(UInt32Array::from(vec![Some(32), Some(u32::MAX), None])),
        Arc::new(UInt64Array::from(vec![Some(64), Some(u64::MAX), None])),
        Arc::new(Float32Array::from(vec![Some(1.5), Some(-0.25), None])),
        Arc::new(Float64Array::from(vec![Some(20.0), Some(0.1), None])),
        Arc::new(
            Decimal128Array::from(vec![Some(12345), Some(-5), None])
                .with_precision_and_scale(10, 2)
                .map_err(err)?,
        ),
        Arc::new(StringArray::from(vec![
            Some("hello"),
            Some("ünïcödé ✓"),
            None,
        ])),
        Arc::new(LargeStringArray::from(vec![Some("large"), Some(""), None])),
        Arc::new(StringViewArray::from(vec![
            Some("view"),
            Some("it's"),
            None,
        ])),
        Arc::new(BinaryArray::from(vec![
            Some(&b"\x00\x01\xff"[..]),
            Some(&b""[..]),
            None,
        ])),
        // 2024-03-10 and 1999-12-31
        Arc::new(Date32Array::from(vec![Some(19792), Some(10956), None])),
        Arc::new(Date64Array::from(vec![
            Some(1_710_028_800_000),
            Some(946_598_400_000),
            None,
        ])),
        // 10:34:56.123456 and 23:59:59
        Arc::new(Time64MicrosecondArray::from(vec![
            Some(38_096_123_456),
            Some(86_399_000_000),
            None,
        ])),
        // 2024-03-10 10:34:56.123456 and 2000-01-01 00:00:00
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(1_710_066_896_123_456),
            Some(946_684_800_000_000),
            None,
        ])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![
                Some(1_710_066_896_123_456),
                Some(946_684_800_000_000),
                None,
            ])
            .with_timezone("UTC"),
        ),
        Arc::new(IntervalMonthDayNanoArray::from(vec![
            Some(IntervalMonthDayNano::new(14, 3, 3_600_000_000_000)),
            Some(IntervalMonthDayNano::new(0, -1, 1_500_000)),
            None,
        ])),
        Arc::new(int_list.finish()),
        Arc::new(text_list.finish()),
        Arc::new(structs),
        Arc::new(map),
        Arc::new(StringArray::from(vec![
            Some(r#"{"k":[1,2,{"n":null}]}"#),
            Some("[]"),
            None,
        ])),
    ];
    let schema = with_table_description(
        Schema::new(fields),
        "One column per Arrow type Joinery sends over the wire; the last row is all NULL",
    );
    RecordBatch::try_new(schema, columns).map_err(err)
}
