//! The demo world's warehouse: files `joinery demo` writes and serves as `kind = "files"`.
//!
//! - `accounts.csv`: one row per demo customer (id, name, region, plan, arr);
//! - `revenue/month=YYYY-MM/part-0.parquet`: monthly recurring revenue per account for the
//!   twelve months before `as_of`, partitioned by month so a month filter reads one file;
//! - `service_accounts.csv`: which accounts depend on which PagerDuty service.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Decimal128Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use joinery_engine::{JoineryError, Result};

use super::data;

fn io(path: &Path, e: impl std::fmt::Display) -> JoineryError {
    JoineryError::internal(format!("cannot write {}: {e}", path.display()))
}

/// A customer of the demo world, as every tool knows it: the Salesforce account id is the key
/// the warehouse and the service mapping use.
#[derive(Debug, Clone)]
pub struct DemoAccount {
    pub id: String,
    pub name: String,
    pub region: String,
    pub plan: String,
    /// Annual recurring revenue in cents.
    pub arr_cents: i128,
}

/// The demo customers (from the `demo` connection's generator) with Salesforce-style ids.
pub fn accounts(seed: u64, scale: u64) -> Result<Vec<DemoAccount>> {
    let tables = data::generate(seed, scale)?;
    let customers = tables
        .iter()
        .find(|(n, _)| *n == "customers")
        .map(|(_, b)| b.clone())
        .ok_or_else(|| JoineryError::internal("demo data has no customers"))?;
    let col = |name: &str| {
        customers
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| JoineryError::internal(format!("demo customers lack {name}")))
    };
    let ids = col("id")?;
    let ids = ids
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| JoineryError::internal("customer id type"))?
        .clone();
    let arr = col("arr")?;
    let arr = arr
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .ok_or_else(|| JoineryError::internal("customer arr type"))?
        .clone();
    let text = |name: &str| -> Result<Vec<String>> {
        let a = col(name)?;
        let a = a
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .ok_or_else(|| JoineryError::internal(format!("customer {name} type")))?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect();
        Ok(a)
    };
    let (names, regions, plans) = (text("name")?, text("region")?, text("plan")?);
    Ok((0..ids.len())
        .map(|i| DemoAccount {
            id: format!("001A0000{:010}", ids.value(i)),
            name: names[i].clone(),
            region: regions[i].clone(),
            plan: plans[i].clone(),
            arr_cents: arr.value(i),
        })
        .collect())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Write the warehouse files under `dir` (replacing what is there).
pub fn write(dir: &Path, seed: u64, scale: u64, services: &[(&str, &str)]) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let accounts = accounts(seed, scale)?;

    // accounts.csv
    let mut csv = String::from("id,name,region,plan,arr\n");
    for a in &accounts {
        csv.push_str(&format!(
            "{},{},{},{},{}.{:02}\n",
            a.id,
            csv_field(&a.name),
            csv_field(&a.region),
            csv_field(&a.plan),
            a.arr_cents / 100,
            a.arr_cents % 100
        ));
    }
    let path = dir.join("accounts.csv");
    std::fs::write(&path, csv).map_err(|e| io(&path, e))?;

    // service_accounts.csv: every account uses one to three services.
    let mut csv = String::from("service_id,service_name,account_id\n");
    for (i, a) in accounts.iter().enumerate().filter(|_| !services.is_empty()) {
        let n = 1 + (i as u64 ^ seed) % 3;
        for k in 0..n {
            let (sid, sname) = services[((i as u64).wrapping_mul(7).wrapping_add(k * 3 + seed)
                % services.len() as u64) as usize];
            let line = format!("{sid},{sname},{}\n", a.id);
            if !csv.contains(&line) {
                csv.push_str(&line);
            }
        }
    }
    let path = dir.join("service_accounts.csv");
    std::fs::write(&path, csv).map_err(|e| io(&path, e))?;

    // revenue/month=YYYY-MM/part-0.parquet: MRR grows 1% a month towards today's ARR / 12.
    let schema = Arc::new(Schema::new(vec![
        Field::new("account_id", DataType::Utf8, false),
        Field::new("mrr", DataType::Decimal128(12, 2), false),
    ]));
    let ids: datafusion::arrow::array::StringArray =
        accounts.iter().map(|a| Some(a.id.clone())).collect();
    for back in 0..12i32 {
        let (y, m) = month_before(2026, 1, back);
        let part = dir.join(format!("revenue/month={y:04}-{m:02}"));
        std::fs::create_dir_all(&part).map_err(|e| io(&part, e))?;
        let mrr: Decimal128Array = accounts
            .iter()
            .map(|a| Some(a.arr_cents / 12 * 100 / (100 + i128::from(back))))
            .collect::<Decimal128Array>()
            .with_precision_and_scale(12, 2)
            .map_err(|e| JoineryError::internal(e.to_string()))?;
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids.clone()), Arc::new(mrr)])
                .map_err(|e| JoineryError::internal(e.to_string()))?;
        let path = part.join("part-0.parquet");
        let file = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
        let mut w = ArrowWriter::try_new(file, schema.clone(), None).map_err(|e| io(&path, e))?;
        w.write(&batch).map_err(|e| io(&path, e))?;
        w.close().map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// The month `back` months before `year-month` (0 = that month).
fn month_before(year: i32, month: i32, back: i32) -> (i32, i32) {
    let idx = year * 12 + (month - 1) - back;
    (idx / 12, idx % 12 + 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn months() {
        assert_eq!(super::month_before(2026, 1, 0), (2026, 1));
        assert_eq!(super::month_before(2026, 1, 1), (2025, 12));
        assert_eq!(super::month_before(2026, 1, 13), (2024, 12));
    }
}
