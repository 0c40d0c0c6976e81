//! Privacy by record: a user's consent history, their own data, erasure that reaches every
//! authorization, and the per-app feed that tells app backends which authorizations ended.

use std::sync::Arc;
use std::time::Duration;

use miniprogram_token::{Clock, ScopeSet, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::error::AuthError;
use crate::ids::check_id;
use crate::model::{
    AppRecord, AuthorizationChange, AuthorizationRecord, AuthorizationSummary, ChangeReason,
    ChangeSubject, ConsentEvent, ConsentRecord, ScopePurpose,
};
use crate::revocations::{RevocationFeed, RevocationPolicy};
use crate::secrets::AppUserIdKey;
use crate::store::{AuthStore, Transaction};

/// Default `CONSENT_RECORD_RETENTION`: five years, the longest limitation period the
/// platform's markets set for proving a consent.
/// 1827 days: five calendar years hold at most two leap days.
pub const DEFAULT_CONSENT_RECORD_RETENTION: Duration = Duration::from_secs(1827 * 86_400);
/// Default `AUTHORIZATION_CHANGE_RETENTION`: how long an app backend may be offline and still
/// resume its change feed without a gap.
pub const DEFAULT_AUTHORIZATION_CHANGE_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// Most consent records an export carries (newest first); older ones are listed with
/// ListConsentRecords.
pub const MAX_EXPORTED_RECORDS: u32 = 10_000;
/// Longest declared purpose, in bytes.
pub const MAX_PURPOSE_LEN: usize = 512;

/// How long records are kept, and whether every scope must be declared before it is asked.
#[derive(Debug, Clone, Copy)]
pub struct PrivacyPolicy {
    pub consent_record_retention: Duration,
    pub authorization_change_retention: Duration,
    pub require_declaration: bool,
}

impl Default for PrivacyPolicy {
    fn default() -> Self {
        PrivacyPolicy {
            consent_record_retention: DEFAULT_CONSENT_RECORD_RETENTION,
            authorization_change_retention: DEFAULT_AUTHORIZATION_CHANGE_RETENTION,
            require_declaration: false,
        }
    }
}

impl PrivacyPolicy {
    /// A record of `event` for `scopes`, kept for the consent-record retention from `now`.
    pub fn record(
        &self,
        authorization: (&str, &str),
        event: ConsentEvent,
        scopes: ScopeSet,
        declaration_version: i64,
        now: Timestamp,
    ) -> ConsentRecord {
        let (user_id, app_id) = authorization;
        ConsentRecord {
            record_id: 0,
            user_id: user_id.to_owned(),
            app_id: app_id.to_owned(),
            event,
            scopes,
            trigger: None,
            purposes: Vec::new(),
            declaration_version,
            recorded_at: now,
            expire_at: now.saturating_add(self.consent_record_retention),
        }
    }

    /// The change telling the app that `scopes` of `ended` ended, if the app holds anything
    /// that names the user: the app-scoped id it was given, else its consent tokens' grant id.
    pub fn change(
        &self,
        ended: &AuthorizationRecord,
        scopes: ScopeSet,
        reason: ChangeReason,
        now: Timestamp,
    ) -> Option<AuthorizationChange> {
        let subject = match (&ended.open_user_id, &ended.grant_ref) {
            (Some(id), _) => ChangeSubject::AppUserId(id.clone()),
            (None, Some(grant)) => ChangeSubject::Grant(grant.clone()),
            (None, None) => return None,
        };
        Some(AuthorizationChange {
            sequence: 0,
            app_id: ended.app_id.clone(),
            subject,
            scopes,
            reason,
            changed_at: now,
            expire_at: self.change_expiry(now),
        })
    }

    pub fn record_expiry(&self, now: Timestamp) -> Timestamp {
        now.saturating_add(self.consent_record_retention)
    }

    pub fn change_expiry(&self, now: Timestamp) -> Timestamp {
        now.saturating_add(self.authorization_change_retention)
    }

    /// Records that `ended`'s `scopes` were withdrawn or voided, and tells the app, in `tx`
    /// after the revocation rule that voided them (whose lock orders the change feed).
    /// `declared`, when given, is the declaration in force for those scopes (version,
    /// purposes), recorded as a withdrawal's purposes; without it the record carries the
    /// version consent was given under and no purposes.
    pub async fn record_end(
        &self,
        tx: &mut dyn Transaction,
        ended: &AuthorizationRecord,
        scopes: ScopeSet,
        (event, reason): (ConsentEvent, ChangeReason),
        declared: Option<(i64, Vec<ScopePurpose>)>,
        now: Timestamp,
    ) -> Result<(), AuthError> {
        let who = (ended.user_id.as_str(), ended.app_id.as_str());
        let record = match declared {
            Some((version, purposes)) => ConsentRecord {
                purposes,
                ..self.record(who, event, scopes, version, now)
            },
            None => self.record(who, event, scopes, ended.declaration_version, now),
        };
        tx.privacy().append_record(&record).await?;
        if let Some(change) = self.change(ended, scopes, reason, now) {
            tx.privacy().append_change(&change).await?;
        }
        Ok(())
    }
}

/// Checks a declaration: at most one purpose per scope, each 1 to 512 printable bytes.
pub fn check_declaration(version: i64, purposes: &[ScopePurpose]) -> Result<(), AuthError> {
    if version < 1 {
        return Err(AuthError::InvalidArgument {
            field: "version",
            problem: "must be at least 1",
        });
    }
    let mut seen = ScopeSet::EMPTY;
    for p in purposes {
        if seen.contains(p.scope) {
            return Err(AuthError::InvalidArgument {
                field: "purposes",
                problem: "declare each scope at most once",
            });
        }
        seen = seen.with(p.scope);
        let text = p.purpose.trim();
        if text.is_empty() || p.purpose.len() > MAX_PURPOSE_LEN {
            return Err(AuthError::InvalidArgument {
                field: "purposes.purpose",
                problem: "must be 1 to 512 bytes",
            });
        }
        if p.purpose.chars().any(char::is_control) {
            return Err(AuthError::InvalidArgument {
                field: "purposes.purpose",
                problem: "contains control characters",
            });
        }
    }
    Ok(())
}

/// One page of a user's consent history, and where the next starts (none: the last page).
#[derive(Debug)]
pub struct RecordPage {
    pub records: Vec<ConsentRecord>,
    pub next_before: Option<u64>,
}

/// Everything auth-service holds about one user.
#[derive(Debug)]
pub struct UserExport {
    pub authorizations: Vec<AuthorizationSummary>,
    pub records: Vec<ConsentRecord>,
    /// The user has more records than `records` carries (at most [`MAX_EXPORTED_RECORDS`],
    /// newest first): the oldest were left out.
    pub records_truncated: bool,
    /// (app id, app-scoped user id, whether the app was given it), for every app the user
    /// decided for.
    pub app_user_ids: Vec<(String, String, bool)>,
}

/// A user's consent history, their export and their erasure.
#[derive(Clone)]
pub struct PrivacyRecords {
    store: Arc<dyn AuthStore>,
    policy: PrivacyPolicy,
    revocation_policy: RevocationPolicy,
    feed: RevocationFeed,
    user_ids: AppUserIdKey,
}

impl PrivacyRecords {
    pub fn new(
        store: Arc<dyn AuthStore>,
        policy: PrivacyPolicy,
        revocation_policy: RevocationPolicy,
        feed: RevocationFeed,
        user_ids: AppUserIdKey,
    ) -> Self {
        PrivacyRecords {
            store,
            policy,
            revocation_policy,
            feed,
            user_ids,
        }
    }

    /// A page of the user's records, newest first, starting below `before` (0: the newest).
    pub async fn records(
        &self,
        user_id: &str,
        app_id: Option<&str>,
        before: u64,
        page_size: u32,
    ) -> Result<RecordPage, AuthError> {
        check_id("user_id", user_id)?;
        if let Some(app_id) = app_id {
            check_id("app_id", app_id)?;
        }
        let mut repos = self.store.repositories();
        let mut records = repos
            .privacy()
            .records(user_id, app_id, before, page_size.saturating_add(1))
            .await?;
        let more = records.len() > page_size as usize;
        records.truncate(page_size as usize);
        let next_before = more.then(|| records.last().map(|r| r.record_id)).flatten();
        Ok(RecordPage {
            records,
            next_before,
        })
    }

    /// The user's authorizations, records and app-scoped ids.
    pub async fn export(&self, user_id: &str) -> Result<UserExport, AuthError> {
        check_id("user_id", user_id)?;
        let mut repos = self.store.repositories();
        let standing = repos.consents().list(user_id).await?;
        let mut records = repos
            .privacy()
            .records(user_id, None, 0, MAX_EXPORTED_RECORDS + 1)
            .await?;
        let records_truncated = records.len() > MAX_EXPORTED_RECORDS as usize;
        records.truncate(MAX_EXPORTED_RECORDS as usize);
        let app_user_ids = standing
            .iter()
            .map(|(a, _)| {
                let id = self.user_ids.app_user_id(&a.app_id, user_id);
                (a.app_id.clone(), id, a.open_user_id.is_some())
            })
            .collect();
        let authorizations = standing
            .into_iter()
            .filter(|(a, _)| !a.granted.is_empty())
            .map(|(a, name)| AuthorizationSummary {
                app_id: a.app_id,
                app_display_name: name,
                scopes: a.granted,
                granted_at: a.updated_at,
            })
            .collect();
        Ok(UserExport {
            authorizations,
            records,
            records_truncated,
            app_user_ids,
        })
    }

    /// Ends every authorization of the user and forgets them: each app's tokens are voided by
    /// a rule stamped once its authorization is held (as a withdrawal is), the app is told,
    /// and the authorizations, prompts, codes and refresh tokens are deleted. Consent records
    /// stay for their retention. Returns how many apps held something; 0 when run again.
    pub async fn erase(&self, user_id: &str, clock: &dyn Clock) -> Result<u32, AuthError> {
        check_id("user_id", user_id)?;
        let mut tx = self.store.begin().await?;
        let standing = tx.consents().list(user_id).await?;
        let mut held = Vec::with_capacity(standing.len());
        // Each app's (user, app) lock before its authorization, in app id order, as a
        // withdrawal and an exchange take it: they queue instead of deadlocking.
        for (a, _) in &standing {
            tx.consents().hold_pending(user_id, &a.app_id).await?;
            if let Some(a) = tx.consents().hold_authorization(user_id, &a.app_id).await? {
                held.push(a);
            }
        }
        // The rows go before the revocation log's lock is taken, as a family revocation takes
        // its code and tokens before it.
        tx.consents().erase_user(user_id).await?;
        let now = clock.now();
        let ended: Vec<_> = held.iter().filter(|a| !a.granted.is_empty()).collect();
        let mut appended = Vec::new();
        for a in &ended {
            let rule = self
                .revocation_policy
                .rule(&a.app_id, Some(user_id), ScopeSet::EMPTY, now);
            appended.extend(tx.revocations().append(&rule).await?);
            let why = (ConsentEvent::VoidedByErasure, ChangeReason::Erased);
            self.policy
                .record_end(tx.as_mut(), a, a.granted, why, None, now)
                .await?;
        }
        tx.commit().await?;
        self.feed.appended(appended);
        for a in &ended {
            self.feed.changes().appended(&a.app_id);
        }
        Ok(u32::try_from(ended.len()).unwrap_or(u32::MAX))
    }
}

/// Most changes a list or a stream page reads at once.
pub const MAX_CHANGES_PAGE: u32 = 1000;

/// One message of a change stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeItem {
    Change(AuthorizationChange),
    /// Everything appended so far has been sent; also sent every heartbeat interval when idle.
    Heartbeat,
}

/// Change streams one app may hold open at once: one per replica of its backend, with room
/// for reconnects. A stream reads the store at every heartbeat and every append, so this bounds
/// what one app's credential can make the service do.
pub const MAX_WATCHES_PER_APP: usize = 8;

/// The per-app feed of authorizations that ended.
#[derive(Clone)]
pub struct AuthorizationChanges {
    store: Arc<dyn AuthStore>,
    feed: RevocationFeed,
}

impl AuthorizationChanges {
    pub fn new(store: Arc<dyn AuthStore>, feed: RevocationFeed) -> Self {
        AuthorizationChanges { store, feed }
    }

    /// The app's changes after `after`, oldest first, at most `limit`.
    pub async fn list(
        &self,
        app_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuthorizationChange>, AuthError> {
        let mut repos = self.store.repositories();
        let limit = limit.clamp(1, MAX_CHANGES_PAGE);
        Ok(repos.privacy().changes_after(app_id, after, limit).await?)
    }

    /// Streams the app's changes after `after`, then new ones as they are appended (woken by
    /// this process's appends, and re-read every `heartbeat` for other replicas'), with a
    /// heartbeat each time it has caught up and every `heartbeat` while idle. The stream ends
    /// with `InvalidAuthClient` once the app's secret is no longer the one it was opened with
    /// (rotated, or the app gone). At most [`MAX_WATCHES_PER_APP`] streams of one app are open.
    pub fn watch(
        &self,
        app: &AppRecord,
        after: u64,
        heartbeat: Duration,
        draining: CancellationToken,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ChangeItem, AuthError>>, AuthError> {
        let mut watch = (self.feed.changes()).open(&app.app_id, MAX_WATCHES_PER_APP)?;
        let (app_id, opened_with) = (app.app_id.clone(), app.secret_hash);
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut last = after;
            loop {
                watch.appended.borrow_and_update();
                let current = store.repositories().apps().get(&app_id).await;
                let refused = match current {
                    Ok(Some(app)) if app.secret_hash == opened_with => None,
                    Ok(_) => Some(AuthError::InvalidAuthClient),
                    Err(e) => Some(e.into()),
                };
                if let Some(refused) = refused {
                    let _ = tx.send(Err(refused)).await;
                    return;
                }
                let page = store
                    .repositories()
                    .privacy()
                    .changes_after(&app_id, last, MAX_CHANGES_PAGE)
                    .await;
                let changes = match page {
                    Ok(changes) => changes,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let full_page = changes.len() == MAX_CHANGES_PAGE as usize;
                for change in changes {
                    last = change.sequence;
                    if tx.send(Ok(ChangeItem::Change(change))).await.is_err() {
                        return;
                    }
                }
                if full_page {
                    continue;
                }
                if tx.send(Ok(ChangeItem::Heartbeat)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = watch.appended.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    () = tokio::time::sleep(heartbeat) => {}
                    () = tx.closed() => return,
                    () = draining.cancelled() => return,
                }
            }
        });
        Ok(rx)
    }
}

/// The purposes of `declared` for the scopes in `scopes`.
pub fn purposes_for(declared: Vec<ScopePurpose>, scopes: ScopeSet) -> Vec<ScopePurpose> {
    declared
        .into_iter()
        .filter(|p| scopes.contains(p.scope))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Trigger;
    use miniprogram_token::Scope;

    /// Guards the cut of [`PrivacyRecords::export`] (`records_truncated`): an export of a user
    /// with [`MAX_EXPORTED_RECORDS`] records carries them all and says nothing was left out;
    /// with one more it carries the newest `MAX_EXPORTED_RECORDS` and says the oldest were.
    async fn an_export_says_when_it_left_records_out(engine: sql_backend::Engine, url: String) {
        let store = crate::store::open(&url).await.unwrap();
        let ttl = Duration::from_secs(60);
        let records = PrivacyRecords::new(
            store.clone(),
            PrivacyPolicy::default(),
            RevocationPolicy::new(ttl, ttl),
            RevocationFeed::default(),
            AppUserIdKey::from_secret([1; 32]),
        );
        let policy = PrivacyPolicy::default();
        let scopes = ScopeSet::of(&[Scope::UserInfo]);
        let at = |n: u32| Timestamp::from_unix_nanos(i64::from(n) + 1);
        let mut tx = store.begin().await.unwrap();
        for n in 0..MAX_EXPORTED_RECORDS {
            let mut record = policy.record(("u1", "a1"), ConsentEvent::Granted, scopes, 1, at(n));
            record.trigger = Some(Trigger::UserTap);
            tx.privacy().append_record(&record).await.unwrap();
        }
        tx.commit().await.unwrap();
        let all = records.export("u1").await.unwrap();
        assert_eq!(
            all.records.len(),
            MAX_EXPORTED_RECORDS as usize,
            "{engine:?}"
        );
        assert!(!all.records_truncated, "{engine:?}: nothing left out");

        let newest = policy.record(
            ("u1", "a1"),
            ConsentEvent::Withdrawn,
            scopes,
            1,
            at(MAX_EXPORTED_RECORDS),
        );
        let mut repos = store.repositories();
        repos.privacy().append_record(&newest).await.unwrap();
        let cut = records.export("u1").await.unwrap();
        assert_eq!(
            cut.records.len(),
            MAX_EXPORTED_RECORDS as usize,
            "{engine:?}"
        );
        assert!(cut.records_truncated, "{engine:?}: the oldest left out");
        assert_eq!(cut.records[0].event, ConsentEvent::Withdrawn, "{engine:?}");
        assert_eq!(
            cut.records[1].record_id, all.records[0].record_id,
            "{engine:?}"
        );
    }
    sql_backend::on_each_engine!(an_export_says_when_it_left_records_out);
}
