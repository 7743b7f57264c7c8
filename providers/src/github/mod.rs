//! `kind = "github"`: repositories, issues, pull requests, commits, workflow runs and
//! deployments of the configured repositories, with GitHub's own filters pushed down.
//!
//! ```toml
//! [connections.github]
//! kind = "github"
//! token = "${GITHUB_TOKEN}"
//! repositories = ["acme/api", "acme/web"]   # or owner = "acme" for every repository of the org
//! # base_url = "https://ghe.acme.internal/api/v3"   # GitHub Enterprise Server
//! ```
//!
//! Every table but `repositories` has a `repository` column (`org/name`): `WHERE repository =
//! 'acme/api'` reads one repository, otherwise one request chain per configured repository.
//! GitHub hides closed issues and PRs unless asked (`state=open` is its default), so `state=all`
//! is sent whenever the query does not restrict `state`.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use joinery_engine::rest::exec::read_column;
use joinery_engine::rest::plan::Vars;
use joinery_engine::rest::{RestConnector, TableSpec};
use joinery_engine::{Connector, ErrorKind, JoineryError, Result, TableEntry};
use serde_json::{Value, json};

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};
use crate::rest::{HTTP_KEYS, fetcher_from};

pub const DEFAULT_BASE: &str = "https://api.github.com";

pub struct GithubFactory;

fn common(mut spec: Value) -> Value {
    if let Some(o) = spec.as_object_mut() {
        o.insert("pagination".into(), json!({"type": "link_header"}));
        o.insert("page_size".into(), json!({"param": "per_page", "max": 100}));
        o.insert("multi_segment".into(), json!(["repository"]));
        if let Some(cols) = o.get_mut("columns").and_then(Value::as_array_mut) {
            cols.insert(
                0,
                json!({"name": "repository", "type": "text", "path": "{repository}",
                       "description": "The repository, as org/name"}),
            );
            cols.push(json!({"name": "raw", "type": "json", "path": "$",
                             "description": "The whole object as GitHub returned it"}));
        }
        if let Some(filters) = o.get_mut("filters").and_then(Value::as_array_mut) {
            filters.insert(
                0,
                json!({"column": "repository", "ops": ["eq", "in"], "path": "repository", "exact": true}),
            );
        }
    }
    spec
}

/// The tables, as specs on the REST toolkit.
pub fn tables() -> Vec<Value> {
    let user = |name: &str, path: &str, d: &str| json!({"name": name, "type": "text", "path": path, "description": d});
    vec![
        json!({
            "name": "issues",
            "description": "Issues (pull requests excluded: see pull_requests)",
            "path": "/repos/{repository}/issues",
            "skip_if": "pull_request",
            "query": {"state": "all", "sort": "created", "direction": "desc"},
            "columns": [
                {"name": "number", "type": "bigint", "description": "Issue number within the repository"},
                {"name": "id", "type": "bigint"},
                {"name": "title", "type": "text"},
                {"name": "state", "type": "text", "description": "open or closed"},
                {"name": "state_reason", "type": "text", "description": "completed, not_planned, reopened"},
                user("user_login", "user.login", "Author's login"),
                user("assignee", "assignee.login", "Assignee's login (NULL when unassigned)"),
                {"name": "labels", "type": "text_list", "path": "labels.*.name", "description": "Label names"},
                {"name": "comments", "type": "bigint"},
                {"name": "created_at", "type": "timestamp"},
                {"name": "updated_at", "type": "timestamp"},
                {"name": "closed_at", "type": "timestamp"},
                {"name": "html_url", "type": "text"},
                {"name": "body", "type": "text"}
            ],
            "filters": [
                {"column": "state", "ops": ["eq"], "param": "state", "format": "lowercase", "exact": false},
                {"column": "updated_at", "ops": ["gte", "gt"], "param": "since", "format": "iso8601"},
                {"column": "labels", "ops": ["contains"], "param": "labels"},
                {"column": "assignee", "ops": ["eq"], "param": "assignee", "exact": true},
                {"column": "user_login", "ops": ["eq"], "param": "creator"}
            ],
            "sort": [
                {"column": "created_at", "param": "sort", "value": "created", "direction_param": "direction"},
                {"column": "updated_at", "param": "sort", "value": "updated", "direction_param": "direction"}
            ]
        }),
        json!({
            "name": "pull_requests",
            "description": "Pull requests",
            "path": "/repos/{repository}/pulls",
            "query": {"state": "all", "sort": "created", "direction": "desc"},
            "columns": [
                {"name": "number", "type": "bigint"},
                {"name": "id", "type": "bigint"},
                {"name": "title", "type": "text", "description": "Title; the demo's PRs name their Jira issue (PAY-123)"},
                {"name": "state", "type": "text", "description": "open or closed (merged PRs are closed with merged_at set)"},
                {"name": "draft", "type": "boolean"},
                user("user_login", "user.login", "Author's login"),
                {"name": "head_ref", "type": "text", "path": "head.ref", "description": "Source branch"},
                {"name": "base_ref", "type": "text", "path": "base.ref", "description": "Target branch"},
                {"name": "labels", "type": "text_list", "path": "labels.*.name"},
                {"name": "created_at", "type": "timestamp"},
                {"name": "updated_at", "type": "timestamp"},
                {"name": "closed_at", "type": "timestamp"},
                {"name": "merged_at", "type": "timestamp", "description": "When merged (NULL if not merged)"},
                {"name": "html_url", "type": "text"}
            ],
            "filters": [
                {"column": "state", "ops": ["eq"], "param": "state", "format": "lowercase"},
                {"column": "base_ref", "ops": ["eq"], "param": "base", "exact": true}
            ],
            "sort": [
                {"column": "created_at", "param": "sort", "value": "created", "direction_param": "direction"},
                {"column": "updated_at", "param": "sort", "value": "updated", "direction_param": "direction"}
            ]
        }),
        json!({
            "name": "commits",
            "description": "Commits of the default branch (or the branch named by sha)",
            "path": "/repos/{repository}/commits",
            "columns": [
                {"name": "sha", "type": "text"},
                {"name": "message", "type": "text", "path": "commit.message"},
                {"name": "author_name", "type": "text", "path": "commit.author.name"},
                {"name": "author_email", "type": "text", "path": "commit.author.email"},
                user("author_login", "author.login", "GitHub login of the author, when known"),
                {"name": "committed_at", "type": "timestamp", "path": "commit.committer.date", "description": "Git committer date"},
                {"name": "authored_at", "type": "timestamp", "path": "commit.author.date"},
                {"name": "html_url", "type": "text"}
            ],
            "filters": [
                {"column": "committed_at", "ops": ["gte", "gt"], "param": "since", "format": "iso8601"},
                {"column": "committed_at", "ops": ["lte", "lt"], "param": "until", "format": "iso8601"},
                {"column": "author_login", "ops": ["eq"], "param": "author"}
            ]
        }),
        json!({
            "name": "workflow_runs",
            "description": "GitHub Actions workflow runs",
            "path": "/repos/{repository}/actions/runs",
            "records": "workflow_runs",
            "columns": [
                {"name": "id", "type": "bigint"},
                {"name": "name", "type": "text", "description": "Workflow name"},
                {"name": "run_number", "type": "bigint"},
                {"name": "event", "type": "text", "description": "push, pull_request, schedule, ..."},
                {"name": "status", "type": "text", "description": "queued, in_progress, completed, ..."},
                {"name": "conclusion", "type": "text", "description": "success, failure, cancelled, ... (NULL until completed)"},
                {"name": "head_branch", "type": "text"},
                {"name": "head_sha", "type": "text"},
                user("actor_login", "actor.login", "Who triggered the run"),
                {"name": "created_at", "type": "timestamp"},
                {"name": "updated_at", "type": "timestamp"},
                {"name": "html_url", "type": "text"}
            ],
            "filters": [
                {"column": "status", "ops": ["eq"], "param": "status", "exact": true},
                {"column": "conclusion", "ops": ["eq"], "param": "status", "exact": true},
                {"column": "head_branch", "ops": ["eq"], "param": "branch", "exact": true},
                {"column": "event", "ops": ["eq"], "param": "event", "exact": true},
                {"column": "actor_login", "ops": ["eq"], "param": "actor", "exact": true}
            ]
        }),
        json!({
            "name": "deployments",
            "description": "Deployments, newest first",
            "path": "/repos/{repository}/deployments",
            "columns": [
                {"name": "id", "type": "bigint"},
                {"name": "sha", "type": "text"},
                {"name": "ref", "type": "text"},
                {"name": "task", "type": "text"},
                {"name": "environment", "type": "text", "description": "production, staging, ..."},
                {"name": "description", "type": "text"},
                user("creator_login", "creator.login", "Who created the deployment"),
                {"name": "created_at", "type": "timestamp"},
                {"name": "updated_at", "type": "timestamp"}
            ],
            "filters": [
                {"column": "environment", "ops": ["eq"], "param": "environment", "exact": true},
                {"column": "ref", "ops": ["eq"], "param": "ref", "exact": true},
                {"column": "sha", "ops": ["eq"], "param": "sha", "exact": true},
                {"column": "task", "ops": ["eq"], "param": "task", "exact": true}
            ]
        }),
    ]
    .into_iter()
    .map(common)
    .collect()
}

fn repositories_table() -> Value {
    json!({
        "name": "repositories",
        "description": "The configured repositories",
        "path": "/repos/{repository}",
        "records": "$",
        "multi_segment": ["repository"],
        "columns": [
            {"name": "full_name", "type": "text", "description": "org/name"},
            {"name": "id", "type": "bigint"},
            {"name": "name", "type": "text"},
            {"name": "owner_login", "type": "text", "path": "owner.login"},
            {"name": "private", "type": "boolean"},
            {"name": "description", "type": "text"},
            {"name": "default_branch", "type": "text"},
            {"name": "language", "type": "text"},
            {"name": "open_issues_count", "type": "bigint", "description": "Open issues and PRs"},
            {"name": "created_at", "type": "timestamp"},
            {"name": "pushed_at", "type": "timestamp"},
            {"name": "html_url", "type": "text"},
            {"name": "raw", "type": "json", "path": "$"}
        ],
        "filters": [
            {"column": "full_name", "ops": ["eq", "in"], "path": "repository", "exact": true}
        ]
    })
}

impl ConnectorFactory for GithubFactory {
    fn kind(&self) -> &'static str {
        "github"
    }

    fn description(&self) -> &'static str {
        "GitHub: repositories, issues, pull requests, commits, workflow runs, deployments"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        [&["owner", "repositories"][..], HTTP_KEYS].concat()
    }

    fn build(&self, spec: &ConnectionSpec, ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        let mut spec = spec.clone();
        // GitHub's recommended headers (the user's `headers` win).
        let headers = spec
            .options
            .entry("headers".to_string())
            .or_insert_with(|| json!({}));
        if let Some(h) = headers.as_object_mut() {
            h.entry("Accept")
                .or_insert_with(|| json!("application/vnd.github+json"));
            h.entry("X-GitHub-Api-Version")
                .or_insert_with(|| json!("2022-11-28"));
        }
        let repositories: Vec<String> = match spec.options.get("repositories") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .filter(|s| s.split('/').count() == 2 && !s.contains(".."))
                        .map(str::to_string)
                        .ok_or_else(|| {
                            JoineryError::config(format!(
                                "connection '{}': repositories are \"org/name\" strings",
                                spec.name
                            ))
                        })
                })
                .collect::<Result<_>>()?,
            Some(_) => {
                return Err(JoineryError::config(format!(
                    "connection '{}': repositories must be a list of \"org/name\"",
                    spec.name
                )));
            }
        };
        let owner = spec.str_option("owner")?.map(str::to_string);
        if repositories.is_empty() && owner.is_none() {
            return Err(JoineryError::config(format!(
                "connection '{}': set repositories = [\"org/name\", ...] or owner = \"org\"",
                spec.name
            )));
        }
        let fetcher = fetcher_from(&spec, ctx, Some(DEFAULT_BASE))?;
        Ok(Arc::new(GithubConnector {
            fetcher,
            repositories,
            owner,
        }))
    }
}

#[derive(Debug)]
pub struct GithubConnector {
    fetcher: Arc<joinery_engine::rest::Fetcher>,
    repositories: Vec<String>,
    owner: Option<String>,
}

impl GithubConnector {
    /// The repositories to read: the configured list, or every repository of `owner`
    /// (organization first, then user), read at start and on refresh.
    async fn repositories(&self) -> Result<Vec<String>> {
        if !self.repositories.is_empty() {
            return Ok(self.repositories.clone());
        }
        let Some(owner) = &self.owner else {
            return Ok(Vec::new());
        };
        for kind in ["orgs", "users"] {
            let spec = TableSpec::from_json(json!({
                "name": "repositories",
                "path": format!("/{kind}/{{owner}}/repos"),
                "pagination": {"type": "link_header"},
                "page_size": {"param": "per_page", "max": 100},
                "columns": [{"name": "full_name", "type": "text"}]
            }))?;
            let vars: Vars = [("owner".to_string(), vec![owner.clone()])]
                .into_iter()
                .collect();
            match read_column(self.fetcher.clone(), spec, &vars, "full_name").await {
                Ok(repos) => return Ok(repos),
                // Not an organization: try the user of that name.
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(JoineryError::new(
            ErrorKind::NotFound,
            format!("GitHub has no organization or user named '{owner}'"),
        ))
    }
}

#[async_trait]
impl Connector for GithubConnector {
    fn kind(&self) -> &str {
        "github"
    }

    async fn tables(&self) -> Result<Vec<TableEntry>> {
        let repos = self.repositories().await?;
        let vars: Vars = [("repository".to_string(), repos)].into_iter().collect();
        let specs = std::iter::once(repositories_table())
            .chain(tables())
            .collect();
        RestConnector::from_json("github", specs, self.fetcher.clone(), vars)?
            .tables()
            .await
    }

    async fn check(&self) -> Result<String> {
        let repos = self.repositories().await?;
        Ok(format!("{} repositories", repos.len()))
    }
}
