//! `kind = "demo"`: generated in-memory tables, deterministic from a seed, so the wire, the
//! catalog and every Postgres type can be exercised without any API.
//!
//! | table       | rows (scale 1) | what it shows                                      |
//! |-------------|----------------|----------------------------------------------------|
//! | `customers` | 50             | a small dimension table                            |
//! | `orders`    | 500            | a fact table joined to `customers`                 |
//! | `types`     | 3              | one column per Arrow type the wire must encode     |
//!
//! Options: `seed` (default 42), `scale` (default 1, multiplies the row counts).

mod data;
pub mod warehouse;
pub mod world;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::MemTable;
use joinery_engine::{Connector, JoineryError, Result, TableEntry};

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};

pub struct DemoFactory;

impl ConnectorFactory for DemoFactory {
    fn kind(&self) -> &'static str {
        "demo"
    }

    fn description(&self) -> &'static str {
        "generated in-memory tables (customers, orders, types)"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        vec!["seed", "scale"]
    }

    fn build(&self, spec: &ConnectionSpec, _ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        let seed = spec.u64_option("seed")?.unwrap_or(42);
        let scale = spec.u64_option("scale")?.unwrap_or(1);
        if scale == 0 || scale > 10_000 {
            return Err(JoineryError::config(format!(
                "connection '{}': scale must be between 1 and 10000",
                spec.name
            )));
        }
        Ok(Arc::new(DemoConnector { seed, scale }))
    }
}

#[derive(Debug)]
pub struct DemoConnector {
    seed: u64,
    scale: u64,
}

#[async_trait]
impl Connector for DemoConnector {
    fn kind(&self) -> &str {
        "demo"
    }

    async fn tables(&self) -> Result<Vec<TableEntry>> {
        let mut out = Vec::new();
        for (name, batch) in data::generate(self.seed, self.scale)? {
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]])
                .map_err(|e| JoineryError::internal(e.to_string()))?;
            out.push(TableEntry {
                name: name.to_string(),
                provider: Arc::new(table),
            });
        }
        Ok(out)
    }

    async fn check(&self) -> Result<String> {
        Ok(format!(
            "in-memory (seed {}, scale {})",
            self.seed, self.scale
        ))
    }
}
