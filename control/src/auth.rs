//! Access tokens: HS256 JWTs signed with the API secret (format documented in README and the
//! .proto). `RoomService` needs `grants.admin`; `Signaling` needs `grants.room`.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::{Identity, RoomName};

/// Tolerated clock difference between the token minter and this server, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Default token lifetime.
pub const DEFAULT_TTL_SECS: u64 = 6 * 3600;
/// Longest lifetime `CreateAccessToken` issues.
pub const MAX_TTL_SECS: u64 = 24 * 3600;

/// What a token allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// The room a participant token is for; may be empty on an admin token.
    #[serde(default)]
    pub room: String,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
}

/// The JWT claims Ringcast reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key.
    pub iss: String,
    /// The participant identity.
    pub sub: String,
    pub exp: u64,
    pub nbf: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub grants: Grants,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing `authorization: Bearer <token>` metadata")]
    MissingToken,
    #[error("the authorization metadata is not `Bearer <token>`")]
    NotBearer,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the access token was issued for another API key")]
    WrongIssuer,
    #[error("the access token's signature does not match the API secret")]
    BadSignature,
    #[error("the access token is malformed: {0}")]
    Malformed(String),
    #[error("the access token has no admin grant; RoomService needs one")]
    NotAdmin,
    #[error("the access token names no room")]
    NoRoom,
    #[error("the access token's identity is invalid: {0}")]
    BadIdentity(String),
    #[error("the access token does not grant publishing")]
    NoPublishGrant,
    #[error("the access token does not grant subscribing")]
    NoSubscribeGrant,
}

impl AuthError {
    /// True when the caller is known but not allowed (PERMISSION_DENIED), false when unknown
    /// (UNAUTHENTICATED).
    pub fn is_permission(&self) -> bool {
        matches!(
            self,
            AuthError::NotAdmin
                | AuthError::NoRoom
                | AuthError::NoPublishGrant
                | AuthError::NoSubscribeGrant
        )
    }
}

/// A verified participant token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantToken {
    pub room: RoomName,
    pub identity: Identity,
    pub name: Option<String>,
    pub publish: bool,
    pub subscribe: bool,
}

/// Mints and verifies tokens for one API key/secret pair.
#[derive(Clone)]
pub struct Authenticator {
    api_key: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[api_key]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        Authenticator {
            api_key: api_key.to_owned(),
            encoding: EncodingKey::from_secret(api_secret.as_bytes()),
            decoding: DecodingKey::from_secret(api_secret.as_bytes()),
            validation,
        }
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Signs claims for `identity`, valid from `now_unix` for `ttl_secs`.
    pub fn mint(
        &self,
        identity: &str,
        name: Option<&str>,
        grants: Grants,
        now_unix: u64,
        ttl_secs: u64,
    ) -> Result<(String, Claims), AuthError> {
        let claims = Claims {
            iss: self.api_key.clone(),
            sub: identity.to_owned(),
            exp: now_unix + ttl_secs,
            nbf: now_unix,
            name: name.filter(|n| !n.is_empty()).map(str::to_owned),
            grants,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
        Ok((token, claims))
    }

    /// Verifies signature, issuer and times. (`jsonwebtoken` reads the clock itself for exp/nbf.)
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed(e.to_string()),
            })
    }

    /// Extracts and verifies the bearer token from an `authorization` header value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Claims, AuthError> {
        let h = header.ok_or(AuthError::MissingToken)?;
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .ok_or(AuthError::NotBearer)?;
        self.verify(token.trim())
    }

    /// A token for `RoomService`.
    pub fn require_admin(&self, header: Option<&str>) -> Result<Claims, AuthError> {
        let c = self.verify_header(header)?;
        if !c.grants.admin {
            return Err(AuthError::NotAdmin);
        }
        Ok(c)
    }

    /// A token for `Signaling`: names a room and a valid identity.
    pub fn require_participant(&self, header: Option<&str>) -> Result<ParticipantToken, AuthError> {
        let c = self.verify_header(header)?;
        if c.grants.room.is_empty() {
            return Err(AuthError::NoRoom);
        }
        let room =
            RoomName::new(&c.grants.room).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let identity = Identity::new(&c.sub).map_err(|e| AuthError::BadIdentity(e.to_string()))?;
        Ok(ParticipantToken {
            room,
            identity,
            name: c.name,
            publish: c.grants.publish,
            subscribe: c.grants.subscribe,
        })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(room: &str) -> Grants {
        Grants {
            room: room.to_owned(),
            admin: false,
            publish: true,
            subscribe: true,
        }
    }

    #[test]
    fn mint_then_verify() {
        let a = Authenticator::new("key", "secret-secret-secret");
        let (t, c) = a
            .mint("alice", Some("Alice"), grants("r1"), unix_now(), 60)
            .unwrap();
        assert_eq!(a.verify(&t).unwrap(), c);
        let p = a.require_participant(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(p.room.as_str(), "r1");
        assert_eq!(p.identity.as_str(), "alice");
        assert_eq!(
            a.require_admin(Some(&format!("Bearer {t}"))),
            Err(AuthError::NotAdmin)
        );
    }

    #[test]
    fn rejects_wrong_secret_issuer_and_times() {
        let a = Authenticator::new("key", "secret-secret-secret");
        let other_secret = Authenticator::new("key", "another-secret");
        let other_key = Authenticator::new("key2", "secret-secret-secret");
        let now = unix_now();
        let (t, _) = other_secret.mint("a", None, grants("r"), now, 60).unwrap();
        assert_eq!(a.verify(&t), Err(AuthError::BadSignature));
        let (t, _) = other_key.mint("a", None, grants("r"), now, 60).unwrap();
        assert_eq!(a.verify(&t), Err(AuthError::WrongIssuer));
        let (t, _) = a.mint("a", None, grants("r"), now - 7200, 60).unwrap();
        assert_eq!(a.verify(&t), Err(AuthError::Expired));
        let (t, _) = a.mint("a", None, grants("r"), now + 3600, 60).unwrap();
        assert_eq!(a.verify(&t), Err(AuthError::NotYetValid));
        assert!(matches!(
            a.verify("not.a.jwt"),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(a.verify_header(None), Err(AuthError::MissingToken));
        assert_eq!(
            a.verify_header(Some("Basic abc")),
            Err(AuthError::NotBearer)
        );
    }

    #[test]
    fn rejects_alg_none() {
        let a = Authenticator::new("key", "secret-secret-secret");
        // {"alg":"none"} . {claims} . (no signature)
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = unix_now();
        let claims = format!(
            r#"{{"iss":"key","sub":"a","exp":{},"nbf":{},"grants":{{"admin":true}}}}"#,
            now + 60,
            now
        );
        let t = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none"}"#),
            b64.encode(claims)
        );
        assert!(a.verify(&t).is_err());
    }

    #[test]
    fn participant_token_needs_room() {
        let a = Authenticator::new("key", "secret-secret-secret");
        let (t, _) = a.mint("a", None, grants(""), unix_now(), 60).unwrap();
        assert_eq!(
            a.require_participant(Some(&format!("Bearer {t}"))),
            Err(AuthError::NoRoom)
        );
    }
}
