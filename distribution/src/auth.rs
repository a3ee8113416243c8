//! Credentials (the Engine API's `X-Registry-Auth` and `/auth` body) and the registry's
//! `WWW-Authenticate` challenges (Basic, and Bearer with its token service).

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{DistError, Result};

/// Docker's `AuthConfig` (only the fields a registry client uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// `base64(user:password)`, as `~/.docker/config.json` stores it.
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub serveraddress: String,
    #[serde(default)]
    pub identitytoken: String,
    #[serde(default)]
    pub registrytoken: String,
}

impl AuthConfig {
    /// Decodes an `X-Registry-Auth` header: base64url (padded or not) JSON. An empty or
    /// `{}` header means anonymous.
    pub fn from_header(value: &str) -> Result<Option<Self>> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let raw = decode_any_base64(value)
            .ok_or_else(|| DistError::Invalid("X-Registry-Auth is not base64".into()))?;
        let cfg: AuthConfig = serde_json::from_slice(&raw)
            .map_err(|e| DistError::Invalid(format!("X-Registry-Auth is not valid JSON: {e}")))?;
        Ok(cfg.normalized())
    }

    /// Fills username and password from `auth`; `None` when nothing is set.
    pub fn normalized(mut self) -> Option<Self> {
        if self.username.is_empty() && !self.auth.is_empty() {
            if let Some(pair) = decode_any_base64(&self.auth) {
                if let Some((u, p)) = String::from_utf8_lossy(&pair).split_once(':') {
                    self.username = u.to_string();
                    self.password = p.to_string();
                }
            }
        }
        let empty = self.username.is_empty()
            && self.identitytoken.is_empty()
            && self.registrytoken.is_empty();
        (!empty).then_some(self)
    }

    pub fn has_password(&self) -> bool {
        !self.username.is_empty()
    }
}

fn decode_any_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [URL_SAFE, URL_SAFE_NO_PAD, STANDARD, STANDARD_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// `Authorization: Basic ...` for a user and password.
pub fn basic_header(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: String,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="...",service="...",scope="..."` (and `Basic realm="..."`); schemes
/// it does not know are skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        let (scheme, after) = match rest.find(|c: char| c.is_ascii_whitespace()) {
            Some(i) => (&rest[..i], rest[i..].trim_start()),
            None => (rest, ""),
        };
        let (params, next) = parse_params(after);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            out.push(Challenge::Basic {
                realm: get("realm").unwrap_or_default(),
            });
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if let Some(realm) = get("realm") {
                out.push(Challenge::Bearer {
                    realm,
                    service: get("service"),
                    scope: get("scope"),
                });
            }
        }
        rest = next.trim_start_matches([',', ' ']);
    }
    out
}

/// `key=value` or `key="quoted \" value"` pairs up to the next scheme; returns them and the
/// rest of the header.
fn parse_params(mut s: &str) -> (Vec<(String, String)>, &str) {
    let mut params = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ', '\t']);
        let Some(eq) = s.find('=') else {
            return (params, s);
        };
        let key = &s[..eq];
        if key.is_empty() || key.contains(|c: char| c.is_ascii_whitespace() || c == ',') {
            return (params, s); // the next challenge's scheme
        }
        let after = &s[eq + 1..];
        let (value, rest) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.push((key.to_string(), value));
        s = rest;
    }
}

/// A token service's answer.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub access_token: String,
}

impl TokenResponse {
    pub fn bearer(self) -> Option<String> {
        [self.token, self.access_token]
            .into_iter()
            .find(|t| !t.is_empty())
    }
}

/// The scope a repository operation needs: `repository:x/y:pull` or `...:pull,push`.
pub fn repository_scope(repository: &str, push: bool) -> String {
    let actions = if push { "pull,push" } else { "pull" };
    format!("repository:{repository}:{actions}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let h = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:library/bb:pull""#;
        assert_eq!(
            parse_challenges(h),
            vec![Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:library/bb:pull".into()),
            }]
        );
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            vec![Challenge::Basic {
                realm: "Registry Realm".into()
            }]
        );
        // Two challenges in one header, unquoted values and escapes.
        let h = r#"Basic realm=r1, Bearer realm="https://t/\"x\"",service=s"#;
        assert_eq!(
            parse_challenges(h),
            vec![
                Challenge::Basic { realm: "r1".into() },
                Challenge::Bearer {
                    realm: "https://t/\"x\"".into(),
                    service: Some("s".into()),
                    scope: None,
                }
            ]
        );
        assert!(parse_challenges("Negotiate").is_empty());
        assert!(parse_challenges("Bearer service=x").is_empty());
    }

    #[test]
    fn decodes_x_registry_auth() {
        use base64::engine::general_purpose::URL_SAFE;
        let json = r#"{"username":"u","password":"p?>","serveraddress":"127.0.0.1:5000"}"#;
        let cfg = AuthConfig::from_header(&URL_SAFE.encode(json))
            .unwrap()
            .unwrap();
        assert_eq!((cfg.username.as_str(), cfg.password.as_str()), ("u", "p?>"));
        assert_eq!(AuthConfig::from_header("").unwrap(), None);
        assert_eq!(
            AuthConfig::from_header(&URL_SAFE.encode("{}")).unwrap(),
            None
        );
        let with_auth = format!(
            r#"{{"auth":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode("a:b:c")
        );
        let cfg = AuthConfig::from_header(&URL_SAFE.encode(with_auth))
            .unwrap()
            .unwrap();
        assert_eq!((cfg.username.as_str(), cfg.password.as_str()), ("a", "b:c"));
        assert!(AuthConfig::from_header("!!!").is_err());
    }

    #[test]
    fn basic_header_is_rfc7617() {
        assert_eq!(
            basic_header("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
