//! SCRAM-SHA-256 logins (RFC 5802, RFC 7677), server side, against stored verifiers.
//!
//! A verifier is what PostgreSQL keeps in `pg_authid.rolpassword`:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64), where
//! `SaltedPassword = PBKDF2-HMAC-SHA-256(SASLprep(password), salt, iterations)`,
//! `StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`. It lets the server check a client's proof
//! and prove itself to the client, but a client cannot make a proof from it: the proof needs
//! `ClientKey`, and the verifier holds only its hash.
//!
//! One exchange per connection: [`start`] reads the client-first message and answers the
//! server-first one; [`AwaitingFinal::finish`] checks the client-final message (channel
//! binding, nonce, proof) and answers the server-final one. SCRAM-SHA-256-PLUS binds the
//! exchange to the TLS connection with `tls-server-end-point` (RFC 5929): the hash of the
//! server's certificate, see [`tls_server_end_point`].

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub const MECHANISM: &str = "SCRAM-SHA-256";
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel binding type offered (what libpq and PostgreSQL use).
pub const CHANNEL_BINDING_TYPE: &str = "tls-server-end-point";
/// Iterations of new verifiers, and the fewest a verifier may have (PostgreSQL's default).
pub const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;
const KEY_LEN: usize = 32;
const PREFIX: &str = "SCRAM-SHA-256$";

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A user's stored SCRAM-SHA-256 verifier. `Debug` shows the iterations only; the keys are
/// wiped from memory when it is dropped.
#[derive(Clone)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Zeroizing<[u8; KEY_LEN]>,
    server_key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as PostgreSQL prints it.
impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key[..]),
            STANDARD.encode(&self.server_key[..])
        )
    }
}

impl Verifier {
    /// The verifier of `password` with `salt` and `iterations` (the password SASLprep-normalized
    /// as PostgreSQL does, and used as it is when it cannot be).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let normalized: Cow<'_, str> =
            stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password));
        // A normalized copy of the password is wiped too.
        let normalized = Zeroizing::new(normalized.into_owned());
        let mut salted = Zeroizing::new([0u8; KEY_LEN]);
        pbkdf2::pbkdf2_hmac::<Sha256>(normalized.as_bytes(), salt, iterations, &mut salted[..]);
        let client_key = Zeroizing::new(hmac(&salted[..], &[b"Client Key"]));
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Zeroizing::new(Sha256::digest(&client_key[..]).into()),
            server_key: Zeroizing::new(hmac(&salted[..], &[b"Server Key"])),
        }
    }

    /// A verifier of `password` with a fresh random salt and [`ITERATIONS`].
    pub fn generate(password: &str) -> Verifier {
        let salt: [u8; SALT_LEN] = rand::random();
        Self::from_password(password, &salt, ITERATIONS)
    }

    /// A verifier no password matches, for a user who does not exist: the exchange goes on and
    /// fails at the proof like a wrong password. The salt is derived from the user name with
    /// `mock_key` (a per-server secret), so repeated attempts see the same salt as they would
    /// for a real user.
    pub fn mock(user: &str, mock_key: &[u8]) -> Verifier {
        let salt = hmac(mock_key, &[b"joinery mock salt\0", user.as_bytes()]);
        Verifier {
            iterations: ITERATIONS,
            salt: salt[..SALT_LEN].to_vec(),
            stored_key: Zeroizing::new(rand::random()),
            server_key: Zeroizing::new(rand::random()),
        }
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// Parse `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (what `joinery password`
    /// prints and what PostgreSQL keeps in `pg_authid.rolpassword`). Errors never repeat the text.
    pub fn parse(v: &str) -> Result<Verifier, String> {
        let bad = || {
            "expected a SCRAM-SHA-256 verifier (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, printed by `joinery password` or taken from PostgreSQL's pg_authid.rolpassword); plain passwords are not accepted".to_string()
        };
        let rest = v.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iters, salt) = params.split_once(':').ok_or_else(bad)?;
        let Some((stored, server)) = keys.split_once(':') else {
            return Err(
                "this is the old verifier form (<salt>$<salted password>), which lets anyone who reads it log in; make a new one with `joinery password`"
                    .to_string(),
            );
        };
        let iterations: u32 = iters.parse().map_err(|_| bad())?;
        if iterations < ITERATIONS {
            return Err(format!(
                "verifier iterations must be at least {ITERATIONS} (make a new one with `joinery password`)"
            ));
        }
        let salt = STANDARD.decode(salt).map_err(|_| bad())?;
        let key = |k: &str| -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
            let bytes = Zeroizing::new(STANDARD.decode(k).map_err(|_| bad())?);
            let mut out = Zeroizing::new([0u8; KEY_LEN]);
            if bytes.len() != KEY_LEN {
                return Err(bad());
            }
            out.copy_from_slice(&bytes);
            Ok(out)
        };
        if salt.is_empty() {
            return Err(bad());
        }
        Ok(Verifier {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// Whether `proof` (the client's `p=`, decoded) proves knowledge of the password for
    /// `auth_message`: `ClientKey = proof XOR HMAC(StoredKey, AuthMessage)` must hash to
    /// `StoredKey` (compared in constant time).
    pub fn check_proof(&self, auth_message: &[u8], proof: &[u8]) -> bool {
        if proof.len() != KEY_LEN {
            return false;
        }
        let signature = Zeroizing::new(hmac(&self.stored_key[..], &[auth_message]));
        let mut client_key = Zeroizing::new([0u8; KEY_LEN]);
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(signature.iter()))
        {
            *k = p ^ s;
        }
        let hashed: [u8; KEY_LEN] = Sha256::digest(&client_key[..]).into();
        hashed.ct_eq(&self.stored_key[..]).into()
    }

    /// `ServerSignature = HMAC(ServerKey, AuthMessage)`: the server's proof to the client.
    pub fn server_signature(&self, auth_message: &[u8]) -> [u8; KEY_LEN] {
        hmac(&self.server_key[..], &[auth_message])
    }
}

/// Why an exchange failed. Every kind ends the login the same way; the kind is for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// A message that is not SCRAM as RFC 5802 writes it.
    Malformed(&'static str),
    /// Channel binding asked for where it was not offered, or missing where it was chosen,
    /// or not matching this connection.
    ChannelBinding(&'static str),
    /// A SCRAM feature we do not support (authorization identities, mandatory extensions).
    Unsupported(&'static str),
    /// The proof does not match the verifier: wrong password or unknown user.
    WrongProof,
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramError::Malformed(m) => write!(f, "malformed SCRAM message: {m}"),
            ScramError::ChannelBinding(m) => write!(f, "SCRAM channel binding: {m}"),
            ScramError::Unsupported(m) => write!(f, "unsupported SCRAM feature: {m}"),
            ScramError::WrongProof => f.write_str("wrong password or unknown user"),
        }
    }
}

impl std::error::Error for ScramError {}

/// The certificate hash SCRAM-SHA-256-PLUS binds to (RFC 5929 `tls-server-end-point`): the
/// DER certificate hashed with its signature's hash function, SHA-256 for MD5 and SHA-1.
/// `None` when the signature algorithm has no such hash (Ed25519, RSA-PSS): then only plain
/// SCRAM-SHA-256 is offered, as PostgreSQL does.
pub fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    use x509_cert::der::Decode;
    use x509_cert::der::oid::db::rfc5912 as oid;
    let cert = x509_cert::Certificate::from_der(cert_der).ok()?;
    let alg = cert.signature_algorithm.oid;
    let sha256 = [
        oid::MD_5_WITH_RSA_ENCRYPTION,
        oid::SHA_1_WITH_RSA_ENCRYPTION,
        oid::DSA_WITH_SHA_1,
        oid::SHA_256_WITH_RSA_ENCRYPTION,
        oid::ECDSA_WITH_SHA_256,
        oid::DSA_WITH_SHA_256,
    ];
    if sha256.contains(&alg) {
        Some(Sha256::digest(cert_der).to_vec())
    } else if [
        oid::SHA_224_WITH_RSA_ENCRYPTION,
        oid::ECDSA_WITH_SHA_224,
        oid::DSA_WITH_SHA_224,
    ]
    .contains(&alg)
    {
        Some(Sha224::digest(cert_der).to_vec())
    } else if [oid::SHA_384_WITH_RSA_ENCRYPTION, oid::ECDSA_WITH_SHA_384].contains(&alg) {
        Some(Sha384::digest(cert_der).to_vec())
    } else if [oid::SHA_512_WITH_RSA_ENCRYPTION, oid::ECDSA_WITH_SHA_512].contains(&alg) {
        Some(Sha512::digest(cert_der).to_vec())
    } else {
        None
    }
}

/// A `value-char`/`printable` nonce: ASCII 0x21..=0x7E except `,`.
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// An extension attribute: one letter, `=`, a value.
fn valid_attr(a: &str) -> bool {
    let b = a.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b'='
}

/// The exchange after the server-first message, waiting for the client-final one.
pub struct AwaitingFinal {
    verifier: Verifier,
    /// `client-first-message-bare "," server-first-message`, the start of the AuthMessage.
    auth_prefix: String,
    /// The combined client and server nonce the client must echo.
    nonce: String,
    /// What the client's `c=` must decode to: its GS2 header, then the certificate hash when
    /// it chose channel binding.
    channel_binding: Vec<u8>,
}

impl fmt::Debug for AwaitingFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwaitingFinal").finish_non_exhaustive()
    }
}

/// Read the client-first message of `mechanism` and answer the server-first message.
///
/// `cert_hash` is this connection's [`tls_server_end_point`] hash when it runs over TLS and
/// SCRAM-SHA-256-PLUS was offered, `None` otherwise. The user name in the message is ignored
/// (the startup packet's is the one that counts, as in PostgreSQL).
pub fn start(
    mechanism: &str,
    client_first: &[u8],
    verifier: Verifier,
    cert_hash: Option<&[u8]>,
) -> Result<(String, AwaitingFinal), ScramError> {
    let msg = std::str::from_utf8(client_first)
        .map_err(|_| ScramError::Malformed("client-first is not UTF-8"))?;
    // gs2-header = gs2-cbind-flag "," [authzid] ","
    let (flag, rest) = msg
        .split_once(',')
        .ok_or(ScramError::Malformed("client-first has no GS2 header"))?;
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("client-first has no GS2 header"))?;
    let gs2_header = &msg[..msg.len() - bare.len()];
    let plus = match mechanism {
        MECHANISM => false,
        MECHANISM_PLUS => true,
        _ => return Err(ScramError::Unsupported("SASL mechanism")),
    };
    let bound = match flag {
        "n" if plus => {
            return Err(ScramError::ChannelBinding(
                "SCRAM-SHA-256-PLUS chosen without channel binding data",
            ));
        }
        "n" => false,
        // The client could bind but believes the server cannot: over TLS, where we offered
        // SCRAM-SHA-256-PLUS, someone removed it from the offer.
        "y" if plus || cert_hash.is_some() => {
            return Err(ScramError::ChannelBinding(
                "the client was not offered SCRAM-SHA-256-PLUS, though the server offered it",
            ));
        }
        "y" => false,
        _ => match flag.strip_prefix("p=") {
            Some(CHANNEL_BINDING_TYPE) if !plus => {
                return Err(ScramError::ChannelBinding(
                    "channel binding requested without choosing SCRAM-SHA-256-PLUS",
                ));
            }
            Some(CHANNEL_BINDING_TYPE) => true,
            Some(_) => return Err(ScramError::Unsupported("channel binding type")),
            None => return Err(ScramError::Malformed("bad GS2 channel binding flag")),
        },
    };
    if plus && cert_hash.is_none() {
        return Err(ScramError::ChannelBinding(
            "SCRAM-SHA-256-PLUS is offered only over TLS",
        ));
    }
    if !authzid.is_empty() {
        return Err(ScramError::Unsupported("authorization identity"));
    }
    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    let mut attrs = bare.split(',');
    let user = attrs.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err(ScramError::Unsupported("mandatory extension"));
    }
    if !user.starts_with("n=") {
        return Err(ScramError::Malformed("client-first has no user name"));
    }
    let client_nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(ScramError::Malformed("client-first has no nonce"))?;
    if !valid_nonce(client_nonce) {
        return Err(ScramError::Malformed("bad client nonce"));
    }
    if !attrs.all(valid_attr) {
        return Err(ScramError::Malformed("bad attribute in client-first"));
    }
    let server_nonce = STANDARD.encode(rand::random::<[u8; 18]>());
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!(
        "r={nonce},s={},i={}",
        STANDARD.encode(verifier.salt()),
        verifier.iterations()
    );
    let mut channel_binding = gs2_header.as_bytes().to_vec();
    if bound && let Some(hash) = cert_hash {
        channel_binding.extend_from_slice(hash);
    }
    Ok((
        server_first.clone(),
        AwaitingFinal {
            verifier,
            auth_prefix: format!("{bare},{server_first}"),
            nonce,
            channel_binding,
        },
    ))
}

impl AwaitingFinal {
    /// Check the client-final message and answer the server-final one (`v=<ServerSignature>`).
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(client_final)
            .map_err(|_| ScramError::Malformed("client-final is not UTF-8"))?;
        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client-final has no proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("client-final has no channel binding"))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("client-final has no nonce"))?;
        if !attrs.all(valid_attr) {
            return Err(ScramError::Malformed("bad attribute in client-final"));
        }
        let cbind = STANDARD
            .decode(cbind)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if cbind != self.channel_binding {
            return Err(ScramError::ChannelBinding(
                "the client's channel binding does not match this connection",
            ));
        }
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let auth_message = format!("{},{without_proof}", self.auth_prefix);
        if !self.verifier.check_proof(auth_message.as_bytes(), &proof) {
            return Err(ScramError::WrongProof);
        }
        let signature = self.verifier.server_signature(auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by PostgreSQL 15 (`CREATE ROLE ... PASSWORD 'pg-generated-Pw9!'` with
    /// `password_encryption = 'scram-sha-256'`, then `SELECT rolpassword FROM pg_authid`).
    pub const PG_VERIFIER: &str = "SCRAM-SHA-256$4096:Gr89Hv9Oly0THTJer2Qhwg==$wCoK91jX1+KRkNDDgbMcbw92CztPYM9Zf9WVWqhZgMY=:UW3umg8uCc6ucCZTUo1wqq0Qdnb4KIIlYjynV57NCKU=";
    pub const PG_PASSWORD: &str = "pg-generated-Pw9!";
    /// PostgreSQL 15 again, for `E'\uFB01sh\u00A0pw'`: SASLprep makes it `fish pw`.
    const PG_VERIFIER_SASLPREP: &str = "SCRAM-SHA-256$4096:yqJO3tG15pN2vH4Q4CGW9Q==$KWeuyCcfNSwJ77gF2A+lcdv9vrozD5T2j2fpx7CpHiQ=:xAl4AgzoGbmOXOk7DhMtpjCM9gwmoTXz6mNXB52j+bg=";

    /// A SCRAM client (RFC 5802 section 3) that knows the salted password.
    struct Client {
        salted: [u8; KEY_LEN],
    }

    impl Client {
        fn with_password(password: &str, salt: &[u8], iterations: u32) -> Client {
            let p = stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password));
            let mut salted = [0u8; KEY_LEN];
            pbkdf2::pbkdf2_hmac::<Sha256>(p.as_bytes(), salt, iterations, &mut salted);
            Client { salted }
        }

        /// The client-final message for the exchange so far.
        fn final_message(&self, bare: &str, server_first: &str, cbind: &[u8]) -> String {
            let nonce = server_first
                .split(',')
                .find_map(|a| a.strip_prefix("r="))
                .expect("nonce");
            let without_proof = format!("c={},r={nonce}", STANDARD.encode(cbind));
            let auth = format!("{bare},{server_first},{without_proof}");
            let client_key = hmac(&self.salted, &[b"Client Key"]);
            let stored_key: [u8; KEY_LEN] = Sha256::digest(client_key).into();
            let sig = hmac(&stored_key, &[auth.as_bytes()]);
            let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
            format!("{without_proof},p={}", STANDARD.encode(proof))
        }

        fn expected_server_final(&self, bare: &str, server_first: &str, final_msg: &str) -> String {
            let without_proof = final_msg.rsplit_once(",p=").expect("proof").0;
            let auth = format!("{bare},{server_first},{without_proof}");
            let server_key = hmac(&self.salted, &[b"Server Key"]);
            format!(
                "v={}",
                STANDARD.encode(hmac(&server_key, &[auth.as_bytes()]))
            )
        }
    }

    /// One exchange over plain TCP; the server-final message or the error.
    fn login(verifier: &Verifier, client: &Client) -> Result<String, ScramError> {
        let bare = "n=,r=rOprNGfwEbeRWgbNEkqO";
        let (server_first, wait) = start(
            MECHANISM,
            format!("n,,{bare}").as_bytes(),
            verifier.clone(),
            None,
        )?;
        assert!(server_first.starts_with("r=rOprNGfwEbeRWgbNEkqO"));
        let fin = client.final_message(bare, &server_first, b"n,,");
        let server_final = wait.finish(fin.as_bytes())?;
        assert_eq!(
            server_final,
            client.expected_server_final(bare, &server_first, &fin),
            "the server proves it knows the verifier"
        );
        Ok(server_final)
    }

    #[test]
    fn postgresql_verifiers_parse_format_and_check_their_passwords() {
        let v = Verifier::parse(PG_VERIFIER).expect("parses");
        assert_eq!(v.iterations(), 4096);
        assert_eq!(v.to_string(), PG_VERIFIER, "formats as PostgreSQL does");
        // Recomputed from the password and the verifier's salt: the same keys.
        let again = Verifier::from_password(PG_PASSWORD, v.salt(), 4096);
        assert_eq!(again.to_string(), PG_VERIFIER);
        // A proof made from the password is accepted, a wrong password's is not.
        login(&v, &Client::with_password(PG_PASSWORD, v.salt(), 4096)).expect("right password");
        assert_eq!(
            login(
                &v,
                &Client::with_password("pg-generated-Pw9?", v.salt(), 4096)
            ),
            Err(ScramError::WrongProof)
        );
        // SASLprep as PostgreSQL does it.
        let s = Verifier::parse(PG_VERIFIER_SASLPREP).expect("parses");
        assert_eq!(
            Verifier::from_password("\u{FB01}sh\u{00A0}pw", s.salt(), 4096).to_string(),
            PG_VERIFIER_SASLPREP
        );
        login(&s, &Client::with_password("fish pw", s.salt(), 4096)).expect("normalized");
    }

    #[test]
    fn generated_verifiers_round_trip_and_take_more_iterations() {
        let v = Verifier::generate("s3cret");
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert!(!text.contains("s3cret"));
        let parsed = Verifier::parse(&text).expect("parses");
        assert_eq!(parsed.to_string(), text);
        assert_eq!(parsed.salt().len(), SALT_LEN);
        assert_ne!(Verifier::generate("s3cret").to_string(), text, "fresh salt");
        login(
            &parsed,
            &Client::with_password("s3cret", parsed.salt(), 4096),
        )
        .expect("logs in");
        // More iterations than PostgreSQL's default: accepted and used.
        let strong = Verifier::from_password("pw", b"0123456789abcdef", 10_000);
        let strong = Verifier::parse(&strong.to_string()).expect("parses");
        assert_eq!(strong.iterations(), 10_000);
        login(&strong, &Client::with_password("pw", strong.salt(), 10_000)).expect("logs in");
        // Debug shows no key material.
        let dbg = format!("{parsed:?}");
        assert!(
            !dbg.contains(&STANDARD.encode(&parsed.stored_key[..])),
            "{dbg}"
        );
    }

    #[test]
    fn bad_and_old_verifiers_are_refused_without_echoing_them() {
        for bad in [
            "s3cret",
            "",
            "SCRAM-SHA-256$4096:",
            "SCRAM-SHA-256$x:AAAA$AAAA:AAAA",
            "SCRAM-SHA-256$4096:$wCoK91jX1+KRkNDDgbMcbw92CztPYM9Zf9WVWqhZgMY=:UW3umg8uCc6ucCZTUo1wqq0Qdnb4KIIlYjynV57NCKU=",
            "SCRAM-SHA-256$4096:Gr89Hv9Oly0THTJer2Qhwg==$AAAA:UW3umg8uCc6ucCZTUo1wqq0Qdnb4KIIlYjynV57NCKU=",
            "SCRAM-SHA-256$4096:Gr89Hv9Oly0THTJer2Qhwg==$!!!:???",
            "md5a3556571e93b0d20722ba62be61e8c2d",
        ] {
            let e = Verifier::parse(bad).expect_err(bad);
            assert!(e.contains("joinery password"), "{e}");
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
        let e = Verifier::parse(
            "SCRAM-SHA-256$1000:Gr89Hv9Oly0THTJer2Qhwg==$wCoK91jX1+KRkNDDgbMcbw92CztPYM9Zf9WVWqhZgMY=:UW3umg8uCc6ucCZTUo1wqq0Qdnb4KIIlYjynV57NCKU=",
        )
        .expect_err("too few iterations");
        assert!(e.contains("at least 4096"), "{e}");
        // The old `<salt>$<salted password>` form says what it is and how to replace it.
        let old = "SCRAM-SHA-256$4096:Gr89Hv9Oly0THTJer2Qhwg==$wCoK91jX1+KRkNDDgbMcbw92CztPYM9Zf9WVWqhZgMY=";
        let e = Verifier::parse(old).expect_err("old form");
        assert!(
            e.contains("old verifier form") && e.contains("joinery password"),
            "{e}"
        );
        assert!(!e.contains("wCoK91jX1"), "{e}");
    }

    #[test]
    fn the_verifier_itself_does_not_log_in() {
        // A client that read the verifier and tries its keys as the salted password.
        let v = Verifier::parse(PG_VERIFIER).expect("parses");
        let keys = [&v.stored_key[..], &v.server_key[..]];
        for k in keys {
            let mut salted = [0u8; KEY_LEN];
            salted.copy_from_slice(k);
            assert_eq!(login(&v, &Client { salted }), Err(ScramError::WrongProof));
        }
        // Nor does a proof made with StoredKey as the client key.
        let bare = "n=,r=abc";
        let (sf, wait) = start(MECHANISM, format!("n,,{bare}").as_bytes(), v.clone(), None)
            .expect("server-first");
        let nonce = sf.split(',').find_map(|a| a.strip_prefix("r=")).expect("r");
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{bare},{sf},{without_proof}");
        let sig = hmac(&v.stored_key[..], &[auth.as_bytes()]);
        let proof: Vec<u8> = v.stored_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        let fin = format!("{without_proof},p={}", STANDARD.encode(proof));
        assert_eq!(wait.finish(fin.as_bytes()), Err(ScramError::WrongProof));
    }

    #[test]
    fn unknown_users_get_a_stable_salt_and_never_log_in() {
        let key = [7u8; 32];
        let a = Verifier::mock("mallory", &key);
        assert_eq!(a.salt(), Verifier::mock("mallory", &key).salt());
        assert_ne!(a.salt(), Verifier::mock("trudy", &key).salt());
        assert_ne!(a.salt(), Verifier::mock("mallory", &[8u8; 32]).salt());
        assert_eq!(a.iterations(), ITERATIONS);
        let c = Client::with_password("anything", a.salt(), ITERATIONS);
        assert_eq!(login(&a, &c), Err(ScramError::WrongProof));
    }

    #[test]
    fn channel_binding_rules() {
        let v = Verifier::parse(PG_VERIFIER).expect("parses");
        let client = Client::with_password(PG_PASSWORD, v.salt(), 4096);
        let hash = [0xabu8; 32];
        let bare = "n=,r=xyz";
        // PLUS over TLS: c= is the GS2 header then the certificate hash.
        let gs2 = "p=tls-server-end-point,,";
        let (sf, wait) = start(
            MECHANISM_PLUS,
            format!("{gs2}{bare}").as_bytes(),
            v.clone(),
            Some(&hash),
        )
        .expect("server-first");
        let mut cb = gs2.as_bytes().to_vec();
        cb.extend_from_slice(&hash);
        let fin = client.final_message(bare, &sf, &cb);
        wait.finish(fin.as_bytes()).expect("bound login");
        // The same, bound to another certificate (a proxy in the middle): refused.
        let (sf, wait) = start(
            MECHANISM_PLUS,
            format!("{gs2}{bare}").as_bytes(),
            v.clone(),
            Some(&hash),
        )
        .expect("server-first");
        let mut other = gs2.as_bytes().to_vec();
        other.extend_from_slice(&[0xcd; 32]);
        let fin = client.final_message(bare, &sf, &other);
        assert!(matches!(
            wait.finish(fin.as_bytes()),
            Err(ScramError::ChannelBinding(_))
        ));
        // Plain SCRAM over TLS still works (libpq with channel_binding=disable).
        let (sf, wait) = start(
            MECHANISM,
            format!("n,,{bare}").as_bytes(),
            v.clone(),
            Some(&hash),
        )
        .expect("server-first");
        wait.finish(client.final_message(bare, &sf, b"n,,").as_bytes())
            .expect("unbound login over TLS");
        // Refused at the first message.
        for (mech, first, cert) in [
            // PLUS without TLS.
            (MECHANISM_PLUS, format!("{gs2}{bare}"), None),
            // PLUS without binding data, and binding without PLUS.
            (MECHANISM_PLUS, format!("n,,{bare}"), Some(&hash[..])),
            (MECHANISM, format!("{gs2}{bare}"), Some(&hash[..])),
            // "y" where the server offered PLUS: a downgrade.
            (MECHANISM, format!("y,,{bare}"), Some(&hash[..])),
            // Another binding type, an authzid, a mandatory extension, garbage.
            (
                MECHANISM_PLUS,
                format!("p=tls-unique,,{bare}"),
                Some(&hash[..]),
            ),
            (MECHANISM, format!("n,a=admin,{bare}"), None),
            (MECHANISM, "n,,m=ext,n=,r=abc".to_string(), None),
            (MECHANISM, "n,,n=,r=a,b".to_string(), None),
            (MECHANISM, "n,,r=abc".to_string(), None),
            (MECHANISM, "garbage".to_string(), None),
            ("SCRAM-SHA-1", format!("n,,{bare}"), None),
        ] {
            assert!(
                start(mech, first.as_bytes(), v.clone(), cert).is_err(),
                "{mech} {first} {cert:?}"
            );
        }
        // "y" without TLS is fine: the server offered no binding.
        start(MECHANISM, format!("y,,{bare}").as_bytes(), v.clone(), None).expect("y over TCP");
        // A final message with a changed nonce or no proof fails.
        for fin in ["c=biws,r=other,p=AAAA", "c=biws,r=xyz", ""] {
            let (_, wait) = start(MECHANISM, format!("n,,{bare}").as_bytes(), v.clone(), None)
                .expect("server-first");
            assert!(wait.finish(fin.as_bytes()).is_err(), "{fin}");
        }
    }

    #[test]
    fn certificate_hashes_follow_the_signature_algorithm() {
        assert_eq!(tls_server_end_point(b"not a certificate"), None);
        let dir = tempfile::tempdir().expect("tmp");
        // (openssl key options, expected hash of the DER certificate or None)
        type Hash = fn(&[u8]) -> Vec<u8>;
        let cases: [(&[&str], Option<Hash>); 3] = [
            (
                &["-newkey", "rsa:2048", "-sha256"],
                Some(|d| Sha256::digest(d).to_vec()),
            ),
            (
                &[
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-384",
                    "-sha384",
                ],
                Some(|d| Sha384::digest(d).to_vec()),
            ),
            (&["-newkey", "ed25519"], None),
        ];
        for (i, (args, hash)) in cases.into_iter().enumerate() {
            let cert = dir.path().join(format!("c{i}.der"));
            let ok = std::process::Command::new("openssl")
                .args(["req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=t"])
                .args(args)
                .arg("-keyout")
                .arg(dir.path().join(format!("k{i}.pem")))
                .args(["-outform", "DER", "-out"])
                .arg(&cert)
                .output()
                .expect("openssl runs")
                .status
                .success();
            assert!(ok, "openssl {args:?}");
            let der = std::fs::read(&cert).expect("certificate");
            assert_eq!(
                tls_server_end_point(&der),
                hash.map(|h| h(&der)),
                "{args:?}"
            );
        }
    }
}
