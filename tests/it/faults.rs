//! The fault matrix: the workload's queries against the demo world's fakes while they inject
//! one fault at a time, and mixed. Every run must end with exactly the fault-free answer or a
//! clear error naming the connection (never partial or duplicated rows); the server keeps
//! serving, and `joinery.connector_stats` shows what happened. The matrix is printed.

use std::time::Duration;

use joinery_engine::rest::fakekit::FakeFault;
use joinery_tests::text_rows;
use joinery_tests::workload::{DemoServer, QUERIES};

fn status(code: u16, retry_after: Option<u64>) -> FakeFault {
    FakeFault::Status {
        code,
        retry_after,
        body: format!(r#"{{"message":"injected {code}"}}"#),
    }
}

/// What a fault must lead to.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// Retried or waited out: the exact answer.
    Answer,
    /// Not recoverable inside a query: a clear error (the exact answer is also fine when the
    /// fault never reached a request that mattered).
    AnswerOrError,
}

struct Case {
    name: &'static str,
    faults: fn() -> Vec<FakeFault>,
    /// Every request from now on fails (the fake dies mid-scan, after its first answer).
    dies: bool,
    /// Which connections the fault is injected into (`None`: all the query reads).
    only: Option<&'static [&'static str]>,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        Case {
            name: "429 with Retry-After",
            faults: || vec![status(429, Some(1))],
            dies: false,
            only: None,
            expect: Answer,
        },
        Case {
            name: "429 without Retry-After",
            faults: || vec![status(429, None)],
            dies: false,
            only: None,
            expect: Answer,
        },
        Case {
            name: "403, rate limit remaining 0",
            faults: || vec![FakeFault::RateLimitExhausted { reset_secs: 1 }],
            dies: false,
            only: None,
            expect: AnswerOrError,
        },
        Case {
            name: "500",
            faults: || vec![status(500, None)],
            dies: false,
            only: None,
            expect: Answer,
        },
        Case {
            name: "502",
            faults: || vec![status(502, None)],
            dies: false,
            only: None,
            expect: Answer,
        },
        Case {
            name: "503",
            faults: || vec![status(503, None)],
            dies: false,
            only: None,
            expect: Answer,
        },
        Case {
            name: "slow past the timeout",
            faults: || vec![FakeFault::Delay(Duration::from_millis(1500))],
            dies: false,
            only: None,
            expect: Answer,
        },
        Case {
            name: "connection reset",
            faults: || vec![FakeFault::Reset],
            dies: false,
            only: None,
            expect: Answer,
        },
        Case {
            name: "body cut mid-stream",
            faults: || vec![FakeFault::CutMidBody],
            dies: false,
            only: None,
            expect: Answer,
        },
        Case {
            name: "malformed JSON",
            faults: || vec![FakeFault::Malformed],
            dies: false,
            only: None,
            expect: AnswerOrError,
        },
        Case {
            name: "page truncated mid-body",
            faults: || vec![FakeFault::Truncated],
            dies: false,
            only: None,
            expect: AnswerOrError,
        },
        Case {
            name: "cursor repeats (page 2 = page 1)",
            faults: || vec![FakeFault::Delay(Duration::ZERO), FakeFault::RepeatPage],
            dies: false,
            // PagerDuty pages by offset: there is no cursor to repeat.
            only: Some(&["github", "jira", "salesforce", "stripe"]),
            expect: AnswerOrError,
        },
        Case {
            name: "expired token (401, refresh)",
            faults: || vec![status(401, None)],
            dies: false,
            only: Some(&["salesforce"]),
            expect: Answer,
        },
        Case {
            name: "fake dies mid-scan",
            faults: Vec::new,
            dies: true,
            only: None,
            expect: AnswerOrError,
        },
        Case {
            name: "mixed: 429 + 503 + reset",
            faults: || vec![status(429, None), status(503, None), FakeFault::Reset],
            dies: false,
            only: None,
            expect: Answer,
        },
    ]
}

#[derive(Default)]
struct Tally {
    answers: usize,
    errors: usize,
    wrong: usize,
    requests: usize,
    /// Queries in which some fake served every fault it was given (the others met none: their
    /// reads were a single page).
    fired: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_never_gives_a_wrong_answer() {
    // Baselines from a fault-free world.
    let clean = DemoServer::start(42, 1, Duration::ZERO, "timeout_ms = 500", "").await;
    let c = clean.server.client().await;
    let mut baseline = Vec::new();
    for q in QUERIES {
        baseline.push(text_rows(&c, q.sql).await);
    }
    drop(c);
    drop(clean);

    let mut table = vec![format!(
        "| fault | queries that met it | answers | clear errors | wrong | requests | connector_stats errors |"
    )];
    table.push("|---|---|---|---|---|---|---|".into());
    let mut problems = Vec::new();
    for case in cases() {
        let demo = DemoServer::start(42, 1, Duration::ZERO, "timeout_ms = 500", "").await;
        let client = demo.server.client().await;
        client
            .simple_query("SET joinery.cache = off")
            .await
            .expect("cache off");
        let mut tally = Tally::default();
        for (q, want) in QUERIES.iter().zip(&baseline) {
            let targets: Vec<&str> = q
                .connections
                .iter()
                .copied()
                .filter(|c| case.only.is_none_or(|o| o.contains(c)))
                .collect();
            if targets.is_empty() {
                continue;
            }
            for t in &targets {
                let fake = demo.fake(t);
                fake.heal();
                for f in (case.faults)() {
                    fake.inject(f);
                }
                if case.dies {
                    fake.die_after(fake.request_count() + 1);
                }
            }
            let before = demo.total_requests();
            let got = client.simple_query(q.sql).await;
            tally.requests += demo.total_requests() - before;
            if targets.iter().any(|t| demo.fake(t).pending_faults() == 0) {
                tally.fired += 1;
            }
            for t in &targets {
                demo.fake(t).heal();
            }
            match got {
                Ok(msgs) => {
                    let rows: Vec<Vec<Option<String>>> = msgs
                        .iter()
                        .filter_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(r) => {
                                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                            }
                            _ => None,
                        })
                        .collect();
                    if &rows == want {
                        tally.answers += 1;
                    } else {
                        tally.wrong += 1;
                        problems.push(format!("{} / {}: WRONG rows {rows:?}", case.name, q.name));
                    }
                }
                Err(e) => {
                    tally.errors += 1;
                    let db = e.as_db_error();
                    let msg = db.map(|d| d.message().to_string()).unwrap_or_default();
                    let state = db.map(|d| d.code().code().to_string()).unwrap_or_default();
                    let names_one = targets.iter().any(|t| msg.contains(t));
                    if !names_one || state == "XX000" || state.is_empty() {
                        problems.push(format!(
                            "{} / {}: unclear error {state} {msg}",
                            case.name, q.name
                        ));
                    }
                    if case.expect == Expect::Answer {
                        problems.push(format!(
                            "{} / {}: should have been retried, got {state} {msg}",
                            case.name, q.name
                        ));
                    }
                }
            }
            // The session and the server keep working.
            assert_eq!(
                text_rows(&client, "SELECT 1").await,
                vec![vec![Some("1".to_string())]],
                "{} / {}",
                case.name,
                q.name
            );
        }
        let stats = text_rows(&client, "SELECT sum(errors) FROM joinery.connector_stats").await;
        let errors = stats[0][0].clone().unwrap_or_default();
        table.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            case.name,
            tally.fired,
            tally.answers,
            tally.errors,
            tally.wrong,
            tally.requests,
            errors
        ));
        if tally.errors > 0 && errors == "0" {
            problems.push(format!("{}: errors not in connector_stats", case.name));
        }
        // A fault no query met proves nothing.
        if tally.fired == 0 {
            problems.push(format!("{}: no query met the fault", case.name));
        }
        // Faults that were served show up as errors of their connections.
        if !case.dies && tally.fired > 0 && errors == "0" {
            problems.push(format!("{}: served faults not counted", case.name));
        }
    }
    println!(
        "\nFault matrix ({} queries per fault):\n{}\n",
        QUERIES.len(),
        table.join("\n")
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
