//! Authentication: the `AuthUser` extractor, session tokens, password hashing.

use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordVerifier, password_hash::PasswordHasher as _};
use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, request::Parts},
};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::{
    app::AppState,
    error::{ApiError, ApiResult},
    store::accounts::UserRef,
};

/// A caller with a valid session. A handler taking this cannot run unauthenticated.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: i64,
    pub username: String,
    /// Hash of the token this request came with (to keep or end this session).
    pub token_hash: [u8; 32],
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = header_token(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization token"))?;
        authenticate(state, token).await
    }
}

/// Resolves a raw token to its user, or 401.
pub async fn authenticate(state: &AppState, token: &str) -> ApiResult<AuthUser> {
    let token_hash = hash_token(token);
    let user: UserRef = state
        .store
        .session_user(token_hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
    Ok(AuthUser {
        id: user.id,
        username: user.username,
        token_hash,
    })
}

/// The token of the `Authorization` header, with or without `Bearer `.
pub fn header_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

/// A new random session token (UUID v4).
pub fn new_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Only this hash of a token is stored, so a leaked database holds no usable tokens.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Argon2id hashing on the blocking pool. A semaphore bounds how many
/// hashes run at once, so a burst of logins cannot exhaust memory
/// (each hash takes ~19 MiB) or starve other blocking work.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

impl Passwords {
    pub fn new(concurrency: usize) -> Self {
        Passwords {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    pub async fn hash(&self, password: &str) -> ApiResult<String> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(ApiError::internal)
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// True when `password` matches `stored`; a malformed hash never matches.
    pub async fn verify(&self, password: &str, stored: &str) -> ApiResult<bool> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let password = password.to_owned();
        let stored = stored.to_owned();
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored)
                .map(|hash| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &hash)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(ApiError::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let passwords = Passwords::new(2);
        let hash = passwords.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(passwords.verify("correct horse", &hash).await.unwrap());
        assert!(!passwords.verify("wrong horse", &hash).await.unwrap());
        assert!(!passwords.verify("x", "not a hash").await.unwrap());
    }

    #[test]
    fn tokens_are_uuid_v4_and_hash_stably() {
        let token = new_token();
        assert_eq!(uuid::Uuid::parse_str(&token).unwrap().get_version_num(), 4);
        assert_eq!(hash_token(&token), hash_token(&token));
        assert_ne!(hash_token(&token), hash_token(&new_token()));
    }
}
