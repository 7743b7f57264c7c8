//! `kind = "slack"`: channels, users and messages through the Web API.
//!
//! ```toml
//! [connections.slack]
//! kind = "slack"
//! token = "${SLACK_BOT_TOKEN}"    # xoxb-...
//! # base_url = "https://slack.com/api"
//! ```
//!
//! Slack answers most errors with HTTP 200 and `"ok": false`; those fail the query with the
//! error code. `messages` needs `channel_id` (one request chain per channel of an `IN` list);
//! time bounds become `oldest`/`latest`, which Slack treats as exclusive, so `>=`/`<=` are sent
//! one microsecond wider. Cursor paging continues past short (even empty) pages until
//! `next_cursor` is empty.

pub mod fake;

use std::sync::Arc;

use joinery_engine::rest::RestConnector;
use joinery_engine::{Connector, Result};
use serde_json::{Value, json};

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};
use crate::rest::{HTTP_KEYS, fetcher_from};

pub const DEFAULT_BASE: &str = "https://slack.com/api/";

pub struct SlackFactory;

fn method(
    name: &str,
    description: &str,
    path: &str,
    records: &str,
    mut columns: Vec<Value>,
    filters: Vec<Value>,
    query: Value,
) -> Value {
    columns.push(json!({"name": "raw", "type": "json", "path": "$", "description": "The whole object as Slack returned it"}));
    json!({
        "name": name, "description": description, "path": path, "records": records, "query": query,
        "ok_path": "ok", "error_path": "error",
        "pagination": {"type": "cursor", "param": "cursor", "response": "response_metadata.next_cursor"},
        "page_size": {"param": "limit", "max": 200},
        "columns": columns, "filters": filters
    })
}

pub fn tables() -> Vec<Value> {
    let c = |n: &str, t: &str, p: &str, d: &str| json!({"name": n, "type": t, "path": p, "description": d});
    vec![
        method(
            "channels",
            "Public and private channels the token can see",
            "conversations.list",
            "channels",
            vec![
                c("id", "text", "id", "C..."),
                c("name", "text", "name", ""),
                c("is_private", "boolean", "is_private", ""),
                c("is_archived", "boolean", "is_archived", ""),
                c("num_members", "bigint", "num_members", ""),
                c("topic", "text", "topic.value", ""),
                c("purpose", "text", "purpose.value", ""),
                json!({"name": "created", "type": "timestamp", "format": "epoch_seconds"}),
            ],
            vec![
                json!({"column": "is_private", "ops": ["eq"], "param": "types", "exact": true,
                       "map": {"true": "private_channel", "false": "public_channel"}}),
                json!({"column": "is_archived", "ops": ["eq"], "param": "exclude_archived", "exact": true,
                       "map": {"false": "true"}}),
            ],
            json!({"types": "public_channel,private_channel"}),
        ),
        method(
            "users",
            "Members of the workspace",
            "users.list",
            "members",
            vec![
                c("id", "text", "id", "U..."),
                c("name", "text", "name", ""),
                c("real_name", "text", "real_name", ""),
                c("email", "text", "profile.email", ""),
                c("is_bot", "boolean", "is_bot", ""),
                c("is_admin", "boolean", "is_admin", ""),
                c("deleted", "boolean", "deleted", ""),
                c("tz", "text", "tz", ""),
            ],
            vec![],
            json!({}),
        ),
        method(
            "messages",
            "Messages of a channel (WHERE channel_id = ... is required)",
            "conversations.history",
            "messages",
            vec![
                json!({"name": "channel_id", "type": "text", "path": "{channel}", "description": "The channel (required filter)"}),
                c(
                    "ts",
                    "text",
                    "ts",
                    "Message id: epoch seconds with microseconds",
                ),
                json!({"name": "sent_at", "type": "timestamp", "path": "ts", "format": "epoch_seconds"}),
                c("user", "text", "user", "U..."),
                c("text", "text", "text", ""),
                c("type", "text", "type", ""),
                c("subtype", "text", "subtype", ""),
                c("thread_ts", "text", "thread_ts", ""),
                c("reply_count", "bigint", "reply_count", ""),
            ],
            vec![
                json!({"column": "channel_id", "ops": ["eq", "in"], "param": "channel", "required": true, "exact": true}),
                json!({"column": "sent_at", "ops": ["gt"], "param": "oldest", "format": "slack_ts"}),
                json!({"column": "sent_at", "ops": ["gte"], "param": "oldest", "format": "slack_ts_before"}),
                json!({"column": "sent_at", "ops": ["lt"], "param": "latest", "format": "slack_ts"}),
                json!({"column": "sent_at", "ops": ["lte"], "param": "latest", "format": "slack_ts_after"}),
            ],
            json!({}),
        ),
    ]
}

impl ConnectorFactory for SlackFactory {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn description(&self) -> &'static str {
        "Slack: channels, users, messages"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        HTTP_KEYS.to_vec()
    }

    fn build(&self, spec: &ConnectionSpec, ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        let mut spec = spec.clone();
        // Method names are relative paths: the base must end with a slash.
        if let Some(b) = &spec.base_url
            && !b.ends_with('/')
        {
            spec.base_url = Some(format!("{b}/"));
        }
        let fetcher = fetcher_from(&spec, ctx, Some(DEFAULT_BASE))?;
        Ok(Arc::new(RestConnector::from_json(
            "slack",
            tables(),
            fetcher,
            Default::default(),
        )?))
    }
}
