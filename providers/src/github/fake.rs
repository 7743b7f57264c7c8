//! A fake of the GitHub REST API (the endpoints the connector reads), after GitHub's own
//! behaviour: `state=open` by default, pull requests mixed into the issues list, `since` as
//! `updated_at >=`, labels ANDed case-insensitively, `per_page` capped at 100, `Link` headers
//! with absolute URLs and no `rel="next"` on the last page, `x-ratelimit-*` headers on every
//! answer and a 403 with `x-ratelimit-remaining: 0` when the budget is spent, `Bad credentials`
//! 401s and `Not Found` 404s with GitHub's error bodies. Objects are built from the official
//! examples in `examples/`, so field names and nesting are GitHub's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Value, json};

const ISSUE: &str = include_str!("examples/github_issue.json");
const PULL: &str = include_str!("examples/github_pull.json");
const COMMIT: &str = include_str!("examples/github_commit.json");

/// One repository's data.
#[derive(Debug, Clone, Default)]
pub struct RepoData {
    pub repo: Value,
    /// Issues and the issue side of pull requests (with `pull_request`), newest first.
    pub issues: Vec<Value>,
    pub pulls: Vec<Value>,
    pub commits: Vec<Value>,
    pub runs: Vec<Value>,
    pub deployments: Vec<Value>,
}

/// What the fake serves.
#[derive(Debug, Clone, Default)]
pub struct GithubData {
    pub repos: BTreeMap<String, RepoData>,
}

#[derive(Debug)]
pub struct FakeState {
    data: GithubData,
    token: Option<String>,
    limit: u64,
    used: u64,
    reset: i64,
}

pub type Shared = Arc<Mutex<FakeState>>;

use crate::fakeutil::{Rng, parse_time, template, ts};

/// The people of the demo engineering team.
pub const ENGINEERS: &[&str] = &[
    "ada-l",
    "grace-h",
    "linus-t",
    "barbara-l",
    "ken-t",
    "margaret-h",
    "dennis-r",
    "radia-p",
];
const LABELS: &[&str] = &[
    "bug",
    "enhancement",
    "P0",
    "P1",
    "tech-debt",
    "security",
    "docs",
];
const VERBS: &[&str] = &[
    "Fix", "Add", "Refactor", "Speed up", "Harden", "Remove", "Document",
];
const THINGS: &[&str] = &[
    "retry on 429",
    "invoice export",
    "SSO login",
    "webhook delivery",
    "search index",
    "rate limiter",
    "billing cron",
    "audit trail",
    "CSV import",
    "payment retries",
];

/// A world for the fake: `repos` (`org/name`), each with issues, PRs (titles naming the
/// `jira_keys` round-robin), commits, workflow runs and deployments over the 180 days before
/// `as_of`. Deterministic in `seed`; `scale` multiplies the volumes.
pub fn generate(
    seed: u64,
    as_of: DateTime<Utc>,
    repos: &[&str],
    jira_keys: &[String],
    scale: u64,
) -> GithubData {
    let mut rng = Rng(seed ^ 0x6769_7468_7562);
    let issue_t = template(ISSUE);
    let pull_t = template(PULL);
    let commit_t = template(COMMIT);
    let mut out = GithubData::default();
    let mut key_i = 0usize;
    for (ri, full) in repos.iter().enumerate() {
        let (org, name) = full.split_once('/').unwrap_or(("acme", full));
        let repo_id = 1_000 + ri as i64;
        let api = format!("https://api.github.com/repos/{full}");
        let html = format!("https://github.com/{full}");
        let repo = json!({
            "id": repo_id, "node_id": format!("R_{repo_id}"), "name": name, "full_name": full,
            "private": true, "owner": {"login": org, "id": 1, "type": "Organization"},
            "html_url": html, "description": format!("The {name} service"),
            "url": api, "default_branch": "main", "language": "Rust",
            "open_issues_count": 0, "created_at": ts(as_of - ChronoDuration::days(900)),
            "pushed_at": ts(as_of - ChronoDuration::hours(3)), "visibility": "private"
        });
        let mut data = RepoData {
            repo,
            ..RepoData::default()
        };
        let n_items = 60 * scale as usize;
        let mut number = 0i64;
        for i in 0..n_items {
            number += 1;
            let created = as_of - ChronoDuration::minutes((rng.below(180 * 24 * 60)) as i64);
            let updated = created + ChronoDuration::minutes(rng.below(20 * 24 * 60) as i64);
            let updated = updated.min(as_of);
            let author = *rng.pick(ENGINEERS);
            let is_pr = i % 2 == 0;
            let closed = rng.below(100) < 70;
            let closed_at = closed.then(|| (updated).min(as_of));
            let mut labels: Vec<Value> = Vec::new();
            for _ in 0..rng.below(3) {
                let l = *rng.pick(LABELS);
                if !labels.iter().any(|x| x["name"] == l) {
                    labels.push(json!({"id": 208_045_946 + labels.len() as i64, "name": l,
                        "color": "f29513", "default": false, "description": Value::Null}));
                }
            }
            let assignee = (rng.below(4) != 0).then(|| *rng.pick(ENGINEERS));
            let user = |login: &str| json!({"login": login, "id": 100 + ENGINEERS.iter().position(|e| *e == login).unwrap_or(0) as i64, "type": "User", "site_admin": false});
            let title = if is_pr && !jira_keys.is_empty() {
                let k = &jira_keys[key_i % jira_keys.len()];
                key_i += 1;
                format!("{k}: {} {}", rng.pick(VERBS), rng.pick(THINGS))
            } else {
                format!("{} {}", rng.pick(VERBS), rng.pick(THINGS))
            };
            let id = repo_id * 100_000 + number;
            let mut issue = issue_t.clone();
            if let Some(o) = issue.as_object_mut() {
                o.insert("id".into(), json!(id));
                o.insert("node_id".into(), json!(format!("I_{id}")));
                o.insert("number".into(), json!(number));
                o.insert("title".into(), json!(title));
                o.insert("body".into(), json!(format!("Details of {title}.")));
                o.insert(
                    "state".into(),
                    json!(if closed { "closed" } else { "open" }),
                );
                o.insert(
                    "state_reason".into(),
                    if closed {
                        json!("completed")
                    } else {
                        Value::Null
                    },
                );
                o.insert("user".into(), user(author));
                o.insert("labels".into(), Value::Array(labels.clone()));
                o.insert("assignee".into(), assignee.map(user).unwrap_or(Value::Null));
                o.insert(
                    "assignees".into(),
                    Value::Array(assignee.map(user).into_iter().collect()),
                );
                o.insert("comments".into(), json!(rng.below(12)));
                o.insert("created_at".into(), json!(ts(created)));
                o.insert("updated_at".into(), json!(ts(updated)));
                o.insert(
                    "closed_at".into(),
                    closed_at.map(|t| json!(ts(t))).unwrap_or(Value::Null),
                );
                o.insert("url".into(), json!(format!("{api}/issues/{number}")));
                o.insert("repository_url".into(), json!(api));
                o.insert("html_url".into(), json!(format!("{html}/issues/{number}")));
                o.insert("milestone".into(), Value::Null);
                o.insert("closed_by".into(), Value::Null);
                if is_pr {
                    o.insert(
                        "pull_request".into(),
                        json!({
                            "url": format!("{api}/pulls/{number}"),
                            "html_url": format!("{html}/pull/{number}"),
                            "diff_url": format!("{html}/pull/{number}.diff"),
                            "patch_url": format!("{html}/pull/{number}.patch"),
                            "merged_at": closed_at.map(|t| json!(ts(t))).unwrap_or(Value::Null)
                        }),
                    );
                } else {
                    o.remove("pull_request");
                }
            }
            data.issues.push(issue);
            if is_pr {
                let branch = format!("{}/{}", author, number);
                let mut pr = pull_t.clone();
                let merged = closed && rng.below(10) < 9;
                if let Some(o) = pr.as_object_mut() {
                    o.insert("id".into(), json!(id));
                    o.insert("node_id".into(), json!(format!("PR_{id}")));
                    o.insert("number".into(), json!(number));
                    o.insert("title".into(), json!(title));
                    o.insert("body".into(), json!(format!("Implements {title}.")));
                    o.insert(
                        "state".into(),
                        json!(if closed { "closed" } else { "open" }),
                    );
                    o.insert("draft".into(), json!(!closed && rng.below(5) == 0));
                    o.insert("user".into(), user(author));
                    o.insert("labels".into(), Value::Array(labels.clone()));
                    o.insert("assignee".into(), assignee.map(user).unwrap_or(Value::Null));
                    o.insert("created_at".into(), json!(ts(created)));
                    o.insert("updated_at".into(), json!(ts(updated)));
                    o.insert(
                        "closed_at".into(),
                        closed_at.map(|t| json!(ts(t))).unwrap_or(Value::Null),
                    );
                    o.insert(
                        "merged_at".into(),
                        if merged {
                            closed_at.map(|t| json!(ts(t))).unwrap_or(Value::Null)
                        } else {
                            Value::Null
                        },
                    );
                    o.insert("url".into(), json!(format!("{api}/pulls/{number}")));
                    o.insert("html_url".into(), json!(format!("{html}/pull/{number}")));
                    o.insert("milestone".into(), Value::Null);
                    if let Some(h) = o.get_mut("head").and_then(Value::as_object_mut) {
                        h.insert("ref".into(), json!(branch));
                        h.insert("label".into(), json!(format!("{org}:{branch}")));
                    }
                    if let Some(b) = o.get_mut("base").and_then(Value::as_object_mut) {
                        b.insert("ref".into(), json!("main"));
                        b.insert("label".into(), json!(format!("{org}:main")));
                    }
                }
                data.pulls.push(pr);
            }
        }
        // Commits, deployments and runs.
        let n_commits = 80 * scale as usize;
        for i in 0..n_commits {
            let at = as_of - ChronoDuration::minutes((i as i64) * 90 + rng.below(60) as i64);
            let author = *rng.pick(ENGINEERS);
            let sha = format!(
                "{:016x}{:016x}{:08x}",
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64() as u32
            );
            let mut c = commit_t.clone();
            if let Some(o) = c.as_object_mut() {
                o.insert("sha".into(), json!(sha));
                o.insert("node_id".into(), json!(format!("C_{sha}")));
                o.insert("url".into(), json!(format!("{api}/commits/{sha}")));
                o.insert("html_url".into(), json!(format!("{html}/commit/{sha}")));
                o.insert("author".into(), user_obj(author));
                o.insert("committer".into(), user_obj(author));
                o.insert("parents".into(), json!([]));
                if let Some(commit) = o.get_mut("commit").and_then(Value::as_object_mut) {
                    let who = json!({"name": author, "email": format!("{author}@acme.dev"), "date": ts(at)});
                    commit.insert("author".into(), who.clone());
                    commit.insert("committer".into(), who);
                    commit.insert(
                        "message".into(),
                        json!(format!("{} {}", rng.pick(VERBS), rng.pick(THINGS))),
                    );
                }
            }
            if i % 4 == 0 {
                let env = if i % 8 == 0 { "production" } else { "staging" };
                let did = repo_id * 10_000 + i as i64;
                data.deployments.push(json!({
                    "url": format!("{api}/deployments/{did}"), "id": did, "node_id": format!("D_{did}"),
                    "sha": sha, "ref": "main", "task": "deploy", "payload": {}, "original_environment": env,
                    "environment": env, "description": format!("Deploy {}", &sha[..7]),
                    "creator": user_obj(author), "created_at": ts(at + ChronoDuration::minutes(20)),
                    "updated_at": ts(at + ChronoDuration::minutes(25)),
                    "statuses_url": format!("{api}/deployments/{did}/statuses"),
                    "repository_url": api, "transient_environment": false, "production_environment": env == "production"
                }));
            }
            let rid = repo_id * 1_000_000 + i as i64;
            let conclusion = if rng.below(10) < 8 {
                "success"
            } else {
                "failure"
            };
            let (status, conclusion) = if i < 2 {
                ("in_progress", Value::Null)
            } else {
                ("completed", json!(conclusion))
            };
            data.runs.push(json!({
                "id": rid, "name": "CI", "node_id": format!("WFR_{rid}"), "head_branch": "main",
                "head_sha": sha, "path": ".github/workflows/ci.yml", "run_number": n_commits - i,
                "event": if i % 3 == 0 { "pull_request" } else { "push" }, "status": status,
                "conclusion": conclusion, "workflow_id": 159_038, "url": format!("{api}/actions/runs/{rid}"),
                "html_url": format!("{html}/actions/runs/{rid}"), "actor": user_obj(author),
                "created_at": ts(at + ChronoDuration::minutes(1)), "updated_at": ts(at + ChronoDuration::minutes(9)),
                "run_started_at": ts(at + ChronoDuration::minutes(1))
            }));
            data.commits.push(c);
        }
        data.issues
            .sort_by(|a, b| b["created_at"].as_str().cmp(&a["created_at"].as_str()));
        data.pulls
            .sort_by(|a, b| b["created_at"].as_str().cmp(&a["created_at"].as_str()));
        let open = data.issues.iter().filter(|i| i["state"] == "open").count();
        if let Some(o) = data.repo.as_object_mut() {
            o.insert("open_issues_count".into(), json!(open));
        }
        out.repos.insert(full.to_string(), data);
    }
    out
}

fn user_obj(login: &str) -> Value {
    json!({"login": login, "id": 100 + ENGINEERS.iter().position(|e| *e == login).unwrap_or(0) as i64,
           "type": "User", "site_admin": false})
}

/// Serve `data` on `addr` (port 0: any free port) behind the toolkit's fault knobs.
pub async fn start(
    data: GithubData,
    token: Option<String>,
    rate_limit: u64,
    addr: std::net::SocketAddr,
) -> std::io::Result<(joinery_engine::rest::fakekit::FakeServer, Shared)> {
    let (router, state) = router(data, token, rate_limit);
    let server = joinery_engine::rest::fakekit::FakeServer::start(router, addr).await?;
    Ok((server, state))
}

/// The routes, over `data`; requests must carry `Bearer <token>` when `token` is set.
pub fn router(data: GithubData, token: Option<String>, rate_limit: u64) -> (Router, Shared) {
    let state = Arc::new(Mutex::new(FakeState {
        data,
        token,
        limit: rate_limit,
        used: 0,
        reset: Utc::now().timestamp() + 3600,
    }));
    let router = Router::new()
        .route("/repos/{owner}/{repo}", get(repo))
        .route("/repos/{owner}/{repo}/issues", get(issues))
        .route("/repos/{owner}/{repo}/pulls", get(pulls))
        .route("/repos/{owner}/{repo}/commits", get(commits))
        .route("/repos/{owner}/{repo}/actions/runs", get(runs))
        .route("/repos/{owner}/{repo}/deployments", get(deployments))
        .route("/orgs/{org}/repos", get(org_repos))
        .route("/users/{org}/repos", get(org_repos))
        .with_state(state.clone());
    (router, state)
}

type Q = Query<BTreeMap<String, String>>;

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"message": message,
            "documentation_url": "https://docs.github.com/rest", "status": status.as_u16().to_string()})),
    )
        .into_response()
}

/// Auth and the rate-limit budget; on success, the headers every answer carries.
fn admit(
    state: &Shared,
    headers: &HeaderMap,
) -> Result<Vec<(&'static str, String)>, Box<Response>> {
    let Ok(mut s) = state.lock() else {
        return Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fake state poisoned",
        )));
    };
    if let Some(t) = &s.token {
        let got = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if got != format!("Bearer {t}") && got != format!("token {t}") {
            return Err(Box::new(error(StatusCode::UNAUTHORIZED, "Bad credentials")));
        }
    }
    let rl = |s: &FakeState, remaining: u64| {
        vec![
            ("x-ratelimit-limit", s.limit.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-used", s.used.to_string()),
            ("x-ratelimit-reset", s.reset.to_string()),
            ("x-ratelimit-resource", "core".to_string()),
        ]
    };
    if s.used >= s.limit {
        let mut r = error(
            StatusCode::FORBIDDEN,
            "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID.",
        );
        for (k, v) in rl(&s, 0) {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
        return Err(Box::new(r));
    }
    s.used += 1;
    let remaining = s.limit - s.used;
    Ok(rl(&s, remaining))
}

fn with_headers(mut r: Response, hs: Vec<(&'static str, String)>) -> Response {
    for (k, v) in hs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

fn repo_data(state: &Shared, owner: &str, repo: &str) -> Option<RepoData> {
    state
        .lock()
        .ok()?
        .data
        .repos
        .get(&format!("{owner}/{repo}"))
        .cloned()
}

/// `per_page` (default 30, at most 100) and `page` (1-based), with a `Link` header of absolute
/// URLs; `wrap` puts the page into the body shape of the endpoint.
fn paginate(
    items: Vec<Value>,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
    path: &str,
    wrap: impl Fn(Vec<Value>, usize) -> Value,
) -> Response {
    let per = q
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = q
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let last = total.div_ceil(per).max(1);
    let chunk: Vec<Value> = items.into_iter().skip((page - 1) * per).take(per).collect();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let link = |p: usize| {
        let mut qq = q.clone();
        qq.insert("page".into(), p.to_string());
        let qs = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(qq.iter())
            .finish();
        format!("<http://{host}{path}?{qs}>")
    };
    let mut rels = Vec::new();
    if page < last {
        rels.push(format!("{}; rel=\"next\"", link(page + 1)));
        rels.push(format!("{}; rel=\"last\"", link(last)));
    }
    if page > 1 {
        rels.push(format!("{}; rel=\"first\"", link(1)));
        rels.push(format!("{}; rel=\"prev\"", link(page - 1)));
    }
    let mut r = axum::Json(wrap(chunk, total)).into_response();
    if !rels.is_empty()
        && let Ok(v) = HeaderValue::from_str(&rels.join(", "))
    {
        r.headers_mut().insert("link", v);
    }
    r
}

fn field_time(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    parse_time(cur.as_str()?)
}

fn sort_items(items: &mut [Value], q: &BTreeMap<String, String>, keys: &[(&str, &str)]) {
    let sort = q.get("sort").map(String::as_str).unwrap_or(keys[0].0);
    let field = keys
        .iter()
        .find(|(k, _)| *k == sort)
        .map(|(_, f)| *f)
        .unwrap_or(keys[0].1);
    let asc = q.get("direction").map(String::as_str) == Some("asc");
    items.sort_by(|a, b| {
        let o = a[field].as_str().cmp(&b[field].as_str());
        if asc { o } else { o.reverse() }
    });
}

macro_rules! admitted {
    ($state:expr, $headers:expr) => {
        match admit(&$state, &$headers) {
            Ok(h) => h,
            Err(r) => return *r,
        }
    };
}

async fn repo(
    State(state): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let rl = admitted!(state, headers);
    match repo_data(&state, &owner, &name) {
        Some(d) => with_headers(axum::Json(d.repo).into_response(), rl),
        None => with_headers(error(StatusCode::NOT_FOUND, "Not Found"), rl),
    }
}

async fn org_repos(
    State(state): State<Shared>,
    Path(org): Path<String>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    let rl = admitted!(state, headers);
    let repos: Vec<Value> = state
        .lock()
        .map(|s| {
            s.data
                .repos
                .iter()
                .filter(|(k, _)| k.split('/').next() == Some(org.as_str()))
                .map(|(_, d)| d.repo.clone())
                .collect()
        })
        .unwrap_or_default();
    if repos.is_empty() {
        return with_headers(error(StatusCode::NOT_FOUND, "Not Found"), rl);
    }
    let path = format!("/orgs/{org}/repos");
    with_headers(
        paginate(repos, &q, &headers, &path, |c, _| Value::Array(c)),
        rl,
    )
}

fn state_filter(q: &BTreeMap<String, String>) -> Result<Option<&'static str>, Box<Response>> {
    match q.get("state").map(String::as_str) {
        None | Some("open") => Ok(Some("open")),
        Some("closed") => Ok(Some("closed")),
        Some("all") => Ok(None),
        Some(_) => Err(Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed",
        ))),
    }
}

async fn issues(
    State(state): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    let rl = admitted!(state, headers);
    let Some(d) = repo_data(&state, &owner, &name) else {
        return with_headers(error(StatusCode::NOT_FOUND, "Not Found"), rl);
    };
    let st = match state_filter(&q) {
        Ok(s) => s,
        Err(r) => return with_headers(*r, rl),
    };
    let since = match q.get("since") {
        None => None,
        Some(s) => match parse_time(s) {
            Some(t) => Some(t),
            None => {
                return with_headers(
                    error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed"),
                    rl,
                );
            }
        },
    };
    let labels: Vec<String> = q
        .get("labels")
        .map(|l| {
            l.split(',')
                .map(|x| x.trim().to_lowercase())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut items: Vec<Value> = d
        .issues
        .into_iter()
        .filter(|i| st.is_none_or(|s| i["state"] == s))
        .filter(|i| since.is_none_or(|t| field_time(i, &["updated_at"]).is_some_and(|u| u >= t)))
        .filter(|i| {
            labels.iter().all(|l| {
                i["labels"].as_array().is_some_and(|ls| {
                    ls.iter()
                        .any(|x| x["name"].as_str().map(str::to_lowercase).as_deref() == Some(l))
                })
            })
        })
        .filter(|i| match q.get("assignee").map(String::as_str) {
            None => true,
            Some("none") => i["assignee"].is_null(),
            Some("*") => !i["assignee"].is_null(),
            Some(a) => i["assignee"]["login"] == a,
        })
        .filter(|i| {
            q.get("creator")
                .is_none_or(|c| i["user"]["login"] == c.as_str())
        })
        .collect();
    sort_items(
        &mut items,
        &q,
        &[("created", "created_at"), ("updated", "updated_at")],
    );
    let path = format!("/repos/{owner}/{name}/issues");
    with_headers(
        paginate(items, &q, &headers, &path, |c, _| Value::Array(c)),
        rl,
    )
}

async fn pulls(
    State(state): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    let rl = admitted!(state, headers);
    let Some(d) = repo_data(&state, &owner, &name) else {
        return with_headers(error(StatusCode::NOT_FOUND, "Not Found"), rl);
    };
    let st = match state_filter(&q) {
        Ok(s) => s,
        Err(r) => return with_headers(*r, rl),
    };
    let mut items: Vec<Value> = d
        .pulls
        .into_iter()
        .filter(|p| st.is_none_or(|s| p["state"] == s))
        .filter(|p| q.get("base").is_none_or(|b| p["base"]["ref"] == b.as_str()))
        .filter(|p| {
            q.get("head")
                .is_none_or(|h| p["head"]["label"] == h.as_str())
        })
        .collect();
    sort_items(
        &mut items,
        &q,
        &[("created", "created_at"), ("updated", "updated_at")],
    );
    let path = format!("/repos/{owner}/{name}/pulls");
    with_headers(
        paginate(items, &q, &headers, &path, |c, _| Value::Array(c)),
        rl,
    )
}

async fn commits(
    State(state): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    let rl = admitted!(state, headers);
    let Some(d) = repo_data(&state, &owner, &name) else {
        return with_headers(error(StatusCode::NOT_FOUND, "Not Found"), rl);
    };
    let bound = |k: &str| q.get(k).map(|s| parse_time(s));
    let (since, until) = (bound("since"), bound("until"));
    if matches!(since, Some(None)) || matches!(until, Some(None)) {
        return with_headers(
            error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed"),
            rl,
        );
    }
    let items: Vec<Value> = d
        .commits
        .into_iter()
        .filter(|c| {
            let t = field_time(c, &["commit", "committer", "date"]);
            since.flatten().is_none_or(|s| t.is_some_and(|t| t >= s))
                && until.flatten().is_none_or(|u| t.is_some_and(|t| t <= u))
        })
        .filter(|c| {
            q.get("author").is_none_or(|a| {
                c["author"]["login"] == a.as_str() || c["commit"]["author"]["email"] == a.as_str()
            })
        })
        .collect();
    let path = format!("/repos/{owner}/{name}/commits");
    with_headers(
        paginate(items, &q, &headers, &path, |c, _| Value::Array(c)),
        rl,
    )
}

async fn runs(
    State(state): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    let rl = admitted!(state, headers);
    let Some(d) = repo_data(&state, &owner, &name) else {
        return with_headers(error(StatusCode::NOT_FOUND, "Not Found"), rl);
    };
    let items: Vec<Value> = d
        .runs
        .into_iter()
        // `status` accepts both statuses and conclusions.
        .filter(|r| {
            q.get("status")
                .is_none_or(|s| r["status"] == s.as_str() || r["conclusion"] == s.as_str())
        })
        .filter(|r| {
            q.get("branch")
                .is_none_or(|b| r["head_branch"] == b.as_str())
        })
        .filter(|r| q.get("event").is_none_or(|e| r["event"] == e.as_str()))
        .filter(|r| {
            q.get("actor")
                .is_none_or(|a| r["actor"]["login"] == a.as_str())
        })
        .collect();
    let path = format!("/repos/{owner}/{name}/actions/runs");
    with_headers(
        paginate(
            items,
            &q,
            &headers,
            &path,
            |c, total| json!({"total_count": total, "workflow_runs": c}),
        ),
        rl,
    )
}

async fn deployments(
    State(state): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    let rl = admitted!(state, headers);
    let Some(d) = repo_data(&state, &owner, &name) else {
        return with_headers(error(StatusCode::NOT_FOUND, "Not Found"), rl);
    };
    let items: Vec<Value> = d
        .deployments
        .into_iter()
        .filter(|x| {
            ["environment", "ref", "sha", "task"]
                .iter()
                .all(|k| q.get(*k).is_none_or(|v| x[*k] == v.as_str()))
        })
        .collect();
    let path = format!("/repos/{owner}/{name}/deployments");
    with_headers(
        paginate(items, &q, &headers, &path, |c, _| Value::Array(c)),
        rl,
    )
}
