//! The audit log: one JSON line per SQL statement and per connector call (who, from where,
//! which query, what was asked of which tool, what came back, how long it took), appended to a
//! file and kept in memory for the `joinery.audit_log` table.
//!
//! Writes never silently drop: a failed write is counted, and the server fails the statement
//! it belonged to when the log is configured to fail closed (the default).

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

/// Events kept in memory for `joinery.audit_log`.
pub const KEEP: usize = 10_000;

#[derive(Debug, Default)]
pub struct AuditLog {
    path: Option<PathBuf>,
    file: Option<Mutex<std::fs::File>>,
    recent: Mutex<VecDeque<Value>>,
    failures: AtomicU64,
    /// A statement whose audit rows could not be written fails.
    pub fail_closed: bool,
}

impl AuditLog {
    /// Append to `path` (created with mode 0600 if missing).
    pub fn open(path: &Path, fail_closed: bool) -> std::io::Result<AuditLog> {
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let f = opts.open(path)?;
        Ok(AuditLog {
            path: Some(path.to_path_buf()),
            file: Some(Mutex::new(f)),
            recent: Mutex::new(VecDeque::new()),
            failures: AtomicU64::new(0),
            fail_closed,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Write failures so far (compare before and after a statement).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Record one event (a JSON object; `at` is added).
    pub fn write(&self, mut event: Value) {
        if let Value::Object(m) = &mut event {
            m.insert(
                "at".into(),
                Value::String(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                ),
            );
        }
        if let Some(f) = &self.file {
            let mut line = event.to_string();
            line.push('\n');
            // One write call per line on an O_APPEND file: lines never interleave.
            let ok = f
                .lock()
                .map(|mut f| f.write_all(line.as_bytes()).is_ok())
                .unwrap_or(false);
            if !ok {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = ?self.path, "audit log write failed");
            }
        }
        if let Ok(mut r) = self.recent.lock() {
            if r.len() >= KEEP {
                r.pop_front();
            }
            r.push_back(event);
        }
    }

    /// The most recent events, oldest first.
    pub fn recent(&self) -> Vec<Value> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The statement as the audit log keeps it: string literals that look like credentials
/// (known token prefixes, JWTs, long random-looking strings) become `'***'`.
pub fn mask_statement(sql: &str) -> String {
    const PREFIXES: [&str; 14] = [
        "ghp_",
        "gho_",
        "ghs_",
        "ghu_",
        "github_pat_",
        "xoxb-",
        "xoxp-",
        "xoxa-",
        "sk_live_",
        "sk_test_",
        "rk_live_",
        "pat-",
        "bearer ",
        "eyj",
    ];
    let secret_like = |s: &str| {
        let lower = s.to_ascii_lowercase();
        if PREFIXES.iter().any(|p| lower.starts_with(p)) {
            return true;
        }
        s.len() >= 24
            && !s.contains(char::is_whitespace)
            && s.chars().any(|c| c.is_ascii_digit())
            && s.chars().any(|c| c.is_ascii_alphabetic())
            && !s.contains(['/', '@', ':'])
    };
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\'' {
            out.push(c);
            continue;
        }
        // A literal: up to the closing quote ('' is an escaped quote).
        let start = i + 1;
        let mut end = sql.len();
        while let Some((j, d)) = chars.next() {
            if d == '\'' {
                if chars.peek().map(|(_, n)| *n) == Some('\'') {
                    chars.next();
                    continue;
                }
                end = j;
                break;
            }
        }
        let lit = &sql[start..end.min(sql.len())];
        if secret_like(&lit.replace("''", "'")) {
            out.push_str("'***'");
        } else {
            out.push('\'');
            out.push_str(lit);
            if end < sql.len() {
                out.push('\'');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_like_literals_are_masked() {
        assert_eq!(
            mask_statement("SELECT * FROM t WHERE token = 'ghp_abcDEF123' AND name = 'O''Brien'"),
            "SELECT * FROM t WHERE token = '***' AND name = 'O''Brien'"
        );
        assert_eq!(
            mask_statement("SELECT 'a8f3k2j9d8s7a6f5g4h3j2k1l0'"),
            "SELECT '***'"
        );
        assert_eq!(
            mask_statement(
                "SELECT * FROM x WHERE d = '2026-01-01' AND u = 'https://x.example/a1b2c3d4e5f6g7h8i9'"
            ),
            "SELECT * FROM x WHERE d = '2026-01-01' AND u = 'https://x.example/a1b2c3d4e5f6g7h8i9'"
        );
    }

    #[test]
    fn events_are_lines_in_the_file_and_kept_in_memory() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&p, true).expect("open");
        log.write(serde_json::json!({"kind": "statement", "user": "a"}));
        log.write(serde_json::json!({"kind": "call", "user": "a"}));
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text.lines().count(), 2);
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<Value>(l).is_ok())
        );
        assert_eq!(log.recent().len(), 2);
        assert_eq!(log.failures(), 0);
    }
}
