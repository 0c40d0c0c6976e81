//! How long revocation rules live, and the live feed of new ones for `WatchRevocations`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use miniprogram_token::{Clock, RevocationRule, ScopeSet, Timestamp, TokenVerifier, VerifyingKey};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::AuthError;
use crate::model::NewRevocation;
use crate::store::{AuthStore, StoreResult};

/// Live token and family rules one app may hold unless configured otherwise
/// (`REVOCATION_QUOTA_PER_APP`).
pub const DEFAULT_RULES_PER_APP: u32 = 100_000;

/// Keeps a rule until every token it could match has expired on its own, and bounds how many
/// token and family rules one app can make the log (and every verifier) hold.
#[derive(Debug, Clone, Copy)]
pub struct RevocationPolicy {
    longest_token_ttl: Duration,
    rules_per_app: u32,
}

impl RevocationPolicy {
    pub fn new(consent_token_ttl: Duration, access_token_ttl: Duration) -> Self {
        RevocationPolicy {
            longest_token_ttl: consent_token_ttl.max(access_token_ttl),
            rules_per_app: DEFAULT_RULES_PER_APP,
        }
    }

    /// The same policy with another quota of live token and family rules per app.
    pub fn with_rules_per_app(self, quota: u32) -> Self {
        RevocationPolicy {
            rules_per_app: quota,
            ..self
        }
    }

    /// How many live rules voiding single tokens or grant families one app may hold: beyond it
    /// RevokeToken of an access or consent token is refused, and a family revocation revokes
    /// the family's refresh tokens but writes no rule for its access tokens.
    pub fn rules_per_app(&self) -> u32 {
        self.rules_per_app
    }

    /// The rule voiding the tokens of (app, user, or every user) carrying any of `scopes`
    /// (all when empty) issued up to `now`, kept until every token it can match has expired.
    pub fn rule(
        &self,
        app_id: &str,
        user_id: Option<&str>,
        scopes: ScopeSet,
        now: Timestamp,
    ) -> NewRevocation {
        NewRevocation {
            app_id: app_id.to_owned(),
            user_id: user_id.map(str::to_owned),
            scopes,
            token_id: None,
            grant_id: None,
            issued_before: now,
            expire_at: now.saturating_add(self.longest_token_ttl),
        }
    }

    /// The rule voiding one token id or one grant family of (app, user) outright, revoked by a
    /// call that read its clock at `now`. Nothing legitimate is minted for a dead family or
    /// token id, so its cut-off is not `now` but as late as its life: a token minted by a call
    /// racing this one (clock read earlier, write later) may be issued, and so expire, somewhat
    /// after `now`, and twice the longest token lifetime covers any such race.
    pub fn outright_rule(
        &self,
        app_id: &str,
        user_id: &str,
        token_id: Option<&str>,
        grant_id: Option<&str>,
        now: Timestamp,
    ) -> NewRevocation {
        let until = now.saturating_add(self.longest_token_ttl.saturating_mul(2));
        NewRevocation {
            app_id: app_id.to_owned(),
            user_id: Some(user_id.to_owned()),
            scopes: ScopeSet::EMPTY,
            token_id: token_id.map(str::to_owned),
            grant_id: grant_id.map(str::to_owned),
            issued_before: until,
            expire_at: until,
        }
    }
}

/// Wakes revocation streams when this process appends to the log, and an app's change
/// streams when it appends to that app's change feed (streams also poll, so what another
/// replica appends reaches them too), and holds this process's own view of the log: a
/// [`TokenVerifier`] that [`RevocationLog::follow`] keeps up to date and that IntrospectToken
/// checks instead of reading rules per call.
#[derive(Debug, Clone)]
pub struct RevocationFeed {
    tx: watch::Sender<u64>,
    local: Arc<TokenVerifier>,
    changes: ChangeSignals,
}

impl Default for RevocationFeed {
    fn default() -> Self {
        RevocationFeed {
            tx: watch::channel(0).0,
            local: Arc::new(TokenVerifier::new(LOCAL_STALE_AFTER)),
            changes: ChangeSignals::default(),
        }
    }
}

impl RevocationFeed {
    /// Tells every open stream that the log has grown or the keys changed.
    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Rules this process has just committed: held by its own view at once, before the call
    /// that wrote them answers (an IntrospectToken after a RevokeToken through this replica
    /// never finds the token active), then every open stream is woken. Applied without their
    /// sequence, so the follower's later copy still advances the view in order.
    pub fn appended(&self, rules: impl IntoIterator<Item = RevocationRule>) {
        let mut any = false;
        for rule in rules {
            self.local.apply(RevocationRule {
                sequence: 0,
                ..rule
            });
            any = true;
        }
        if any {
            self.notify();
        }
    }

    /// The signing ring changed: this process's view opens tokens of these keys only.
    pub fn keys_replaced(&self, keys: Vec<VerifyingKey>) {
        self.local.replace_keys(keys);
        self.notify();
    }

    /// This process's view of its log and keys.
    pub fn local(&self) -> &TokenVerifier {
        &self.local
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// The app's open change streams and their wake.
    pub fn changes(&self) -> &ChangeSignals {
        &self.changes
    }
}

/// Open change streams per app, each app's with the signal that wakes them, so that an append
/// to one app's change feed wakes that app's streams only (a RevokeToken, which appends no
/// change, wakes none). An app is held only while it has a stream open.
#[derive(Debug, Clone, Default)]
pub struct ChangeSignals(Arc<Mutex<HashMap<String, Watchers>>>);

#[derive(Debug)]
struct Watchers {
    open: usize,
    wake: watch::Sender<()>,
}

/// One open change stream of an app, counted until it is dropped, with its wake.
#[derive(Debug)]
pub struct ChangeWatch {
    signals: ChangeSignals,
    app_id: String,
    /// Changes when this process has appended to the app's change feed.
    pub appended: watch::Receiver<()>,
}

impl ChangeSignals {
    /// One more stream of `app_id`, or `RequestTrafficExceedLimit` when it holds `max`.
    pub fn open(&self, app_id: &str, max: usize) -> Result<ChangeWatch, AuthError> {
        let mut apps = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let watchers = apps.entry(app_id.to_owned()).or_insert_with(|| Watchers {
            open: 0,
            wake: watch::channel(()).0,
        });
        if watchers.open >= max {
            return Err(AuthError::RequestTrafficExceedLimit);
        }
        watchers.open += 1;
        Ok(ChangeWatch {
            signals: self.clone(),
            app_id: app_id.to_owned(),
            appended: watchers.wake.subscribe(),
        })
    }

    /// This process has committed changes to the app's feed: its open streams read it now.
    pub fn appended(&self, app_id: &str) {
        let apps = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(watchers) = apps.get(app_id) {
            watchers.wake.send_replace(());
        }
    }
}

impl Drop for ChangeWatch {
    fn drop(&mut self) {
        let mut apps = self
            .signals
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(watchers) = apps.get_mut(&self.app_id) {
            watchers.open -= 1;
            if watchers.open == 0 {
                apps.remove(&self.app_id);
            }
        }
    }
}

/// How often this process's own view of the log hears "caught up" while the log is idle, and
/// how long without that before IntrospectToken stops trusting the view and reads the rules
/// for the token from the store itself (the database is down, or the follower is replaying
/// a backlog after start).
const LOCAL_HEARTBEAT: Duration = Duration::from_millis(250);
const LOCAL_STALE_AFTER: Duration = Duration::from_secs(1);
/// Pause before following the log again after a storage error ended the stream.
const LOCAL_RETRY: Duration = Duration::from_millis(100);

/// One message of a revocation stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationItem {
    Rule(RevocationRule),
    /// "You now have every rule in the log": sent each time the stream has caught up with the
    /// log, and again whenever it has been idle for the heartbeat interval. Verifiers count
    /// themselves fresh only on a heartbeat, so a backlog still in flight never looks fresh.
    Heartbeat,
    /// First on a stream that cannot resume where the verifier asked, because the log no
    /// longer holds the verifier's last rule there (restored from a backup, or swept): the
    /// stream starts after `after` instead, and the verifier must accept those sequences again.
    ResumedAfter {
        after: u64,
    },
}

/// Rules read from the log per query.
const PAGE: u32 = 500;
/// How often an open stream reads the log again for rules another replica appended (this
/// replica's own appends wake it at once), so a withdrawal through any replica reaches every
/// verifier within about this long. Waiting a whole heartbeat (1 s by default) put it at up
/// to a second (faults/: `postgres_a_withdrawal_through_either_replica_is_refused_everywhere_within_a_second`).
const LOG_POLL: Duration = Duration::from_millis(100);

/// The revocation log as verifiers follow it.
#[derive(Clone)]
pub struct RevocationLog {
    store: Arc<dyn AuthStore>,
    feed: RevocationFeed,
}

impl RevocationLog {
    pub fn new(store: Arc<dyn AuthStore>, feed: RevocationFeed) -> Self {
        RevocationLog { store, feed }
    }

    /// Streams every rule after `after_sequence`, then new ones as they are appended (read
    /// again every [`LOG_POLL`], or at once when this process appends). Each time it has sent
    /// rules and caught up with the log it sends a [`RevocationItem::Heartbeat`], and an idle
    /// stream sends one every `heartbeat`. Ends when the receiver is dropped or the server
    /// drains; a storage error is sent and ends the stream (the verifier resumes either way).
    pub fn watch(
        &self,
        after_sequence: u64,
        after_issued_before: Option<Timestamp>,
        heartbeat: Duration,
        draining: CancellationToken,
    ) -> tokio::sync::mpsc::Receiver<Result<RevocationItem, AuthError>> {
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut appended = self.feed.subscribe();
        tokio::spawn(async move {
            let mut last =
                match resume_point(store.as_ref(), after_sequence, after_issued_before).await {
                    Ok(last) => last,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
            if last != after_sequence
                && tx
                    .send(Ok(RevocationItem::ResumedAfter { after: last }))
                    .await
                    .is_err()
            {
                return;
            }
            // A heartbeat follows every rule sent and every wake by this process (an append, a
            // key change); otherwise one per `heartbeat` while idle.
            let mut heartbeat_due = true;
            let mut last_heartbeat = tokio::time::Instant::now();
            loop {
                // Marked seen before the read, so an append during the read wakes the next wait.
                appended.borrow_and_update();
                let rules = match store.repositories().revocations().after(last, PAGE).await {
                    Ok(rules) => rules,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let full_page = rules.len() == PAGE as usize;
                heartbeat_due |= !rules.is_empty();
                for rule in rules {
                    last = rule.sequence;
                    if tx.send(Ok(RevocationItem::Rule(rule))).await.is_err() {
                        return;
                    }
                }
                if full_page {
                    continue;
                }
                if heartbeat_due || last_heartbeat.elapsed() >= heartbeat {
                    if tx.send(Ok(RevocationItem::Heartbeat)).await.is_err() {
                        return;
                    }
                    last_heartbeat = tokio::time::Instant::now();
                    heartbeat_due = false;
                }
                tokio::select! {
                    changed = appended.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        heartbeat_due = true;
                    }
                    () = tokio::time::sleep(LOG_POLL.min(heartbeat)) => {}
                    () = tx.closed() => return,
                    () = draining.cancelled() => return,
                }
            }
        });
        rx
    }
}

impl RevocationLog {
    /// Keeps this process's view ([`RevocationFeed::local`]) holding every rule in the log,
    /// as a userinfo-service replica follows it over gRPC: rules another replica appends
    /// arrive within a [`LOG_POLL`], this process's own at once ([`RevocationFeed::appended`]).
    /// Runs until `draining`; a storage error ends a stream and a new one resumes.
    pub async fn follow(self, clock: Arc<dyn Clock>, draining: CancellationToken) {
        let view = self.feed.local.clone();
        while !draining.is_cancelled() {
            let (after, issued_before) = view.resume_point();
            let mut items = self.watch(after, issued_before, LOCAL_HEARTBEAT, draining.clone());
            while let Some(item) = items.recv().await {
                match item {
                    Ok(RevocationItem::Rule(rule)) => view.apply(rule),
                    Ok(RevocationItem::Heartbeat) => view.heartbeat(Instant::now(), clock.now()),
                    Ok(RevocationItem::ResumedAfter { after }) => view.rewind_to(after),
                    Err(e) => {
                        tracing::warn!(error = %e, "following the revocation log failed; IntrospectToken reads rules from the store until it resumes");
                        break;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(LOCAL_RETRY) => {}
                () = draining.cancelled() => {}
            }
        }
    }
}

/// Where a stream asked to resume after `after_sequence` really resumes: there, if the log
/// still holds the verifier's last rule at that place (same `issued_before`, when the verifier
/// says); otherwise from the start of the log. Sequences are handed out again after a restore
/// from a backup, so a sequence alone could point into another timeline and skip its rules;
/// starting over only re-sends rules the verifier then holds once anyway.
async fn resume_point(
    store: &dyn AuthStore,
    after_sequence: u64,
    after_issued_before: Option<Timestamp>,
) -> StoreResult<u64> {
    if after_sequence == 0 {
        return Ok(0);
    }
    let same_rule = store
        .repositories()
        .revocations()
        .at(after_sequence)
        .await?
        .is_some_and(|rule| after_issued_before.is_none_or(|t| t == rule.issued_before));
    Ok(if same_rule { after_sequence } else { 0 })
}
