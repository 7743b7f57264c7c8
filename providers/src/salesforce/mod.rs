//! `kind = "salesforce"`: accounts, contacts, opportunities, cases and users through SOQL.
//!
//! ```toml
//! [connections.salesforce]
//! kind = "salesforce"
//! oauth_token_url = "https://login.salesforce.com/services/oauth2/token"
//! client_id = "${SF_CLIENT_ID}"
//! client_secret = "${SF_CLIENT_SECRET}"
//! refresh_token = "${SF_REFRESH_TOKEN}"   # the API base is the instance_url the token names
//! # api_version = "v62.0"
//! ```
//!
//! WHERE, the projection and LIMIT become one SOQL statement (`/services/data/vXX.X/query?q=`),
//! literals quoted and escaped SOQL's way; `nextRecordsUrl` is followed until `done`. SOQL
//! compares text case-insensitively, so text filters are re-checked by Joinery; numeric and
//! time filters are exact. Custom fields (`__c`) found by the describe API at start become
//! columns (lowercased API names).

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use joinery_engine::rest::RestConnector;
use joinery_engine::rest::fetch::HttpCall;
use joinery_engine::{Connector, Result, TableEntry};
use serde_json::{Value, json};

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};
use crate::rest::{HTTP_KEYS, fetcher_from};

pub const DEFAULT_VERSION: &str = "v62.0";

pub struct SalesforceFactory;

/// (table, SOQL object, description, columns as (name, type, SOQL path, description), filters
/// as (column, ops, exact, format)).
type Col = (&'static str, &'static str, &'static str, &'static str);

fn objects() -> Vec<(&'static str, &'static str, &'static str, Vec<Col>)> {
    vec![
        (
            "accounts",
            "Account",
            "Customer and prospect companies",
            vec![
                ("id", "text", "Id", "18-character record id"),
                ("name", "text", "Name", ""),
                ("type", "text", "Type", "Customer, Prospect, Partner, ..."),
                ("industry", "text", "Industry", ""),
                ("website", "text", "Website", ""),
                ("annual_revenue", "double", "AnnualRevenue", ""),
                ("number_of_employees", "bigint", "NumberOfEmployees", ""),
                ("billing_country", "text", "BillingCountry", ""),
                ("owner_id", "text", "OwnerId", ""),
                (
                    "owner_email",
                    "text",
                    "Owner.Email",
                    "The account owner's email",
                ),
                ("created_date", "timestamp", "CreatedDate", ""),
                ("last_modified_date", "timestamp", "LastModifiedDate", ""),
            ],
        ),
        (
            "contacts",
            "Contact",
            "People at accounts",
            vec![
                ("id", "text", "Id", ""),
                ("account_id", "text", "AccountId", ""),
                ("first_name", "text", "FirstName", ""),
                ("last_name", "text", "LastName", ""),
                ("email", "text", "Email", ""),
                ("title", "text", "Title", ""),
                ("created_date", "timestamp", "CreatedDate", ""),
            ],
        ),
        (
            "opportunities",
            "Opportunity",
            "Deals",
            vec![
                ("id", "text", "Id", ""),
                ("account_id", "text", "AccountId", ""),
                ("name", "text", "Name", ""),
                (
                    "stage_name",
                    "text",
                    "StageName",
                    "Prospecting ... Closed Won / Closed Lost",
                ),
                ("amount", "double", "Amount", ""),
                ("probability", "double", "Probability", ""),
                ("close_date", "date", "CloseDate", ""),
                ("is_closed", "boolean", "IsClosed", ""),
                ("is_won", "boolean", "IsWon", ""),
                ("owner_id", "text", "OwnerId", ""),
                ("created_date", "timestamp", "CreatedDate", ""),
            ],
        ),
        (
            "cases",
            "Case",
            "Support cases",
            vec![
                ("id", "text", "Id", ""),
                ("case_number", "text", "CaseNumber", ""),
                ("account_id", "text", "AccountId", ""),
                ("subject", "text", "Subject", ""),
                (
                    "status",
                    "text",
                    "Status",
                    "New, Working, Escalated, Closed",
                ),
                ("priority", "text", "Priority", "High, Medium, Low"),
                ("origin", "text", "Origin", ""),
                ("is_closed", "boolean", "IsClosed", ""),
                ("closed_date", "timestamp", "ClosedDate", ""),
                ("created_date", "timestamp", "CreatedDate", ""),
            ],
        ),
        (
            "users",
            "User",
            "Salesforce users",
            vec![
                ("id", "text", "Id", ""),
                ("name", "text", "Name", ""),
                ("email", "text", "Email", ""),
                ("title", "text", "Title", ""),
                ("is_active", "boolean", "IsActive", ""),
            ],
        ),
    ]
}

/// The spec of one object's table, with `extra` (custom) columns.
pub fn table(
    name: &str,
    object: &str,
    description: &str,
    cols: &[(String, String, String, String)],
    version: &str,
) -> Value {
    let mut columns: Vec<Value> = cols
        .iter()
        .map(|(n, t, p, d)| json!({"name": n, "type": t, "path": p, "description": d}))
        .collect();
    columns.push(json!({"name": "raw", "type": "json", "path": "$", "description": "The whole record as Salesforce returned it"}));
    let mut filters = Vec::new();
    let mut sort = Vec::new();
    for (n, t, p, _) in cols {
        if p.contains('.') {
            continue;
        }
        // Numbers and datetimes order in SOQL as in SQL; text follows Salesforce's
        // case-insensitive collation, so it is sorted locally.
        if matches!(t.as_str(), "double" | "bigint" | "timestamp" | "date") {
            sort.push(json!({"column": n, "clause": p, "exact": true}));
        }
        let (ops, exact, format) = match t.as_str() {
            "text" => (
                json!(["eq", "in", "prefix", "is_null", "is_not_null"]),
                false,
                "plain",
            ),
            "double" | "bigint" => (
                json!([
                    "eq",
                    "in",
                    "gt",
                    "gte",
                    "lt",
                    "lte",
                    "is_null",
                    "is_not_null"
                ]),
                true,
                "number",
            ),
            "timestamp" => (
                json!(["gt", "gte", "lt", "lte", "is_null", "is_not_null"]),
                true,
                "iso8601",
            ),
            _ => continue,
        };
        filters
            .push(json!({"column": n, "ops": ops, "clause": p, "exact": exact, "format": format}));
    }
    json!({
        "name": name,
        "description": description,
        "path": format!("/services/data/{version}/query"),
        "records": "records",
        "query_language": {
            "dialect": "soql", "param": "q", "always": ["Id"],
            "template": format!("SELECT {{fields}} FROM {object}{{where_clause}}{{order_by}}{{limit}}")
        },
        "pagination": {"type": "next_url", "path": "nextRecordsUrl", "done": "done"},
        "columns": columns,
        "filters": filters,
        "sort": sort
    })
}

/// A describe field type as a column type.
fn column_type(sf_type: &str) -> Option<&'static str> {
    Some(match sf_type {
        "string" | "picklist" | "multipicklist" | "textarea" | "email" | "url" | "phone" | "id"
        | "reference" | "combobox" => "text",
        "double" | "currency" | "percent" => "double",
        "int" | "long" => "bigint",
        "boolean" => "boolean",
        "date" => "date",
        "datetime" => "timestamp",
        _ => return None,
    })
}

impl ConnectorFactory for SalesforceFactory {
    fn kind(&self) -> &'static str {
        "salesforce"
    }

    fn description(&self) -> &'static str {
        "Salesforce: accounts, contacts, opportunities, cases, users (SOQL pushdown, custom fields)"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        [&["api_version"][..], HTTP_KEYS].concat()
    }

    fn build(&self, spec: &ConnectionSpec, ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        let version = spec
            .str_option("api_version")?
            .unwrap_or(DEFAULT_VERSION)
            .to_string();
        let fetcher = fetcher_from(spec, ctx, Some("https://login.salesforce.com"))?;
        Ok(Arc::new(SalesforceConnector { fetcher, version }))
    }
}

#[derive(Debug)]
pub struct SalesforceConnector {
    fetcher: Arc<joinery_engine::rest::Fetcher>,
    version: String,
}

impl SalesforceConnector {
    /// Custom fields of `object` from the describe API (none if it cannot be read).
    async fn custom_fields(&self, object: &str) -> Vec<(String, String, String, String)> {
        let Ok(url) = self.fetcher.url(
            &format!("/services/data/{}/sobjects/{object}/describe", self.version),
            &[],
        ) else {
            return Vec::new();
        };
        let call = HttpCall {
            method: joinery_engine::rest::spec::Method::Get,
            url,
            body: None,
        };
        let page = match self.fetcher.send("describe", &call).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, object, "salesforce: describe failed; custom fields left out");
                return Vec::new();
            }
        };
        page.body["fields"]
            .as_array()
            .map(|fields| {
                fields
                    .iter()
                    .filter(|f| f["custom"].as_bool() == Some(true))
                    .filter_map(|f| {
                        let name = f["name"].as_str()?;
                        let t = column_type(f["type"].as_str()?)?;
                        Some((
                            name.to_ascii_lowercase(),
                            t.to_string(),
                            name.to_string(),
                            f["label"].as_str().unwrap_or("").to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[async_trait]
impl Connector for SalesforceConnector {
    fn kind(&self) -> &str {
        "salesforce"
    }

    async fn tables(&self) -> Result<Vec<TableEntry>> {
        let mut specs = Vec::new();
        for (name, object, description, cols) in objects() {
            let mut cols: Vec<(String, String, String, String)> = cols
                .into_iter()
                .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
                .collect();
            for extra in self.custom_fields(object).await {
                if !cols.iter().any(|c| c.0 == extra.0) {
                    cols.push(extra);
                }
            }
            specs.push(table(name, object, description, &cols, &self.version));
        }
        RestConnector::from_json(
            "salesforce",
            specs,
            self.fetcher.clone(),
            Default::default(),
        )?
        .tables()
        .await
    }
}
