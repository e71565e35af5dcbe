//! The OIDC authorization-code flow with the IdP, through the `openidconnect` crate:
//! the provider's metadata (from the shared [`Discovery`] document), the authorization
//! URL (state, nonce, PKCE S256), the code exchange and the refresh with each client's own
//! credentials. id_tokens are verified by [`super::verify::Verifier`], with the same key cache
//! as bearer tokens (it accepts Auther's EdDSA keys and millisecond `iat`).

pub use super::discovery::Provider;
use super::discovery::{Discovery, DiscoveryError};
use crate::config::model::{ClientSettings, IdpSettings, TokenAuth};
use openidconnect::core::{CoreAuthPrompt, CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Why a step of the flow with the IdP failed. Messages never contain tokens or secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OidcError {
    /// Discovery could not be fetched or read.
    #[error("the identity provider's discovery document is unavailable: {0}")]
    Discovery(#[source] DiscoveryError),
    /// The IdP answered the token request with an OAuth error.
    #[error("the identity provider refused the token request: {0}")]
    Refused(String),
    /// The token endpoint could not be reached or answered nonsense.
    #[error("the identity provider's token endpoint failed: {0}")]
    Unavailable(String),
    /// The token response lacks something the flow needs.
    #[error("the token response is unusable: {0}")]
    BadResponse(&'static str),
}

/// A started login: the URL to send the browser to and what the callback must check.
pub struct Authorization {
    /// The IdP's authorization URL with all parameters.
    pub url: Url,
    /// `state`: 128 random bits.
    pub state: String,
    /// `nonce`: 128 random bits.
    pub nonce: String,
    /// The PKCE verifier (the URL carries its S256 challenge).
    pub pkce_verifier: String,
}

/// Tokens from the token endpoint. `Debug` shows which tokens came, never their values.
pub struct TokenSet {
    /// The access token.
    pub access_token: String,
    /// The id_token, when the response carried one (a refresh may not).
    pub id_token: Option<String>,
    /// The refresh token, when the IdP gave one.
    pub refresh_token: Option<String>,
    /// `expires_in`, when given.
    pub expires_in: Option<Duration>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"***")
            .field("id_token", &self.id_token.as_ref().map(|_| "***"))
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The id_token kept as the raw JWT: authgate verifies it with its own key cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RawIdToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl ExtraTokenFields for RawIdToken {}

type TokenResponse = StandardTokenResponse<RawIdToken, openidconnect::core::CoreTokenType>;

type TokenClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    TokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The gateway's OIDC relying party for every client.
pub struct Oidc {
    discovery: Arc<Discovery>,
    issuer: String,
    http: reqwest::Client,
    /// Latency of the token endpoint (see [`Oidc::with_latency`]).
    latency: Option<prometheus::HistogramVec>,
}

impl Oidc {
    /// A relying party for the configured IdP, reading its metadata from `discovery` (the
    /// document the key cache uses).
    pub fn from_config(idp: &IdpSettings, discovery: Arc<Discovery>) -> Oidc {
        // The token endpoint must not redirect (credentials would follow).
        Oidc {
            discovery,
            issuer: idp.issuer.clone(),
            http: super::idp_client(idp.timeout, false),
            latency: None,
        }
    }

    /// Observes each token-endpoint call's latency into `latency`, labelled `token`.
    pub fn with_latency(mut self, latency: prometheus::HistogramVec) -> Oidc {
        self.latency = Some(latency);
        self
    }

    /// Runs `call`, observing its latency as the token endpoint's.
    async fn timed<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = call.await;
        if let Some(h) = &self.latency {
            h.with_label_values(&["token"])
                .observe(started.elapsed().as_secs_f64());
        }
        out
    }

    /// The expected issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The provider's metadata, from the cached discovery document (fetched when stale).
    pub async fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        self.discovery
            .provider()
            .await
            .map_err(OidcError::Discovery)
    }

    /// The authorization URL for `client`, coming back to `redirect_uri`, with fresh state,
    /// nonce and PKCE S256. `reauthenticate` (after a logout) asks the IdP to authenticate the
    /// user again rather than reuse its own session: `prompt=login` and `max_age=0`.
    pub fn authorize(
        &self,
        provider: &Provider,
        client: &ClientSettings,
        redirect_uri: &str,
        reauthenticate: bool,
    ) -> Result<Authorization, OidcError> {
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|_| OidcError::BadResponse("the redirect URI is not a URL"))?;
        let oidc = CoreClient::from_provider_metadata(
            provider.metadata.clone(),
            ClientId::new(client.client_id.clone()),
            None,
        )
        .set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = oidc.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in client.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if reauthenticate {
            request = request
                .add_prompt(CoreAuthPrompt::Login)
                .set_max_age(Duration::ZERO);
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(Authorization {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    fn token_client(&self, provider: &Provider, client: &ClientSettings) -> TokenClient {
        let mut c = oauth2::Client::new(ClientId::new(client.client_id.clone()))
            .set_token_uri(TokenUrl::from_url(provider.token_url.clone()));
        match client.token_auth {
            TokenAuth::ClientSecretBasic => {
                c = c
                    .set_client_secret(ClientSecret::new(client.client_secret.expose().to_string()))
                    .set_auth_type(AuthType::BasicAuth)
            }
            TokenAuth::ClientSecretPost => {
                c = c
                    .set_client_secret(ClientSecret::new(client.client_secret.expose().to_string()))
                    .set_auth_type(AuthType::RequestBody)
            }
            TokenAuth::None => c = c.set_auth_type(AuthType::RequestBody),
        }
        c
    }

    /// Exchanges an authorization code with the client's credentials and the PKCE verifier.
    pub async fn exchange_code(
        &self,
        provider: &Provider,
        client: &ClientSettings,
        code: &str,
        pkce_verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenSet, OidcError> {
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|_| OidcError::BadResponse("the redirect URI is not a URL"))?;
        let token_client = self
            .token_client(provider, client)
            .set_redirect_uri(redirect);
        let request = token_client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()));
        let response = self
            .timed(request.request_async(&self.http))
            .await
            .map_err(token_error)?;
        let set = token_set(response);
        if set.id_token.is_none() {
            return Err(OidcError::BadResponse(
                "no id_token (is `openid` among the scopes?)",
            ));
        }
        Ok(set)
    }

    /// Uses a refresh token with the client's credentials.
    pub async fn refresh(
        &self,
        provider: &Provider,
        client: &ClientSettings,
        refresh_token: &str,
    ) -> Result<TokenSet, OidcError> {
        let token = RefreshToken::new(refresh_token.to_string());
        let token_client = self.token_client(provider, client);
        let response = self
            .timed(
                token_client
                    .exchange_refresh_token(&token)
                    .request_async(&self.http),
            )
            .await
            .map_err(token_error)?;
        Ok(token_set(response))
    }
}

fn token_set(r: TokenResponse) -> TokenSet {
    TokenSet {
        access_token: r.access_token().secret().clone(),
        id_token: r.extra_fields().id_token.clone(),
        refresh_token: r.refresh_token().map(|t| t.secret().clone()),
        expires_in: r.expires_in(),
    }
}

fn token_error<E: std::error::Error + 'static>(
    e: RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
) -> OidcError {
    match e {
        RequestTokenError::ServerResponse(r) => OidcError::Refused(r.error().to_string()),
        RequestTokenError::Request(e) => OidcError::Unavailable(e.to_string()),
        RequestTokenError::Parse(e, _) => {
            OidcError::Unavailable(format!("unreadable response: {}", e.path()))
        }
        RequestTokenError::Other(e) => OidcError::Unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sets_never_print_their_tokens() {
        let set = TokenSet {
            access_token: "at-secret".into(),
            id_token: Some("id-secret".into()),
            refresh_token: None,
            expires_in: Some(Duration::from_secs(60)),
        };
        let printed = format!("{set:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(
            printed.contains("refresh_token: None") && printed.contains("60s"),
            "{printed}"
        );
    }
}
