//! One registry's HTTP API (`/v2/`): manifests, blobs and uploads, with the auth flow
//! (a 401 answer's challenge is met once: Basic with the credentials, Bearer with a token
//! from the challenge's realm, cached per scope).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use strata_core::store::Digest;
use url::Url;

use crate::auth::{basic_header, parse_challenges, AuthConfig, Challenge, TokenResponse};
use crate::error::{from_response, DistError, Result};
use crate::manifest::{ACCEPT as MANIFEST_ACCEPT, MAX_MANIFEST_BYTES};
use crate::transport::ClientConfig;

#[derive(Default)]
struct AuthState {
    /// The registry asked for Basic auth.
    basic: bool,
    /// Bearer tokens by scope.
    tokens: HashMap<String, String>,
}

/// A connection to one registry host. Cheap per operation; not shared between credentials.
pub struct Registry {
    base: Url,
    http: reqwest::Client,
    creds: Option<AuthConfig>,
    state: Mutex<AuthState>,
}

/// A manifest as fetched: its bytes, media type and (verified) digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub body: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

impl Registry {
    /// Reaches `host` (see [`crate::transport`] for the scheme rules) and pings `/v2/`.
    pub async fn connect(
        cfg: &ClientConfig,
        host: &str,
        creds: Option<AuthConfig>,
    ) -> Result<Self> {
        let https = Url::parse(&format!("https://{host}/"))
            .map_err(|e| DistError::InvalidReference(format!("registry host {host:?}: {e}")))?;
        if !cfg.is_insecure(host) {
            let r = Self::new(https, cfg.verifying_client(host)?, creds);
            r.ping().await?;
            return Ok(r);
        }
        let http = cfg.unverified_client()?;
        let secure = Self::new(https, http.clone(), creds.clone());
        match secure.ping().await {
            Ok(()) => Ok(secure),
            Err(DistError::Http { .. }) => {
                let plain = Url::parse(&format!("http://{host}/"))
                    .map_err(|e| DistError::InvalidReference(e.to_string()))?;
                tracing::debug!(
                    host,
                    "HTTPS failed; the insecure registry is tried over HTTP"
                );
                let r = Self::new(plain, http, creds);
                r.ping().await?;
                Ok(r)
            }
            Err(e) => Err(e),
        }
    }

    fn new(base: Url, http: reqwest::Client, creds: Option<AuthConfig>) -> Self {
        Self {
            base,
            http,
            creds,
            state: Mutex::new(AuthState::default()),
        }
    }

    /// `http://host/` or `https://host/`.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `GET /v2/` without credentials: learns whether the registry wants Basic auth. Any
    /// HTTP answer counts; only a failure to connect is an error.
    async fn ping(&self) -> Result<()> {
        let url = self.url("v2/")?;
        let resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| DistError::Http {
                method: "Get",
                url: url.to_string(),
                source: e,
            })?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenges = challenges_of(resp.headers());
            if challenges
                .iter()
                .any(|c| matches!(c, Challenge::Basic { .. }))
            {
                self.lock().basic = true;
            }
        }
        Ok(())
    }

    /// `docker login`: `GET /v2/` with the credentials must succeed.
    pub async fn login(&self) -> Result<()> {
        let url = self.url("v2/")?;
        let failed = |status: StatusCode| {
            DistError::Unauthorized(format!(
                "login attempt to {url} failed with status: {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ))
        };
        match self.send(Method::GET, url.clone(), "", &[], None).await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(failed(resp.status())),
            // A Basic registry refused the credentials (a token service's refusal keeps its
            // own words).
            Err(DistError::Unauthorized(_)) if self.lock().basic => {
                Err(failed(StatusCode::UNAUTHORIZED))
            }
            Err(e) => Err(e),
        }
    }

    pub fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .map_err(|e| DistError::Invalid(format!("bad registry URL {path:?}: {e}")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        let state = self.lock();
        if let Some(t) = state.tokens.get(scope) {
            return Some(format!("Bearer {t}"));
        }
        match &self.creds {
            Some(c) if state.basic && c.has_password() => {
                Some(basic_header(&c.username, &c.password))
            }
            _ => None,
        }
    }

    /// Sends a request, meeting one auth challenge. `body` is resent on the retry.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        scope: &str,
        headers: &[(reqwest::header::HeaderName, String)],
        body: Option<Bytes>,
    ) -> Result<reqwest::Response> {
        let mut retried = false;
        loop {
            let mut req = self.http.request(method.clone(), url.clone());
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(a) = self.auth_header(scope) {
                req = req.header(AUTHORIZATION, a);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let resp = req.send().await.map_err(|e| DistError::Http {
                method: leak_method(&method),
                url: url.to_string(),
                source: e,
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenges = challenges_of(resp.headers());
            let what = format!("{} {:?}", leak_method(&method), url.as_str());
            if retried || challenges.is_empty() {
                let status = resp.status();
                let text = resp.bytes().await.unwrap_or_default();
                return Err(DistError::Unauthorized(format!(
                    "{what}: {}",
                    unauthorized_text(status, &text)
                )));
            }
            self.meet(&challenges, scope, &what).await?;
            retried = true;
        }
    }

    /// Sends a streaming body once, with the auth an earlier request of `scope` established.
    pub(crate) async fn send_stream(
        &self,
        method: Method,
        url: Url,
        scope: &str,
        body: reqwest::Body,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(a) = self.auth_header(scope) {
            req = req.header(AUTHORIZATION, a);
        }
        req.send().await.map_err(|e| DistError::Http {
            method: leak_method(&method),
            url: url.to_string(),
            source: e,
        })
    }

    /// Meets a challenge: Basic needs credentials; Bearer fetches a token for `scope`.
    async fn meet(&self, challenges: &[Challenge], scope: &str, what: &str) -> Result<()> {
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service, .. } => Some((realm.clone(), service.clone())),
            Challenge::Basic { .. } => None,
        });
        if let Some((realm, service)) = bearer {
            let token = self.fetch_token(&realm, service.as_deref(), scope).await?;
            self.lock().tokens.insert(scope.to_string(), token);
            return Ok(());
        }
        match &self.creds {
            Some(c) if c.has_password() => {
                self.lock().basic = true;
                Ok(())
            }
            _ => Err(DistError::Unauthorized(format!(
                "{what}: no basic auth credentials"
            ))),
        }
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        if let Some(t) = self
            .creds
            .as_ref()
            .map(|c| &c.registrytoken)
            .filter(|t| !t.is_empty())
        {
            return Ok(t.clone());
        }
        let mut url = Url::parse(realm)
            .map_err(|e| DistError::Invalid(format!("token realm {realm:?}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if !scope.is_empty() {
                q.append_pair("scope", scope);
            }
            q.append_pair("client_id", "strata");
        }
        let mut req = self.http.get(url.clone());
        if let Some(c) = self.creds.as_ref().filter(|c| c.has_password()) {
            req = req.header(AUTHORIZATION, basic_header(&c.username, &c.password));
        }
        let resp = req.send().await.map_err(|e| DistError::Http {
            method: "Get",
            url: url.to_string(),
            source: e,
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| DistError::Http {
            method: "Get",
            url: url.to_string(),
            source: e,
        })?;
        if !status.is_success() {
            return Err(DistError::Unauthorized(format!(
                "Get {:?}: {}",
                url.as_str(),
                unauthorized_text(status, &body)
            )));
        }
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| DistError::Invalid(format!("token service answered no token: {e}")))?;
        token
            .bearer()
            .ok_or_else(|| DistError::Invalid("token service answered an empty token".into()))
    }

    /// `GET /v2/<repo>/manifests/<reference>`, verified against the digest when the
    /// reference is one, and against `Docker-Content-Digest` when the registry sends it.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        scope: &str,
    ) -> Result<FetchedManifest> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let resp = self
            .send(
                Method::GET,
                url.clone(),
                scope,
                &[(ACCEPT, MANIFEST_ACCEPT.to_string())],
                None,
            )
            .await?;
        let status = resp.status();
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        let media_type = header_str(resp.headers(), CONTENT_TYPE.as_str()).unwrap_or_default();
        let body = read_limited(resp, MAX_MANIFEST_BYTES, &url).await?;
        if !status.is_success() {
            return Err(from_response(status, &body));
        }
        let digest = Digest::of_bytes(&body);
        let expected = match Digest::parse(reference) {
            Ok(d) => Some(d),
            Err(_) => header_digest.and_then(|h| Digest::parse(&h).ok()),
        };
        if let Some(e) = expected.filter(|e| *e != digest) {
            return Err(DistError::DigestMismatch {
                what: "manifest",
                expected: e,
                got: digest,
            });
        }
        Ok(FetchedManifest {
            body,
            media_type: media_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            digest,
        })
    }

    /// `GET /v2/<repo>/blobs/<digest>`: the answer, status checked (see `crate::blob`).
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &Digest,
        scope: &str,
    ) -> Result<reqwest::Response> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let resp = self
            .send(Method::GET, url.clone(), scope, &[], None)
            .await?;
        check(resp, &url).await
    }

    /// `GET /v2/<repo>/blobs/<digest>` from byte `offset` on (`Range: bytes=offset-`). The
    /// answer says whether the registry honoured the range (206) or sent the whole blob (200,
    /// as a registry without range support does); a range past the end (416) is asked again
    /// whole.
    pub async fn get_blob_from(
        &self,
        repo: &str,
        digest: &Digest,
        scope: &str,
        offset: u64,
    ) -> Result<(reqwest::Response, bool)> {
        if offset == 0 {
            return Ok((self.get_blob(repo, digest, scope).await?, false));
        }
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let range = [(reqwest::header::RANGE, format!("bytes={offset}-"))];
        let resp = self
            .send(Method::GET, url.clone(), scope, &range, None)
            .await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => Ok((resp, true)),
            StatusCode::RANGE_NOT_SATISFIABLE => {
                Ok((self.get_blob(repo, digest, scope).await?, false))
            }
            _ => Ok((check(resp, &url).await?, false)),
        }
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: its size if the repository has it.
    pub async fn blob_size(&self, repo: &str, digest: &Digest, scope: &str) -> Result<Option<u64>> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let resp = self
            .send(Method::HEAD, url.clone(), scope, &[], None)
            .await?;
        match resp.status() {
            // The header, not `content_length()`: a HEAD answer's body is empty.
            s if s.is_success() => {
                let len = header_str(resp.headers(), "content-length").and_then(|v| v.parse().ok());
                len.map(Some).ok_or_else(|| {
                    DistError::Invalid(format!("HEAD {url}: the registry sent no Content-Length"))
                })
            }
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(from_response(s, &[])),
        }
    }

    /// Cross-repository mount: true if the registry mounted `digest` from `from`.
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: &Digest,
        from: &str,
        scope: &str,
    ) -> Result<bool> {
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/"))?;
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from);
        let resp = self
            .send(Method::POST, url.clone(), scope, &[], Some(Bytes::new()))
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            // 202: the registry started an upload instead; it expires unused.
            s if s.is_success() => Ok(false),
            s => Err(from_response(s, &resp.bytes().await.unwrap_or_default())),
        }
    }

    /// `POST /v2/<repo>/blobs/uploads/`: the upload's location.
    pub async fn start_upload(&self, repo: &str, scope: &str) -> Result<Url> {
        let url = self.url(&format!("v2/{repo}/blobs/uploads/"))?;
        let resp = self
            .send(Method::POST, url.clone(), scope, &[], Some(Bytes::new()))
            .await?;
        let resp = check(resp, &url).await?;
        self.location(&resp)
    }

    /// `PATCH <location>` with a streamed body; the next location.
    pub async fn upload_stream(
        &self,
        location: Url,
        scope: &str,
        body: crate::blob::ByteStream,
    ) -> Result<Url> {
        let body = reqwest::Body::wrap_stream(body);
        let resp = self
            .send_stream(Method::PATCH, location.clone(), scope, body)
            .await?;
        let resp = check(resp, &location).await?;
        self.location(&resp)
    }

    /// `PUT <location>?digest=` closing the upload (with the whole blob as `body`, or none).
    pub async fn finish_upload(
        &self,
        mut location: Url,
        digest: &Digest,
        scope: &str,
        body: Bytes,
    ) -> Result<()> {
        location
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let headers = [(CONTENT_TYPE, "application/octet-stream".to_string())];
        let resp = self
            .send(Method::PUT, location.clone(), scope, &headers, Some(body))
            .await?;
        check(resp, &location).await.map(|_| ())
    }

    /// `PUT /v2/<repo>/manifests/<reference>`: the digest of what was stored.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
        scope: &str,
    ) -> Result<Digest> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let digest = Digest::of_bytes(&body);
        let headers = [(CONTENT_TYPE, media_type.to_string())];
        let resp = self
            .send(Method::PUT, url.clone(), scope, &headers, Some(body))
            .await?;
        check(resp, &url).await?;
        Ok(digest)
    }

    fn location(&self, resp: &reqwest::Response) -> Result<Url> {
        let loc = header_str(resp.headers(), LOCATION.as_str()).ok_or_else(|| {
            DistError::Invalid("the registry's upload answer has no Location".into())
        })?;
        resp.url()
            .join(&loc)
            .map_err(|e| DistError::Invalid(format!("bad upload Location {loc:?}: {e}")))
    }
}

/// `Get`, `Head`: Go's spelling, which Docker's messages carry.
fn leak_method(m: &Method) -> &'static str {
    match *m {
        Method::GET => "Get",
        Method::HEAD => "Head",
        Method::POST => "Post",
        Method::PUT => "Put",
        Method::PATCH => "Patch",
        Method::DELETE => "Delete",
        _ => "Request",
    }
}

fn challenges_of(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_string)
}

/// The registry's words for a 401, or Docker's fallback.
fn unauthorized_text(status: StatusCode, body: &[u8]) -> String {
    let e = from_response(status, body);
    match e.registry_code() {
        Some(_) => e.to_string(),
        None => "unauthorized: authentication required".to_string(),
    }
}

/// A success answer, or the registry's error.
async fn check(resp: reqwest::Response, url: &Url) -> Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = read_limited(resp, 64 << 10, url).await.unwrap_or_default();
    Err(from_response(status, &body))
}

async fn read_limited(mut resp: reqwest::Response, limit: usize, url: &Url) -> Result<Bytes> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| DistError::Http {
        method: "Get",
        url: url.to_string(),
        source: e,
    })? {
        if out.len() + chunk.len() > limit {
            return Err(DistError::Invalid(format!(
                "{url}: the answer is larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_words_are_gos() {
        assert_eq!(leak_method(&Method::HEAD), "Head");
        assert_eq!(leak_method(&Method::PATCH), "Patch");
    }
}
