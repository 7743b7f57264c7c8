//! SCRAM-SHA-256 logins against StoredKey/ServerKey verifiers, over the wire: the right
//! password logs in (tokio-postgres, psql, with and without channel binding), a wrong one gets
//! 28P01, PostgreSQL's own verifiers work with their passwords, and a client that knows only
//! the stored verifier cannot log in, however it uses it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use joinery_server::auth::make_verifier;
use joinery_tests::{TestServer, pg_url, skip, sqlstate, text_rows};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALICE_PW: &str = "alice-scram-Pw1!";
/// Made by PostgreSQL 15 for `PASSWORD 'pg-generated-Pw9!'` (`password_encryption =
/// 'scram-sha-256'`), read from `pg_authid.rolpassword`.
const PG_VERIFIER: &str = "SCRAM-SHA-256$4096:Gr89Hv9Oly0THTJer2Qhwg==$wCoK91jX1+KRkNDDgbMcbw92CztPYM9Zf9WVWqhZgMY=:UW3umg8uCc6ucCZTUo1wqq0Qdnb4KIIlYjynV57NCKU=";
const PG_PASSWORD: &str = "pg-generated-Pw9!";

fn config(extra_server: &str, users: &[(&str, &str)]) -> String {
    let mut cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra_server}\n\n[connections.demo]\nkind = \"demo\"\n"
    );
    for (name, verifier) in users {
        cfg.push_str(&format!("\n[users.{name}]\npassword = \"{verifier}\"\n"));
    }
    cfg
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// What a raw client knows and makes its proof from.
#[derive(Debug, Clone)]
enum Knows {
    /// The password: the honest client.
    Password(&'static str),
    /// Some bytes it takes for the salted password (PBKDF2's output).
    SaltedPassword(Vec<u8>),
    /// Some bytes it takes for the client key itself.
    ClientKey(Vec<u8>),
}

async fn read_message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let tag = s.read_u8().await.expect("message type");
    let len = s.read_i32().await.expect("message length");
    let mut body = vec![0u8; usize::try_from(len - 4).expect("length")];
    s.read_exact(&mut body).await.expect("message body");
    (tag, body)
}

async fn send(s: &mut TcpStream, tag: Option<u8>, body: &[u8]) {
    let mut out = Vec::new();
    out.extend(tag);
    out.extend_from_slice(&(i32::try_from(body.len() + 4).expect("length")).to_be_bytes());
    out.extend_from_slice(body);
    s.write_all(&out).await.expect("send");
}

/// The SQLSTATE of an ErrorResponse body.
fn error_code(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

/// A SCRAM-SHA-256 login written from RFC 5802 over a bare socket: `Ok` once the server says
/// AuthenticationOk (after checking its ServerSignature when the client knows the password),
/// else the SQLSTATE it answered.
async fn raw_login(port: u16, user: &str, knows: Knows) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    let mut startup = 196_608i32.to_be_bytes().to_vec();
    for part in ["user", user, "database", "joinery", ""] {
        startup.extend_from_slice(part.as_bytes());
        startup.push(0);
    }
    send(&mut s, None, &startup).await;
    let (tag, body) = read_message(&mut s).await;
    assert_eq!((tag, &body[..4]), (b'R', &10i32.to_be_bytes()[..]), "SASL");
    assert!(
        body[4..].split(|b| *b == 0).any(|m| m == b"SCRAM-SHA-256"),
        "mechanisms offered"
    );

    let bare = format!("n=,r={}", STANDARD.encode(b"raw client nonce 0123"));
    let first = format!("n,,{bare}");
    let mut msg = b"SCRAM-SHA-256\0".to_vec();
    msg.extend_from_slice(&(i32::try_from(first.len()).expect("len")).to_be_bytes());
    msg.extend_from_slice(first.as_bytes());
    send(&mut s, Some(b'p'), &msg).await;
    let (tag, body) = read_message(&mut s).await;
    if tag == b'E' {
        return Err(error_code(&body));
    }
    assert_eq!(
        (tag, &body[..4]),
        (b'R', &11i32.to_be_bytes()[..]),
        "SASLContinue"
    );
    let server_first = String::from_utf8(body[4..].to_vec()).expect("utf-8");
    let attr = |k: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(k))
            .expect("attribute")
            .to_string()
    };
    let (nonce, salt, iterations) = (attr("r="), attr("s="), attr("i="));
    let salt = STANDARD.decode(salt).expect("salt");
    let iterations: u32 = iterations.parse().expect("iterations");

    let salted = match &knows {
        Knows::Password(pw) => {
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(pw.as_bytes(), &salt, iterations, &mut out);
            Some(out.to_vec())
        }
        Knows::SaltedPassword(b) => Some(b.clone()),
        Knows::ClientKey(_) => None,
    };
    let client_key = match (&knows, &salted) {
        (Knows::ClientKey(k), _) => k.clone(),
        (_, Some(salted)) => hmac(salted, b"Client Key"),
        _ => unreachable!("a client key or a salted password"),
    };
    let stored_key = Sha256::digest(&client_key).to_vec();
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let fin = format!("{without_proof},p={}", STANDARD.encode(proof));
    send(&mut s, Some(b'p'), fin.as_bytes()).await;

    let (tag, body) = read_message(&mut s).await;
    if tag == b'E' {
        return Err(error_code(&body));
    }
    assert_eq!(
        (tag, &body[..4]),
        (b'R', &12i32.to_be_bytes()[..]),
        "SASLFinal"
    );
    if let Some(salted) = &salted {
        let server_key = hmac(salted, b"Server Key");
        let expected = format!(
            "v={}",
            STANDARD.encode(hmac(&server_key, auth_message.as_bytes()))
        );
        assert_eq!(&body[4..], expected.as_bytes(), "the server's signature");
    }
    let (tag, body) = read_message(&mut s).await;
    assert_eq!(
        (tag, &body[..4]),
        (b'R', &0i32.to_be_bytes()[..]),
        "AuthenticationOk"
    );
    Ok(())
}

/// StoredKey and ServerKey of a verifier string.
fn verifier_keys(v: &str) -> (Vec<u8>, Vec<u8>) {
    let keys = v.rsplit('$').next().expect("keys");
    let (stored, server) = keys.split_once(':').expect("StoredKey:ServerKey");
    (
        STANDARD.decode(stored).expect("b64"),
        STANDARD.decode(server).expect("b64"),
    )
}

#[tokio::test]
async fn passwords_log_in_and_verifiers_do_not() {
    let alice = make_verifier(ALICE_PW);
    let server = TestServer::with_config(&config(
        "",
        &[
            ("alice", &alice),
            ("pguser", PG_VERIFIER),
            ("carol", &alice),
        ],
    ))
    .await;

    // tokio-postgres: the right password logs in, a wrong one or an unknown user gets 28P01.
    let c = server
        .login("alice", ALICE_PW)
        .await
        .expect("alice logs in");
    assert_eq!(
        text_rows(&c, "SELECT current_user").await[0][0].as_deref(),
        Some("alice")
    );
    for (user, pw) in [("alice", "alice-scram-Pw1?"), ("nobody", ALICE_PW)] {
        let err = server.login(user, pw).await.expect_err("refused");
        assert_eq!(sqlstate(&err), "28P01", "{user}: {err:?}");
        let msg = err.as_db_error().map(|e| e.message()).unwrap_or_default();
        assert_eq!(
            msg,
            format!("password authentication failed for user \"{user}\""),
            "no hint whether the user exists"
        );
    }

    // A verifier PostgreSQL made logs in with its password.
    let c = server
        .login("pguser", PG_PASSWORD)
        .await
        .expect("PostgreSQL's verifier");
    assert_eq!(
        text_rows(&c, "SELECT current_user").await[0][0].as_deref(),
        Some("pguser")
    );

    // The raw client logs in when it knows the password (so its refusals below mean something).
    raw_login(server.port(), "carol", Knows::Password(ALICE_PW))
        .await
        .expect("raw client with the password");
    raw_login(server.port(), "pguser", Knows::Password(PG_PASSWORD))
        .await
        .expect("raw client, PostgreSQL's verifier");

    // Whoever read the config has the verifier: none of its parts makes a proof.
    for v in [alice.as_str(), PG_VERIFIER] {
        let user = if v == PG_VERIFIER { "pguser" } else { "carol" };
        let (stored, server_key) = verifier_keys(v);
        for knows in [
            Knows::SaltedPassword(stored.clone()),
            Knows::SaltedPassword(server_key.clone()),
            Knows::ClientKey(stored.clone()),
            Knows::ClientKey(server_key.clone()),
            Knows::SaltedPassword(Sha256::digest(v.as_bytes()).to_vec()),
        ] {
            assert_eq!(
                raw_login(server.port(), user, knows.clone()).await,
                Err("28P01".to_string()),
                "{user} with {knows:?}"
            );
            // Each refusal counts towards the lockout: clear it with a good login.
            raw_login(server.port(), user, Knows::Password(pw_of(user)))
                .await
                .expect("the password still works");
        }
    }
    server.shutdown().await;
}

fn pw_of(user: &str) -> &'static str {
    if user == "pguser" {
        PG_PASSWORD
    } else {
        ALICE_PW
    }
}

#[tokio::test]
async fn the_old_salted_password_form_is_refused_at_load() {
    // What `joinery password` used to print: `<salt>$<salted password>`, which logs in as is.
    let old =
        "SCRAM-SHA-256$4096:Gr89Hv9Oly0THTJer2Qhwg==$wCoK91jX1+KRkNDDgbMcbw92CztPYM9Zf9WVWqhZgMY=";
    let err = joinery_server::config::Config::parse(&config("", &[("alice", old)]), "t.toml")
        .expect_err("old form refused");
    let msg = err.to_string();
    assert!(msg.contains("[users.alice]"), "{msg}");
    assert!(msg.contains("joinery password"), "{msg}");
    assert!(!msg.contains("wCoK91jX1"), "{msg}");
}

#[tokio::test]
async fn a_live_postgresql_verifier_moves_over() {
    let url = pg_url();
    let (pg, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => return skip("PostgreSQL verifier migration", &format!("{url}: {e}")),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let role = format!("joinery_scram_{}", std::process::id());
    const PW: &str = "moved-over-Pw3#";
    pg.batch_execute(&format!(
        "SET password_encryption = 'scram-sha-256'; DROP ROLE IF EXISTS {role}; \
         CREATE ROLE {role} LOGIN PASSWORD '{PW}'"
    ))
    .await
    .expect("create role");
    let row = pg
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .expect("rolpassword");
    let verifier: String = row.get(0);
    let _ = pg.batch_execute(&format!("DROP ROLE {role}")).await;
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");

    let server = TestServer::with_config(&config("", &[("moved", &verifier)])).await;
    let c = server.login("moved", PW).await.expect("logs in");
    assert_eq!(
        text_rows(&c, "SELECT current_user").await[0][0].as_deref(),
        Some("moved")
    );
    let err = server.login("moved", "not-it").await.expect_err("wrong");
    assert_eq!(sqlstate(&err), "28P01");
    server.shutdown().await;
}

async fn psql(conn: &str, password: &str) -> (bool, String) {
    let out = tokio::process::Command::new("psql")
        .arg(conn)
        .args(["-XAtc", "SELECT current_user"])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .await
        .expect("psql runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn psql_logs_in_with_and_without_channel_binding() {
    let has_psql = std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_psql {
        return skip(
            "psql SCRAM tests",
            "psql not found (scripts/setup-clients.sh installs it)",
        );
    }
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = joinery_tests::self_signed(dir.path()).expect("openssl makes a certificate");
    let server = TestServer::with_config(&config(
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            cert.display(),
            key.display()
        ),
        &[("alice", &make_verifier(ALICE_PW)), ("pguser", PG_VERIFIER)],
    ))
    .await;
    let base = |user: &str| {
        format!(
            "host=localhost port={} user={user} dbname=joinery",
            server.port()
        )
    };
    for (user, pw) in [("alice", ALICE_PW), ("pguser", PG_PASSWORD)] {
        // Plain TCP: SCRAM-SHA-256.
        let (ok, out) = psql(&format!("{} sslmode=disable", base(user)), pw).await;
        assert!(ok && out.contains(user), "{out}");
        // TLS with channel binding required: SCRAM-SHA-256-PLUS (libpq refuses otherwise).
        let (ok, out) = psql(
            &format!(
                "{} sslmode=verify-full sslrootcert={} channel_binding=require",
                base(user),
                cert.display()
            ),
            pw,
        )
        .await;
        assert!(ok && out.contains(user), "{out}");
        // TLS without channel binding: SCRAM-SHA-256 over TLS.
        let (ok, out) = psql(
            &format!("{} sslmode=require channel_binding=disable", base(user)),
            pw,
        )
        .await;
        assert!(ok && out.contains(user), "{out}");
    }
    // A wrong password, over TLS with binding: refused with PostgreSQL's message.
    let (ok, out) = psql(
        &format!("{} sslmode=require channel_binding=require", base("alice")),
        "wrong",
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("password authentication failed for user \"alice\""),
        "{out}"
    );
    server.shutdown().await;
}
