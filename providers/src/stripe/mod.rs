//! `kind = "stripe"`: customers, subscriptions, invoices and charges.
//!
//! ```toml
//! [connections.stripe]
//! kind = "stripe"
//! token = "${STRIPE_SECRET_KEY}"     # sk_live_... or a restricted rk_... key
//! ```
//!
//! `created` ranges become `created[gte|gt|lte|lt]` in Unix seconds (re-checked: Stripe has
//! second precision); `customer`, `status`, invoice `subscription` and the case-sensitive
//! customer `email` are exact parameters. Subscriptions are listed with `status=all` unless the
//! query names a status, because Stripe hides canceled ones by default. `starting_after` paging.

pub mod fake;

use std::sync::Arc;

use joinery_engine::rest::RestConnector;
use joinery_engine::{Connector, Result};
use serde_json::{Value, json};

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};
use crate::rest::{HTTP_KEYS, fetcher_from};

pub const DEFAULT_BASE: &str = "https://api.stripe.com";

pub struct StripeFactory;

fn list(
    name: &str,
    description: &str,
    path: &str,
    mut columns: Vec<Value>,
    mut filters: Vec<Value>,
    query: Value,
) -> Value {
    for op in ["gte", "gt", "lte", "lt"] {
        filters.push(json!({"column": "created", "ops": [op], "param": format!("created[{op}]"), "format": "epoch_seconds"}));
    }
    columns.push(json!({"name": "created", "type": "timestamp", "format": "epoch_seconds"}));
    columns.push(json!({"name": "metadata", "type": "json", "description": "Key-value metadata"}));
    columns.push(json!({"name": "raw", "type": "json", "path": "$", "description": "The whole object as Stripe returned it"}));
    json!({
        "name": name, "description": description, "path": path, "records": "data", "query": query,
        "pagination": {"type": "cursor", "param": "starting_after", "last_record": "id", "has_more": "has_more"},
        "page_size": {"param": "limit", "max": 100},
        "columns": columns, "filters": filters
    })
}

pub fn tables() -> Vec<Value> {
    let c = |n: &str, t: &str, d: &str| json!({"name": n, "type": t, "description": d});
    let epoch = |n: &str, d: &str| json!({"name": n, "type": "timestamp", "format": "epoch_seconds", "description": d});
    vec![
        list(
            "customers",
            "Customers (deleted ones are not listed)",
            "/v1/customers",
            vec![
                c("id", "text", "cus_..."),
                c(
                    "email",
                    "text",
                    "Email (Stripe matches it case-sensitively)",
                ),
                c("name", "text", ""),
                c("description", "text", ""),
                c("currency", "text", ""),
                c("balance", "bigint", "Balance in the currency's minor unit"),
                c("delinquent", "boolean", ""),
                json!({"name": "salesforce_account_id", "type": "text", "path": "metadata.salesforce_account_id",
                   "description": "The Salesforce account this customer is (metadata)"}),
            ],
            vec![json!({"column": "email", "ops": ["eq"], "param": "email", "exact": true})],
            json!({}),
        ),
        list(
            "subscriptions",
            "Subscriptions, canceled ones included (status=all)",
            "/v1/subscriptions",
            vec![
                c("id", "text", "sub_..."),
                c("customer", "text", "cus_..."),
                c(
                    "status",
                    "text",
                    "active, past_due, unpaid, canceled, incomplete, incomplete_expired, trialing, paused",
                ),
                c("currency", "text", ""),
                c("cancel_at_period_end", "boolean", ""),
                epoch("current_period_start", ""),
                epoch("current_period_end", ""),
                epoch("canceled_at", ""),
                json!({"name": "price_id", "type": "text", "path": "items.data.0.price.id"}),
                json!({"name": "unit_amount", "type": "bigint", "path": "items.data.0.price.unit_amount", "description": "Price per period, minor unit"}),
            ],
            vec![
                json!({"column": "customer", "ops": ["eq"], "param": "customer", "exact": true}),
                json!({"column": "status", "ops": ["eq"], "param": "status", "exact": true}),
            ],
            json!({"status": "all"}),
        ),
        list(
            "invoices",
            "Invoices",
            "/v1/invoices",
            vec![
                c("id", "text", "in_..."),
                c("customer", "text", ""),
                c("subscription", "text", ""),
                c("status", "text", "draft, open, paid, uncollectible, void"),
                c("number", "text", ""),
                c("amount_due", "bigint", "minor unit"),
                c("amount_paid", "bigint", "minor unit"),
                c("currency", "text", ""),
                epoch("due_date", ""),
                epoch("period_start", ""),
                epoch("period_end", ""),
            ],
            vec![
                json!({"column": "customer", "ops": ["eq"], "param": "customer", "exact": true}),
                json!({"column": "subscription", "ops": ["eq"], "param": "subscription", "exact": true}),
                json!({"column": "status", "ops": ["eq"], "param": "status", "exact": true}),
            ],
            json!({}),
        ),
        list(
            "charges",
            "Charges",
            "/v1/charges",
            vec![
                c("id", "text", "ch_..."),
                c("customer", "text", ""),
                c("amount", "bigint", "minor unit"),
                c("amount_captured", "bigint", ""),
                c("amount_refunded", "bigint", ""),
                c("currency", "text", ""),
                c("status", "text", "succeeded, pending, failed"),
                c("paid", "boolean", ""),
                c("refunded", "boolean", ""),
                c("failure_code", "text", ""),
                c("payment_intent", "text", ""),
            ],
            vec![json!({"column": "customer", "ops": ["eq"], "param": "customer", "exact": true})],
            json!({}),
        ),
    ]
}

impl ConnectorFactory for StripeFactory {
    fn kind(&self) -> &'static str {
        "stripe"
    }

    fn description(&self) -> &'static str {
        "Stripe: customers, subscriptions, invoices, charges"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        HTTP_KEYS.to_vec()
    }

    fn build(&self, spec: &ConnectionSpec, ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        let fetcher = fetcher_from(spec, ctx, Some(DEFAULT_BASE))?;
        Ok(Arc::new(RestConnector::from_json(
            "stripe",
            tables(),
            fetcher,
            Default::default(),
        )?))
    }
}
