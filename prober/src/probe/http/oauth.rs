//! OAuth2 client credentials (RFC 6749 §4.4) for `http.oauth2`: a bearer
//! token fetched from the token endpoint, kept until [`REFRESH_BEFORE`] its
//! expiry, then fetched again. A token the service stops accepting shows as
//! failed runs until then, rather than as a fetch on every run.
//!
//! The fetch is timed on its own (`oauth2.token_fetch_ms` in the run's
//! `info`) and taken out of the run's phases and total: the probe measures
//! the service, not the authorization server.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::probe::OAuth2;
use crate::config::template::Vars;
use crate::probe::net::fail;
use crate::probe::Progress;
use crate::run::{ErrorClass, ProbeError};

/// A token is fetched again this long before it expires.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(30);
/// How long a token without `expires_in` is kept.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The longest a token is kept, whatever its `expires_in` says: a day. An
/// endpoint's answer is not trusted further (`expires_in` of 2^64 − 1
/// overflowed the clock's `Instant` and killed every run of the probe).
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The largest token response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Tokens by probe, token endpoint and client: never shared between probes.
pub struct TokenCache {
    client: reqwest::Client,
    held: tokio::sync::Mutex<HashMap<String, (String, Instant)>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache")
    }
}

impl TokenCache {
    pub fn new() -> Result<TokenCache, String> {
        let client = reqwest::Client::builder()
            .user_agent(crate::probe::USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the OAuth2 client: {e}"))?;
        Ok(TokenCache {
            client,
            held: tokio::sync::Mutex::default(),
        })
    }

    /// A valid token for `probe`'s `oauth`, from the cache or fetched now.
    /// A fetch's time is recorded and taken out of the attempt's timings.
    pub async fn token(
        &self,
        probe: &str,
        oauth: &OAuth2,
        vars: &Vars,
        p: &mut Progress,
    ) -> Result<String, ProbeError> {
        let render = |t: &crate::config::template::Template, field: &str| {
            t.render_vars(vars)
                .map_err(|e| fail(ErrorClass::Config, format!("http.oauth2.{field}: {e}")))
        };
        let url = render(&oauth.token_url, "token_url")?;
        let id = render(&oauth.client_id, "client_id")?;
        let key = format!("{probe}|{url}|{id}");
        // One fetch at a time: runs that find the token stale wait for it.
        let mut held = self.held.lock().await;
        if let Some((token, until)) = held.get(&key) {
            if Instant::now() + REFRESH_BEFORE < *until {
                p.info.insert("oauth2.token".into(), "cached".into());
                p.secrets.push(token.clone());
                return Ok(token.clone());
            }
        }
        let secret = render(&oauth.client_secret, "client_secret")?;
        let started = Instant::now();
        let fetched = self.fetch(&url, &id, &secret, &oauth.scopes).await;
        let took = started.elapsed();
        p.exclude(took);
        p.info.insert(
            "oauth2.token_fetch_ms".into(),
            format!("{:.3}", took.as_secs_f64() * 1000.0),
        );
        let (token, lifetime) = fetched?;
        p.info.insert("oauth2.token".into(), "fetched".into());
        p.secrets.push(token.clone());
        held.insert(key, (token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    async fn fetch(
        &self,
        url: &str,
        id: &str,
        secret: &str,
        scopes: &[String],
    ) -> Result<(String, Duration), ProbeError> {
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        let scope = scopes.join(" ");
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        let mut resp = (self.client.post(url))
            .basic_auth(id, Some(secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                let class = if e.is_timeout() {
                    ErrorClass::Timeout
                } else {
                    ErrorClass::Connect
                };
                fail(class, format!("could not reach the OAuth2 token endpoint {url} ({e}); check `http.oauth2.token_url`"))
            })?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            fail(
                ErrorClass::InvalidResponse,
                format!("the OAuth2 token endpoint {url} broke off its answer ({e})"),
            )
        })? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_RESPONSE_BYTES {
                return Err(fail(
                    ErrorClass::BodyTooLarge,
                    format!("the OAuth2 token endpoint {url} answered over {MAX_RESPONSE_BYTES} bytes; is it a token endpoint?"),
                ));
            }
        }
        if !status.is_success() {
            return Err(fail(
                ErrorClass::HttpStatus,
                format!("the OAuth2 token endpoint {url} refused the client credentials with {status}; check `client_id` and `client_secret` (and `scopes`)"),
            ));
        }
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            fail(
                ErrorClass::InvalidResponse,
                format!("the OAuth2 token endpoint {url} did not answer JSON ({e})"),
            )
        })?;
        let token = (json["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                fail(
                    ErrorClass::InvalidResponse,
                    format!("the OAuth2 token endpoint {url} answered no `access_token`"),
                )
            })?;
        let lifetime = (json["expires_in"].as_u64())
            .map_or(DEFAULT_LIFETIME, Duration::from_secs)
            .min(MAX_LIFETIME);
        Ok((token.to_string(), lifetime))
    }
}
