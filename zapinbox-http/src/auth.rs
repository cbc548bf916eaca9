//! Who is calling: an API key (`Authorization: Bearer`, `X-API-Key`, and
//! for streams only `?api_key=`) or an HS256 JWT bearer token, each naming
//! one tenant. Every route works on that tenant alone.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use zapinbox_core::TenantId;

use crate::App;
use crate::error::ApiError;

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The tenant every operation of the request is on.
    pub tenant: TenantId,
    /// The client, where its token names one (metered as the events'
    /// `client_id`).
    pub client_id: Option<String>,
}

/// How callers are recognised.
pub(crate) struct Authenticator {
    keys: HashMap<String, TenantId>,
    jwt: Option<(DecodingKey, Validation)>,
}

/// The claims read from a JWT: the tenant under `tenant_id` (or
/// `tenant`), the client under `client_id` (or `sub`); `exp` is required.
#[derive(Deserialize)]
struct Claims {
    #[serde(alias = "tenant")]
    tenant_id: String,
    client_id: Option<String>,
    sub: Option<String>,
}

impl Authenticator {
    pub(crate) fn new(keys: HashMap<String, TenantId>, jwt_secret: Option<&str>) -> Self {
        let jwt = jwt_secret.map(|secret| {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.leeway = 5;
            (DecodingKey::from_secret(secret.as_bytes()), validation)
        });
        Authenticator { keys, jwt }
    }

    /// The caller `headers` (and, for a stream, `query_key`) name.
    /// A bearer token wins over `X-API-Key`, which wins over the query;
    /// an `Authorization` of another scheme is ignored, as ZapStream does.
    pub(crate) fn caller(
        &self,
        headers: &HeaderMap,
        query_key: Option<&str>,
    ) -> Result<Caller, ApiError> {
        if let Some(token) = bearer(headers)? {
            return self.by_token(token);
        }
        let header_key = headers
            .get("x-api-key")
            .map(|v| v.to_str().map_err(|_| invalid_key()))
            .transpose()?;
        match header_key.or(query_key).filter(|k| !k.is_empty()) {
            Some(key) => self.by_key(key).ok_or_else(invalid_key),
            None if query_key.is_some() || header_key.is_some() => Err(invalid_key()),
            None => Err(ApiError::unauthenticated("API key required")),
        }
    }

    fn by_key(&self, key: &str) -> Option<Caller> {
        self.keys.get(key).map(|tenant| Caller {
            tenant: tenant.clone(),
            client_id: None,
        })
    }

    /// A bearer token is an API key, or a JWT when a secret is set.
    fn by_token(&self, token: &str) -> Result<Caller, ApiError> {
        if let Some(caller) = self.by_key(token) {
            return Ok(caller);
        }
        let Some((key, validation)) = &self.jwt else {
            return Err(invalid_key());
        };
        if token.split('.').count() != 3 {
            return Err(invalid_key());
        }
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| ApiError::unauthenticated(format!("Invalid token: {e}")))?
            .claims;
        let tenant = TenantId::new(&claims.tenant_id)
            .map_err(|e| ApiError::unauthenticated(format!("Invalid token: tenant_id: {e}")))?;
        Ok(Caller {
            tenant,
            client_id: claims.client_id.or(claims.sub),
        })
    }
}

fn invalid_key() -> ApiError {
    ApiError::unauthenticated("Invalid API key")
}

/// The token of an `Authorization: Bearer` header (scheme in any case).
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| invalid_key())?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(invalid_key());
    }
    Ok(Some(token))
}

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        app.shared.auth.caller(&parts.headers, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    fn auth() -> Authenticator {
        let keys = HashMap::from([("k1".to_owned(), TenantId::new("t1").expect("tenant"))]);
        Authenticator::new(keys, Some("secret"))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).expect("header"));
        }
        h
    }

    fn jwt(claims: serde_json::Value, secret: &str) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(&Header::default(), &claims, &key).expect("token")
    }

    fn in_an_hour() -> u64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.expect("after 1970").as_secs() + 3600
    }

    #[test]
    fn bearer_wins_over_x_api_key() {
        let a = auth();
        let both = headers(&[("authorization", "Bearer nope"), ("x-api-key", "k1")]);
        assert_eq!(
            a.caller(&both, None).map_err(|e| e.code()),
            Err("AUTHENTICATION_ERROR")
        );
        let basic = headers(&[("authorization", "Basic abc"), ("x-api-key", "k1")]);
        assert_eq!(a.caller(&basic, None).expect("key").tenant.as_str(), "t1");
        let lower = headers(&[("authorization", "bearer k1")]);
        assert_eq!(a.caller(&lower, None).expect("key").tenant.as_str(), "t1");
    }

    #[test]
    fn the_query_key_counts_only_where_given() {
        let a = auth();
        assert!(a.caller(&HeaderMap::new(), None).is_err());
        assert_eq!(
            a.caller(&HeaderMap::new(), Some("k1"))
                .expect("query")
                .tenant
                .as_str(),
            "t1"
        );
        assert!(a.caller(&HeaderMap::new(), Some("bad")).is_err());
    }

    #[test]
    fn jwts_name_tenant_and_client_and_expire() {
        let a = auth();
        let good = jwt(
            json!({"tenant_id": "t9", "sub": "svc", "exp": in_an_hour()}),
            "secret",
        );
        let caller = a
            .caller(
                &headers(&[("authorization", &format!("Bearer {good}"))]),
                None,
            )
            .expect("a valid token");
        assert_eq!(
            (caller.tenant.as_str(), caller.client_id.as_deref()),
            ("t9", Some("svc"))
        );
        for bad in [
            jwt(json!({"tenant_id": "t9", "exp": 1_000}), "secret"),
            jwt(json!({"tenant_id": "t9", "exp": in_an_hour()}), "other"),
            jwt(json!({"tenant_id": "t9"}), "secret"),
            jwt(
                json!({"tenant_id": "not a tenant", "exp": in_an_hour()}),
                "secret",
            ),
        ] {
            let r = a.caller(
                &headers(&[("authorization", &format!("Bearer {bad}"))]),
                None,
            );
            assert_eq!(r.map_err(|e| e.status().as_u16()), Err(401));
        }
    }
}
