//! Who may reach which connection: `[users]` and `[roles]` from the config, plus what admins
//! changed since with SQL `GRANT USAGE ON SCHEMA c TO x` / `REVOKE USAGE ON SCHEMA c FROM x`.
//!
//! Runtime changes are kept in a JSON file (`[server] grants_file`, written atomically, 0600) and
//! apply to open sessions at their next statement. As in PostgreSQL, a user's access is the union
//! of their own privileges, their roles' and `PUBLIC`'s; `REVOKE ... FROM alice` removes only
//! alice's own privilege (one held through a role stays, and the statement says so).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use joinery_engine::grants::{Access, AccessSource, UserCredentials};
use serde::{Deserialize, Serialize};

use crate::auth::UserConfig;
use crate::config::{RowFilter, with_current_user};

/// The grantee every user belongs to.
pub const PUBLIC: &str = "public";

/// `[roles.<name>]`: connections granted to every member.
#[derive(Debug, Clone, Default)]
pub struct RoleConfig {
    /// `None`: every connection.
    pub grants: Option<BTreeSet<String>>,
}

/// Grants, revocations and policies made in SQL, relative to the config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuntimeGrants {
    #[serde(default)]
    pub granted: BTreeMap<String, BTreeSet<String>>,
    #[serde(default)]
    pub revoked: BTreeMap<String, BTreeSet<String>>,
    #[serde(default)]
    pub policies: Vec<Policy>,
}

/// A row filter made with `CREATE POLICY`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    pub name: String,
    pub schema: String,
    pub table: String,
    /// A SQL predicate over the table's columns (`current_user`: the reading user's name).
    pub filter: String,
    /// Users and roles it applies to; empty: every user who is not an admin (PUBLIC).
    pub to: BTreeSet<String>,
}

/// The access rules of one server.
#[derive(Debug, Default)]
pub struct AccessControl {
    pub users: Arc<BTreeMap<String, UserConfig>>,
    pub roles: BTreeMap<String, RoleConfig>,
    pub row_filters: Vec<RowFilter>,
    /// Every configured connection.
    pub connections: BTreeSet<String>,
    /// Where SQL grants persist (`None`: in memory only).
    pub file: Option<PathBuf>,
    runtime: RwLock<RuntimeGrants>,
    version: AtomicU64,
}

/// One row of `joinery.policies`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRow {
    pub name: String,
    pub schema: String,
    pub table: String,
    pub filter: String,
    pub applies_to: String,
    /// `config` ([[row_filters]]) or `sql` (CREATE POLICY).
    pub source: &'static str,
}

/// Why a policy change was refused (the SQLSTATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyError {
    NoSuchObject,
    Exists,
    Other,
}

/// What a GRANT or REVOKE changed, for the statement's answer.
#[derive(Debug, PartialEq)]
pub struct Change {
    /// Grantees who already held it through a role or PUBLIC (REVOKE leaves that in place).
    pub still_via_role: Vec<String>,
    /// Whether the change was written to the grants file.
    pub persisted: bool,
}

impl AccessControl {
    pub fn new(
        users: Arc<BTreeMap<String, UserConfig>>,
        roles: BTreeMap<String, RoleConfig>,
        row_filters: Vec<RowFilter>,
        connections: BTreeSet<String>,
        file: Option<PathBuf>,
    ) -> Result<Self, String> {
        let runtime = match &file {
            Some(f) if f.exists() => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(f)
                        .map_err(|e| format!("cannot read grants file {}: {e}", f.display()))?
                        .permissions()
                        .mode();
                    if mode & 0o022 != 0 {
                        return Err(format!(
                            "grants file {} is writable by others (mode {:o}); chmod 600 it",
                            f.display(),
                            mode & 0o777
                        ));
                    }
                }
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("cannot read grants file {}: {e}", f.display()))?;
                serde_json::from_str(&text)
                    .map_err(|e| format!("grants file {} is not valid: {e}", f.display()))?
            }
            _ => RuntimeGrants::default(),
        };
        Ok(AccessControl {
            users,
            roles,
            row_filters,
            connections,
            file,
            runtime: RwLock::new(runtime),
            version: AtomicU64::new(1),
        })
    }

    /// No users declared: a single-user local setup where everyone is an admin.
    pub fn open_to_all(&self) -> bool {
        self.users.is_empty()
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.open_to_all() || self.users.get(user).is_some_and(|u| u.admin)
    }

    fn member_of(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// A grantee's own privileges: config plus SQL grants minus SQL revokes (`None`: all).
    fn own(
        &self,
        rt: &RuntimeGrants,
        grantee: &str,
        config: Option<&Option<BTreeSet<String>>>,
    ) -> BTreeSet<String> {
        let mut set = match config {
            Some(None) => self.connections.clone(),
            Some(Some(g)) => g.clone(),
            None => BTreeSet::new(),
        };
        if let Some(g) = rt.granted.get(grantee) {
            set.extend(g.iter().cloned());
        }
        if let Some(r) = rt.revoked.get(grantee) {
            set.retain(|c| !r.contains(c));
        }
        set.retain(|c| self.connections.contains(c));
        set
    }

    /// What `user` holds through roles and PUBLIC.
    fn inherited(&self, rt: &RuntimeGrants, user: &str) -> BTreeSet<String> {
        let mut set = self.own(rt, PUBLIC, None);
        if let Some(u) = self.users.get(user) {
            for role in &u.roles {
                set.extend(self.own(rt, role, self.roles.get(role).map(|r| &r.grants)));
            }
        }
        set
    }

    /// The connections `user` may see (`None`: all).
    pub fn grants_of(&self, user: &str) -> Option<BTreeSet<String>> {
        if self.open_to_all() {
            return None;
        }
        let Some(u) = self.users.get(user) else {
            return Some(BTreeSet::new());
        };
        let Ok(rt) = self.runtime.read() else {
            return Some(BTreeSet::new());
        };
        // Unrestricted in the config and nothing revoked: every connection, now and later.
        if u.grants.is_none() && !rt.revoked.contains_key(user) {
            return None;
        }
        let mut set = self.own(&rt, user, Some(&u.grants));
        set.extend(self.inherited(&rt, user));
        Some(set)
    }

    /// Whether `name` can be a grantee: a user, a role or PUBLIC.
    pub fn is_grantee(&self, name: &str) -> bool {
        name == PUBLIC || self.users.contains_key(name) || self.roles.contains_key(name)
    }

    /// Apply `GRANT` (`grant = true`) or `REVOKE` of USAGE on `connections` for `grantees`.
    /// Validation happens first: nothing changes unless every name is known.
    pub fn change(
        &self,
        grant: bool,
        connections: &[String],
        grantees: &[String],
    ) -> Result<Change, String> {
        if self.open_to_all() {
            return Err(
                "this server has no [users]: everyone may use every connection, so there is nothing to grant"
                    .into(),
            );
        }
        for c in connections {
            if !self.connections.contains(c) {
                return Err(format!("schema \"{c}\" does not exist"));
            }
        }
        for g in grantees {
            if !self.is_grantee(g) {
                return Err(format!("role \"{g}\" does not exist"));
            }
        }
        let mut rt = self
            .runtime
            .write()
            .map_err(|_| "grants lock poisoned".to_string())?;
        let before = rt.clone();
        let rt_mut = &mut *rt;
        for g in grantees {
            for c in connections {
                let (add, remove) = if grant {
                    (&mut rt_mut.granted, &mut rt_mut.revoked)
                } else {
                    (&mut rt_mut.revoked, &mut rt_mut.granted)
                };
                if let Some(set) = remove.get_mut(g) {
                    set.remove(c);
                    if set.is_empty() {
                        remove.remove(g);
                    }
                }
                // A grant the config already gives needs no runtime entry.
                let in_config = match (self.users.get(g), self.roles.get(g)) {
                    (Some(u), _) => u.grants.as_ref().is_none_or(|s| s.contains(c)),
                    (None, Some(r)) => r.grants.as_ref().is_none_or(|s| s.contains(c)),
                    _ => false,
                };
                if grant != in_config {
                    add.entry(g.clone()).or_default().insert(c.clone());
                }
            }
        }
        let still_via_role = if grant {
            Vec::new()
        } else {
            grantees
                .iter()
                .filter(|g| self.users.contains_key(*g))
                .filter(|g| {
                    let inh = self.inherited(&rt, g);
                    connections.iter().any(|c| inh.contains(c))
                })
                .cloned()
                .collect()
        };
        let persisted = self.save(&mut rt, before)?;
        drop(rt);
        self.version.fetch_add(1, Ordering::SeqCst);
        Ok(Change {
            still_via_role,
            persisted,
        })
    }

    /// Write the runtime state to the grants file (if any); on failure restore `before`.
    fn save(&self, rt: &mut RuntimeGrants, before: RuntimeGrants) -> Result<bool, String> {
        match &self.file {
            Some(path) if *rt != before => {
                if let Err(e) = write_private(path, rt) {
                    *rt = before;
                    return Err(format!("cannot save grants to {}: {e}", path.display()));
                }
                Ok(true)
            }
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// `CREATE POLICY` (the caller has checked the table and the predicate): returns whether
    /// it was written to the grants file.
    pub fn create_policy(&self, policy: Policy) -> Result<bool, (PolicyError, String)> {
        if !self.connections.contains(&policy.schema) {
            return Err((
                PolicyError::NoSuchObject,
                format!("schema \"{}\" does not exist", policy.schema),
            ));
        }
        if let Some(bad) = policy.to.iter().find(|g| !self.is_grantee(g)) {
            return Err((
                PolicyError::NoSuchObject,
                format!("role \"{bad}\" does not exist"),
            ));
        }
        let mut rt = self
            .runtime
            .write()
            .map_err(|_| (PolicyError::Other, "grants lock poisoned".to_string()))?;
        if rt
            .policies
            .iter()
            .any(|p| p.name == policy.name && p.schema == policy.schema && p.table == policy.table)
        {
            return Err((
                PolicyError::Exists,
                format!(
                    "policy \"{}\" for table \"{}\" already exists",
                    policy.name, policy.table
                ),
            ));
        }
        let before = rt.clone();
        rt.policies.push(policy);
        let persisted = self
            .save(&mut rt, before)
            .map_err(|e| (PolicyError::Other, e))?;
        drop(rt);
        self.version.fetch_add(1, Ordering::SeqCst);
        Ok(persisted)
    }

    /// `DROP POLICY`: `Ok(false)` when it did not exist and `if_exists` was given.
    pub fn drop_policy(
        &self,
        name: &str,
        schema: &str,
        table: &str,
        if_exists: bool,
    ) -> Result<bool, (PolicyError, String)> {
        let mut rt = self
            .runtime
            .write()
            .map_err(|_| (PolicyError::Other, "grants lock poisoned".to_string()))?;
        let before = rt.clone();
        rt.policies
            .retain(|p| !(p.name == name && p.schema == schema && p.table == table));
        if rt.policies.len() == before.policies.len() {
            if if_exists {
                return Ok(false);
            }
            return Err((
                PolicyError::NoSuchObject,
                format!("policy \"{name}\" for table \"{table}\" does not exist"),
            ));
        }
        self.save(&mut rt, before)
            .map_err(|e| (PolicyError::Other, e))?;
        drop(rt);
        self.version.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    /// Every row filter with its origin, for `joinery.policies`.
    pub fn policy_listing(&self) -> Vec<PolicyRow> {
        let mut out = Vec::new();
        for (i, f) in self.row_filters.iter().enumerate() {
            let mut to: Vec<String> = Vec::new();
            to.extend(f.users.iter().flatten().cloned());
            to.extend(f.roles.iter().flatten().cloned());
            out.push(PolicyRow {
                name: format!("row_filters[{i}]"),
                schema: f.schema.clone(),
                table: f.table.clone(),
                filter: f.filter.clone(),
                applies_to: if to.is_empty() {
                    PUBLIC.to_string()
                } else {
                    to.join(", ")
                },
                source: "config",
            });
        }
        if let Ok(rt) = self.runtime.read() {
            for p in &rt.policies {
                out.push(PolicyRow {
                    name: p.name.clone(),
                    schema: p.schema.clone(),
                    table: p.table.clone(),
                    filter: p.filter.clone(),
                    applies_to: if p.to.is_empty() {
                        PUBLIC.to_string()
                    } else {
                        p.to.iter().cloned().collect::<Vec<_>>().join(", ")
                    },
                    source: "sql",
                });
            }
        }
        out
    }

    /// Rows for `joinery.grants`-style listings: (grantee, connection, source).
    pub fn listing(&self) -> Vec<(String, String, &'static str)> {
        let mut out = Vec::new();
        let Ok(rt) = self.runtime.read() else {
            return out;
        };
        for (name, u) in self.users.iter() {
            for c in self.own(&rt, name, Some(&u.grants)) {
                out.push((name.clone(), c, "user"));
            }
        }
        for (name, r) in &self.roles {
            for c in self.own(&rt, name, Some(&r.grants)) {
                out.push((name.clone(), c, "role"));
            }
        }
        for c in self.own(&rt, PUBLIC, None) {
            out.push((PUBLIC.to_string(), c, "public"));
        }
        out
    }
}

/// `joinery.grants` (admins only): who may use which connection, and whether they hold it
/// themselves, through a role, or as PUBLIC.
pub fn grants_table(access: Arc<AccessControl>) -> joinery_engine::system::SnapshotTable {
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("grantee", DataType::Utf8, false),
        Field::new("connection", DataType::Utf8, false),
        Field::new("grantee_kind", DataType::Utf8, false),
    ]));
    joinery_engine::system::SnapshotTable::new(schema.clone(), move || {
        let rows = access.listing();
        Ok(arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.1.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )?)
    })
}

/// `joinery.policies` (admins only): every row filter, from the config or `CREATE POLICY`,
/// and whom it applies to.
pub fn policies_table(access: Arc<AccessControl>) -> joinery_engine::system::SnapshotTable {
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(
        [
            "policy_name",
            "schema_name",
            "table_name",
            "filter",
            "applies_to",
            "source",
        ]
        .into_iter()
        .map(|n| Field::new(n, DataType::Utf8, false))
        .collect::<Vec<_>>(),
    ));
    joinery_engine::system::SnapshotTable::new(schema.clone(), move || {
        let rows = access.policy_listing();
        let col = |f: fn(&PolicyRow) -> &str| {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as arrow::array::ArrayRef
        };
        Ok(arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            vec![
                col(|r| &r.name),
                col(|r| &r.schema),
                col(|r| &r.table),
                col(|r| &r.filter),
                col(|r| &r.applies_to),
                col(|r| r.source),
            ],
        )?)
    })
}

/// Write `value` as JSON to `path` through a temporary file and a rename, mode 0600.
fn write_private(path: &std::path::Path, value: &RuntimeGrants) -> std::io::Result<()> {
    use std::io::Write;
    // A fresh name each time, created (never reused): nothing another user placed there is
    // written through.
    let tmp = path.with_extension(format!("tmp.{:016x}", rand::random::<u64>()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename itself durable.
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        })
    {
        let _ = d.sync_all();
    }
    Ok(())
}

impl AccessSource for AccessControl {
    fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    fn access_of(&self, user: &str) -> Access {
        let credentials = self
            .users
            .get(user)
            .filter(|u| !u.credentials.is_empty())
            .map(|u| {
                Arc::new(UserCredentials {
                    by_connection: u.credentials.clone(),
                    secret_names: u.credential_secrets.clone(),
                })
            });
        let admin = self.is_admin(user);
        let mut row_filters: Vec<(String, String, String)> = self
            .row_filters
            .iter()
            .filter(|f| match (&f.users, &f.roles) {
                (None, None) => !admin,
                (users, roles) => {
                    users.as_ref().is_some_and(|u| u.contains(user))
                        || roles
                            .as_ref()
                            .is_some_and(|r| r.iter().any(|r| self.member_of(user, r)))
                }
            })
            .map(|f| {
                (
                    f.schema.clone(),
                    f.table.clone(),
                    with_current_user(&f.filter, user),
                )
            })
            .collect();
        if let Ok(rt) = self.runtime.read() {
            for p in &rt.policies {
                let applies = if p.to.is_empty() {
                    !admin
                } else {
                    p.to.contains(user)
                        || p.to.contains(PUBLIC)
                        || p.to.iter().any(|r| self.member_of(user, r))
                };
                if applies {
                    row_filters.push((
                        p.schema.clone(),
                        p.table.clone(),
                        with_current_user(&p.filter, user),
                    ));
                }
            }
        }
        Access {
            granted: self.grants_of(user),
            admin,
            credentials,
            row_filters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(xs: &[&str]) -> BTreeSet<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    fn control(file: Option<PathBuf>) -> AccessControl {
        let mut users = BTreeMap::new();
        users.insert(
            "alice".to_string(),
            UserConfig {
                grants: Some(set(&["github"])),
                roles: vec!["sales".into()],
                ..Default::default()
            },
        );
        users.insert(
            "bob".to_string(),
            UserConfig {
                grants: Some(set(&[])),
                ..Default::default()
            },
        );
        users.insert(
            "root".to_string(),
            UserConfig {
                admin: true,
                ..Default::default()
            },
        );
        let mut roles = BTreeMap::new();
        roles.insert(
            "sales".to_string(),
            RoleConfig {
                grants: Some(set(&["salesforce"])),
            },
        );
        AccessControl::new(
            Arc::new(users),
            roles,
            Vec::new(),
            set(&["github", "jira", "salesforce"]),
            file,
        )
        .expect("ok")
    }

    #[test]
    fn roles_public_grants_and_revokes_combine_like_postgres() {
        let ac = control(None);
        assert_eq!(ac.grants_of("alice"), Some(set(&["github", "salesforce"])));
        assert_eq!(ac.grants_of("bob"), Some(set(&[])));
        assert_eq!(ac.grants_of("root"), None);
        assert_eq!(ac.grants_of("mallory"), Some(set(&[])));

        let v = ac.version();
        ac.change(true, &["jira".into()], &["bob".into()])
            .expect("ok");
        assert!(ac.version() > v);
        assert_eq!(ac.grants_of("bob"), Some(set(&["jira"])));

        // Revoking what alice holds through her role leaves it, and says so.
        let c = ac
            .change(false, &["salesforce".into()], &["alice".into()])
            .expect("ok");
        assert_eq!(c.still_via_role, vec!["alice".to_string()]);
        assert_eq!(ac.grants_of("alice"), Some(set(&["github", "salesforce"])));
        ac.change(false, &["salesforce".into()], &["sales".into()])
            .expect("ok");
        assert_eq!(ac.grants_of("alice"), Some(set(&["github"])));

        ac.change(true, &["jira".into()], &[PUBLIC.into()])
            .expect("ok");
        assert_eq!(ac.grants_of("alice"), Some(set(&["github", "jira"])));
        // An unrestricted user loses exactly what is revoked.
        ac.change(false, &["github".into()], &["root".into()])
            .expect("ok");
        assert_eq!(ac.grants_of("root"), Some(set(&["jira", "salesforce"])));

        assert!(
            ac.change(true, &["nope".into()], &["bob".into()])
                .expect_err("refused")
                .contains("schema \"nope\" does not exist")
        );
        assert!(
            ac.change(true, &["jira".into()], &["nobody".into()])
                .expect_err("refused")
                .contains("role \"nobody\" does not exist")
        );
    }

    #[test]
    fn grants_persist_and_reload() {
        let dir = std::env::temp_dir().join(format!("joinery-grants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("ok");
        let file = dir.join("grants.json");
        let _ = std::fs::remove_file(&file);
        let ac = control(Some(file.clone()));
        let c = ac
            .change(true, &["jira".into()], &["bob".into()])
            .expect("ok");
        assert!(c.persisted);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).expect("ok").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = control(Some(file.clone()));
        assert_eq!(again.grants_of("bob"), Some(set(&["jira"])));
        std::fs::write(&file, "{not json").expect("ok");
        assert!(
            AccessControl::new(
                Arc::new(BTreeMap::new()),
                BTreeMap::new(),
                Vec::new(),
                BTreeSet::new(),
                Some(file.clone())
            )
            .expect_err("refused")
            .contains("is not valid")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
