//! Who is calling, and may they: principals from bearer tokens and SigV4 signatures, their
//! roles (Lambda's managed policies), and each function's policy (SEMANTICS.md §8).
//!
//! Authentication runs in two steps because SigV4 signs the body: [`Authenticator::identify`]
//! reads the headers (a missing, unknown or malformed credential is refused before the body is
//! read), and [`Credential::confirm`] checks a signature against the body once it is read.
//! [`Authenticator::authorize`] then asks whether the principal may do the action. Every
//! error on the way is a refusal: nothing here fails open.

pub(crate) mod sigv4;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use impulse_config::{AuthConfig, Config, Role};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A caller the configuration names, with its role.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    /// The name under `auth.tokens` or `auth.access_keys`.
    pub(crate) name: Arc<str>,
    pub(crate) role: Role,
}

/// What a request asks to do.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action<'a> {
    /// Invoke a function (Invoke API, `AWS_IAM` HTTP triggers): `lambda:InvokeFunction`.
    Invoke { function: &'a str },
    /// Read `/metrics`.
    ReadMetrics,
    /// Read functions' configuration (`ListFunctions`, `GetFunction`,
    /// `GetFunctionConfiguration`).
    ReadFunctions,
    /// Reload the configuration (`POST /admin/reload`): admins only.
    Reload,
}

impl Action<'_> {
    /// Lambda's name for the action, for denial messages.
    fn name(self) -> &'static str {
        match self {
            Self::Invoke { .. } => "lambda:InvokeFunction",
            Self::ReadMetrics => "impulse:ReadMetrics",
            Self::ReadFunctions => "lambda:GetFunction",
            Self::Reload => "impulse:ReloadConfig",
        }
    }

    fn resource(self) -> String {
        match self {
            Self::Invoke { function } => format!("function:{function}"),
            Self::ReadMetrics => "metrics".to_owned(),
            Self::ReadFunctions => "function:*".to_owned(),
            Self::Reload => "config".to_owned(),
        }
    }
}

/// Whether a role's managed policy allows an action, before any function policy.
fn role_allows(role: Role, action: Action<'_>) -> bool {
    match (role, action) {
        (Role::Admin, _) => true,
        (Role::Invoker, Action::Invoke { .. }) => true,
        (Role::ReadOnly, Action::ReadMetrics | Action::ReadFunctions) => true,
        (Role::Invoker, Action::ReadMetrics | Action::ReadFunctions)
        | (Role::ReadOnly, Action::Invoke { .. })
        | (Role::Invoker | Role::ReadOnly, Action::Reload) => false,
    }
}

/// A refused request, with the answer Lambda gives for it.
#[derive(Debug)]
pub(crate) enum Denial {
    /// No credential at all.
    Missing,
    /// A bearer token or access key id that is not configured.
    UnrecognizedClient,
    /// A SigV4 signature that is malformed, wrong or outside the clock-skew window.
    Signature(sigv4::SigV4Error),
    /// A known principal not allowed the action.
    Forbidden {
        principal: Arc<str>,
        action: &'static str,
        resource: String,
        /// Which kind of policy is missing the grant: the role's or the function's.
        because: &'static str,
    },
}

impl Denial {
    /// `401` when the caller is not known, `403` when a known caller is not allowed.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// Lambda's exception name (`x-amzn-ErrorType`).
    pub(crate) fn error_type(&self) -> &'static str {
        match self {
            Self::Missing => "MissingAuthenticationTokenException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::Signature(err) => err.error_type(),
            Self::Forbidden { .. } => "AccessDeniedException",
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str(
                "Missing Authentication Token: send `Authorization: Bearer <token>` or sign the \
                 request with AWS Signature Version 4.",
            ),
            Self::UnrecognizedClient => {
                f.write_str("The security token included in the request is invalid.")
            }
            Self::Signature(err) => err.fmt(f),
            Self::Forbidden {
                principal,
                action,
                resource,
                because,
            } => write!(
                f,
                "User: {principal} is not authorized to perform: {action} on resource: \
                 {resource} because no {because} allows the {action} action"
            ),
        }
    }
}

/// The configured principals and function policies, ready to check requests against.
pub(crate) struct Authenticator {
    /// `None` when no principal is configured: every request is allowed (loopback use).
    principals: Option<Principals>,
    /// Function name → the principals its policy names; functions without one are absent.
    policies: HashMap<String, HashSet<Arc<str>>>,
}

struct Principals {
    /// SHA-256 of each token: the tokens themselves are not kept.
    tokens: Vec<([u8; 32], Principal)>,
    /// Access key id → its secret and principal.
    access_keys: HashMap<String, (SecretString, Principal)>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("enabled", &self.is_enabled())
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds from a validated configuration.
    pub(crate) fn new(config: &Config) -> Self {
        let principals = config
            .auth
            .is_enabled()
            .then(|| Principals::new(&config.auth));
        let policies = config
            .functions
            .iter()
            .filter_map(|(name, function)| {
                let allowed = function.policy.as_ref()?.principals.as_ref()?;
                Some((
                    name.clone(),
                    allowed.iter().map(|p| Arc::from(&**p)).collect(),
                ))
            })
            .collect();
        Self {
            principals,
            policies,
        }
    }

    /// Whether any principal is configured; if not, every request is allowed.
    pub(crate) fn is_enabled(&self) -> bool {
        self.principals.is_some()
    }

    /// The first step: who the headers say the caller is.
    pub(crate) fn identify(&self, headers: &HeaderMap) -> Result<Credential, Denial> {
        let Some(principals) = &self.principals else {
            return Ok(Credential::Anonymous);
        };
        if let Some(signed) = sigv4::parse(headers).map_err(Denial::Signature)? {
            let (secret, principal) = principals
                .access_keys
                .get(signed.access_key_id())
                .ok_or(Denial::UnrecognizedClient)?;
            return Ok(Credential::Signed {
                principal: principal.clone(),
                secret: secret.clone(),
                request: Box::new(signed),
            });
        }
        let token = bearer_token(headers).ok_or(Denial::Missing)?;
        principals
            .by_token(token)
            .map(|principal| Credential::Token(principal.clone()))
            .ok_or(Denial::UnrecognizedClient)
    }

    /// Whether `principal` may do `action`. `None` (authentication off) may do everything.
    pub(crate) fn authorize(
        &self,
        principal: Option<&Principal>,
        action: Action<'_>,
    ) -> Result<(), Denial> {
        let Some(principal) = principal else {
            return if self.is_enabled() {
                Err(Denial::Missing)
            } else {
                Ok(())
            };
        };
        let denied = |because| Denial::Forbidden {
            principal: principal.name.clone(),
            action: action.name(),
            resource: action.resource(),
            because,
        };
        if !role_allows(principal.role, action) {
            return Err(denied("identity-based policy"));
        }
        if let Action::Invoke { function } = action {
            let listed = self
                .policies
                .get(function)
                .is_none_or(|allowed| allowed.contains(&principal.name));
            // `admin` is every permission, as AWSLambda_FullAccess within one account.
            if !listed && principal.role != Role::Admin {
                return Err(denied("resource-based policy"));
            }
        }
        Ok(())
    }

    /// Both steps and the authorization for a request whose body is already read.
    pub(crate) fn check(
        &self,
        request: &RequestHead<'_>,
        body: &[u8],
        action: Action<'_>,
    ) -> Result<Option<Principal>, Denial> {
        let principal =
            self.identify(request.headers)?
                .confirm(request, body, SystemTime::now())?;
        self.authorize(principal.as_ref(), action)?;
        Ok(principal)
    }
}

impl Principals {
    fn new(auth: &AuthConfig) -> Self {
        let tokens = auth
            .tokens
            .iter()
            .filter_map(|(name, token)| {
                let digest = match (&token.token, &token.token_sha256) {
                    (Some(plain), _) => Sha256::digest(plain.expose_secret().as_bytes()).into(),
                    (None, Some(hex)) => decode_sha256(hex)?,
                    // Validation refuses a token with neither.
                    (None, None) => return None,
                };
                Some((digest, principal(name, token.role)))
            })
            .collect();
        let access_keys = auth
            .access_keys
            .iter()
            .filter_map(|(name, key)| {
                let secret = key.secret_access_key.clone()?;
                Some((
                    key.access_key_id.clone(),
                    (secret, principal(name, key.role)),
                ))
            })
            .collect();
        Self {
            tokens,
            access_keys,
        }
    }

    /// The token's principal. Every configured digest is compared, in constant time, so the
    /// time taken says nothing about which (if any) matched.
    fn by_token(&self, token: &[u8]) -> Option<&Principal> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for (candidate, principal) in &self.tokens {
            if bool::from(candidate.ct_eq(&digest)) {
                found = Some(principal);
            }
        }
        found
    }
}

fn principal(name: &str, role: Role) -> Principal {
    Principal {
        name: Arc::from(name),
        role,
    }
}

/// 64 hex digits (validated) into the digest they spell.
fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let mut digest = [0; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    (hex.len() == 64).then_some(digest)
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

/// Whether the request authenticates with a bearer token, which the function must not see: it
/// is a credential that could invoke other functions.
pub(crate) fn carries_bearer_token(headers: &HeaderMap) -> bool {
    bearer_token(headers).is_some()
}

/// The parts of a request a SigV4 signature covers, besides the body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestHead<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
}

/// What the headers say about the caller, before the body is read.
#[derive(Debug)]
pub(crate) enum Credential {
    /// Authentication is off.
    Anonymous,
    /// A configured bearer token: already verified.
    Token(Principal),
    /// A SigV4 signature by a configured key, still to be checked against the body.
    Signed {
        principal: Principal,
        secret: SecretString,
        request: Box<sigv4::SignedRequest>,
    },
}

impl Credential {
    /// The second step: the principal, once a signature is checked against the body.
    pub(crate) fn confirm(
        self,
        request: &RequestHead<'_>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Option<Principal>, Denial> {
        match self {
            Self::Anonymous => Ok(None),
            Self::Token(principal) => Ok(Some(principal)),
            Self::Signed {
                principal,
                secret,
                request: signed,
            } => {
                signed
                    .verify(
                        request.method,
                        request.uri,
                        request.headers,
                        body,
                        &secret,
                        now,
                    )
                    .map_err(Denial::Signature)?;
                Ok(Some(principal))
            }
        }
    }
}

#[cfg(test)]
mod tests;
