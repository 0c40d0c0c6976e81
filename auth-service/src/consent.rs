//! The consent flow: what a user is asked, what their answer grants, and what they can withdraw.
//! Every rule of the platform is enforced here, server-side, whatever the mini program does.

use std::sync::Arc;
use std::time::Duration;

use miniprogram_token::{
    Clock, RevocationRule, Scope, ScopeSet, Timestamp, TokenClaims, TokenKind,
};

use crate::error::AuthError;
use crate::keys::SigningKeys;
use crate::model::{
    AppRecord, AuthCodeRecord, AuthorizationRecord, ChangeReason, ConsentEvent, ConsentRecord,
    PromptRecord, ScopePurpose, SecretHash,
};
use crate::privacy::{PrivacyPolicy, purposes_for};
use crate::revocations::{RevocationFeed, RevocationPolicy};
use crate::secrets::{self, OpaqueSecret};
use crate::store::{AuthStore, Decision as StoredDecision, Transaction};

pub use crate::ids::{MAX_ID_LEN, check_id};
pub use crate::model::{AuthorizationSummary, Trigger};

/// The user's answer to a modal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// The credential a grant carries.
#[derive(Debug)]
pub enum GrantCredential {
    /// For `userInfo`: handed to mini program code, good for GetOpenUserInfo.
    ConsentToken(String),
    /// For `auth_base` / `phoneNumber`: exchanged by the mini program backend.
    AuthCode(OpaqueSecret),
}

/// Authorization given.
#[derive(Debug)]
pub struct Grant {
    pub scopes: ScopeSet,
    pub expires_at: Timestamp,
    pub credential: GrantCredential,
}

/// The modal the wallet must show.
#[derive(Debug)]
pub struct Prompt {
    pub prompt_id: OpaqueSecret,
    pub app_display_name: String,
    pub scopes: ScopeSet,
    pub previously_denied: bool,
    pub expires_at: Timestamp,
    /// The declared purposes of the scopes asked for.
    pub purposes: Vec<ScopePurpose>,
    pub declaration_version: i64,
}

/// What `RequestAuthorization` leads to.
#[derive(Debug)]
pub enum AuthorizationOutcome {
    Prompt(Prompt),
    Grant(Grant),
}

/// What answering a prompt leads to. A denial is an outcome, not an error: the mini program
/// may ask again the next time the business needs it.
#[derive(Debug)]
pub enum PromptOutcome {
    Grant(Grant),
    Denial { scopes: ScopeSet },
}

/// Lifetimes of what the consent flow hands out.
#[derive(Debug, Clone, Copy)]
pub struct ConsentLifetimes {
    pub prompt: Duration,
    pub consent_token: Duration,
    pub auth_code: Duration,
    /// Codes are kept this long past expiry so that a late replay still revokes its tokens.
    pub code_retention: Duration,
}

/// How much of the consent flow one user's requests to one app may keep waiting in the store,
/// so that no mini program can grow it without end by asking in a loop through the wallet's
/// gateway (README, "Grants").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingBounds {
    /// Prompts neither answered nor expired; past them a request that needs one is refused.
    pub prompts_per_user: u32,
    /// Codes not yet exchanged; a new one deletes the oldest beyond it.
    pub codes_per_user: u32,
}

/// MAX_OPEN_PROMPTS_PER_USER's default: the wallet shows one modal at a time.
pub const DEFAULT_OPEN_PROMPTS_PER_USER: u32 = 4;
/// MAX_OPEN_CODES_PER_USER's default: a backend exchanges a code within seconds.
pub const DEFAULT_OPEN_CODES_PER_USER: u32 = 8;

impl Default for PendingBounds {
    fn default() -> Self {
        PendingBounds {
            prompts_per_user: DEFAULT_OPEN_PROMPTS_PER_USER,
            codes_per_user: DEFAULT_OPEN_CODES_PER_USER,
        }
    }
}

/// Checks the shape of a scope request: `[userInfo]` alone, or a non-empty subset of
/// {`auth_base`, `phoneNumber`}.
pub fn check_scope_combination(scopes: ScopeSet) -> Result<ScopeSet, AuthError> {
    if scopes.is_empty() {
        return Err(AuthError::InvalidScope);
    }
    if scopes.contains(Scope::UserInfo) && scopes != ScopeSet::of(&[Scope::UserInfo]) {
        return Err(AuthError::ScopesNotCombinable);
    }
    Ok(scopes)
}

/// Runs the consent flow against the store, minting with the current token key.
#[derive(Clone)]
pub struct ConsentFlow {
    store: Arc<dyn AuthStore>,
    keys: SigningKeys,
    lifetimes: ConsentLifetimes,
    revocation_policy: RevocationPolicy,
    feed: RevocationFeed,
    privacy: PrivacyPolicy,
    bounds: PendingBounds,
}

impl ConsentFlow {
    pub fn new(
        store: Arc<dyn AuthStore>,
        keys: SigningKeys,
        lifetimes: ConsentLifetimes,
        revocation_policy: RevocationPolicy,
        feed: RevocationFeed,
    ) -> Self {
        ConsentFlow {
            store,
            keys,
            lifetimes,
            revocation_policy,
            feed,
            privacy: PrivacyPolicy::default(),
            bounds: PendingBounds::default(),
        }
    }

    /// Bounds what waits for the user or the app as `bounds` says.
    pub fn with_bounds(mut self, bounds: PendingBounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// Keeps records and checks declarations as `privacy` says.
    pub fn with_privacy(mut self, privacy: PrivacyPolicy) -> Self {
        self.privacy = privacy;
        self
    }

    /// `my.getOpenUserInfo` / `my.getAuthCode`: grant at once what needs no (new) consent,
    /// otherwise describe the modal to show. Consent given under an older privacy declaration
    /// than the app's is asked for again.
    pub async fn request(
        &self,
        user_id: &str,
        app_id: &str,
        scopes: ScopeSet,
        trigger: Trigger,
        now: Timestamp,
    ) -> Result<AuthorizationOutcome, AuthError> {
        check_id("user_id", user_id)?;
        check_id("app_id", app_id)?;
        let scopes = check_scope_combination(scopes)?;
        // The authorization before the app, both in order: a feature switch-off withdraws the
        // one and switches the other in one commit, so a request that sees the withdrawal sees
        // the feature off too, and never prompts for it.
        let mut repos = self.store.repositories();
        let standing = repos.consents().authorization(user_id, app_id).await?;
        let app = repos.apps().get_in_order(app_id).await?;
        let app = self.check_features(app, scopes)?;
        let granted = (standing.as_ref()).map_or(ScopeSet::EMPTY, |a| {
            a.granted_under(app.declaration_version)
        });
        let to_ask = scopes
            .intersection(ScopeSet::NEEDING_CONSENT)
            .difference(granted);
        if to_ask.is_empty() {
            let grant_ref = standing.and_then(|a| a.grant_ref);
            let asked = (user_id, scopes, trigger);
            let grant = self
                .grant_without_asking(&app, asked, granted, grant_ref, now)
                .await?;
            return Ok(AuthorizationOutcome::Grant(grant));
        }
        if trigger == Trigger::AppLaunch {
            return Err(AuthError::AuthorizationAtLaunch);
        }
        let previously_denied = standing
            .as_ref()
            .is_some_and(|a: &AuthorizationRecord| !a.denied.intersection(to_ask).is_empty());
        let prompt = self
            .ask(&app, (user_id, scopes, trigger), previously_denied, now)
            .await?;
        Ok(AuthorizationOutcome::Prompt(prompt))
    }

    /// Every consent scope asked for is already granted: a new non-consent scope (say,
    /// `auth_base` beside a granted `userInfo`) is recorded, then the credential is minted.
    async fn grant_without_asking(
        &self,
        app: &AppRecord,
        (user_id, scopes, trigger): (&str, ScopeSet, Trigger),
        granted: ScopeSet,
        mut grant_ref: Option<String>,
        now: Timestamp,
    ) -> Result<Grant, AuthError> {
        let app_id = app.app_id.as_str();
        if !scopes.is_subset_of(granted) {
            let mut tx = self.store.begin().await?;
            let decision = StoredDecision::new(user_id, app_id, scopes, ScopeSet::EMPTY, now);
            grant_ref = tx.consents().record_decision(&decision).await?;
            let mut record = self.privacy.record(
                (user_id, app_id),
                ConsentEvent::Granted,
                scopes.difference(granted),
                app.declaration_version,
                now,
            );
            record.trigger = Some(trigger);
            tx.privacy().append_record(&record).await?;
            tx.commit().await?;
        }
        self.grant(app, user_id, scopes, grant_ref, now).await
    }

    /// Writes the modal the user must answer, with its consent record (what was shown, and
    /// why each scope is wanted when the app declared it).
    async fn ask(
        &self,
        app: &AppRecord,
        (user_id, scopes, trigger): (&str, ScopeSet, Trigger),
        previously_denied: bool,
        now: Timestamp,
    ) -> Result<Prompt, AuthError> {
        let app_id = app.app_id.as_str();
        let purposes = if app.declared_scopes.intersection(scopes).is_empty() {
            Vec::new()
        } else {
            let declaration = self
                .store
                .repositories()
                .privacy()
                .declaration(app_id)
                .await?;
            purposes_for(declaration, scopes)
        };
        let prompt_id = OpaqueSecret::generate()?;
        let expires_at = now.saturating_add(self.lifetimes.prompt);
        let mut tx = self.store.begin_holding_pending(user_id, app_id).await?;
        let open = tx.consents().open_prompts(user_id, app_id, now).await?;
        if open >= u64::from(self.bounds.prompts_per_user) {
            return Err(AuthError::TooManyOpenPrompts);
        }
        tx.consents()
            .insert_prompt(&PromptRecord {
                prompt_hash: prompt_id.hash(),
                user_id: user_id.to_owned(),
                app_id: app_id.to_owned(),
                scopes,
                previously_denied,
                created_at: now,
                expires_at,
                resolved_at: None,
                declaration_version: app.declaration_version,
                trigger: Some(trigger),
                purposes: purposes.clone(),
            })
            .await?;
        let mut record = self.privacy.record(
            (user_id, app_id),
            ConsentEvent::Prompted,
            scopes,
            app.declaration_version,
            now,
        );
        record.trigger = Some(trigger);
        record.purposes = purposes.clone();
        tx.privacy().append_record(&record).await?;
        tx.commit().await?;
        Ok(Prompt {
            prompt_id,
            app_display_name: app.display_name.clone(),
            scopes,
            previously_denied,
            expires_at,
            purposes,
            declaration_version: app.declaration_version,
        })
    }

    /// The user answered a modal. Prompts are single-use, short-lived and bound to their user.
    pub async fn resolve(
        &self,
        prompt_id: &str,
        user_id: &str,
        decision: Decision,
        now: Timestamp,
    ) -> Result<PromptOutcome, AuthError> {
        let (hash, prompt) = self.open_prompt(prompt_id, user_id, now).await?;
        let app_id = prompt.app_id.as_str();
        let (grant, deny, event) = match decision {
            Decision::Allow => (prompt.scopes, ScopeSet::EMPTY, ConsentEvent::Granted),
            Decision::Deny => (
                ScopeSet::EMPTY,
                prompt.scopes.intersection(ScopeSet::NEEDING_CONSENT),
                ConsentEvent::Denied,
            ),
        };
        let new_ref = secrets::new_id()?;
        // The answer takes the prompt in the transaction that records it: one commit, and an
        // answer that fails leaves the prompt to be answered again. In the pair's turn, as an
        // erasure deletes the user's prompts holding it. An Allow shares the app's features in
        // it, before the authorization: a switch-off running now has committed before the
        // features are read (the scope is refused), one starting later waits for the answer's
        // commit (and withdraws what it grants).
        let mut tx = self.store.begin_holding_pending(user_id, app_id).await?;
        let app = match decision {
            Decision::Allow => {
                tx.apps().hold_features_shared(app_id).await?;
                let app = tx.apps().get(app_id).await?;
                Some(self.check_features(app, prompt.scopes)?)
            }
            Decision::Deny => None,
        };
        // The authorization before the prompt, as an erasure deletes them.
        let held = tx.consents().hold_authorization(user_id, app_id).await?;
        if !tx.consents().resolve_prompt(&hash, now).await? {
            return Err(AuthError::PromptAlreadyResolved);
        }
        let answered = (prompt.declaration_version, grant);
        let (voided, rule) = self
            .void_stale_consent(tx.as_mut(), held.as_ref(), answered, now)
            .await?;
        let stored = tx
            .consents()
            .record_decision(&StoredDecision {
                version: prompt.declaration_version,
                grant_ref: Some(&new_ref),
                ..StoredDecision::new(user_id, app_id, grant, deny, now)
            })
            .await?;
        let record = self.answer_record(&prompt, event, now);
        tx.privacy().append_record(&record).await?;
        tx.commit().await?;
        if !voided.is_empty() {
            self.feed.appended(rule);
            self.feed.changes().appended(app_id);
        }
        match app {
            Some(app) => {
                let scopes = prompt.scopes;
                let grant = self.grant(&app, user_id, scopes, stored, now).await?;
                Ok(PromptOutcome::Grant(grant))
            }
            None => Ok(PromptOutcome::Denial {
                scopes: prompt.scopes,
            }),
        }
    }

    /// The answer to `prompt`, recorded with what the modal showed: its trigger and its
    /// purposes as shown, whatever the declaration says now.
    fn answer_record(
        &self,
        prompt: &PromptRecord,
        event: ConsentEvent,
        now: Timestamp,
    ) -> ConsentRecord {
        let pair = (prompt.user_id.as_str(), prompt.app_id.as_str());
        let version = prompt.declaration_version;
        let mut record = self
            .privacy
            .record(pair, event, prompt.scopes, version, now);
        record.trigger = prompt.trigger;
        record.purposes = prompt.purposes.clone();
        record
    }

    /// The user's prompt `prompt_id`, still open at `now`, and its hash.
    async fn open_prompt(
        &self,
        prompt_id: &str,
        user_id: &str,
        now: Timestamp,
    ) -> Result<(SecretHash, PromptRecord), AuthError> {
        check_id("user_id", user_id)?;
        if !secrets::looks_like_secret(prompt_id) {
            return Err(AuthError::PromptNotFound);
        }
        let hash = secrets::hash(prompt_id);
        let mut repos = self.store.repositories();
        let prompt = repos.consents().prompt(&hash).await?;
        let prompt = prompt
            .filter(|p| p.user_id == user_id)
            .ok_or(AuthError::PromptNotFound)?;
        if prompt.resolved_at.is_some() {
            return Err(AuthError::PromptAlreadyResolved);
        }
        if prompt.expires_at <= now {
            return Err(AuthError::PromptExpired);
        }
        Ok((hash, prompt))
    }

    /// An answer under declaration `version` ends the consent `held` gave under an older
    /// one ([`AuthorizationRecord::granted_under`]) that it does not give again
    /// (`regranted`), as a withdrawal of those scopes: they leave the authorization (with its
    /// grant id if no consent scope is left), their unspent codes and refresh tokens go, a rule
    /// voids their access and consent tokens, and the end is recorded and put in the app's
    /// feed. The scopes ended (none when nothing stale was left), and the rule, if appended.
    async fn void_stale_consent(
        &self,
        tx: &mut dyn Transaction,
        held: Option<&AuthorizationRecord>,
        (version, regranted): (i64, ScopeSet),
        now: Timestamp,
    ) -> Result<(ScopeSet, Option<RevocationRule>), AuthError> {
        let Some(held) = held else {
            return Ok((ScopeSet::EMPTY, None));
        };
        let lapsed = held.granted.difference(held.granted_under(version));
        let ended = lapsed.difference(regranted);
        if ended.is_empty() {
            return Ok((ended, None));
        }
        let pair = (held.user_id.as_str(), held.app_id.as_str());
        tx.consents().withdraw(pair.0, pair.1, ended).await?;
        let appended = self.void_grants(tx, pair, ended, ended, now).await?;
        let why = (
            ConsentEvent::VoidedByNewDeclaration,
            ChangeReason::DeclarationReplaced,
        );
        self.privacy
            .record_end(tx, held, ended, why, None, now)
            .await?;
        Ok((ended, appended))
    }

    /// Voids the grants of `scopes` of the (user, app) pair held in `tx`: their unspent codes
    /// are deleted, their refresh tokens revoked, and a rule for `rule_scopes` (empty: all)
    /// voids their access and consent tokens issued before `now`; the rule, if appended.
    async fn void_grants(
        &self,
        tx: &mut dyn Transaction,
        (user_id, app_id): (&str, &str),
        scopes: ScopeSet,
        rule_scopes: ScopeSet,
        now: Timestamp,
    ) -> Result<Option<RevocationRule>, AuthError> {
        tx.grants()
            .delete_unspent_codes(app_id, user_id, scopes)
            .await?;
        tx.grants()
            .revoke_tokens_carrying(app_id, Some(user_id), scopes, now)
            .await?;
        let rule = self
            .revocation_policy
            .rule(app_id, Some(user_id), rule_scopes, now);
        Ok(tx.revocations().append(&rule).await?)
    }

    /// The user's settings page: every mini program that holds something.
    pub async fn list(&self, user_id: &str) -> Result<Vec<AuthorizationSummary>, AuthError> {
        check_id("user_id", user_id)?;
        Ok(self
            .store
            .repositories()
            .consents()
            .list(user_id)
            .await?
            .into_iter()
            .filter(|(a, _)| !a.granted.is_empty())
            .map(|(a, name)| AuthorizationSummary {
                app_id: a.app_id,
                app_display_name: name,
                scopes: a.granted,
                granted_at: a.updated_at,
            })
            .collect())
    }

    /// Withdraws `scopes` (all when empty); tokens carrying them stop working at once, the
    /// app's change feed says so, and the next request prompts again. Returns (withdrawn,
    /// still granted). Withdrawing what is not granted writes nothing: every token carrying it
    /// was caught by the withdrawal that took it back.
    pub async fn withdraw(
        &self,
        user_id: &str,
        app_id: &str,
        scopes: ScopeSet,
        clock: &dyn Clock,
    ) -> Result<(ScopeSet, ScopeSet), AuthError> {
        check_id("user_id", user_id)?;
        check_id("app_id", app_id)?;
        if self
            .store
            .repositories()
            .apps()
            .get(app_id)
            .await?
            .is_none()
        {
            return Err(AuthError::AppNotFound);
        }
        let taken = if scopes.is_empty() {
            ScopeSet::of(&Scope::ALL)
        } else {
            scopes
        };
        let mut tx = self.store.begin_holding_pending(user_id, app_id).await?;
        let Some(held) = tx.consents().hold_authorization(user_id, app_id).await? else {
            return Ok((ScopeSet::EMPTY, ScopeSet::EMPTY));
        };
        let withdrawn = held.granted.intersection(taken);
        if withdrawn.is_empty() {
            return Ok((ScopeSet::EMPTY, held.granted));
        }
        let remaining = tx.consents().withdraw(user_id, app_id, taken).await?;
        let remaining = remaining.unwrap_or(ScopeSet::EMPTY);
        // The authorization is held now and grants read it in order: stamp from here, so a
        // grant that read it before is stamped before the rule and caught by it.
        let now = clock.now();
        tx.consents().stamp(user_id, app_id, now).await?;
        let pair = (user_id, app_id);
        let appended = self
            .void_grants(tx.as_mut(), pair, taken, scopes, now)
            .await?;
        let why = (ConsentEvent::Withdrawn, ChangeReason::Withdrawn);
        let in_force = tx.privacy().declaration_in_force(app_id).await?;
        let declared =
            in_force.map(|(version, declared)| (version, purposes_for(declared, withdrawn)));
        self.privacy
            .record_end(tx.as_mut(), &held, withdrawn, why, declared, now)
            .await?;
        tx.commit().await?;
        self.feed.appended(appended);
        self.feed.changes().appended(app_id);
        Ok((withdrawn, remaining))
    }

    /// The app, if there is one and it has activated the features `scopes` need (and, where
    /// required, declared a purpose for each).
    fn check_features(
        &self,
        app: Option<AppRecord>,
        scopes: ScopeSet,
    ) -> Result<AppRecord, AuthError> {
        let app = app.ok_or(AuthError::AppNotFound)?;
        if let Some(missing) = app.features.missing_for(scopes) {
            return Err(AuthError::InsufficientIsvPermissions(missing));
        }
        if self.privacy.require_declaration
            && let Some(undeclared) = scopes.difference(app.declared_scopes).iter().next()
        {
            return Err(AuthError::UndeclaredScope(undeclared));
        }
        Ok(app)
    }

    /// Mints the grant's credential. A consent token carries the authorization's grant id
    /// (`grant_ref`), so the app can match it to a change in its feed.
    async fn grant(
        &self,
        app: &AppRecord,
        user_id: &str,
        scopes: ScopeSet,
        grant_ref: Option<String>,
        now: Timestamp,
    ) -> Result<Grant, AuthError> {
        if scopes.contains(Scope::UserInfo) {
            let expires_at = now.saturating_add(self.lifetimes.consent_token);
            let grant_id = match grant_ref {
                Some(grant_ref) => grant_ref,
                None => secrets::new_id()?,
            };
            let claims = TokenClaims {
                app_id: app.app_id.clone(),
                user_id: user_id.to_owned(),
                scopes,
                issued_at: now.unix_nanos(),
                expires_at: expires_at.unix_nanos(),
                token_id: secrets::new_id()?,
                grant_id,
            };
            let token = self
                .keys
                .with_ring(|ring| ring.mint(TokenKind::Consent, &claims, now))
                .map_err(|_| AuthError::NoTokenKey)?;
            return Ok(Grant {
                scopes,
                expires_at,
                credential: GrantCredential::ConsentToken(token),
            });
        }
        let code = OpaqueSecret::generate()?;
        let expires_at = now.saturating_add(self.lifetimes.auth_code);
        let code_hash = code.hash();
        let mut tx = self
            .store
            .begin_holding_pending(user_id, &app.app_id)
            .await?;
        tx.grants()
            .insert_code(&AuthCodeRecord {
                code_hash,
                grant_id: secrets::new_id()?,
                app_id: app.app_id.clone(),
                user_id: user_id.to_owned(),
                scopes,
                created_at: now,
                expires_at,
                used_at: None,
                purge_at: expires_at.saturating_add(self.lifetimes.code_retention),
            })
            .await?;
        let subject = (app.app_id.as_str(), user_id);
        let keep = self.bounds.codes_per_user;
        tx.grants()
            .evict_unspent_codes_beyond(subject, &code_hash, keep)
            .await?;
        tx.commit().await?;
        Ok(Grant {
            scopes,
            expires_at,
            credential: GrantCredential::AuthCode(code),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FeatureSet;
    use crate::testing::probe_clock::ProbeClock;

    /// Guards `withdraw` stamping its rule once the authorization is held: a grant's read of
    /// the authorization in order (`ConsentRepo::authorization`), started when the clock is
    /// read, must wait for the withdrawal to commit and then see nothing granted. Were the
    /// clock read before the row is held, that read would finish at once and see the grant,
    /// and a token minted from it would be stamped after the rule and escape it.
    async fn a_withdrawal_is_stamped_while_grants_wait_for_it(
        engine: sql_backend::Engine,
        url: String,
    ) {
        let store = crate::store::open(&url).await.unwrap();
        let mut repos = store.repositories();
        let app = crate::testing::app_record("mp1", FeatureSet::EMPTY);
        repos.apps().insert(&app).await.unwrap();
        let base = ScopeSet::of(&[Scope::AuthBase]);
        let decision = crate::store::Decision::new("u1", "mp1", base, ScopeSet::EMPTY, now());
        repos.consents().record_decision(&decision).await.unwrap();
        let probed = store.clone();
        let (clock, mut seen) = ProbeClock::new(Duration::from_millis(300), move || {
            let store = probed.clone();
            async move {
                let mut repos = store.repositories();
                let standing = repos.consents().authorization("u1", "mp1").await;
                standing.unwrap().unwrap().granted
            }
        });
        let flow = flow(store);
        let step = flow.withdraw("u1", "mp1", ScopeSet::EMPTY, &clock);
        let done = tokio::time::timeout(Duration::from_secs(10), step).await;
        let (withdrawn, _) = done.expect("the withdrawal finishes").unwrap();
        assert_eq!(withdrawn, base);
        assert_eq!(
            clock.finished(),
            [false],
            "{engine:?}: the grant's read waited"
        );
        let granted = seen.recv().await;
        assert_eq!(
            granted,
            Some(ScopeSet::EMPTY),
            "{engine:?}: and saw the withdrawal"
        );
    }
    sql_backend::on_each_engine!(a_withdrawal_is_stamped_while_grants_wait_for_it);

    fn now() -> Timestamp {
        Timestamp::from_unix_nanos(1)
    }

    fn flow(store: Arc<dyn AuthStore>) -> ConsentFlow {
        let ttl = Duration::from_secs(60);
        let lifetimes = ConsentLifetimes {
            prompt: ttl,
            consent_token: ttl,
            auth_code: ttl,
            code_retention: ttl,
        };
        let (policy, feed) = (RevocationPolicy::new(ttl, ttl), RevocationFeed::default());
        ConsentFlow::new(store, SigningKeys::default(), lifetimes, policy, feed)
    }

    /// Guards the granted-scopes check in `withdraw`: withdrawing what is not granted (again,
    /// or never) writes nothing and appends no rule.
    async fn withdrawing_what_is_not_granted_appends_no_rule(
        engine: sql_backend::Engine,
        url: String,
    ) {
        let store = crate::store::open(&url).await.unwrap();
        let mut repos = store.repositories();
        let app = crate::testing::app_record("a1", FeatureSet::EMPTY);
        repos.apps().insert(&app).await.unwrap();
        let phone = ScopeSet::of(&[Scope::PhoneNumber]);
        let decision = crate::store::Decision::new("u1", "a1", phone, ScopeSet::EMPTY, now());
        repos.consents().record_decision(&decision).await.unwrap();
        let (flow, clock) = (
            flow(store.clone()),
            miniprogram_token::SystemClock::default(),
        );
        let user_info = ScopeSet::of(&[Scope::UserInfo]);
        let outcome = flow.withdraw("u1", "a1", user_info, &clock).await.unwrap();
        assert_eq!(outcome, (ScopeSet::EMPTY, phone), "{engine:?}");
        let log = repos.revocations().after(0, 10).await.unwrap();
        assert!(log.is_empty(), "{engine:?}: nothing granted, no rule");
        for _ in 0..3 {
            flow.withdraw("u1", "a1", ScopeSet::EMPTY, &clock)
                .await
                .unwrap();
        }
        let never = flow
            .withdraw("u2", "a1", ScopeSet::EMPTY, &clock)
            .await
            .unwrap();
        assert_eq!(never, (ScopeSet::EMPTY, ScopeSet::EMPTY), "{engine:?}");
        let rules = repos.revocations().after(0, 10).await.unwrap();
        assert_eq!(
            rules.len(),
            1,
            "{engine:?}: only the withdrawal that took something"
        );
        assert_eq!(rules[0].user_id.as_deref(), Some("u1"), "{engine:?}");
    }
    sql_backend::on_each_engine!(withdrawing_what_is_not_granted_appends_no_rule);
}
