//! A fake of Jira Cloud: `/rest/api/3/search/jql` with a real (subset) JQL parser — quoted
//! strings with backslash escapes, `=`/`!=`/`<`/`<=`/`>`/`>=`, `in (...)`, `is [not] EMPTY`,
//! `AND`, `ORDER BY` — case-insensitive name matching, minute-precision dates read in the
//! user's time zone (UTC), `fields` defaulting to the id only, `nextPageToken`/`isLast` paging
//! with the token omitted on the last page, 400s for unbounded or invalid JQL with Jira's error
//! body; plus projects, boards and sprints (Agile API, `startAt`/`isLast`), basic auth, and
//! 429s with `Retry-After`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, NaiveDateTime, Utc};
use joinery_engine::rest::fakekit::Budget;
use serde_json::{Value, json};

use crate::fakeutil::Rng;

#[derive(Debug, Clone, Default)]
pub struct JiraData {
    pub projects: Vec<Value>,
    /// Newest first.
    pub issues: Vec<Value>,
    pub boards: Vec<Value>,
    /// board id -> sprints
    pub sprints: BTreeMap<i64, Vec<Value>>,
}

fn jira_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

const STATUSES: &[(&str, &str, &str)] = &[
    ("To Do", "new", "To Do"),
    ("In Progress", "indeterminate", "In Progress"),
    ("In Review", "indeterminate", "In Progress"),
    ("Done", "done", "Done"),
];
const PRIORITIES: &[&str] = &["Highest", "High", "Medium", "Low"];
const TYPES: &[&str] = &["Story", "Bug", "Task"];
pub const PEOPLE: &[(&str, &str)] = &[
    ("5b10a2844c20165700ede21g", "Mia Krystof"),
    ("5b10ac8d82e05b22cc7d4ef5", "Ada Lovelace"),
    ("5b109f2e9729b51b54dc274d", "Grace Hopper"),
    ("5b10a0effa615349cb016cd8", "Linus Torvalds"),
];

/// Projects `keys` (`PAY`, ...), each with one scrum board, two-week sprints over the last
/// 180 days before `as_of`, and `per_project * scale` issues with story points.
pub fn generate(
    seed: u64,
    as_of: DateTime<Utc>,
    keys: &[&str],
    per_project: u64,
    scale: u64,
) -> JiraData {
    let mut rng = Rng(seed ^ 0x6a69_7261);
    let mut out = JiraData::default();
    let mut issue_id = 10_000i64;
    let mut sprint_id = 1i64;
    for (pi, key) in keys.iter().enumerate() {
        let pid = 10_000 + pi as i64;
        out.projects.push(json!({
            "id": pid.to_string(), "key": key, "name": format!("{key} team"),
            "projectTypeKey": "software", "simplified": false, "style": "classic",
            "self": format!("https://acme.atlassian.net/rest/api/3/project/{pid}"),
            "lead": {"accountId": PEOPLE[pi % PEOPLE.len()].0, "displayName": PEOPLE[pi % PEOPLE.len()].1}
        }));
        let board = 100 + pi as i64;
        out.boards.push(json!({
            "id": board, "self": format!("https://acme.atlassian.net/rest/agile/1.0/board/{board}"),
            "name": format!("{key} board"), "type": "scrum",
            "location": {"projectId": pid, "projectKey": key, "displayName": format!("{key} team"), "projectName": format!("{key} team")}
        }));
        let mut sprints = Vec::new();
        for s in 0..13i64 {
            let start = as_of - ChronoDuration::days(180) + ChronoDuration::days(14 * s);
            let end = start + ChronoDuration::days(14);
            let state = if end < as_of {
                "closed"
            } else if start <= as_of {
                "active"
            } else {
                "future"
            };
            sprints.push(json!({
                "id": sprint_id, "self": format!("https://acme.atlassian.net/rest/agile/1.0/sprint/{sprint_id}"),
                "state": state, "name": format!("{key} Sprint {}", s + 1),
                "startDate": jira_ts(start), "endDate": jira_ts(end),
                "completeDate": if state == "closed" { json!(jira_ts(end)) } else { Value::Null },
                "originBoardId": board, "goal": format!("Sprint {} goal", s + 1)
            }));
            sprint_id += 1;
        }
        for n in 1..=(per_project * scale) as i64 {
            issue_id += 1;
            let created = as_of - ChronoDuration::minutes(rng.below(180 * 24 * 60) as i64);
            let updated =
                (created + ChronoDuration::minutes(rng.below(30 * 24 * 60) as i64)).min(as_of);
            let (status, cat_key, cat_name) = *rng.pick(STATUSES);
            let resolved = (cat_key == "done").then_some(updated);
            let person = (rng.below(5) != 0).then(|| *rng.pick(PEOPLE));
            let sprint_idx = ((created - (as_of - ChronoDuration::days(180))).num_days() / 14)
                .clamp(0, 12) as usize;
            let sprint = &sprints[sprint_idx];
            let mut labels: Vec<&str> = Vec::new();
            if rng.below(3) == 0 {
                labels.push(*rng.pick(&["backend", "frontend", "customer-reported", "tech-debt"]));
            }
            let key_n = format!("{key}-{n}");
            let points = [1.0, 2.0, 3.0, 5.0, 8.0][rng.below(5) as usize];
            out.issues.push(json!({
                "id": issue_id.to_string(), "key": key_n,
                "self": format!("https://acme.atlassian.net/rest/api/3/issue/{issue_id}"),
                "fields": {
                    "summary": format!("{} {}", rng.pick(&["Handle", "Support", "Fix", "Improve"]), rng.pick(&["invoice retries", "SSO for admins", "webhook signing", "CSV export", "search latency", "payment declines"])),
                    "status": {"name": status, "id": (STATUSES.iter().position(|s| s.0 == status).unwrap_or(0) + 1).to_string(),
                               "statusCategory": {"key": cat_key, "name": cat_name}},
                    "priority": {"name": *rng.pick(PRIORITIES), "id": "3"},
                    "issuetype": {"name": *rng.pick(TYPES), "id": "10001", "subtask": false},
                    "project": {"id": pid.to_string(), "key": key, "name": format!("{key} team")},
                    "assignee": person.map(|(id, name)| json!({"accountId": id, "displayName": name, "active": true})).unwrap_or(Value::Null),
                    "reporter": {"accountId": PEOPLE[0].0, "displayName": PEOPLE[0].1},
                    "labels": labels,
                    "customfield_10016": points,
                    "customfield_10020": [{"id": sprint["id"], "name": sprint["name"], "state": sprint["state"], "boardId": board}],
                    "created": jira_ts(created), "updated": jira_ts(updated),
                    "resolutiondate": resolved.map(|t| json!(jira_ts(t))).unwrap_or(Value::Null),
                    "description": {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": "Details."}]}]}
                }
            }));
        }
        out.sprints.insert(board, sprints);
    }
    out.issues.sort_by(|a, b| {
        b["fields"]["created"]
            .as_str()
            .cmp(&a["fields"]["created"].as_str())
    });
    out
}

// ---------------------------------------------------------------------------------------------
// JQL

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Op(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '"' | '\'' => {
                let q = c;
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err("The quoted string is missing its closing quote.".into());
                        }
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(n) => v.push(*n),
                                None => return Err("Bad escape".into()),
                            }
                            i += 2;
                        }
                        Some(ch) if *ch == q => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            '=' | '!' | '<' | '>' | '~' => {
                let mut op = c.to_string();
                if chars.get(i + 1) == Some(&'=') {
                    op.push('=');
                    i += 1;
                }
                out.push(Tok::Op(op));
                i += 1;
            }
            _ => {
                let mut w = String::new();
                while i < chars.len() && !" \t\n(),=!<>~\"'".contains(chars[i]) {
                    w.push(chars[i]);
                    i += 1;
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Cond {
    Cmp(String, String, String),
    In(String, Vec<String>, bool),
    Empty(String, bool),
}

/// (conditions ANDed, order by field, descending)
type Parsed = (Vec<Cond>, Option<(String, bool)>);

fn parse_jql(s: &str) -> Result<Parsed, String> {
    let toks = tokenize(s)?;
    let mut i = 0;
    let mut conds = Vec::new();
    let word = |t: Option<&Tok>| match t {
        Some(Tok::Word(w)) => Some(w.clone()),
        _ => None,
    };
    let value = |t: Option<&Tok>| match t {
        Some(Tok::Word(w)) | Some(Tok::Str(w)) => Some(w.clone()),
        _ => None,
    };
    let mut order = None;
    while i < toks.len() {
        let Some(field) = word(toks.get(i)) else {
            return Err(format!(
                "Error in the JQL Query: expecting a field name at token {i}."
            ));
        };
        if field.eq_ignore_ascii_case("order") {
            if !word(toks.get(i + 1)).is_some_and(|w| w.eq_ignore_ascii_case("by")) {
                return Err("Error in the JQL Query: expecting 'by'.".into());
            }
            let f = word(toks.get(i + 2))
                .ok_or("Error in the JQL Query: expecting a field after ORDER BY.")?;
            let desc = word(toks.get(i + 3)).is_some_and(|w| w.eq_ignore_ascii_case("desc"));
            order = Some((f.to_lowercase(), desc));
            break;
        }
        let field = field.to_lowercase();
        i += 1;
        match toks.get(i) {
            Some(Tok::Op(op)) => {
                let v =
                    value(toks.get(i + 1)).ok_or("Error in the JQL Query: expecting a value.")?;
                conds.push(Cond::Cmp(field, op.clone(), v));
                i += 2;
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("in") || w.eq_ignore_ascii_case("not") => {
                let negated = w.eq_ignore_ascii_case("not");
                if negated {
                    i += 1;
                    if !word(toks.get(i)).is_some_and(|w| w.eq_ignore_ascii_case("in")) {
                        return Err("Error in the JQL Query: expecting 'in'.".into());
                    }
                }
                i += 1;
                if toks.get(i) != Some(&Tok::LParen) {
                    return Err("Error in the JQL Query: expecting '('.".into());
                }
                i += 1;
                let mut vals = Vec::new();
                loop {
                    let v = value(toks.get(i))
                        .ok_or("Error in the JQL Query: expecting a value in the list.")?;
                    vals.push(v);
                    i += 1;
                    match toks.get(i) {
                        Some(Tok::Comma) => i += 1,
                        Some(Tok::RParen) => {
                            i += 1;
                            break;
                        }
                        _ => return Err("Error in the JQL Query: expecting ',' or ')'.".into()),
                    }
                }
                conds.push(Cond::In(field, vals, negated));
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("is") => {
                let not = word(toks.get(i + 1)).is_some_and(|w| w.eq_ignore_ascii_case("not"));
                let j = if not { i + 2 } else { i + 1 };
                if !word(toks.get(j)).is_some_and(|w| {
                    w.eq_ignore_ascii_case("empty") || w.eq_ignore_ascii_case("null")
                }) {
                    return Err("Error in the JQL Query: expecting EMPTY.".into());
                }
                conds.push(Cond::Empty(field, !not));
                i = j + 1;
            }
            _ => {
                return Err(format!(
                    "Error in the JQL Query: expecting an operator after '{field}'."
                ));
            }
        }
        match word(toks.get(i)) {
            Some(w) if w.eq_ignore_ascii_case("and") => i += 1,
            Some(w) if w.eq_ignore_ascii_case("order") => {}
            Some(w) => {
                return Err(format!(
                    "Error in the JQL Query: unsupported keyword '{w}'."
                ));
            }
            None if i < toks.len() => {
                return Err("Error in the JQL Query: unexpected token.".into());
            }
            None => {}
        }
    }
    Ok((conds, order))
}

/// The values a field has on an issue (names; empty when unset).
fn field_values(issue: &Value, field: &str) -> Result<Vec<String>, String> {
    let f = &issue["fields"];
    let s = |v: &Value| v.as_str().map(str::to_string);
    Ok(match field {
        "project" => vec![
            f["project"]["key"].as_str().unwrap_or("").to_string(),
            f["project"]["id"].as_str().unwrap_or("").to_string(),
        ],
        "key" | "issuekey" => s(&issue["key"]).into_iter().collect(),
        "status" => s(&f["status"]["name"]).into_iter().collect(),
        "statuscategory" => s(&f["status"]["statusCategory"]["name"])
            .into_iter()
            .collect(),
        "priority" => s(&f["priority"]["name"]).into_iter().collect(),
        "issuetype" | "type" => s(&f["issuetype"]["name"]).into_iter().collect(),
        "assignee" => s(&f["assignee"]["accountId"]).into_iter().collect(),
        "labels" => f["labels"]
            .as_array()
            .map(|a| a.iter().filter_map(s).collect())
            .unwrap_or_default(),
        "sprint" => f["customfield_10020"]
            .as_array()
            .map(|a| {
                a.iter()
                    .flat_map(|x| [s(&x["name"]), x["id"].as_i64().map(|i| i.to_string())])
                    .flatten()
                    .collect()
            })
            .unwrap_or_default(),
        "created" | "updated" | "resolved" | "resolutiondate" => {
            let k = if field == "resolved" {
                "resolutiondate"
            } else {
                field
            };
            s(&f[k]).into_iter().collect()
        }
        other => {
            return Err(format!(
                "Field '{other}' does not exist or you do not have permission to view it."
            ));
        }
    })
}

fn is_time(field: &str) -> bool {
    matches!(field, "created" | "updated" | "resolved" | "resolutiondate")
}

/// A JQL date literal (`yyyy-MM-dd HH:mm`, `yyyy/MM/dd HH:mm` or a date) in UTC.
fn jql_time(v: &str) -> Option<DateTime<Utc>> {
    let v = v.replace('/', "-");
    NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(&v, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .map(|t| t.and_utc())
}

fn issue_time(v: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.3f%z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn matches(issue: &Value, c: &Cond) -> Result<bool, String> {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    Ok(match c {
        Cond::Empty(f, empty) => field_values(issue, f)?.is_empty() == *empty,
        Cond::In(f, vals, negated) => {
            let have = field_values(issue, f)?;
            let hit = have.iter().any(|h| vals.iter().any(|v| eq(h, v)));
            if *negated {
                !hit && !have.is_empty()
            } else {
                hit
            }
        }
        Cond::Cmp(f, op, v) if is_time(f) => {
            let Some(bound) = jql_time(v) else {
                return Err(format!("Date value '{v}' for field '{f}' is invalid."));
            };
            let Some(t) = field_values(issue, f)?.first().and_then(|s| issue_time(s)) else {
                return Ok(false);
            };
            match op.as_str() {
                ">=" => t >= bound,
                ">" => t > bound,
                "<=" => t <= bound,
                "<" => t < bound,
                "=" => t == bound,
                _ => {
                    return Err(format!(
                        "The operator '{op}' is not supported by the '{f}' field."
                    ));
                }
            }
        }
        Cond::Cmp(f, op, v) => {
            let have = field_values(issue, f)?;
            match op.as_str() {
                "=" => have.iter().any(|h| eq(h, v)),
                "!=" => !have.is_empty() && !have.iter().any(|h| eq(h, v)),
                _ => {
                    return Err(format!(
                        "The operator '{op}' is not supported by the '{f}' field."
                    ));
                }
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Routes

#[derive(Debug)]
pub struct FakeState {
    data: JiraData,
    basic: Option<String>,
    budget: Budget,
}

impl FakeState {
    /// Shorten (or lengthen) the rate-limit window, a minute by default.
    pub fn set_rate_window(&mut self, window: std::time::Duration) {
        self.budget.set_window(window);
    }

    /// Requests answered 429 so far.
    pub fn rate_limited(&self) -> u64 {
        self.budget.refused()
    }
}

pub type Shared = Arc<Mutex<FakeState>>;

/// `user`/`token`: the basic-auth pair requests must carry (none: no auth).
pub fn router(data: JiraData, auth: Option<(&str, &str)>, per_minute: u64) -> (Router, Shared) {
    let basic = auth.map(|(u, t)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{t}"))
        )
    });
    let state = Arc::new(Mutex::new(FakeState {
        data,
        basic,
        budget: Budget::new(per_minute, std::time::Duration::from_secs(60)),
    }));
    let r = Router::new()
        .route("/rest/api/3/search/jql", get(search))
        .route("/rest/api/3/project/search", get(projects))
        .route("/rest/agile/1.0/board", get(boards))
        .route("/rest/agile/1.0/board/{id}/sprint", get(sprints))
        .with_state(state.clone());
    (r, state)
}

pub async fn start(
    data: JiraData,
    auth: Option<(&str, &str)>,
    per_minute: u64,
    addr: std::net::SocketAddr,
) -> std::io::Result<(joinery_engine::rest::fakekit::FakeServer, Shared)> {
    let (router, state) = router(data, auth, per_minute);
    let server = joinery_engine::rest::fakekit::FakeServer::start(router, addr).await?;
    Ok((server, state))
}

fn error(status: StatusCode, messages: &[&str]) -> Response {
    (
        status,
        axum::Json(json!({"errorMessages": messages, "errors": {}})),
    )
        .into_response()
}

fn admit(state: &Shared, headers: &HeaderMap) -> Result<JiraData, Box<Response>> {
    let Ok(mut s) = state.lock() else {
        return Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &["Internal server error"],
        )));
    };
    if let Some(b) = &s.basic {
        let got = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if got != b {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                &["You are not authenticated. Authentication required to perform this operation."],
            )));
        }
    }
    if let Err(reset) = s.budget.take() {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, &["Rate limit exceeded."]);
        for (k, v) in [
            ("retry-after", reset.to_string()),
            ("x-ratelimit-remaining", "0".into()),
            ("ratelimit-reason", "jira-burst-based".into()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
        return Err(Box::new(r));
    }
    Ok(s.data.clone())
}

type Q = Query<BTreeMap<String, String>>;

/// Only the requested fields (id, key and self always): `*all`/`*navigable` for everything.
fn select_fields(issue: &Value, fields: Option<&str>) -> Value {
    let mut out = json!({"id": issue["id"], "key": issue["key"], "self": issue["self"]});
    let Some(fields) = fields else {
        // The default on this endpoint: the id only.
        return json!({"id": issue["id"]});
    };
    let wanted: Vec<&str> = fields.split(',').map(str::trim).collect();
    let all = wanted.iter().any(|w| *w == "*all" || *w == "*navigable");
    let mut f = serde_json::Map::new();
    if let Some(src) = issue["fields"].as_object() {
        for (k, v) in src {
            if all || wanted.contains(&k.as_str()) {
                f.insert(k.clone(), v.clone());
            }
        }
    }
    out["fields"] = Value::Object(f);
    out
}

async fn search(State(state): State<Shared>, headers: HeaderMap, Query(q): Q) -> Response {
    let data = match admit(&state, &headers) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let jql = q.get("jql").map(String::as_str).unwrap_or("");
    let (conds, order) = match parse_jql(jql) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, &[&e]),
    };
    if conds.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            &[
                "Unbounded JQL queries are not allowed here. Please add a search restriction to your query.",
            ],
        );
    }
    let mut hits = Vec::new();
    for issue in &data.issues {
        let mut ok = true;
        for c in &conds {
            match matches(issue, c) {
                Ok(true) => {}
                Ok(false) => {
                    ok = false;
                    break;
                }
                Err(e) => return error(StatusCode::BAD_REQUEST, &[&e]),
            }
        }
        if ok {
            hits.push(issue.clone());
        }
    }
    if let Some((field, desc)) = order {
        let key = |i: &Value| match field.as_str() {
            "key" => i["id"]
                .as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .map(|n| format!("{n:012}"))
                .unwrap_or_default(),
            f => i["fields"][f].as_str().unwrap_or("").to_string(),
        };
        hits.sort_by_key(key);
        if desc {
            hits.reverse();
        }
    }
    let max = q
        .get("maxResults")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 100);
    let start = match q.get("nextPageToken") {
        None => 0,
        Some(t) => match t.strip_prefix("tok-").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &["The provided next page token is invalid or expired."],
                );
            }
        },
    };
    let fields = q.get("fields").map(String::as_str);
    let page: Vec<Value> = hits
        .iter()
        .skip(start)
        .take(max)
        .map(|i| select_fields(i, fields))
        .collect();
    let end = start + page.len();
    let is_last = end >= hits.len();
    let mut body = json!({"issues": page, "isLast": is_last});
    if !is_last {
        body["nextPageToken"] = json!(format!("tok-{end}"));
    }
    axum::Json(body).into_response()
}

fn start_at_page(items: Vec<Value>, q: &BTreeMap<String, String>, max_cap: usize) -> Value {
    let max = q
        .get("maxResults")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, max_cap);
    let start = q
        .get("startAt")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(0);
    let total = items.len();
    let values: Vec<Value> = items.into_iter().skip(start).take(max).collect();
    let is_last = start + values.len() >= total;
    json!({"maxResults": max, "startAt": start, "total": total, "isLast": is_last, "values": values})
}

/// `keys` may repeat (`?keys=PAY&keys=WEB`); matched exactly.
async fn projects(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(all): Query<Vec<(String, String)>>,
) -> Response {
    let keys: Vec<&str> = all
        .iter()
        .filter(|(k, _)| k == "keys")
        .map(|(_, v)| v.as_str())
        .collect();
    let q: BTreeMap<String, String> = all.iter().cloned().collect();
    match admit(&state, &headers) {
        Ok(d) => {
            let items: Vec<Value> = d
                .projects
                .into_iter()
                .filter(|p| keys.is_empty() || keys.iter().any(|k| p["key"] == *k))
                .collect();
            axum::Json(start_at_page(items, &q, 50)).into_response()
        }
        Err(r) => *r,
    }
}

async fn boards(State(state): State<Shared>, headers: HeaderMap, Query(q): Q) -> Response {
    let data = match admit(&state, &headers) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let items: Vec<Value> = data
        .boards
        .into_iter()
        .filter(|b| q.get("type").is_none_or(|t| b["type"] == t.as_str()))
        .filter(|b| {
            q.get("projectKeyOrId").is_none_or(|p| {
                b["location"]["projectKey"] == p.as_str()
                    || b["location"]["projectId"]
                        .as_i64()
                        .map(|i| i.to_string())
                        .as_deref()
                        == Some(p.as_str())
            })
        })
        .collect();
    axum::Json(start_at_page(items, &q, 50)).into_response()
}

async fn sprints(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    let data = match admit(&state, &headers) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let Some(list) = id
        .parse::<i64>()
        .ok()
        .and_then(|i| data.sprints.get(&i).cloned())
    else {
        return error(
            StatusCode::NOT_FOUND,
            &[
                "The requested board cannot be viewed because it either does not exist or you do not have permission to view it.",
            ],
        );
    };
    let states: Option<Vec<String>> = q
        .get("state")
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let items: Vec<Value> = list
        .into_iter()
        .filter(|s| {
            states
                .as_ref()
                .is_none_or(|st| st.iter().any(|x| s["state"] == x.as_str()))
        })
        .collect();
    axum::Json(start_at_page(items, &q, 50)).into_response()
}
