//! `kind = "hubspot"`: CRM companies, contacts and deals.
//!
//! ```toml
//! [connections.hubspot]
//! kind = "hubspot"
//! token = "${HUBSPOT_PRIVATE_APP_TOKEN}"
//! ```
//!
//! Unfiltered scans use the list endpoint (`GET /crm/v3/objects/{object}`, `properties=` from
//! the projection). With filters the table switches to the search endpoint (`POST
//! .../search`), each filter one entry of a filter group (`EQ`, `IN`, `GT`..., `HAS_PROPERTY`),
//! the properties in the body; HubSpot compares strings case-insensitively, so every filter is
//! re-checked. Search answers at most 10,000 results: past that HubSpot's 400 fails the query
//! with its message (narrow the filter, e.g. on `createdate`). Property values arrive as
//! strings and are typed by the declared columns.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use joinery_engine::rest::plan::{format_value, recognize};
use joinery_engine::rest::spec::{FilterOp, ValueFormat};
use joinery_engine::rest::{Fetcher, RestTable, TableSpec};
use joinery_engine::{Connector, JoineryError, Result, TableEntry};
use serde_json::{Value, json};

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};
use crate::rest::{HTTP_KEYS, fetcher_from};

pub const DEFAULT_BASE: &str = "https://api.hubapi.com";
/// HubSpot's per-group filter limit (documented as 6; a 2024 changelog says 10).
const MAX_FILTERS: usize = 6;

pub struct HubspotFactory;

/// A property: (name, column type, description).
type Prop = (&'static str, &'static str, &'static str);

/// (object, description, properties).
fn objects() -> Vec<(&'static str, &'static str, Vec<Prop>)> {
    vec![
        (
            "companies",
            "Companies",
            vec![
                ("name", "text", ""),
                ("domain", "text", "Primary domain (links to other tools)"),
                ("industry", "text", ""),
                ("country", "text", ""),
                ("numberofemployees", "bigint", ""),
                ("annualrevenue", "double", ""),
                ("lifecyclestage", "text", "subscriber, lead, ..., customer"),
                ("createdate", "timestamp", ""),
                ("hs_lastmodifieddate", "timestamp", ""),
            ],
        ),
        (
            "contacts",
            "Contacts",
            vec![
                ("email", "text", ""),
                ("firstname", "text", ""),
                ("lastname", "text", ""),
                ("company", "text", ""),
                ("lifecyclestage", "text", ""),
                ("createdate", "timestamp", ""),
                ("lastmodifieddate", "timestamp", ""),
            ],
        ),
        (
            "deals",
            "Deals",
            vec![
                ("dealname", "text", ""),
                ("amount", "double", ""),
                ("dealstage", "text", ""),
                ("pipeline", "text", ""),
                ("closedate", "timestamp", ""),
                ("createdate", "timestamp", ""),
                ("hs_lastmodifieddate", "timestamp", ""),
            ],
        ),
    ]
}

fn columns(props: &[(&str, &str, &str)]) -> Vec<Value> {
    let mut cols = vec![json!({"name": "id", "type": "text", "description": "hs_object_id"})];
    for (n, t, d) in props {
        cols.push(
            json!({"name": n, "type": t, "path": format!("properties.{n}"), "description": d}),
        );
    }
    cols.push(json!({"name": "created_at", "type": "timestamp", "path": "createdAt"}));
    cols.push(json!({"name": "updated_at", "type": "timestamp", "path": "updatedAt"}));
    cols.push(json!({"name": "archived", "type": "boolean"}));
    cols.push(json!({"name": "raw", "type": "json", "path": "$"}));
    cols
}

fn list_spec(object: &str, description: &str, props: &[(&str, &str, &str)]) -> Value {
    json!({
        "name": object, "description": description,
        "path": format!("/crm/v3/objects/{object}"), "records": "results",
        "pagination": {"type": "cursor", "param": "after", "response": "paging.next.after"},
        "page_size": {"param": "limit", "max": 100},
        "fields": {"param": "properties", "under": "properties"},
        "columns": columns(props)
    })
}

fn search_spec(
    object: &str,
    description: &str,
    props: &[(&str, &str, &str)],
    body: Value,
) -> Value {
    json!({
        "name": object, "description": description, "method": "POST",
        "path": format!("/crm/v3/objects/{object}/search"), "records": "results", "body": body,
        "pagination": {"type": "cursor", "body": "/after", "response": "paging.next.after"},
        "page_size": {"body": "/limit", "max": 200},
        "columns": columns(props)
    })
}

/// One pushable filter as a HubSpot search filter.
fn hubspot_filter(
    property: &str,
    ty: &str,
    op: FilterOp,
    values: &[datafusion::common::ScalarValue],
) -> Option<Value> {
    let fmt = if ty == "timestamp" {
        ValueFormat::Iso8601
    } else {
        ValueFormat::Plain
    };
    let one = || format_value(values.first()?, fmt);
    Some(match op {
        FilterOp::Eq => json!({"propertyName": property, "operator": "EQ", "value": one()?}),
        FilterOp::In => json!({"propertyName": property, "operator": "IN",
            "values": values.iter().map(|v| format_value(v, fmt)).collect::<Option<Vec<_>>>()?}),
        FilterOp::Gt => json!({"propertyName": property, "operator": "GT", "value": one()?}),
        FilterOp::Gte => json!({"propertyName": property, "operator": "GTE", "value": one()?}),
        FilterOp::Lt => json!({"propertyName": property, "operator": "LT", "value": one()?}),
        FilterOp::Lte => json!({"propertyName": property, "operator": "LTE", "value": one()?}),
        FilterOp::IsNull => json!({"propertyName": property, "operator": "NOT_HAS_PROPERTY"}),
        FilterOp::IsNotNull => json!({"propertyName": property, "operator": "HAS_PROPERTY"}),
        _ => return None,
    })
}

#[derive(Debug)]
pub struct HubspotTable {
    object: &'static str,
    description: &'static str,
    props: Vec<(&'static str, &'static str, &'static str)>,
    list: Arc<RestTable>,
    fetcher: Arc<Fetcher>,
}

impl HubspotTable {
    /// The search filters for `e`, if every part of it can be one.
    fn filters_for(&self, e: &Expr) -> Option<Vec<Value>> {
        // `annualrevenue < 5000.5` arrives as `CAST(annualrevenue AS Decimal) < 5000.5`: the
        // cast between numbers changes nothing HubSpot compares (and the filter is re-checked).
        let e = e
            .clone()
            .transform(|x| {
                Ok(match x {
                    Expr::Cast(c)
                        if matches!(c.expr.as_ref(), Expr::Column(_))
                            && c.field.data_type().is_numeric() =>
                    {
                        Transformed::yes(*c.expr)
                    }
                    other => Transformed::no(other),
                })
            })
            .ok()?
            .data;
        let parts = recognize(&e)?;
        parts
            .iter()
            .map(|m| {
                let (name, ty, _) = self.props.iter().find(|(n, _, _)| *n == m.column)?;
                hubspot_filter(name, ty, m.op, &m.values)
            })
            .collect()
    }
}

#[async_trait]
impl TableProvider for HubspotTable {
    fn schema(&self) -> SchemaRef {
        self.list.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.filters_for(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut search: Vec<Value> = filters
            .iter()
            .filter_map(|f| self.filters_for(f))
            .flatten()
            .collect();
        if search.is_empty() {
            return self.list.scan(state, projection, &[], limit).await;
        }
        // Inexact filters: sending fewer than all of them only widens the answer.
        search.truncate(MAX_FILTERS);
        let schema = self.list.schema();
        let mut properties: Vec<String> = Vec::new();
        let wanted: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..schema.fields().len()).collect());
        for i in wanted {
            let name = schema.field(i).name();
            if self.props.iter().any(|(n, _, _)| n == name) {
                properties.push(name.clone());
            } else if name == "raw" {
                properties = self.props.iter().map(|(n, _, _)| n.to_string()).collect();
                break;
            }
        }
        let body =
            json!({"filterGroups": [{"filters": search}], "properties": properties, "limit": 200});
        let spec = TableSpec::from_json(search_spec(
            self.object,
            self.description,
            &self.props,
            body,
        ))
        .map_err(JoineryError::into_datafusion)?;
        let table = RestTable::try_new(spec, self.fetcher.clone(), Default::default())
            .map_err(JoineryError::into_datafusion)?;
        table.scan(state, projection, &[], None).await
    }
}

impl ConnectorFactory for HubspotFactory {
    fn kind(&self) -> &'static str {
        "hubspot"
    }

    fn description(&self) -> &'static str {
        "HubSpot CRM: companies, contacts, deals (search endpoint when filtered)"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        HTTP_KEYS.to_vec()
    }

    fn build(&self, spec: &ConnectionSpec, ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        // Private apps get 100 requests per rolling 10 s (Free/Starter): pace at 10/s unless
        // configured otherwise.
        let mut spec = spec.clone();
        spec.options
            .entry("rate_limit".to_string())
            .or_insert(serde_json::json!(10));
        let spec = &spec;
        let fetcher = fetcher_from(spec, ctx, Some(DEFAULT_BASE))?;
        let mut tables = Vec::new();
        for (object, description, props) in objects() {
            let list = RestTable::try_new(
                TableSpec::from_json(list_spec(object, description, &props))?,
                fetcher.clone(),
                Default::default(),
            )?;
            tables.push(Arc::new(HubspotTable {
                object,
                description,
                props,
                list: Arc::new(list),
                fetcher: fetcher.clone(),
            }));
        }
        Ok(Arc::new(HubspotConnector(tables)))
    }
}

#[derive(Debug)]
struct HubspotConnector(Vec<Arc<HubspotTable>>);

#[async_trait]
impl Connector for HubspotConnector {
    fn kind(&self) -> &str {
        "hubspot"
    }

    async fn tables(&self) -> Result<Vec<TableEntry>> {
        Ok(self
            .0
            .iter()
            .map(|t| TableEntry {
                name: t.object.to_string(),
                provider: t.clone(),
            })
            .collect())
    }
}
