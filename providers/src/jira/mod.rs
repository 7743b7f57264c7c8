//! `kind = "jira"`: Jira Cloud projects, issues (through `/rest/api/3/search/jql`), boards and
//! sprints (Agile API).
//!
//! ```toml
//! [connections.jira]
//! kind = "jira"
//! base_url = "https://acme.atlassian.net"
//! username = "me@acme.com"           # email + API token: basic auth
//! password = "${JIRA_API_TOKEN}"
//! # token = "${JIRA_OAUTH_TOKEN}"    # or a bearer token (OAuth 2.0 / api.atlassian.com base URL)
//! ```
//!
//! WHERE filters on project, status, status category, assignee, priority, issue type, labels,
//! sprint and the created/updated/resolved times become one JQL query, every value quoted and
//! escaped so no value can change its meaning. Jira matches names case-insensitively and
//! compares times at minute precision in the user's time zone, so every clause is re-checked by
//! Joinery (the JQL returns a superset). `fields=` asks only for the columns the query reads.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use joinery_engine::rest::exec::read_column;
use joinery_engine::rest::plan::Vars;
use joinery_engine::rest::{RestConnector, TableSpec};
use joinery_engine::{Connector, Result, TableEntry};
use serde_json::{Value, json};

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};
use crate::rest::{HTTP_KEYS, fetcher_from};

pub struct JiraFactory;

/// The custom fields Jira Cloud uses for story points and sprints on company-managed
/// projects (configurable: `story_points_field`, `sprint_field`).
const STORY_POINTS: &str = "customfield_10016";
const SPRINT: &str = "customfield_10020";

pub fn tables(story_points: &str, sprint: &str) -> Vec<Value> {
    let offset_values = || json!({"type": "offset", "offset_param": "startAt", "total": "total", "is_last": "isLast"});
    vec![
        json!({
            "name": "projects",
            "description": "Projects",
            "path": "/rest/api/3/project/search",
            "records": "values",
            "pagination": offset_values(),
            "page_size": {"param": "maxResults", "max": 50},
            "columns": [
                {"name": "id", "type": "text"},
                {"name": "key", "type": "text", "description": "Project key (PAY)"},
                {"name": "name", "type": "text"},
                {"name": "project_type", "type": "text", "path": "projectTypeKey"},
                {"name": "lead", "type": "text", "path": "lead.displayName"},
                {"name": "raw", "type": "json", "path": "$"}
            ],
            "filters": [
                {"column": "key", "ops": ["eq", "in"], "param": "keys", "list": "repeat", "exact": true}
            ]
        }),
        json!({
            "name": "issues",
            "description": "Issues, searched with JQL built from the WHERE clause",
            "path": "/rest/api/3/search/jql",
            "records": "issues",
            "query_language": {
                "dialect": "jql", "param": "jql",
                "template": "{where} ORDER BY created DESC, key DESC",
                "default_where": "created >= \"1970-01-01\""
            },
            "fields": {"param": "fields", "under": "fields", "all": "*all", "always": ["created"]},
            "pagination": {"type": "cursor", "param": "nextPageToken", "response": "nextPageToken", "is_last": "isLast"},
            "page_size": {"param": "maxResults", "max": 100},
            "columns": [
                {"name": "key", "type": "text", "description": "Issue key (PAY-123)"},
                {"name": "id", "type": "text"},
                {"name": "project", "type": "text", "path": "fields.project.key", "description": "Project key"},
                {"name": "summary", "type": "text", "path": "fields.summary"},
                {"name": "status", "type": "text", "path": "fields.status.name", "description": "Status name (To Do, In Progress, Done, ...)"},
                {"name": "status_category", "type": "text", "path": "fields.status.statusCategory.name", "description": "To Do, In Progress or Done"},
                {"name": "priority", "type": "text", "path": "fields.priority.name"},
                {"name": "issue_type", "type": "text", "path": "fields.issuetype.name"},
                {"name": "assignee", "type": "text", "path": "fields.assignee.displayName"},
                {"name": "assignee_account_id", "type": "text", "path": "fields.assignee.accountId"},
                {"name": "reporter", "type": "text", "path": "fields.reporter.displayName"},
                {"name": "labels", "type": "text_list", "path": "fields.labels"},
                {"name": "story_points", "type": "double", "path": format!("fields.{story_points}"), "description": "Story point estimate"},
                {"name": "sprints", "type": "text_list", "path": format!("fields.{sprint}.*.name"), "description": "Names of the sprints the issue was in"},
                {"name": "created", "type": "timestamp", "path": "fields.created"},
                {"name": "updated", "type": "timestamp", "path": "fields.updated"},
                {"name": "resolved", "type": "timestamp", "path": "fields.resolutiondate"},
                {"name": "raw", "type": "json", "path": "$"}
            ],
            "filters": [
                {"column": "project", "ops": ["eq", "in"], "clause": "project"},
                {"column": "key", "ops": ["eq", "in"], "clause": "key"},
                // No `<>`/NOT IN: JQL matches these case-insensitively and by name, key or id,
                // so `status != "done"` would drop the "Done" issues SQL's `<>` keeps (a
                // re-check can remove rows, never bring them back).
                {"column": "status", "ops": ["eq", "in"], "clause": "status"},
                {"column": "status_category", "ops": ["eq", "in"], "clause": "statusCategory"},
                {"column": "priority", "ops": ["eq", "in"], "clause": "priority"},
                {"column": "issue_type", "ops": ["eq", "in"], "clause": "issuetype"},
                {"column": "assignee", "ops": ["is_null", "is_not_null"], "clause": "assignee"},
                {"column": "assignee_account_id", "ops": ["eq", "in", "is_null", "is_not_null"], "clause": "assignee"},
                {"column": "labels", "ops": ["contains"], "clause": "labels"},
                {"column": "sprints", "ops": ["contains"], "clause": "sprint"},
                {"column": "created", "ops": ["gt", "gte", "lt", "lte"], "clause": "created", "format": "iso8601"},
                {"column": "updated", "ops": ["gt", "gte", "lt", "lte"], "clause": "updated", "format": "iso8601"},
                {"column": "resolved", "ops": ["gt", "gte", "lt", "lte", "is_null", "is_not_null"], "clause": "resolved", "format": "iso8601"}
            ]
        }),
        json!({
            "name": "boards",
            "description": "Agile boards",
            "path": "/rest/agile/1.0/board",
            "records": "values",
            "pagination": offset_values(),
            "page_size": {"param": "maxResults", "max": 50},
            "columns": [
                {"name": "id", "type": "bigint"},
                {"name": "name", "type": "text"},
                {"name": "type", "type": "text", "description": "scrum or kanban"},
                {"name": "project", "type": "text", "path": "location.projectKey"},
                {"name": "raw", "type": "json", "path": "$"}
            ],
            "filters": [
                {"column": "project", "ops": ["eq"], "param": "projectKeyOrId"},
                {"column": "type", "ops": ["eq"], "param": "type", "exact": true}
            ]
        }),
        json!({
            "name": "sprints",
            "description": "Sprints of every scrum board",
            "path": "/rest/agile/1.0/board/{board_id}/sprint",
            "records": "values",
            "pagination": offset_values(),
            "page_size": {"param": "maxResults", "max": 50},
            "columns": [
                {"name": "id", "type": "bigint"},
                {"name": "board_id", "type": "text", "path": "{board_id}", "description": "The board listed"},
                {"name": "name", "type": "text"},
                {"name": "state", "type": "text", "description": "future, active or closed"},
                {"name": "goal", "type": "text"},
                {"name": "start_date", "type": "timestamp", "path": "startDate"},
                {"name": "end_date", "type": "timestamp", "path": "endDate"},
                {"name": "complete_date", "type": "timestamp", "path": "completeDate"},
                {"name": "raw", "type": "json", "path": "$"}
            ],
            "filters": [
                {"column": "board_id", "ops": ["eq", "in"], "path": "board_id", "exact": true},
                {"column": "state", "ops": ["eq", "in"], "param": "state", "list": "join", "exact": true}
            ]
        }),
    ]
}

impl ConnectorFactory for JiraFactory {
    fn kind(&self) -> &'static str {
        "jira"
    }

    fn description(&self) -> &'static str {
        "Jira Cloud: projects, issues (JQL pushdown), boards, sprints"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        [&["story_points_field", "sprint_field"][..], HTTP_KEYS].concat()
    }

    fn build(&self, spec: &ConnectionSpec, ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        let fetcher = fetcher_from(spec, ctx, None)?;
        let story_points = spec
            .str_option("story_points_field")?
            .unwrap_or(STORY_POINTS)
            .to_string();
        let sprint = spec
            .str_option("sprint_field")?
            .unwrap_or(SPRINT)
            .to_string();
        Ok(Arc::new(JiraConnector {
            fetcher,
            story_points,
            sprint,
        }))
    }
}

#[derive(Debug)]
pub struct JiraConnector {
    fetcher: Arc<joinery_engine::rest::Fetcher>,
    story_points: String,
    sprint: String,
}

impl JiraConnector {
    /// Scrum boards (sprints exist only there), read at start and on refresh.
    async fn scrum_boards(&self) -> Result<Vec<String>> {
        let spec = TableSpec::from_json(json!({
            "name": "boards",
            "path": "/rest/agile/1.0/board",
            "query": {"type": "scrum"},
            "records": "values",
            "pagination": {"type": "offset", "offset_param": "startAt", "total": "total", "is_last": "isLast"},
            "page_size": {"param": "maxResults", "max": 50},
            "columns": [{"name": "id", "type": "bigint"}]
        }))?;
        read_column(self.fetcher.clone(), spec, &Vars::new(), "id").await
    }
}

#[async_trait]
impl Connector for JiraConnector {
    fn kind(&self) -> &str {
        "jira"
    }

    async fn tables(&self) -> Result<Vec<TableEntry>> {
        // A connection that cannot list its boards still serves its tables: queries then fail
        // with the real cause (bad credentials, unreachable site) instead of the server not
        // starting; `sprints` needs a `board_id` filter until a refresh succeeds.
        let boards = match self.scrum_boards().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "jira: cannot list boards");
                Vec::new()
            }
        };
        let vars: Vars = [("board_id".to_string(), boards)].into_iter().collect();
        let specs = tables(&self.story_points, &self.sprint);
        RestConnector::from_json("jira", specs, self.fetcher.clone(), vars)?
            .tables()
            .await
    }

    async fn check(&self) -> Result<String> {
        let boards = self.scrum_boards().await?;
        Ok(format!("{} scrum boards", boards.len()))
    }
}
