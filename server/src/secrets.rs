//! The secret store: named credentials in one file, each value encrypted with AES-256-GCM
//! (a fresh 96-bit nonce per write; the name and the creation/rotation metadata are the
//! associated data, so a value moved to another name or a changed date fails to decrypt).
//! Config refers to them as `${secret:NAME}`.
//!
//! The key is 32 bytes, from `JOINERY_SECRET_KEY` (base64) or a key file that only its owner may
//! read (mode 0600), made by `joinery secrets keygen`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Default rotation period (the brief: OAuth tokens every 90 days at most).
pub const DEFAULT_ROTATION_DAYS: u32 = 90;

pub const KEY_ENV: &str = "JOINERY_SECRET_KEY";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretEntry {
    pub nonce: String,
    pub ciphertext: String,
    pub created_by: String,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub rotated_at: DateTime<Utc>,
    pub rotation_days: u32,
    #[serde(default, with = "rfc3339_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Times as RFC 3339 text.
mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&t.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

impl SecretEntry {
    pub fn age_days(&self, now: DateTime<Utc>) -> i64 {
        (now - self.rotated_at).num_days()
    }

    pub fn overdue(&self, now: DateTime<Utc>) -> bool {
        self.age_days(now) >= i64::from(self.rotation_days)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    secrets: BTreeMap<String, SecretEntry>,
}

/// An open store: the file and the key.
pub struct SecretStore {
    path: PathBuf,
    cipher: Aes256Gcm,
    file: StoreFile,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("path", &self.path)
            .field("secrets", &self.file.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A fresh random key, base64.
pub fn generate_key() -> String {
    let key: [u8; 32] = rand::random();
    STANDARD.encode(key)
}

/// Write a new key file readable by its owner only.
pub fn write_key_file(path: &Path) -> Result<(), String> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create key file {}: {e}", path.display()))?;
    writeln!(f, "{}", generate_key()).map_err(|e| format!("cannot write key file: {e}"))
}

/// The key: `JOINERY_SECRET_KEY`, else the key file (which must not be readable by others).
pub fn load_key(key_file: Option<&Path>) -> Result<[u8; 32], String> {
    let text = match std::env::var(KEY_ENV) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => {
            let path = key_file.ok_or_else(|| {
                format!("no secret key: set {KEY_ENV} or [secrets] key_file (make one with `joinery secrets keygen`)")
            })?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let meta = std::fs::metadata(path)
                    .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(format!(
                        "key file {} is readable by others (mode {:o}); chmod 600 it",
                        path.display(),
                        meta.permissions().mode() & 0o777
                    ));
                }
            }
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?
        }
    };
    // The key's text and bytes are wiped once the key is made.
    let text = Zeroizing::new(text);
    let bytes = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .map_err(|_| "the secret key is not base64".to_string())?,
    );
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| "the secret key must be 32 bytes (AES-256)".to_string())
}

fn aad(name: &str, e: &SecretEntry) -> Vec<u8> {
    format!(
        "joinery-secret-v1\0{name}\0{}\0{}\0{}",
        e.created_by,
        e.created_at.to_rfc3339(),
        e.rotated_at.to_rfc3339()
    )
    .into_bytes()
}

impl SecretStore {
    /// Open `path` (a missing file is an empty store) with `key`.
    pub fn open(path: &Path, key: [u8; 32]) -> Result<SecretStore, String> {
        let file = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("secret store {} is damaged: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreFile {
                version: 1,
                secrets: BTreeMap::new(),
            },
            Err(e) => return Err(format!("cannot read secret store {}: {e}", path.display())),
        };
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|e| format!("bad key: {e}"))?;
        Ok(SecretStore {
            path: path.to_path_buf(),
            cipher,
            file,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.file.secrets.keys().cloned().collect()
    }

    pub fn entries(&self) -> impl Iterator<Item = (&String, &SecretEntry)> {
        self.file.secrets.iter()
    }

    /// The plaintext of `name` (wiped from memory when dropped); a wrong key or a changed byte
    /// is an error naming the secret.
    pub fn get(&self, name: &str) -> Result<Zeroizing<String>, String> {
        let e = self
            .file
            .secrets
            .get(name)
            .ok_or_else(|| format!("secret '{name}' is not in the store"))?;
        let fail = || {
            format!("secret '{name}' cannot be decrypted: wrong key, or the store file was altered")
        };
        let nonce = STANDARD.decode(&e.nonce).map_err(|_| fail())?;
        let ct = STANDARD.decode(&e.ciphertext).map_err(|_| fail())?;
        if nonce.len() != 12 {
            return Err(fail());
        }
        let pt = self
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: &aad(name, e),
                },
            )
            .map_err(|_| fail())?;
        match String::from_utf8(pt) {
            Ok(v) => Ok(Zeroizing::new(v)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(fail())
            }
        }
    }

    fn seal(&self, name: &str, value: &str, e: &mut SecretEntry) -> Result<(), String> {
        let nonce: [u8; 12] = rand::random();
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad(name, e),
                },
            )
            .map_err(|_| "encryption failed".to_string())?;
        e.nonce = STANDARD.encode(nonce);
        e.ciphertext = STANDARD.encode(ct);
        Ok(())
    }

    /// Add or replace `name` (a replacement counts as a rotation).
    pub fn set(
        &mut self,
        name: &str,
        value: &str,
        by: &str,
        rotation_days: Option<u32>,
    ) -> Result<(), String> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(format!(
                "secret name '{name}': use letters, digits, '_', '-' and '.'"
            ));
        }
        let now = Utc::now();
        let mut e = match self.file.secrets.get(name) {
            Some(old) => SecretEntry {
                rotated_at: now,
                rotation_days: rotation_days.unwrap_or(old.rotation_days),
                ..old.clone()
            },
            None => SecretEntry {
                nonce: String::new(),
                ciphertext: String::new(),
                created_by: by.to_string(),
                created_at: now,
                rotated_at: now,
                rotation_days: rotation_days.unwrap_or(DEFAULT_ROTATION_DAYS),
                last_used_at: None,
            },
        };
        self.seal(name, value, &mut e)?;
        self.file.secrets.insert(name.to_string(), e);
        self.save()
    }

    /// Replace the value of an existing secret.
    pub fn rotate(&mut self, name: &str, value: &str, by: &str) -> Result<(), String> {
        if !self.file.secrets.contains_key(name) {
            return Err(format!("secret '{name}' is not in the store"));
        }
        self.set(name, value, by, None)
    }

    pub fn delete(&mut self, name: &str) -> Result<(), String> {
        self.file
            .secrets
            .remove(name)
            .ok_or_else(|| format!("secret '{name}' is not in the store"))?;
        self.save()
    }

    /// Record that a server loaded these secrets.
    pub fn mark_used(&mut self, names: &[String]) -> Result<(), String> {
        let now = Utc::now();
        for n in names {
            if let Some(e) = self.file.secrets.get_mut(n) {
                e.last_used_at = Some(now);
            }
        }
        self.save()
    }

    /// Write atomically (temp file + rename), readable by the owner only.
    fn save(&self) -> Result<(), String> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        self.file_version_ok()?;
        let tmp = self.path.with_extension("tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let body = serde_json::to_vec_pretty(&self.file).map_err(|e| e.to_string())?;
        let mut f = opts
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(&body)
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| format!("cannot replace {}: {e}", self.path.display()))
    }

    fn file_version_ok(&self) -> Result<(), String> {
        if self.file.version > 1 {
            return Err(format!(
                "secret store version {} is newer than this build",
                self.file.version
            ));
        }
        Ok(())
    }
}

/// `joinery.secrets` (admins only): each stored secret's metadata, never its value, with a
/// rotation warning. The store is read at each scan.
pub fn secrets_table(
    config: crate::config::SecretsConfig,
) -> joinery_engine::system::SnapshotTable {
    use arrow::array::{BooleanBuilder, Int64Builder, StringBuilder};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("created_by", DataType::Utf8, false),
        Field::new("created_at", DataType::Utf8, false),
        Field::new("rotated_at", DataType::Utf8, false),
        Field::new("last_used_at", DataType::Utf8, true),
        Field::new("age_days", DataType::Int64, false),
        Field::new("rotation_days", DataType::Int64, false),
        Field::new("overdue", DataType::Boolean, false),
    ]));
    joinery_engine::system::SnapshotTable::new(schema.clone(), move || {
        let store = config
            .open()
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let now = Utc::now();
        let (mut n, mut by, mut ca, mut ra, mut lu) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let (mut age, mut rot, mut over) = (
            Int64Builder::new(),
            Int64Builder::new(),
            BooleanBuilder::new(),
        );
        for (name, e) in store.entries() {
            n.append_value(name);
            by.append_value(&e.created_by);
            ca.append_value(e.created_at.to_rfc3339());
            ra.append_value(e.rotated_at.to_rfc3339());
            lu.append_option(e.last_used_at.map(|t| t.to_rfc3339()));
            age.append_value(e.age_days(now));
            rot.append_value(i64::from(e.rotation_days));
            over.append_value(e.overdue(now));
        }
        Ok(arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(n.finish()),
                Arc::new(by.finish()),
                Arc::new(ca.finish()),
                Arc::new(ra.finish()),
                Arc::new(lu.finish()),
                Arc::new(age.finish()),
                Arc::new(rot.finish()),
                Arc::new(over.finish()),
            ],
        )?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; 32] {
        [7u8; 32]
    }

    #[test]
    fn round_trip_rotation_and_tamper_detection() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("secrets.json");
        let mut s = SecretStore::open(&path, key()).expect("open");
        s.set("github", "ghp_SECRET_123", "alice", None)
            .expect("set");
        let raw = std::fs::read_to_string(&path).expect("file");
        assert!(!raw.contains("ghp_SECRET_123"), "encrypted at rest");
        let first_nonce = s.file.secrets["github"].nonce.clone();

        let mut s = SecretStore::open(&path, key()).expect("reopen");
        assert_eq!(
            s.get("github").expect("decrypts").as_str(),
            "ghp_SECRET_123"
        );
        s.rotate("github", "ghp_NEW_456", "bob").expect("rotate");
        assert_ne!(s.file.secrets["github"].nonce, first_nonce, "fresh nonce");
        assert_eq!(s.get("github").expect("decrypts").as_str(), "ghp_NEW_456");
        assert_eq!(s.file.secrets["github"].created_by, "alice");

        // A wrong key and a flipped byte both fail with a clear error naming the secret.
        let wrong = SecretStore::open(&path, [8u8; 32]).expect("open");
        let e = wrong.get("github").expect_err("wrong key");
        assert!(
            e.contains("'github'") && e.contains("cannot be decrypted"),
            "{e}"
        );
        let mut doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("file")).expect("json");
        let ct = doc["secrets"]["github"]["ciphertext"]
            .as_str()
            .map(|c| STANDARD.decode(c).expect("b64"))
            .expect("ct");
        let mut flipped = ct.clone();
        flipped[0] ^= 1;
        doc["secrets"]["github"]["ciphertext"] = STANDARD.encode(flipped).into();
        std::fs::write(&path, doc.to_string()).expect("write");
        let s = SecretStore::open(&path, key()).expect("open");
        assert!(s.get("github").is_err());
        // Metadata is bound too: back-dating the rotation breaks decryption.
        doc["secrets"]["github"]["ciphertext"] = STANDARD.encode(ct).into();
        doc["secrets"]["github"]["rotated_at"] = "2020-01-01T00:00:00Z".into();
        std::fs::write(&path, doc.to_string()).expect("write");
        let s = SecretStore::open(&path, key()).expect("open");
        assert!(s.get("github").is_err());
    }

    #[test]
    fn rotation_warning_and_key_file_permissions() {
        let now = Utc::now();
        let e = SecretEntry {
            nonce: String::new(),
            ciphertext: String::new(),
            created_by: "a".into(),
            created_at: now,
            rotated_at: now - chrono::Duration::days(91),
            rotation_days: 90,
            last_used_at: None,
        };
        assert!(e.overdue(now));
        let dir = tempfile::tempdir().expect("tmp");
        let k = dir.path().join("k");
        write_key_file(&k).expect("keygen");
        if std::env::var(KEY_ENV).is_err() {
            assert!(load_key(Some(&k)).is_ok());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644))
                    .expect("chmod");
                let err = load_key(Some(&k)).expect_err("too open");
                assert!(err.contains("chmod 600"), "{err}");
            }
        }
    }
}
