"""The brief's question the way a data team would answer it today: dlt + DuckDB.

dlt's REST API source loads the tables the question needs from the demo world's fake GitHub,
Jira, PagerDuty and Salesforce APIs into a DuckDB file (full loads, every page), then DuckDB
answers the same question over those tables and the warehouse files, read in place.

Input: the JOINERY_DEMO environment variable, JSON with each API's base URL and credentials
and the warehouse directory (see README.md). Output: one JSON line on stdout with the timings,
the answer, the rows loaded and the versions; everything else goes to stderr. Run it with the
python of the venv setup.sh prepares.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# No telemetry (the machine reaches no host but the fakes) and no traces outside the temp dir.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

_started = time.perf_counter()
import dlt  # noqa: E402
import duckdb  # noqa: E402
from dlt.sources.helpers import requests  # noqa: E402
from dlt.sources.rest_api import RESTAPIConfig, rest_api_source  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _started

#: Jira Cloud's story-points field on company-managed projects (the Jira connector's default).
STORY_POINTS_FIELD = "customfield_10016"
SALESFORCE_API_VERSION = "v62.0"
#: One dataset (DuckDB schema) for everything the pipeline loads.
DATASET = "saas"


def log(message: str) -> None:
    print(f"compare: {message}", file=sys.stderr, flush=True)


def github_source(cfg: dict[str, Any]) -> Any:
    """Pull requests of every repository, open and closed, following the Link header."""
    config: RESTAPIConfig = {
        "client": {
            "base_url": cfg["base_url"],
            "auth": {"type": "bearer", "token": cfg["token"]},
            "headers": {"Accept": "application/vnd.github+json"},
            "paginator": {"type": "header_link"},
        },
        "resource_defaults": {"write_disposition": "replace"},
        # One resource per repository, all into one table.
        "resources": [
            {
                "name": f"pull_requests_{repo.replace('/', '_')}",
                "table_name": "pull_requests",
                "endpoint": {
                    "path": f"repos/{repo}/pulls",
                    "params": {"state": "all", "per_page": 100},
                },
            }
            for repo in cfg["repositories"]
        ],
    }
    return rest_api_source(config, name="github")


def jira_source(cfg: dict[str, Any]) -> Any:
    """Every issue's key and story points, through the JQL search and its nextPageToken."""
    config: RESTAPIConfig = {
        "client": {
            "base_url": cfg["base_url"],
            "auth": {"type": "http_basic", "username": cfg["user"], "password": cfg["token"]},
        },
        "resource_defaults": {"write_disposition": "replace"},
        "resources": [
            {
                "name": "issues",
                "endpoint": {
                    "path": "rest/api/3/search/jql",
                    "params": {
                        # Jira Cloud refuses unbounded JQL: "everything" needs a restriction.
                        "jql": 'created >= "1970-01-01" ORDER BY created DESC',
                        "fields": f"key,{STORY_POINTS_FIELD}",
                        "maxResults": 100,
                    },
                    "data_selector": "issues",
                    "paginator": {
                        "type": "cursor",
                        "cursor_path": "nextPageToken",
                        "cursor_param": "nextPageToken",
                    },
                },
                "processing_steps": [
                    {
                        "map": lambda issue: {
                            "id": issue["id"],
                            "key": issue["key"],
                            "story_points": issue.get("fields", {}).get(STORY_POINTS_FIELD),
                        }
                    }
                ],
            }
        ],
    }
    return rest_api_source(config, name="jira")


def pagerduty_source(cfg: dict[str, Any]) -> Any:
    """Every incident: date_range=all (the default window is the last month), offset paging."""
    config: RESTAPIConfig = {
        "client": {
            "base_url": cfg["base_url"],
            "auth": {
                "type": "api_key",
                "name": "Authorization",
                "api_key": f"Token token={cfg['token']}",
                "location": "header",
            },
            "headers": {"Accept": "application/vnd.pagerduty+json;version=2"},
        },
        "resource_defaults": {"write_disposition": "replace"},
        "resources": [
            {
                "name": "incidents",
                "endpoint": {
                    "path": "incidents",
                    "params": {"date_range": "all"},
                    "data_selector": "incidents",
                    # PagerDuty sends `total: null` unless asked: page on `more` instead.
                    "paginator": {
                        "type": "offset",
                        "limit": 100,
                        "offset_param": "offset",
                        "limit_param": "limit",
                        "total_path": None,
                        "has_more_path": "more",
                    },
                },
            }
        ],
    }
    return rest_api_source(config, name="pagerduty")


def salesforce_login(cfg: dict[str, Any]) -> tuple[str, str]:
    """The OAuth refresh-token grant: an access token and the instance URL to call."""
    response = requests.post(
        f"{cfg['base_url'].rstrip('/')}/services/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": cfg["client_id"],
            "client_secret": cfg["client_secret"],
            "refresh_token": cfg["refresh_token"],
        },
    )
    response.raise_for_status()
    body = response.json()
    return body["instance_url"], body["access_token"]


def salesforce_source(cfg: dict[str, Any]) -> Any:
    """Every account's Id and Name through SOQL, following nextRecordsUrl."""
    instance_url, access_token = salesforce_login(cfg)
    config: RESTAPIConfig = {
        "client": {
            "base_url": instance_url,
            "auth": {"type": "bearer", "token": access_token},
        },
        "resource_defaults": {"write_disposition": "replace"},
        "resources": [
            {
                "name": "accounts",
                "endpoint": {
                    "path": f"services/data/{SALESFORCE_API_VERSION}/query",
                    "params": {"q": "SELECT Id, Name FROM Account"},
                    "data_selector": "records",
                    "paginator": {"type": "json_link", "next_url_path": "nextRecordsUrl"},
                },
            }
        ],
    }
    return rest_api_source(config, name="salesforce")


def load(demo: dict[str, Any], db_path: Path, work_dir: Path) -> dict[str, int]:
    """Run the pipeline; the rows loaded per table (dlt's own tables left out)."""
    pipeline = dlt.pipeline(
        pipeline_name="joinery_compare",
        pipelines_dir=str(work_dir / "pipelines"),
        destination=dlt.destinations.duckdb(str(db_path)),
        dataset_name=DATASET,
    )
    sources = [
        github_source(demo["github"]),
        jira_source(demo["jira"]),
        pagerduty_source(demo["pagerduty"]),
        salesforce_source(demo["salesforce"]),
    ]
    info = pipeline.run(sources)
    log(str(info))
    counts = pipeline.last_trace.last_normalize_info.row_counts
    return {t: n for t, n in sorted(counts.items()) if not t.startswith("_dlt")}


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# Joinery's statement over the dlt tables. Column names are dlt's: nested objects are flattened
# with `__` (PagerDuty's `priority.summary` is `priority__summary`, `service.id` is
# `service__id`); `merged_at` is a TIMESTAMPTZ (dlt detects ISO timestamps), so the bounds are
# given in UTC.
QUESTION = f"""
WITH merged AS (
  SELECT p.merged_at, j.story_points
  FROM {DATASET}.pull_requests p
  LEFT JOIN {DATASET}.issues j ON j.key = split_part(p.title, ':', 1)
  WHERE p.state = 'closed' AND p.merged_at >= TIMESTAMPTZ '2026-05-24 12:00:00+00'
),
velocity AS (
  SELECT count(*) FILTER (WHERE merged_at >= TIMESTAMPTZ '2026-08-22 12:00:00+00') AS prs_this_quarter,
         count(*) FILTER (WHERE merged_at <  TIMESTAMPTZ '2026-08-22 12:00:00+00') AS prs_last_quarter,
         sum(story_points) FILTER (WHERE merged_at >= TIMESTAMPTZ '2026-08-22 12:00:00+00') AS points_this_quarter,
         sum(story_points) FILTER (WHERE merged_at <  TIMESTAMPTZ '2026-08-22 12:00:00+00') AS points_last_quarter
  FROM merged
),
top_customers AS (
  SELECT a.id, a.name, sum(r.mrr) AS revenue_12m
  FROM {DATASET}.accounts a JOIN warehouse.revenue r ON r.account_id = a.id
  GROUP BY a.id, a.name ORDER BY revenue_12m DESC LIMIT 10
),
p0 AS (
  SELECT count(DISTINCT i.id) AS open_p0_incidents,
         -- Sorted so the output is deterministic (Joinery's string_agg order is unspecified).
         string_agg(DISTINCT c.name, ', ' ORDER BY c.name) AS top_customers_affected
  FROM {DATASET}.incidents i
  JOIN warehouse.service_accounts m ON m.service_id = i.service__id
  JOIN top_customers c ON c.id = m.account_id
  WHERE i.status <> 'resolved' AND i.priority__summary = 'P0'
)
SELECT * FROM velocity CROSS JOIN p0
"""


def answer(db_path: Path, warehouse_dir: Path) -> dict[str, Any]:
    """Ask the question in DuckDB; the warehouse files are read in place, as views."""
    with duckdb.connect(str(db_path)) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("CREATE SCHEMA IF NOT EXISTS warehouse")
        revenue = sql_literal(str(warehouse_dir / "revenue" / "month=*" / "*.parquet"))
        con.execute(
            "CREATE OR REPLACE VIEW warehouse.revenue AS "
            f"SELECT * FROM read_parquet({revenue}, hive_partitioning = true)"
        )
        for name in ("service_accounts", "accounts"):
            path = sql_literal(str(warehouse_dir / f"{name}.csv"))
            con.execute(
                f"CREATE OR REPLACE VIEW warehouse.{name} AS SELECT * FROM read_csv_auto({path})"
            )
        cursor = con.execute(QUESTION)
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    if len(rows) != 1:
        raise RuntimeError(f"the question returned {len(rows)} rows, expected 1")
    return dict(zip(columns, rows[0]))


def main() -> int:
    raw = os.environ.get("JOINERY_DEMO")
    if not raw:
        log("JOINERY_DEMO is not set (JSON with the fakes' base URLs and the warehouse_dir)")
        return 2
    try:
        demo = json.loads(raw)
        warehouse_dir = Path(demo["warehouse_dir"])
    except (ValueError, KeyError, TypeError) as e:
        log(f"JOINERY_DEMO is not the expected JSON: {e!r}")
        return 2
    if not warehouse_dir.is_dir():
        log(f"the warehouse directory {warehouse_dir} does not exist")
        return 2

    with tempfile.TemporaryDirectory(prefix="joinery-dlt-") as tmp:
        work_dir = Path(tmp)
        db_path = work_dir / "demo.duckdb"
        try:
            # dlt and its sources may print; stdout carries only the result line.
            with contextlib.redirect_stdout(sys.stderr):
                started = time.perf_counter()
                rows_loaded = load(demo, db_path, work_dir)
                loaded = time.perf_counter()
                result = answer(db_path, warehouse_dir)
                answered = time.perf_counter()
        except Exception as e:  # noqa: BLE001 - report any failure, then exit non-zero
            log(f"failed: {type(e).__name__}: {e}")
            return 1

    print(
        json.dumps(
            {
                "load_seconds": round(loaded - started, 3),
                "query_seconds": round(answered - loaded, 3),
                "total_seconds": round(answered - started, 3),
                "import_seconds": round(IMPORT_SECONDS, 3),
                "answer": result,
                "rows_loaded": rows_loaded,
                "dlt_version": dlt.__version__,
                "duckdb_version": duckdb.__version__,
            },
            default=str,
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
