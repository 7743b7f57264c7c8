//! Who may connect: users declared in config with SCRAM-SHA-256 verifiers, `trust` only for
//! loopback clients, failed logins counted per user and address (a lockout after repeated
//! failures), and TLS from a certificate and key in config.
//!
//! A verifier is `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64), printed
//! by `joinery password`, the same form PostgreSQL keeps in `pg_authid.rolpassword` (so its
//! users can be moved over as they are). It lets the server check a login, but no client can
//! log in with it: the SCRAM proof needs the client key, of which the verifier holds only a
//! hash (see [`crate::scram`]). It still allows guessing passwords offline, at the cost of
//! PBKDF2 with its iteration count per guess, so keep the config private all the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::scram::Verifier;

/// Iterations of new verifiers (PostgreSQL's default), and the fewest a verifier may have.
pub const SCRAM_ITERATIONS: u32 = crate::scram::ITERATIONS;

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
    /// Parsed SCRAM verifier (its keys are wiped from memory when dropped).
    pub verifier: Option<Verifier>,
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

/// A verifier for `password` with a fresh random salt, as config takes it.
pub fn make_verifier(password: &str) -> String {
    Verifier::generate(password).to_string()
}

/// Parse `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`; the old
/// `<salt>$<salted password>` form is refused with how to make a new one.
pub fn parse_verifier(v: &str) -> Result<Verifier, String> {
    Verifier::parse(v)
}

pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// The users' verifiers for the SCRAM exchange. An unknown user gets a mock verifier (a salt
/// that is stable per name, keys nothing matches), so the exchange fails exactly like a wrong
/// password (no user enumeration).
pub struct Verifiers {
    users: Arc<BTreeMap<String, UserConfig>>,
    mock_key: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Verifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifiers")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Verifiers {
    pub fn new(users: Arc<BTreeMap<String, UserConfig>>) -> Self {
        Verifiers {
            users,
            mock_key: zeroize::Zeroizing::new(rand::random()),
        }
    }

    /// The verifier to check `user`'s login against (a mock one for an unknown user).
    pub fn get(&self, user: &str) -> Verifier {
        self.users
            .get(user)
            .and_then(|u| u.verifier.clone())
            .unwrap_or_else(|| Verifier::mock(user, &self.mock_key[..]))
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
            // Failures that no longer lock anyone out are forgotten, so guessing at many
            // names cannot grow this map without bound.
            if m.len() >= 10_000 {
                m.retain(|_, (_, since)| since.elapsed() < LOCKOUT);
            }
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

/// TLS from PEM files: the acceptor, and the hash of the (first) certificate that
/// SCRAM-SHA-256-PLUS binds to (`None` when its signature algorithm has none, e.g. Ed25519:
/// then only SCRAM-SHA-256 is offered).
pub fn load_tls(
    cert: &Path,
    key: &Path,
) -> Result<(pgwire::tokio::TlsAcceptor, Option<Vec<u8>>), String> {
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
    let end_point = crate::scram::tls_server_end_point(&certs[0]);
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("TLS certificate and key: {e}"))?;
    Ok((
        pgwire::tokio::TlsAcceptor::from(Arc::new(config)),
        end_point,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_round_trip_and_plain_passwords_are_refused() {
        let v = make_verifier("s3cret");
        let parsed = parse_verifier(&v).expect("parses");
        assert_eq!(parsed.to_string(), v);
        assert_eq!(
            Verifier::from_password("s3cret", parsed.salt(), SCRAM_ITERATIONS).to_string(),
            v
        );
        assert!(!v.contains("s3cret"));
        assert!(parse_verifier("s3cret").is_err());
        assert!(parse_verifier("SCRAM-SHA-256$1:AAAA$BBBB").is_err());
        assert_ne!(make_verifier("s3cret"), v, "fresh salt each time");
    }

    #[test]
    fn unknown_users_get_a_mock_verifier_with_a_stable_salt() {
        let mut users = BTreeMap::new();
        users.insert(
            "alice".to_string(),
            UserConfig {
                verifier: Some(Verifier::generate("pw")),
                ..Default::default()
            },
        );
        let v = Verifiers::new(Arc::new(users));
        assert_eq!(v.get("alice").to_string(), v.get("alice").to_string());
        assert_eq!(v.get("mallory").salt(), v.get("mallory").salt());
        assert_ne!(v.get("mallory").salt(), v.get("alice").salt());
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
