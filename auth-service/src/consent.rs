//! The consent flow: what a user is asked, what their answer grants, and what they can withdraw.
//! Every rule of the platform is enforced here, server-side, whatever the mini program does.

use std::sync::Arc;
use std::time::Duration;

use miniprogram_token::{Scope, ScopeSet, Timestamp, TokenClaims, TokenKind};

use crate::apps::Feature;
use crate::clock::Clock;
use crate::error::AuthError;
use crate::keys::SigningKeys;
use crate::revocations::{RevocationFeed, RevocationPolicy};
use crate::secrets::{self, OpaqueSecret};
use crate::store::{
    AppRecord, AuthCodeRecord, AuthStore, AuthorizationRecord, NewRevocation, PromptRecord,
    StoreError,
};

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
    pub access_token: Duration,
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
        let standing = self.store.get_authorization(user_id, app_id).await?;
        let granted = standing.as_ref().map_or(ScopeSet::EMPTY, |a| a.granted);
        let needs_consent: ScopeSet = scopes.iter().filter(|s| s.needs_consent()).collect();
        let to_ask = needs_consent.difference(granted);
        if to_ask.is_empty() {
            if !scopes.is_subset_of(granted) {
                self.store
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
        self.store
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
        let prompt = match self.store.get_prompt(&hash).await {
            Ok(p) if p.user_id == user_id => p,
            Ok(_) | Err(StoreError::NotFound) => return Err(AuthError::PromptNotFound),
            Err(e) => return Err(e.into()),
        };
        if prompt.resolved_at.is_some() {
            return Err(AuthError::PromptAlreadyResolved);
        }
        if prompt.expires_at <= now {
            return Err(AuthError::PromptExpired);
        }
        if !self.store.resolve_prompt(&hash, now).await? {
            return Err(AuthError::PromptAlreadyResolved);
        }
        match decision {
            Decision::Allow => {
                let app = self
                    .app_with_features(&prompt.app_id, prompt.scopes)
                    .await?;
                self.store
                    .record_decision(user_id, &prompt.app_id, prompt.scopes, ScopeSet::EMPTY, now)
                    .await?;
                let grant = self.grant(&app, user_id, prompt.scopes, now).await?;
                Ok(PromptOutcome::Grant(grant))
            }
            Decision::Deny => {
                let denied: ScopeSet = prompt.scopes.iter().filter(|s| s.needs_consent()).collect();
                self.store
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
            .list_authorizations(user_id)
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
    /// next request prompts again. Returns (withdrawn, still granted).
    pub async fn withdraw(
        &self,
        user_id: &str,
        app_id: &str,
        scopes: ScopeSet,
        clock: &Clock,
    ) -> Result<(ScopeSet, ScopeSet), AuthError> {
        check_id("user_id", user_id)?;
        check_id("app_id", app_id)?;
        match self.store.get_app(app_id).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Err(AuthError::AppNotFound),
            Err(e) => return Err(e.into()),
        }
        let before = self
            .store
            .get_authorization(user_id, app_id)
            .await?
            .map_or(ScopeSet::EMPTY, |a| a.granted);
        let now = clock.now();
        let revocation = NewRevocation {
            app_id: app_id.to_owned(),
            user_id: Some(user_id.to_owned()),
            scopes,
            token_id: None,
            grant_id: None,
            issued_before: now,
            expire_at: self.revocation_policy.rule_expiry(now),
        };
        let remaining = self
            .store
            .withdraw_authorization(&revocation, clock)
            .await?;
        self.feed.notify();
        Ok((before.difference(remaining), remaining))
    }

    async fn app_with_features(
        &self,
        app_id: &str,
        scopes: ScopeSet,
    ) -> Result<AppRecord, AuthError> {
        let app = match self.store.get_app_for_grant(app_id).await {
            Ok(app) => app,
            Err(StoreError::NotFound) => return Err(AuthError::AppNotFound),
            Err(e) => return Err(e.into()),
        };
        if let Some(missing) = scopes
            .iter()
            .map(Feature::for_scope)
            .find(|f| !app.features.contains(*f))
        {
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
            .insert_auth_code(&AuthCodeRecord {
                code_hash: code.hash(),
                grant_id: secrets::new_id()?,
                app_id: app.app_id.clone(),
                user_id: user_id.to_owned(),
                scopes,
                created_at: now,
                expires_at,
                purge_at: expires_at.saturating_add(self.lifetimes.access_token),
            })
            .await?;
        Ok(Grant {
            scopes,
            expires_at,
            credential: GrantCredential::AuthCode(code),
        })
    }
}
