//! A fake of the Salesforce REST API: the OAuth refresh-token flow (`/services/oauth2/token`,
//! answering with `instance_url`), `/services/data/vXX.X/query?q=` with a SOQL subset parser
//! (select list with relationship paths, `WHERE` with `=`/`!=`/`<`/`<=`/`>`/`>=`, `IN`, `LIKE`,
//! `null`, `AND`; `LIMIT`) comparing text case-insensitively as Salesforce does, batches with
//! `nextRecordsUrl` query locators and `done`, the describe API with custom fields,
//! `Sforce-Limit-Info` on every answer, `INVALID_SESSION_ID` 401s for expired tokens and
//! `MALFORMED_QUERY` 400s.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Value, json};

use crate::fakeutil::{Rng, parse_time};

fn sf_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Records per object (`Account`, ...), and the custom fields the describe API reports.
#[derive(Debug, Clone, Default)]
pub struct SalesforceData {
    pub objects: BTreeMap<String, Vec<Value>>,
    /// object -> (API name, type, label)
    pub custom_fields: BTreeMap<String, Vec<(String, String, String)>>,
}

/// An account of the demo world.
#[derive(Debug, Clone)]
pub struct AccountDef {
    pub id: String,
    pub name: String,
    pub arr: f64,
    pub country: String,
}

/// Accounts as given, plus contacts, opportunities, cases and users around them. Accounts carry
/// a custom field `Tier__c`.
pub fn generate(seed: u64, as_of: DateTime<Utc>, accounts: &[AccountDef]) -> SalesforceData {
    let mut rng = Rng(seed ^ 0x7366_6463);
    let mut out = SalesforceData::default();
    let users: Vec<Value> = ["Ada Owner", "Grace Seller", "Linus Closer"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let email = format!("{}@acme.dev", n.split(' ').next().unwrap_or("user").to_lowercase());
            json!({"attributes": {"type": "User", "url": format!("/services/data/v62.0/sobjects/User/0055g00000USR{i:04}")},
                   "Id": format!("0055g00000USR{i:04}"), "Name": n, "Email": email, "Title": "Account Executive", "IsActive": true})
        })
        .collect();
    let mut acc = Vec::new();
    let mut contacts = Vec::new();
    let mut opps = Vec::new();
    let mut cases = Vec::new();
    for (i, a) in accounts.iter().enumerate() {
        let owner = &users[i % users.len()];
        let created = as_of - ChronoDuration::days(200 + rng.below(900) as i64);
        let tier = if a.arr >= 150_000.0 {
            "Enterprise"
        } else if a.arr >= 20_000.0 {
            "Growth"
        } else {
            "Starter"
        };
        acc.push(json!({
            "attributes": {"type": "Account", "url": format!("/services/data/v62.0/sobjects/Account/{}", a.id)},
            "Id": a.id, "Name": a.name, "Type": "Customer", "Industry": *rng.pick(&["Software", "Retail", "Finance", "Healthcare"]),
            "Website": format!("https://{}.example", a.name.split(' ').next().unwrap_or("acme").to_lowercase()),
            "AnnualRevenue": a.arr * 40.0, "NumberOfEmployees": 50 + rng.below(5000), "BillingCountry": a.country,
            "OwnerId": owner["Id"], "Owner": {"attributes": {"type": "User"}, "Email": owner["Email"]},
            "CreatedDate": sf_ts(created), "LastModifiedDate": sf_ts(created + ChronoDuration::days(30)),
            "Tier__c": tier
        }));
        for c in 0..2 {
            contacts.push(json!({
                "attributes": {"type": "Contact"}, "Id": format!("0035g{:09}{c}", i), "AccountId": a.id,
                "FirstName": *rng.pick(&["Sam", "Alex", "Kim", "Jo"]), "LastName": *rng.pick(&["Lee", "Patel", "Okafor", "Novak"]),
                "Email": format!("contact{c}@{}.example", i), "Title": "Head of Engineering", "CreatedDate": sf_ts(created)
            }));
        }
        let stage = *rng.pick(&["Prospecting", "Negotiation", "Closed Won", "Closed Lost"]);
        let close = (as_of + ChronoDuration::days(rng.below(120) as i64 - 60)).date_naive();
        opps.push(json!({
            "attributes": {"type": "Opportunity"}, "Id": format!("0065g{:010}", i), "AccountId": a.id,
            "Name": format!("{} renewal", a.name), "StageName": stage, "Amount": (a.arr * 1.1).round(),
            "Probability": if stage == "Closed Won" { 100.0 } else if stage == "Closed Lost" { 0.0 } else { 50.0 },
            "CloseDate": close.format("%Y-%m-%d").to_string(), "IsClosed": stage.starts_with("Closed"),
            "IsWon": stage == "Closed Won", "OwnerId": owner["Id"], "CreatedDate": sf_ts(created)
        }));
        if rng.below(2) == 0 {
            let opened = as_of - ChronoDuration::days(rng.below(60) as i64);
            let closed = rng.below(3) != 0;
            cases.push(json!({
                "attributes": {"type": "Case"}, "Id": format!("5005g{:010}", i), "CaseNumber": format!("{:08}", 1000 + i),
                "AccountId": a.id, "Subject": "Checkout errors", "Status": if closed { "Closed" } else { "Working" },
                "Priority": *rng.pick(&["High", "Medium", "Low"]), "Origin": "Email", "IsClosed": closed,
                "ClosedDate": if closed { json!(sf_ts(opened + ChronoDuration::days(2))) } else { Value::Null },
                "CreatedDate": sf_ts(opened)
            }));
        }
    }
    out.objects.insert("Account".into(), acc);
    out.objects.insert("Contact".into(), contacts);
    out.objects.insert("Opportunity".into(), opps);
    out.objects.insert("Case".into(), cases);
    out.objects.insert("User".into(), users);
    out.custom_fields.insert(
        "Account".into(),
        vec![("Tier__c".into(), "picklist".into(), "Customer tier".into())],
    );
    out
}

// ---------------------------------------------------------------------------------------------
// SOQL

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Num(f64),
    Time(DateTime<Utc>),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone)]
enum Cond {
    Cmp(String, String, Lit),
    In(String, Vec<Lit>, bool),
    Like(String, String),
}

#[derive(Debug)]
struct Soql {
    fields: Vec<String>,
    object: String,
    conds: Vec<Cond>,
    /// `ORDER BY field [ASC|DESC] [NULLS FIRST|LAST]`: (field, descending, nulls first).
    order: Vec<(String, bool, bool)>,
    limit: Option<usize>,
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn word(&mut self) -> Option<String> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || b"_.:-+".contains(&self.s[self.i]))
        {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn keyword(&mut self, k: &str) -> bool {
        let save = self.i;
        match self.word() {
            Some(w) if w.eq_ignore_ascii_case(k) => true,
            _ => {
                self.i = save;
                false
            }
        }
    }
    fn op(&mut self) -> Option<String> {
        self.ws();
        for op in ["!=", "<=", ">=", "=", "<", ">"] {
            if self.s[self.i..].starts_with(op.as_bytes()) {
                self.i += op.len();
                return Some(op.to_string());
            }
        }
        None
    }
    fn literal(&mut self) -> Result<Lit, String> {
        self.ws();
        if self.eat(b'\'') {
            let mut v = Vec::new();
            loop {
                match self.s.get(self.i) {
                    None => return Err("unterminated string".into()),
                    Some(b'\\') => {
                        let n = *self.s.get(self.i + 1).ok_or("bad escape")?;
                        v.push(match n {
                            b'n' => b'\n',
                            b't' => b'\t',
                            other => other,
                        });
                        self.i += 2;
                    }
                    Some(b'\'') => {
                        self.i += 1;
                        break;
                    }
                    Some(c) => {
                        v.push(*c);
                        self.i += 1;
                    }
                }
            }
            return String::from_utf8(v)
                .map(Lit::Str)
                .map_err(|_| "bad utf-8".into());
        }
        let w = self.word().ok_or("expected a value")?;
        if w.eq_ignore_ascii_case("null") {
            return Ok(Lit::Null);
        }
        if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") {
            return Ok(Lit::Bool(w.eq_ignore_ascii_case("true")));
        }
        if let Some(t) = parse_time(&w) {
            return Ok(Lit::Time(t));
        }
        w.parse::<f64>()
            .map(Lit::Num)
            .map_err(|_| format!("unexpected token: '{w}'"))
    }
}

fn parse_soql(q: &str) -> Result<Soql, String> {
    let mut lx = Lexer {
        s: q.as_bytes(),
        i: 0,
    };
    if !lx.keyword("SELECT") {
        return Err("unexpected token: expected SELECT".into());
    }
    let mut fields = Vec::new();
    loop {
        fields.push(lx.word().ok_or("expected a field")?);
        if !lx.eat(b',') {
            break;
        }
    }
    if !lx.keyword("FROM") {
        return Err("unexpected token: expected FROM".into());
    }
    let object = lx.word().ok_or("expected an object")?;
    let mut conds = Vec::new();
    if lx.keyword("WHERE") {
        loop {
            let field = lx.word().ok_or("expected a field")?;
            if lx.keyword("IN") {
                conds.push(Cond::In(field, list(&mut lx)?, false));
            } else if lx.keyword("NOT") {
                if !lx.keyword("IN") {
                    return Err("expected IN".into());
                }
                conds.push(Cond::In(field, list(&mut lx)?, true));
            } else if lx.keyword("LIKE") {
                match lx.literal()? {
                    Lit::Str(p) => conds.push(Cond::Like(field, p)),
                    _ => return Err("LIKE needs a string".into()),
                }
            } else {
                let op = lx.op().ok_or("expected an operator")?;
                conds.push(Cond::Cmp(field, op, lx.literal()?));
            }
            if !lx.keyword("AND") {
                break;
            }
        }
    }
    let mut order = Vec::new();
    if lx.keyword("ORDER") {
        if !lx.keyword("BY") {
            return Err("expected BY".into());
        }
        loop {
            let field = lx.word().ok_or("expected a field")?;
            let desc = if lx.keyword("DESC") {
                true
            } else {
                lx.keyword("ASC");
                false
            };
            // SOQL's default: NULLS FIRST ascending, NULLS LAST descending.
            let mut nulls_first = !desc;
            if lx.keyword("NULLS") {
                nulls_first = if lx.keyword("FIRST") {
                    true
                } else if lx.keyword("LAST") {
                    false
                } else {
                    return Err("expected FIRST or LAST".into());
                };
            }
            order.push((field, desc, nulls_first));
            if !lx.eat(b',') {
                break;
            }
        }
    }
    let mut limit = None;
    if lx.keyword("LIMIT") {
        limit = Some(lx.word().and_then(|w| w.parse().ok()).ok_or("bad LIMIT")?);
    }
    lx.ws();
    if lx.i != q.len() {
        return Err(format!("unexpected token at position {}", lx.i));
    }
    Ok(Soql {
        fields,
        object,
        conds,
        order,
        limit,
    })
}

fn list(lx: &mut Lexer) -> Result<Vec<Lit>, String> {
    if !lx.eat(b'(') {
        return Err("expected (".into());
    }
    let mut out = Vec::new();
    loop {
        out.push(lx.literal()?);
        if lx.eat(b')') {
            return Ok(out);
        }
        if !lx.eat(b',') {
            return Err("expected , or )".into());
        }
    }
}

fn get_path<'a>(r: &'a Value, path: &str) -> &'a Value {
    let mut cur = r;
    for p in path.split('.') {
        cur = cur.get(p).unwrap_or(&Value::Null);
    }
    cur
}

fn cmp(v: &Value, lit: &Lit) -> Option<std::cmp::Ordering> {
    match (v, lit) {
        (Value::String(s), Lit::Str(l)) => Some(s.to_lowercase().cmp(&l.to_lowercase())),
        (Value::String(s), Lit::Time(t)) => DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f%z")
            .ok()
            .map(|x| x.with_timezone(&Utc).cmp(t)),
        (Value::Number(n), Lit::Num(l)) => n.as_f64().and_then(|x| x.partial_cmp(l)),
        (Value::Bool(b), Lit::Bool(l)) => Some(b.cmp(l)),
        _ => None,
    }
}

/// Salesforce's ordering of two non-null field values: numbers numerically, text
/// case-insensitively (its collation), datetimes as their ISO text orders.
fn order_values(x: &Value, y: &Value) -> std::cmp::Ordering {
    match (x, y) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .partial_cmp(&b.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        (Value::String(a), Value::String(b)) => a.to_lowercase().cmp(&b.to_lowercase()),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        _ => std::cmp::Ordering::Equal,
    }
}

fn matches(r: &Value, c: &Cond) -> bool {
    match c {
        Cond::Cmp(f, op, Lit::Null) => {
            let null = get_path(r, f).is_null();
            if op == "=" { null } else { !null }
        }
        Cond::Cmp(f, op, lit) => {
            let Some(o) = cmp(get_path(r, f), lit) else {
                return false;
            };
            match op.as_str() {
                "=" => o.is_eq(),
                "!=" => o.is_ne(),
                "<" => o.is_lt(),
                "<=" => o.is_le(),
                ">" => o.is_gt(),
                ">=" => o.is_ge(),
                _ => false,
            }
        }
        Cond::In(f, lits, negated) => {
            let v = get_path(r, f);
            let hit = lits.iter().any(|l| cmp(v, l).is_some_and(|o| o.is_eq()));
            hit != *negated
        }
        Cond::Like(f, pattern) => {
            let Some(s) = get_path(r, f).as_str() else {
                return false;
            };
            like(&s.to_lowercase(), &pattern.to_lowercase())
        }
    }
}

/// SOQL LIKE: `%` any run, `_` one character, `\` escapes.
fn like(s: &str, p: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = p.chars().collect();
    fn go(s: &[char], p: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('%') => (0..=s.len()).any(|i| go(&s[i..], &p[1..])),
            Some('_') => !s.is_empty() && go(&s[1..], &p[1..]),
            Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && go(&s[1..], &p[2..]),
            Some(c) => s.first() == Some(c) && go(&s[1..], &p[1..]),
        }
    }
    go(&s, &p)
}

/// The selected fields of a record (relationship paths as nested objects), with `attributes`.
fn project(r: &Value, fields: &[String]) -> Value {
    let mut out = json!({"attributes": r["attributes"]});
    for f in fields {
        let parts: Vec<&str> = f.split('.').collect();
        let v = get_path(r, f).clone();
        if parts.len() == 1 {
            out[parts[0]] = v;
        } else {
            let rel = parts[0];
            if !out[rel].is_object() {
                out[rel] = json!({"attributes": r[rel]["attributes"]});
            }
            out[rel][parts[1]] = v;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Routes

#[derive(Debug)]
pub struct FakeState {
    data: SalesforceData,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    access_token: Option<String>,
    tokens_issued: u64,
    batch: usize,
    /// locator -> remaining records
    cursors: BTreeMap<String, Vec<Value>>,
    next_cursor: u64,
    calls: u64,
    /// The org's rolling 24-hour API request allocation (Developer Edition: 15,000).
    daily_limit: u64,
    base: String,
}

pub type Shared = Arc<Mutex<FakeState>>;

impl FakeState {
    /// The current access token stops working (the next call gets `INVALID_SESSION_ID`).
    pub fn expire_token(&mut self) {
        self.access_token = None;
    }

    /// Set the daily API request allocation (requests beyond it get 403 REQUEST_LIMIT_EXCEEDED).
    pub fn set_daily_limit(&mut self, n: u64) {
        self.daily_limit = n;
    }

    /// API requests counted against the allocation so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    pub fn tokens_issued(&self) -> u64 {
        self.tokens_issued
    }
}

pub struct Credentials {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

pub async fn start(
    data: SalesforceData,
    creds: Credentials,
    batch: usize,
    addr: std::net::SocketAddr,
) -> std::io::Result<(joinery_engine::rest::fakekit::FakeServer, Shared)> {
    let state = Arc::new(Mutex::new(FakeState {
        data,
        client_id: creds.client_id,
        client_secret: creds.client_secret,
        refresh_token: creds.refresh_token,
        access_token: None,
        tokens_issued: 0,
        batch: batch.clamp(1, 2000),
        cursors: BTreeMap::new(),
        next_cursor: 1,
        calls: 0,
        daily_limit: 15_000,
        base: String::new(),
    }));
    let router = Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/services/data/{version}/query", get(query))
        .route("/services/data/{version}/query/{locator}", get(more))
        .route(
            "/services/data/{version}/sobjects/{object}/describe",
            get(describe),
        )
        .with_state(state.clone());
    let server = joinery_engine::rest::fakekit::FakeServer::start(router, addr).await?;
    if let Ok(mut s) = state.lock() {
        s.base = server.base_url();
    }
    Ok((server, state))
}

fn sf_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!([{"message": message, "errorCode": code}])),
    )
        .into_response()
}

async fn token(
    State(state): State<Shared>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let Ok(mut s) = state.lock() else {
        return sf_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            "fake state",
        );
    };
    let ok = form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && form.get("refresh_token") == Some(&s.refresh_token)
        && form.get("client_id") == Some(&s.client_id)
        && form
            .get("client_secret")
            .is_none_or(|c| *c == s.client_secret);
    if !ok {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant", "error_description": "expired access/refresh token"}))).into_response();
    }
    s.tokens_issued += 1;
    let t = format!("00Dfake!session.{}", s.tokens_issued);
    s.access_token = Some(t.clone());
    axum::Json(json!({
        "access_token": t, "instance_url": s.base, "id": format!("{}/id/00Dfake/005fake", s.base),
        "token_type": "Bearer", "issued_at": Utc::now().timestamp_millis().to_string(),
        "signature": "fake-signature", "scope": "api refresh_token"
    }))
    .into_response()
}

fn admit(state: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Ok(mut s) = state.lock() else {
        return Err(Box::new(sf_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            "fake state",
        )));
    };
    let got = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match &s.access_token {
        Some(t) if got == format!("Bearer {t}") => {
            if s.calls >= s.daily_limit {
                return Err(Box::new(sf_error(
                    StatusCode::FORBIDDEN,
                    "REQUEST_LIMIT_EXCEEDED",
                    "TotalRequests Limit exceeded.",
                )));
            }
            s.calls += 1;
            Ok(())
        }
        _ => Err(Box::new(sf_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        ))),
    }
}

fn with_limits(state: &Shared, mut r: Response) -> Response {
    let used = state.lock().map(|s| s.calls).unwrap_or(0);
    let limit = state.lock().map(|s| s.daily_limit).unwrap_or(0);
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{limit}")) {
        r.headers_mut().insert("sforce-limit-info", v);
    }
    r
}

/// One batch of `rows`; the rest stays behind a query locator.
fn batch(state: &Shared, version: &str, mut rows: Vec<Value>, total: usize) -> Response {
    let Ok(mut s) = state.lock() else {
        return sf_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            "fake state",
        );
    };
    let n = s.batch.min(rows.len());
    let rest = rows.split_off(n);
    let mut body = json!({"totalSize": total, "done": rest.is_empty(), "records": rows});
    if !rest.is_empty() {
        let id = format!("01gFAKE{:08}-{}", s.next_cursor, total - rest.len());
        s.next_cursor += 1;
        body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{id}"));
        s.cursors.insert(id, rest);
    }
    axum::Json(body).into_response()
}

async fn query(
    State(state): State<Shared>,
    Path(version): Path<String>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(r) = admit(&state, &headers) {
        return *r;
    }
    let soql = q.get("q").map(String::as_str).unwrap_or("");
    let parsed = match parse_soql(soql) {
        Ok(p) => p,
        Err(e) => {
            return with_limits(
                &state,
                sf_error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &e),
            );
        }
    };
    let Some(records) = state
        .lock()
        .ok()
        .and_then(|s| s.data.objects.get(&parsed.object).cloned())
    else {
        return with_limits(
            &state,
            sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                &format!("sObject type '{}' is not supported.", parsed.object),
            ),
        );
    };
    let mut rows: Vec<Value> = records
        .iter()
        .filter(|r| parsed.conds.iter().all(|c| matches(r, c)))
        .cloned()
        .collect();
    rows.sort_by(|a, b| {
        for (f, desc, nulls_first) in &parsed.order {
            let (x, y) = (get_path(a, f), get_path(b, f));
            let o = match (x.is_null(), y.is_null()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) if *nulls_first => std::cmp::Ordering::Less,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) if *nulls_first => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => {
                    let o = order_values(x, y);
                    if *desc { o.reverse() } else { o }
                }
            };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    let mut rows: Vec<Value> = rows.iter().map(|r| project(r, &parsed.fields)).collect();
    if let Some(l) = parsed.limit {
        rows.truncate(l);
    }
    let total = rows.len();
    with_limits(&state, batch(&state, &version, rows, total))
}

async fn more(
    State(state): State<Shared>,
    Path((version, locator)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&state, &headers) {
        return *r;
    }
    let rest = state
        .lock()
        .ok()
        .and_then(|mut s| s.cursors.remove(&locator));
    let Some(rest) = rest else {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        );
    };
    let total = locator
        .rsplit('-')
        .next()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
        + rest.len();
    with_limits(&state, batch(&state, &version, rest, total))
}

async fn describe(
    State(state): State<Shared>,
    Path((_version, object)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&state, &headers) {
        return *r;
    }
    let custom = state
        .lock()
        .ok()
        .and_then(|s| s.data.custom_fields.get(&object).cloned())
        .unwrap_or_default();
    let mut fields =
        vec![json!({"name": "Id", "type": "id", "label": "Record ID", "custom": false})];
    fields.extend(
        custom
            .iter()
            .map(|(n, t, l)| json!({"name": n, "type": t, "label": l, "custom": true})),
    );
    with_limits(
        &state,
        axum::Json(json!({"name": object, "fields": fields})).into_response(),
    )
}
