//! The demo world behind a test server, and the query set the benchmarks and the fault matrix
//! both run: the brief's question, single-tool filtered reads, a LIMIT on a large table, and a
//! SaaS x warehouse join.

use std::time::Duration;

use joinery_providers::demo::world::{self, DemoWorld};

use crate::TestServer;

/// The brief's question as one statement: shipping velocity this quarter against last quarter
/// (merged PRs and the story points of the Jira issues they name), and the open P0 incidents
/// hitting the top-10 Salesforce accounts by the warehouse's revenue.
pub const BRIEF_QUESTION: &str = "
WITH merged AS (
  SELECT p.merged_at, j.story_points
  FROM github.pull_requests p
  LEFT JOIN jira.issues j ON j.key = split_part(p.title, ':', 1)
  WHERE p.state = 'closed' AND p.merged_at >= TIMESTAMP '2026-05-24 12:00:00'
),
velocity AS (
  SELECT count(*) FILTER (WHERE merged_at >= TIMESTAMP '2026-08-22 12:00:00') AS prs_this_quarter,
         count(*) FILTER (WHERE merged_at <  TIMESTAMP '2026-08-22 12:00:00') AS prs_last_quarter,
         sum(story_points) FILTER (WHERE merged_at >= TIMESTAMP '2026-08-22 12:00:00') AS points_this_quarter,
         sum(story_points) FILTER (WHERE merged_at <  TIMESTAMP '2026-08-22 12:00:00') AS points_last_quarter
  FROM merged
),
top_customers AS (
  SELECT a.id, a.name, sum(r.mrr) AS revenue_12m
  FROM salesforce.accounts a JOIN warehouse.revenue r ON r.account_id = a.id
  GROUP BY a.id, a.name ORDER BY revenue_12m DESC LIMIT 10
),
p0 AS (
  SELECT count(DISTINCT i.id) AS open_p0_incidents,
         string_agg(DISTINCT c.name, ', ' ORDER BY c.name) AS top_customers_affected
  FROM pagerduty.incidents i
  JOIN warehouse.service_accounts m ON m.service_id = i.service_id
  JOIN top_customers c ON c.id = m.account_id
  WHERE i.status <> 'resolved' AND i.priority = 'P0'
)
SELECT * FROM velocity CROSS JOIN p0";

/// One query of the set.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadQuery {
    pub name: &'static str,
    pub sql: &'static str,
    /// The connections (fakes) it reads.
    pub connections: &'static [&'static str],
    /// A statement giving the fewest API calls the query's filters allow: the matching rows
    /// of each endpoint divided by the API's largest page, rounded up, at least one request.
    pub min_calls_sql: &'static str,
    /// The longest run of requests that must follow one another (pages of one cursor), when
    /// it differs from `min_calls_sql`: with independent endpoints fetched in parallel, this
    /// many API round trips is the physical floor of the query's latency.
    pub chain_sql: Option<&'static str>,
}

/// The query set (the 1M-row aggregate lives in the bench runner: it needs a warehouse table
/// that size).
pub const QUERIES: &[WorkloadQuery] = &[
    WorkloadQuery {
        name: "brief question (4 tools + warehouse)",
        sql: BRIEF_QUESTION,
        connections: &["github", "jira", "pagerduty", "salesforce"],
        min_calls_sql: "SELECT
            (SELECT sum(greatest(ceil(n / 100.0), 1)) FROM (SELECT repository, count(*) AS n
               FROM github.pull_requests WHERE state = 'closed' GROUP BY repository) g)
          + (SELECT greatest(ceil(count(*) / 100.0), 1) FROM jira.issues)
          + (SELECT greatest(ceil(count(*) / 100.0), 1) FROM pagerduty.incidents)
          + (SELECT greatest(ceil(count(*) / 2000.0), 1) FROM salesforce.accounts)",
        chain_sql: Some(
            "SELECT greatest(
            (SELECT max(greatest(ceil(n / 100.0), 1)) FROM (SELECT repository, count(*) AS n
               FROM github.pull_requests WHERE state = 'closed' GROUP BY repository) g),
            (SELECT greatest(ceil(count(*) / 100.0), 1) FROM jira.issues),
            (SELECT greatest(ceil(count(*) / 100.0), 1) FROM pagerduty.incidents),
            (SELECT greatest(ceil(count(*) / 2000.0), 1) FROM salesforce.accounts))",
        ),
    },
    WorkloadQuery {
        name: "github: open PRs of one repository",
        sql: "SELECT number, title, user_login FROM github.pull_requests \
              WHERE repository = 'acme/api' AND state = 'open' ORDER BY number",
        connections: &["github"],
        min_calls_sql: "SELECT greatest(ceil(count(*) / 100.0), 1) FROM github.pull_requests \
              WHERE repository = 'acme/api' AND state = 'open'",
        chain_sql: None,
    },
    WorkloadQuery {
        name: "jira: one project's unfinished issues",
        sql: "SELECT key, summary, status FROM jira.issues \
              WHERE project = 'PAY' AND status <> 'Done' ORDER BY key",
        connections: &["jira"],
        // `<>` cannot go into JQL (its `!=` is case-insensitive), so every PAY issue is read.
        min_calls_sql: "SELECT greatest(ceil(count(*) / 100.0), 1) FROM jira.issues \
              WHERE project = 'PAY'",
        chain_sql: None,
    },
    WorkloadQuery {
        name: "stripe: LIMIT 10 on charges",
        sql: "SELECT id, amount, currency FROM stripe.charges LIMIT 10",
        connections: &["stripe"],
        min_calls_sql: "SELECT 1",
        chain_sql: None,
    },
    WorkloadQuery {
        name: "salesforce x warehouse: top accounts by revenue",
        sql: "SELECT a.name, sum(r.mrr) AS revenue FROM salesforce.accounts a \
              JOIN warehouse.revenue r ON r.account_id = a.id \
              GROUP BY a.name ORDER BY revenue DESC, a.name LIMIT 5",
        connections: &["salesforce"],
        min_calls_sql: "SELECT greatest(ceil(count(*) / 2000.0), 1) FROM salesforce.accounts",
        chain_sql: None,
    },
];

fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => format!("{s:?}"),
        serde_json::Value::Array(a) => format!(
            "[{}]",
            a.iter().map(toml_value).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// A running demo world and a server over it.
pub struct DemoServer {
    pub world: DemoWorld,
    pub server: TestServer,
    _dir: tempfile::TempDir,
}

impl DemoServer {
    /// Start the world (`seed`, `scale`, `api_latency`) with `extra` options added to every
    /// API connection (e.g. `timeout_ms = 500`) and `server` lines in `[server]`.
    pub async fn start(
        seed: u64,
        scale: u64,
        api_latency: Duration,
        extra: &str,
        server: &str,
    ) -> DemoServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = world::start(seed, scale, world::default_as_of(), api_latency, dir.path())
            .await
            .expect("world starts");
        let mut toml = format!("[server]\nlisten = \"127.0.0.1:0\"\n{server}\n");
        for c in &w.connections {
            toml.push_str(&format!(
                "\n[connections.{}]\nkind = \"{}\"\n",
                c.name, c.kind
            ));
            if let Some(b) = &c.base_url {
                toml.push_str(&format!("base_url = \"{b}\"\n{extra}\n"));
            }
            for (k, v) in &c.options {
                toml.push_str(&format!("{k} = {}\n", toml_value(v)));
            }
        }
        let server = TestServer::with_config(&toml).await;
        DemoServer {
            world: w,
            server,
            _dir: dir,
        }
    }

    /// The fake serving `connection`.
    pub fn fake(&self, connection: &str) -> &joinery_engine::rest::fakekit::FakeServer {
        self.world
            .fakes
            .iter()
            .find(|(n, _)| n == connection)
            .map(|(_, f)| f)
            .unwrap_or_else(|| panic!("no fake for {connection}"))
    }

    /// Requests every fake has received.
    pub fn total_requests(&self) -> usize {
        self.world
            .fakes
            .iter()
            .map(|(_, f)| f.request_count())
            .sum()
    }
}
