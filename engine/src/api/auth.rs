//! Authentication and authorization of the HTTP API: bearer tokens from the configuration,
//! each with a role. An operator may do everything; a viewer may only read (GET). A request
//! without a token, or with one the configuration does not hold, is answered 401 with a
//! `WWW-Authenticate` challenge; a viewer's write is answered 403. Both are decided from the
//! request's head: a refused request's body is never read (see [`Guard::refuse`]). Owns the
//! checks only (authentication, then the role's): which routes they guard is the router's
//! business.

use std::fmt;
use std::sync::Arc;

use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::connections::HttpCounters;
use super::problem::{Kind, Problem};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Operator,
    /// Reads only (GET).
    Viewer,
}

impl Role {
    /// True when this role may make a request with `method`.
    pub fn allows(self, method: &Method) -> bool {
        self == Role::Operator || method == Method::GET || method == Method::HEAD
    }
}

/// A bearer token and its role, as configured (`[[tokens]]` in `fota.toml`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Token {
    /// The secret a client sends as `Authorization: Bearer <token>`.
    pub token: String,
    /// What it may do.
    pub role: Role,
}

impl fmt::Debug for Token {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// The tokens the API accepts, held as sha256 digests and compared in constant time, so
/// neither a memory dump nor response timing gives a token away.
pub struct Tokens {
    /// Digest of each token, with its role.
    known: Vec<([u8; 32], Role)>,
}

impl Tokens {
    /// The accepted tokens (an empty secret is never accepted).
    pub fn new(tokens: &[Token]) -> Self {
        let known = tokens
            .iter()
            .filter(|t| !t.token.is_empty())
            .map(|t| (Sha256::digest(t.token.as_bytes()).into(), t.role))
            .collect();
        Tokens { known }
    }

    /// The role of `presented`, if it is an accepted token. Looks at every token whatever
    /// matches, so the time taken does not say which one did.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.known.iter().fold(None, |found, (known, role)| {
            let same = known
                .iter()
                .zip(&digest)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0;
            if same { Some(*role) } else { found }
        })
    }
}

/// What the checks hold: the tokens, and where their refusals are counted.
pub struct Guard {
    /// The accepted tokens.
    tokens: Tokens,
    /// Counts the requests refused 401 and 403, for `/metrics`.
    counters: Arc<HttpCounters>,
}

impl Guard {
    /// Checks of `tokens`, their refusals counted in `counters`.
    pub fn new(tokens: &[Token], counters: Arc<HttpCounters>) -> Self {
        Guard {
            tokens: Tokens::new(tokens),
            counters,
        }
    }

    /// Answers `problem` without reading the request's body: a client without a token must
    /// not make the engine hold (or wait for) up to the largest upload. hyper takes what has
    /// already arrived of the body without waiting for more, and the connection closes after
    /// the answer (which says `Connection: close` when the request has a body); the connection
    /// layer then lingers a moment, reading and dropping what the client still sends, so a
    /// client that writes its whole body before it reads gets the answer, not a reset.
    fn refuse(&self, problem: Problem, request: Request) -> Response {
        let counter = match problem.kind {
            Kind::Forbidden => &self.counters.forbidden,
            _ => &self.counters.unauthenticated,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let has_body = !request.body().is_end_stream();
        drop(request);
        let mut response = problem.into_response();
        if has_body {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Challenge of a request without a token.
const CHALLENGE: &str = "Bearer realm=\"fota\"";
/// Challenge of a request with a token that is not accepted.
const CHALLENGE_INVALID: &str = "Bearer realm=\"fota\", error=\"invalid_token\"";

/// Who sent a request: the hex sha256 of its token, so what is kept per caller (idempotency
/// keys) never holds a token. Put in the request's extensions by [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

/// Middleware: lets the request through when its token's role allows its method, with its
/// [`Caller`] and [`Role`].
pub async fn authorize(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    match check(&guard.tokens, &request) {
        Ok((caller, role)) => {
            request.extensions_mut().insert(caller);
            request.extensions_mut().insert(role);
            next.run(request).await
        }
        Err(problem) => guard.refuse(problem, request),
    }
}

/// Middleware: lets the request through when it carries an accepted token, whatever its role
/// (for the answers to paths and methods no route has).
pub async fn authenticate(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    match identify(&guard.tokens, &request) {
        Ok(_) => next.run(request).await,
        Err(problem) => guard.refuse(problem, request),
    }
}

/// The role of the request's token; a 401 without an accepted one.
fn identify(tokens: &Tokens, request: &Request) -> Result<Role, Problem> {
    let Some(presented) = bearer(request) else {
        return Err(Problem::unauthorized(
            "send a token as `Authorization: Bearer <token>`",
            CHALLENGE,
        ));
    };
    tokens.role_of(presented).ok_or_else(|| {
        Problem::unauthorized(
            "the token is not one this engine accepts",
            CHALLENGE_INVALID,
        )
    })
}

/// The caller of a request its token's role allows, and the role; a 401 or 403 otherwise.
fn check(tokens: &Tokens, request: &Request) -> Result<(Caller, Role), Problem> {
    let role = identify(tokens, request)?;
    if !role.allows(request.method()) {
        return Err(Problem::new(
            Kind::Forbidden,
            format!(
                "a viewer token may only read; {} needs an operator token",
                request.method()
            ),
        ));
    }
    let token = bearer(request).unwrap_or_default();
    Ok((Caller(hex::encode(Sha256::digest(token.as_bytes()))), role))
}

/// The token of an `Authorization: Bearer` header (the scheme is case-insensitive).
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&[
            Token {
                token: "op-secret".into(),
                role: Role::Operator,
            },
            Token {
                token: "view-secret".into(),
                role: Role::Viewer,
            },
            Token {
                token: String::new(),
                role: Role::Operator,
            },
        ])
    }

    #[test]
    fn tokens_are_known_by_their_exact_secret() {
        let tokens = tokens();
        assert_eq!(tokens.role_of("op-secret"), Some(Role::Operator));
        assert_eq!(tokens.role_of("view-secret"), Some(Role::Viewer));
        assert_eq!(tokens.role_of("op-secre"), None);
        assert_eq!(tokens.role_of(""), None, "an empty secret is never a token");
    }

    #[test]
    fn viewers_only_read() {
        assert!(Role::Viewer.allows(&Method::GET));
        assert!(!Role::Viewer.allows(&Method::POST));
        assert!(!Role::Viewer.allows(&Method::DELETE));
        assert!(Role::Operator.allows(&Method::PATCH));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let token = Token {
            token: "op-secret".into(),
            role: Role::Operator,
        };
        assert!(!format!("{token:?}").contains("op-secret"));
    }
}
