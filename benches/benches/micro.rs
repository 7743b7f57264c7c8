//! Micro benches (criterion): a JSON page into Arrow, and pushdown planning.
//!
//! ```sh
//! cargo bench -p joinery-benches --bench micro --profile bench-fast
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::prelude::{col, lit};
use joinery_engine::rest::decode::{decode, records};
use joinery_engine::rest::plan::{Vars, plan_scan, pushdown_verdicts};
use joinery_engine::rest::spec::TableSpec;
use serde_json::{Value, json};

/// GitHub's `issues` table, as the connector declares it.
fn issues_spec() -> TableSpec {
    let spec = joinery_providers::github::tables()
        .into_iter()
        .find(|t| t["name"] == "issues")
        .expect("issues spec");
    TableSpec::from_json(spec).expect("valid spec")
}

/// A page of `n` issues shaped like GitHub's answer.
fn page(n: usize) -> Vec<u8> {
    let issues: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "number": i + 1, "id": 1_000_000 + i, "title": format!("PAY-{i}: fix the thing number {i}"),
                "state": if i % 3 == 0 { "closed" } else { "open" }, "state_reason": null,
                "user": {"login": format!("dev{}", i % 17), "id": i},
                "assignee": if i % 2 == 0 { json!({"login": "alice"}) } else { Value::Null },
                "labels": [{"name": "bug"}, {"name": format!("area-{}", i % 5)}],
                "comments": i % 9,
                "created_at": "2026-10-01T12:00:00Z", "updated_at": "2026-11-01T08:30:00Z",
                "closed_at": if i % 3 == 0 { json!("2026-11-02T09:00:00Z") } else { Value::Null },
                "html_url": format!("https://github.com/acme/api/issues/{}", i + 1),
                "body": "Steps to reproduce: open the page, click the button, observe the error.",
            })
        })
        .collect();
    serde_json::to_vec(&issues).expect("json")
}

fn decoding(c: &mut Criterion) {
    let spec = issues_spec();
    let columns: Vec<_> = spec.columns.iter().collect();
    let schema = spec.schema();
    for n in [100usize, 1000] {
        let body = page(n);
        let mut g = c.benchmark_group("json_page_to_arrow");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("github_issues_{n}"), |b| {
            b.iter(|| {
                let v: Value = serde_json::from_slice(black_box(&body)).expect("parse");
                let recs = records(&v, "$").expect("records");
                black_box(decode(&columns, schema.clone(), recs).expect("decode"))
            })
        });
        g.finish();
    }
}

fn planning(c: &mut Criterion) {
    let spec = issues_spec();
    let mut vars = Vars::new();
    vars.insert(
        "repository".into(),
        vec!["acme/api".into(), "acme/web".into(), "acme/billing".into()],
    );
    let filters = vec![
        col("state").eq(lit("open")),
        col("updated_at").gt_eq(lit("2026-10-01T00:00:00Z")),
        col("assignee").eq(lit("alice")),
        col("comments").gt(lit(3i64)),
    ];
    let refs: Vec<_> = filters.iter().collect();
    c.bench_function("pushdown_verdicts_4_filters", |b| {
        b.iter(|| black_box(pushdown_verdicts(&spec, black_box(&refs))))
    });
    c.bench_function("plan_scan_4_filters_3_repositories", |b| {
        b.iter(|| {
            black_box(
                plan_scan(&spec, "issues", &vars, black_box(&filters), Some(50)).expect("plan"),
            )
        })
    });
}

criterion_group!(benches, decoding, planning);
criterion_main!(benches);
