//! `kind = "pagerduty"`: services and incidents.
//!
//! ```toml
//! [connections.pagerduty]
//! kind = "pagerduty"
//! token = "${PAGERDUTY_TOKEN}"     # a REST API key, sent as `Authorization: Token token=...`
//! # base_url = "https://api.eu.pagerduty.com"
//! ```
//!
//! PagerDuty's incident list shows only the last month unless asked otherwise, so every request
//! carries `date_range=all`. `status`, `urgency` and `service_id` (also as `IN` lists) become
//! `statuses[]`, `urgencies[]` and `service_ids[]`. Time filters are applied by Joinery: the
//! API's `since`/`until` window is limited to six months and read in the account's time zone,
//! so pushing an arbitrary range could fail or hide rows.

pub mod fake;

use std::sync::Arc;

use joinery_engine::rest::RestConnector;
use joinery_engine::{Connector, Result};
use serde_json::{Value, json};

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};
use crate::rest::{HTTP_KEYS, fetcher_from};

pub const DEFAULT_BASE: &str = "https://api.pagerduty.com";

pub struct PagerdutyFactory;

fn paged(mut spec: Value, records: &str) -> Value {
    if let Some(o) = spec.as_object_mut() {
        o.insert("records".into(), json!(records));
        o.insert(
            "pagination".into(),
            json!({"type": "offset", "offset_param": "offset", "more": "more"}),
        );
        o.insert("page_size".into(), json!({"param": "limit", "max": 100}));
        if let Some(cols) = o.get_mut("columns").and_then(Value::as_array_mut) {
            cols.push(json!({"name": "raw", "type": "json", "path": "$",
                             "description": "The whole object as PagerDuty returned it"}));
        }
    }
    spec
}

pub fn tables() -> Vec<Value> {
    vec![
        paged(
            json!({
                "name": "incidents",
                "description": "Incidents (all time: date_range=all is always sent)",
                "path": "/incidents",
                "query": {"date_range": "all"},
                "columns": [
                    {"name": "id", "type": "text"},
                    {"name": "incident_number", "type": "bigint"},
                    {"name": "title", "type": "text"},
                    {"name": "summary", "type": "text"},
                    {"name": "status", "type": "text", "description": "triggered, acknowledged or resolved"},
                    {"name": "urgency", "type": "text", "description": "high or low"},
                    {"name": "priority", "type": "text", "path": "priority.summary", "description": "Priority name (P0, P1, ...), NULL when unset"},
                    {"name": "service_id", "type": "text", "path": "service.id"},
                    {"name": "service_name", "type": "text", "path": "service.summary"},
                    {"name": "teams", "type": "text_list", "path": "teams.*.summary"},
                    {"name": "assignees", "type": "text_list", "path": "assignments.*.assignee.summary"},
                    {"name": "incident_key", "type": "text"},
                    {"name": "created_at", "type": "timestamp"},
                    {"name": "updated_at", "type": "timestamp"},
                    {"name": "last_status_change_at", "type": "timestamp"},
                    {"name": "resolved_at", "type": "timestamp"},
                    {"name": "html_url", "type": "text"}
                ],
                "filters": [
                    {"column": "status", "ops": ["eq", "in"], "param": "statuses[]", "list": "repeat", "exact": true},
                    {"column": "urgency", "ops": ["eq", "in"], "param": "urgencies[]", "list": "repeat", "exact": true},
                    {"column": "service_id", "ops": ["eq", "in"], "param": "service_ids[]", "list": "repeat", "exact": true}
                ],
                "sort": [
                    {"column": "created_at", "param": "sort_by", "value": "created_at:{dir}", "exact": true},
                    {"column": "incident_number", "param": "sort_by", "value": "incident_number:{dir}", "exact": true}
                ]
            }),
            "incidents",
        ),
        paged(
            json!({
                "name": "services",
                "description": "Services (what incidents are raised on)",
                "path": "/services",
                "columns": [
                    {"name": "id", "type": "text"},
                    {"name": "name", "type": "text"},
                    {"name": "description", "type": "text"},
                    {"name": "status", "type": "text", "description": "active, warning, critical, maintenance, disabled"},
                    {"name": "escalation_policy", "type": "text", "path": "escalation_policy.summary"},
                    {"name": "teams", "type": "text_list", "path": "teams.*.summary"},
                    {"name": "created_at", "type": "timestamp"},
                    {"name": "html_url", "type": "text"}
                ],
                "filters": [
                    {"column": "name", "ops": ["eq"], "param": "query"}
                ]
            }),
            "services",
        ),
    ]
}

impl ConnectorFactory for PagerdutyFactory {
    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    fn description(&self) -> &'static str {
        "PagerDuty: services and incidents"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        HTTP_KEYS.to_vec()
    }

    fn build(&self, spec: &ConnectionSpec, ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        let mut spec = spec.clone();
        // PagerDuty's REST keys go in `Authorization: Token token=...`.
        if let Some(Value::String(t)) = spec.options.remove("token") {
            spec.options
                .insert("api_key".into(), json!(format!("Token token={t}")));
            spec.options
                .insert("api_key_header".into(), json!("Authorization"));
        }
        let headers = spec
            .options
            .entry("headers".to_string())
            .or_insert_with(|| json!({}));
        if let Some(h) = headers.as_object_mut() {
            h.entry("Accept")
                .or_insert_with(|| json!("application/vnd.pagerduty+json;version=2"));
        }
        let fetcher = fetcher_from(&spec, ctx, Some(DEFAULT_BASE))?;
        Ok(Arc::new(RestConnector::from_json(
            "pagerduty",
            tables(),
            fetcher,
            Default::default(),
        )?))
    }
}
