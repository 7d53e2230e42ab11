//! Who may act now: owner tokens with their quotas, the browser sessions of
//! tenant hosts, and the signal that tells every open proxy stream to check
//! whether it is still authorised (after a revocation, a delete, a stop or
//! a move), so that ending a grant ends what it opened.
//!
//! One owner: [`Access`] holds the tokens' in-memory mirror (the database
//! holds the rows; the orchestrator changes both together) and the
//! sessions, which live in memory only (a restart asks browsers to open a
//! new one).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// The credential a request came with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Grant {
    /// The admin token (or `--insecure-dev`).
    Admin,
    /// An owner token, by its SHA-256 (hex).
    Token(String),
}

/// A token's own quota settings; `None` takes the server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuotaOverride {
    /// Most tenants of the owner.
    pub max_tenants: Option<u64>,
    /// Most `memoryMb` of the owner's tenants together.
    pub max_memory_mb: Option<u64>,
}

/// The quota a create is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Most tenants of the owner.
    pub max_tenants: u64,
    /// Most `memoryMb` of the owner's tenants together.
    pub max_memory_mb: u64,
}

impl QuotaOverride {
    /// The quota with the server's `defaults` where this sets none.
    pub fn over(self, defaults: Quota) -> Quota {
        Quota {
            max_tenants: self.max_tenants.unwrap_or(defaults.max_tenants),
            max_memory_mb: self.max_memory_mb.unwrap_or(defaults.max_memory_mb),
        }
    }
}

/// Why a create exceeds a quota, or `None`. Pure: `have` is the owner's
/// tenants now (count, memoryMb), `add` the new one's memoryMb.
pub fn over_quota(q: Quota, owner: &str, have: (u64, u64), add: u64) -> Option<String> {
    let (count, memory) = have;
    if count + 1 > q.max_tenants {
        return Some(format!(
            "quota: owner {owner:?} has {count} tenants, the most it may have \
             (SLOTPACK_MAX_TENANTS_PER_OWNER or the token's maxTenants: {})",
            q.max_tenants
        ));
    }
    if memory + add > q.max_memory_mb {
        return Some(format!(
            "quota: owner {owner:?} would use {} memoryMb, more than its {} \
             (SLOTPACK_MAX_MEMORY_MB_PER_OWNER or the token's maxMemoryMb; {memory} in use)",
            memory + add,
            q.max_memory_mb
        ));
    }
    None
}

#[derive(Debug, Clone)]
struct TokenEntry {
    owner: String,
    quota: QuotaOverride,
}

#[derive(Debug, Clone)]
struct Session {
    grant: Grant,
    tenant: String,
    until: Instant,
}

/// How long a browser session of a tenant host lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time session code is good for.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Most sessions (and, apart, codes) kept; the oldest go first.
const MOST_SESSIONS: usize = 10_000;

/// Tokens, sessions and the end-of-grant signal.
#[derive(Debug)]
pub struct Access {
    tokens: RwLock<HashMap<String, TokenEntry>>,
    sessions: Mutex<HashMap<String, Session>>,
    codes: Mutex<HashMap<String, Session>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Access {
    /// Access with these owner tokens `(hash, owner, quota)`.
    pub fn new(tokens: impl IntoIterator<Item = (String, String, QuotaOverride)>) -> Self {
        let tokens = tokens
            .into_iter()
            .map(|(h, owner, quota)| (h, TokenEntry { owner, quota }))
            .collect();
        Access {
            tokens: RwLock::new(tokens),
            sessions: Mutex::default(),
            codes: Mutex::default(),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    /// The owner and quota of the token with this hash.
    pub fn token(&self, hash: &str) -> Option<(String, QuotaOverride)> {
        let t = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        t.get(hash).map(|e| (e.owner.clone(), e.quota))
    }

    /// Whether `grant` is still good.
    pub fn valid(&self, grant: &Grant) -> bool {
        match grant {
            Grant::Admin => true,
            Grant::Token(h) => self
                .tokens
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(h),
        }
    }

    /// Add a token.
    pub fn add_token(&self, hash: String, owner: String, quota: QuotaOverride) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, TokenEntry { owner, quota });
    }

    /// Remove the tokens whose hash `gone` picks, their sessions with them,
    /// and wake every stream to check itself. Returns how many went.
    pub fn remove_tokens(&self, gone: impl Fn(&str, &str) -> bool) -> usize {
        let removed: Vec<String> = {
            let mut t = self.tokens.write().unwrap_or_else(|e| e.into_inner());
            let hashes: Vec<String> = t
                .iter()
                .filter(|(h, e)| gone(h, &e.owner))
                .map(|(h, _)| h.clone())
                .collect();
            for h in &hashes {
                t.remove(h);
            }
            hashes
        };
        let dead = |s: &Session| matches!(&s.grant, Grant::Token(h) if removed.contains(h));
        lock(&self.sessions).retain(|_, s| !dead(s));
        lock(&self.codes).retain(|_, s| !dead(s));
        self.wake();
        removed.len()
    }

    /// Tell every open stream to check whether it is still authorised.
    pub fn wake(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later [`Access::wake`]; take it before
    /// reading what a stream is authorised by, so no wake is missed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A one-time code (good for [`CODE_LIFETIME`]) that opens a session of
    /// `grant` on `tenant`'s host.
    pub fn new_code(&self, grant: Grant, tenant: &str) -> String {
        let code = crate::service::random_token();
        let s = Session {
            grant,
            tenant: tenant.to_string(),
            until: Instant::now() + CODE_LIFETIME,
        };
        insert_bounded(&mut lock(&self.codes), code.clone(), s);
        code
    }

    /// Trade a code for a session id, if the code is good and for `tenant`.
    pub fn redeem(&self, code: &str, tenant: &str) -> Option<String> {
        let s = lock(&self.codes).remove(code)?;
        if s.tenant != tenant || s.until < Instant::now() || !self.valid(&s.grant) {
            return None;
        }
        let id = crate::service::random_token();
        let s = Session {
            until: Instant::now() + SESSION_LIFETIME,
            ..s
        };
        insert_bounded(&mut lock(&self.sessions), id.clone(), s);
        Some(id)
    }

    /// The grant of session `id` if it is good and for `tenant`.
    pub fn session(&self, id: &str, tenant: &str) -> Option<Grant> {
        let s = lock(&self.sessions);
        let s = s.get(id)?;
        (s.tenant == tenant && s.until >= Instant::now()).then(|| s.grant.clone())
    }

    /// Forget the sessions of `tenant` (it is deleted).
    pub fn forget_tenant(&self, tenant: &str) {
        lock(&self.sessions).retain(|_, s| s.tenant != tenant);
        lock(&self.codes).retain(|_, s| s.tenant != tenant);
        self.wake();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Insert, first dropping expired entries and then the oldest when full.
fn insert_bounded(m: &mut HashMap<String, Session>, k: String, v: Session) {
    if m.len() >= MOST_SESSIONS {
        let now = Instant::now();
        m.retain(|_, s| s.until >= now);
    }
    if m.len() >= MOST_SESSIONS {
        if let Some(oldest) = m
            .iter()
            .min_by_key(|(_, s)| s.until)
            .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
    }
    m.insert(k, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access::new([
            (
                "h1".to_string(),
                "alice".to_string(),
                QuotaOverride::default(),
            ),
            (
                "h2".to_string(),
                "alice".to_string(),
                QuotaOverride::default(),
            ),
            (
                "h3".to_string(),
                "bob".to_string(),
                QuotaOverride::default(),
            ),
        ])
    }

    #[test]
    fn a_code_opens_one_session_for_its_tenant_only() {
        let a = access();
        let code = a.new_code(Grant::Token("h1".into()), "t1");
        assert!(a.redeem(&code, "t2").is_none(), "another tenant's host");
        let code = a.new_code(Grant::Token("h1".into()), "t1");
        let sid = a.redeem(&code, "t1").unwrap();
        assert!(a.redeem(&code, "t1").is_none(), "a code is good once");
        assert_eq!(a.session(&sid, "t1"), Some(Grant::Token("h1".into())));
        assert_eq!(a.session(&sid, "t2"), None);
    }

    #[test]
    fn revoking_an_owner_ends_its_tokens_sessions_and_wakes_streams() {
        let a = access();
        let mut rx = a.subscribe();
        let code = a.new_code(Grant::Token("h2".into()), "t1");
        let sid = a.redeem(&code, "t1").unwrap();
        let bob = a.new_code(Grant::Token("h3".into()), "t9");
        assert_eq!(a.remove_tokens(|_, owner| owner == "alice"), 2);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert!(!a.valid(&Grant::Token("h1".into())));
        assert_eq!(a.session(&sid, "t1"), None);
        assert!(a.valid(&Grant::Token("h3".into())));
        assert!(a.redeem(&bob, "t9").is_some());
        a.forget_tenant("t9");
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn quotas_take_the_tokens_settings_over_the_servers() {
        let d = Quota {
            max_tenants: 2,
            max_memory_mb: 1000,
        };
        let q = QuotaOverride {
            max_tenants: Some(5),
            max_memory_mb: None,
        }
        .over(d);
        assert_eq!((q.max_tenants, q.max_memory_mb), (5, 1000));
        assert!(over_quota(d, "o", (1, 100), 100).is_none());
        assert!(over_quota(d, "o", (2, 100), 100)
            .unwrap()
            .contains("2 tenants"));
        let m = over_quota(d, "o", (1, 900), 200).unwrap();
        assert!(m.contains("1100 memoryMb"), "{m}");
        assert!(
            over_quota(d, "o", (1, 900), 100).is_none(),
            "exactly at the cap"
        );
    }
}
