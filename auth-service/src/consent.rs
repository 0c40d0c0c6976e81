//! The consent flow: what a user is asked, what their answer grants, and what they can withdraw.
//! Every rule of the platform is enforced here, server-side, whatever the mini program does.

use std::sync::Arc;
use std::time::Duration;

use miniprogram_token::{Clock, Scope, ScopeSet, Timestamp, TokenClaims, TokenKind};

use crate::error::AuthError;
use crate::keys::SigningKeys;
use crate::model::{AppRecord, AuthCodeRecord, AuthorizationRecord, PromptRecord};
use crate::revocations::{RevocationFeed, RevocationPolicy};
use crate::secrets::{self, OpaqueSecret};
use crate::store::AuthStore;

/// Longest wallet user id or app id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// What made the mini program ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The user tapped a `getAuthorize` button: the only thing that may open a modal.
    UserTap,
    /// The mini program asked on its own at launch: never a modal.
    AppLaunch,
}

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

/// A user's standing authorization for one mini program, for the settings page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationSummary {
    pub app_id: String,
    pub app_display_name: String,
    pub scopes: ScopeSet,
    pub granted_at: Timestamp,
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

/// Checks an id field: non-empty, bounded, printable.
pub fn check_id(field: &'static str, value: &str) -> Result<(), AuthError> {
    if value.is_empty() {
        return Err(AuthError::InvalidArgument {
            field,
            problem: "is required",
        });
    }
    if value.len() > MAX_ID_LEN {
        return Err(AuthError::InvalidArgument {
            field,
            problem: "is longer than 128 bytes",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(AuthError::InvalidArgument {
            field,
            problem: "contains control characters",
        });
    }
    Ok(())
}

/// Runs the consent flow against the store, minting with the current token key.
#[derive(Clone)]
pub struct ConsentFlow {
    store: Arc<dyn AuthStore>,
    keys: SigningKeys,
    lifetimes: ConsentLifetimes,
    revocation_policy: RevocationPolicy,
    feed: RevocationFeed,
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
        }
    }

    /// `my.getOpenUserInfo` / `my.getAuthCode`: grant at once what needs no (new) consent,
    /// otherwise describe the modal to show.
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
        let app = self.app_with_features(app_id, scopes).await?;
        let mut repos = self.store.repositories();
        let standing = repos.consents().authorization(user_id, app_id).await?;
        let granted = standing.as_ref().map_or(ScopeSet::EMPTY, |a| a.granted);
        let needs_consent: ScopeSet = scopes.iter().filter(|s| s.needs_consent()).collect();
        let to_ask = needs_consent.difference(granted);
        if to_ask.is_empty() {
            if !scopes.is_subset_of(granted) {
                repos
                    .consents()
                    .record_decision(user_id, app_id, scopes, ScopeSet::EMPTY, now)
                    .await?;
            }
            return Ok(AuthorizationOutcome::Grant(
                self.grant(&app, user_id, scopes, now).await?,
            ));
        }
        if trigger == Trigger::AppLaunch {
            return Err(AuthError::AuthorizationAtLaunch);
        }
        let previously_denied = standing
            .as_ref()
            .is_some_and(|a: &AuthorizationRecord| !a.denied.intersection(to_ask).is_empty());
        let prompt_id = OpaqueSecret::generate()?;
        let expires_at = now.saturating_add(self.lifetimes.prompt);
        repos
            .consents()
            .insert_prompt(&PromptRecord {
                prompt_hash: prompt_id.hash(),
                user_id: user_id.to_owned(),
                app_id: app_id.to_owned(),
                scopes,
                previously_denied,
                created_at: now,
                expires_at,
                resolved_at: None,
            })
            .await?;
        Ok(AuthorizationOutcome::Prompt(Prompt {
            prompt_id,
            app_display_name: app.display_name,
            scopes,
            previously_denied,
            expires_at,
        }))
    }

    /// The user answered a modal. Prompts are single-use, short-lived and bound to their user.
    pub async fn resolve(
        &self,
        prompt_id: &str,
        user_id: &str,
        decision: Decision,
        now: Timestamp,
    ) -> Result<PromptOutcome, AuthError> {
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
        if !repos.consents().resolve_prompt(&hash, now).await? {
            return Err(AuthError::PromptAlreadyResolved);
        }
        match decision {
            Decision::Allow => {
                let app = self
                    .app_with_features(&prompt.app_id, prompt.scopes)
                    .await?;
                repos
                    .consents()
                    .record_decision(user_id, &prompt.app_id, prompt.scopes, ScopeSet::EMPTY, now)
                    .await?;
                let grant = self.grant(&app, user_id, prompt.scopes, now).await?;
                Ok(PromptOutcome::Grant(grant))
            }
            Decision::Deny => {
                let denied: ScopeSet = prompt.scopes.iter().filter(|s| s.needs_consent()).collect();
                repos
                    .consents()
                    .record_decision(user_id, &prompt.app_id, ScopeSet::EMPTY, denied, now)
                    .await?;
                Ok(PromptOutcome::Denial {
                    scopes: prompt.scopes,
                })
            }
        }
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
            .map(|(a, name)| AuthorizationSummary {
                app_id: a.app_id,
                app_display_name: name,
                scopes: a.granted,
                granted_at: a.updated_at,
            })
            .collect())
    }

    /// Withdraws `scopes` (all when empty); tokens carrying them stop working at once and the
    /// next request prompts again. Returns (withdrawn, still granted). Withdrawing what is not
    /// granted writes nothing: every token carrying it was caught by the withdrawal that took
    /// it back.
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
        let mut tx = self.store.begin().await?;
        let held = tx.consents().hold_authorization(user_id, app_id).await?;
        let granted = held.map_or(ScopeSet::EMPTY, |a| a.granted);
        if granted.intersection(taken).is_empty() {
            return Ok((ScopeSet::EMPTY, granted));
        }
        let remaining = tx.consents().withdraw(user_id, app_id, taken).await?;
        let remaining = remaining.unwrap_or(ScopeSet::EMPTY);
        // The authorization is held now and grants read it in order: stamp from here, so a
        // grant that read it before is stamped before the rule and caught by it.
        let now = clock.now();
        tx.consents().stamp(user_id, app_id, now).await?;
        tx.grants()
            .delete_unspent_codes(app_id, user_id, taken)
            .await?;
        tx.grants()
            .revoke_tokens_carrying(app_id, Some(user_id), taken, now)
            .await?;
        let rule = self
            .revocation_policy
            .rule(app_id, Some(user_id), scopes, now);
        tx.revocations().append(&rule).await?;
        tx.commit().await?;
        self.feed.notify();
        Ok((granted.difference(remaining), remaining))
    }

    async fn app_with_features(
        &self,
        app_id: &str,
        scopes: ScopeSet,
    ) -> Result<AppRecord, AuthError> {
        let app = self
            .store
            .repositories()
            .apps()
            .get_in_order(app_id)
            .await?;
        let app = app.ok_or(AuthError::AppNotFound)?;
        if let Some(missing) = app.features.missing_for(scopes) {
            return Err(AuthError::InsufficientIsvPermissions(missing));
        }
        Ok(app)
    }

    async fn grant(
        &self,
        app: &AppRecord,
        user_id: &str,
        scopes: ScopeSet,
        now: Timestamp,
    ) -> Result<Grant, AuthError> {
        if scopes.contains(Scope::UserInfo) {
            let expires_at = now.saturating_add(self.lifetimes.consent_token);
            let claims = TokenClaims {
                app_id: app.app_id.clone(),
                user_id: user_id.to_owned(),
                scopes,
                issued_at: now.unix_nanos(),
                expires_at: expires_at.unix_nanos(),
                token_id: secrets::new_id()?,
                grant_id: secrets::new_id()?,
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
        self.store
            .repositories()
            .grants()
            .insert_code(&AuthCodeRecord {
                code_hash: code.hash(),
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
        let decided = repos
            .consents()
            .record_decision("u1", "mp1", base, ScopeSet::EMPTY, now());
        decided.await.unwrap();
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
        let decided = repos
            .consents()
            .record_decision("u1", "a1", phone, ScopeSet::EMPTY, now());
        decided.await.unwrap();
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
