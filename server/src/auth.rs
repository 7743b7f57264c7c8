//! Who may connect: users declared in config with SCRAM-SHA-256 verifiers, `trust` only for
//! loopback clients, failed logins counted per user and address (a lockout after repeated
//! failures), and TLS from a certificate and key in config.
//!
//! A verifier is `SCRAM-SHA-256$<iterations>:<salt>$<salted password>` (base64), printed by
//! `joinery password`. The salted password is PBKDF2-HMAC-SHA-256 of the password: the file never
//! holds a password, but a verifier lets a SCRAM client log in, so keep the config private.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pgwire::api::auth::sasl::scram::gen_salted_password;
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::PgWireResult;

/// Iterations of new verifiers (PostgreSQL's default).
pub const SCRAM_ITERATIONS: usize = 4096;

/// Failed logins per user and address before further attempts are refused for a while.
pub const MAX_FAILURES: u32 = 5;
/// How long a locked-out user and address wait.
pub const LOCKOUT: Duration = Duration::from_secs(60);

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// No password, and only from loopback addresses (the demo's default).
    #[default]
    Trust,
    /// SCRAM-SHA-256 against the `[users]` verifiers.
    Scram,
}

/// One `[users.<name>]` entry.
#[derive(Debug, Clone, Default)]
pub struct UserConfig {
    /// Parsed verifier: (salt, salted password).
    pub verifier: Option<(Vec<u8>, Vec<u8>)>,
    /// Platform admin: may manage secrets and read the audit log.
    pub admin: bool,
    /// Connections this user may see and query (`None`: all of them).
    pub grants: Option<BTreeSet<String>>,
    /// The user's own upstream credentials by connection.
    pub credentials: BTreeMap<String, joinery_engine::rest::Secret>,
    /// `[roles]` this user is a member of.
    pub roles: Vec<String>,
    /// Secret store names of credentials given as `${secret:NAME}`, by connection.
    pub credential_secrets: BTreeMap<String, String>,
}

/// A verifier for `password` with a fresh random salt.
pub fn make_verifier(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
    format!(
        "SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}",
        STANDARD.encode(salt),
        STANDARD.encode(salted)
    )
}

/// Parse `SCRAM-SHA-256$<iterations>:<salt>$<salted password>`.
pub fn parse_verifier(v: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let bad = || {
        "expected a verifier printed by `joinery password` (SCRAM-SHA-256$4096:<salt>$<key>); plain passwords are not accepted".to_string()
    };
    let rest = v.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
    let (params, key) = rest.split_once('$').ok_or_else(bad)?;
    let (iters, salt) = params.split_once(':').ok_or_else(bad)?;
    if iters.parse::<usize>().ok() != Some(SCRAM_ITERATIONS) {
        return Err(format!(
            "verifier iterations must be {SCRAM_ITERATIONS} (make a new one with `joinery password`)"
        ));
    }
    let salt = STANDARD.decode(salt).map_err(|_| bad())?;
    let key = STANDARD.decode(key).map_err(|_| bad())?;
    if salt.is_empty() || key.len() != 32 {
        return Err(bad());
    }
    Ok((salt, key))
}

pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// The users' verifiers, as pgwire's SCRAM exchange asks for them. An unknown user gets a
/// random verifier, so the exchange fails exactly like a wrong password (no user enumeration).
#[derive(Debug)]
pub struct Verifiers(pub Arc<BTreeMap<String, UserConfig>>);

#[async_trait]
impl AuthSource for Verifiers {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let known = login
            .user()
            .and_then(|u| self.0.get(u))
            .and_then(|u| u.verifier.clone());
        Ok(match known {
            Some((salt, key)) => Password::new(Some(salt), key),
            None => {
                let salt: [u8; 16] = rand::random();
                let key: [u8; 32] = rand::random();
                Password::new(Some(salt.to_vec()), key.to_vec())
            }
        })
    }
}

/// Failed logins per (user, address): after [`MAX_FAILURES`] within the lockout window, further
/// attempts are refused until it passes.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<(String, IpAddr), (u32, Instant)>>,
}

impl LoginLimiter {
    /// `Err(seconds left)` while locked out.
    pub fn check(&self, user: &str, ip: IpAddr) -> Result<(), u64> {
        let Ok(mut m) = self.failures.lock() else {
            return Ok(());
        };
        let key = (user.to_string(), ip);
        if let Some((n, since)) = m.get(&key).copied() {
            if since.elapsed() >= LOCKOUT {
                m.remove(&key);
            } else if n >= MAX_FAILURES {
                return Err(LOCKOUT.saturating_sub(since.elapsed()).as_secs().max(1));
            }
        }
        Ok(())
    }

    pub fn failed(&self, user: &str, ip: IpAddr) {
        if let Ok(mut m) = self.failures.lock() {
            let e = m
                .entry((user.to_string(), ip))
                .or_insert((0, Instant::now()));
            e.0 += 1;
            e.1 = Instant::now();
        }
    }

    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(&(user.to_string(), ip));
        }
    }
}

/// TLS from PEM files: the acceptor, and the certificate (for SCRAM channel binding).
pub fn load_tls(cert: &Path, key: &Path) -> Result<(pgwire::tokio::TlsAcceptor, Vec<u8>), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let pem = std::fs::read(cert)
        .map_err(|e| format!("cannot read TLS certificate {}: {e}", cert.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate {}: no certificate in it",
            cert.display()
        ));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("TLS certificate and key: {e}"))?;
    Ok((pgwire::tokio::TlsAcceptor::from(Arc::new(config)), pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_round_trip_and_plain_passwords_are_refused() {
        let v = make_verifier("s3cret");
        let (salt, key) = parse_verifier(&v).expect("parses");
        assert_eq!(key, gen_salted_password("s3cret", &salt, SCRAM_ITERATIONS));
        assert!(!v.contains("s3cret"));
        assert!(parse_verifier("s3cret").is_err());
        assert!(parse_verifier("SCRAM-SHA-256$1:AAAA$BBBB").is_err());
        assert_ne!(make_verifier("s3cret"), v, "fresh salt each time");
    }

    #[test]
    fn lockout_after_repeated_failures() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..MAX_FAILURES {
            assert!(l.check("bob", ip).is_ok());
            l.failed("bob", ip);
        }
        assert!(l.check("bob", ip).is_err());
        assert!(l.check("alice", ip).is_ok(), "per user");
        assert!(
            l.check("bob", "10.0.0.2".parse().expect("ip")).is_ok(),
            "per address"
        );
    }
}
