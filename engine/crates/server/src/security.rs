//! Request guard: Host check (DNS rebinding), Origin check and CORS, API key.
//!
//! A web page the user visits can make the browser send requests to
//! `http://127.0.0.1:10002`; with DNS rebinding it can even read the answers. So:
//! the `Host` header must name this server; a browser `Origin` must be configured
//! (`--cors-origin`) or be this server itself; and with an API key every `/v1` call
//! needs `Authorization: Bearer <key>`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::ServeConfig;
use crate::error::ApiError;

/// What the guard enforces, derived from the [`ServeConfig`].
#[derive(Debug, Clone)]
pub struct Guard {
    allowed_hosts: Vec<String>,
    any_host: bool,
    cors_any: bool,
    cors_origins: Vec<String>,
    api_key: Option<String>,
}

impl Guard {
    /// Builds the guard for a server bound to `bound`.
    pub fn new(config: &ServeConfig, bound: IpAddr) -> Self {
        let mut allowed_hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        allowed_hosts.push(normalize_host(&config.host));
        allowed_hosts.push(normalize_host(&bound.to_string()));
        allowed_hosts.extend(config.allowed_hosts.iter().map(|h| normalize_host(h)));
        Self {
            allowed_hosts,
            // Bound to every interface the server is reached under names we cannot
            // know; the mandatory API key is the protection there.
            any_host: bound.is_unspecified(),
            cors_any: config.cors_origins.iter().any(|o| o == "*"),
            cors_origins: config
                .cors_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            api_key: config.api_key.clone(),
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.any_host || self.allowed_hosts.iter().any(|h| h == host)
    }

    fn cors_allowed(&self, origin: &str) -> bool {
        self.cors_any || self.cors_origins.iter().any(|o| o == origin)
    }
}

/// Lowercase host name without port, brackets or trailing dot.
fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if raw.matches(':').count() == 1 {
        raw.split(':').next().unwrap_or("")
    } else {
        raw // bare IPv6 or no port
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// `host[:port]` of an `Origin` value (`scheme://host[:port]`), lowercase.
fn origin_authority(origin: &str) -> Option<String> {
    let (_, rest) = origin.split_once("://")?;
    Some(rest.split('/').next().unwrap_or("").to_ascii_lowercase())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer_ok(headers: &HeaderMap, key: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), key.as_bytes()))
}

fn cors_headers(resp: &mut Response, origin: &str) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The middleware.
pub async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host_raw = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host_raw) = host_raw else {
        return ApiError::bad_request("missing Host header").into_response();
    };
    let host = normalize_host(&host_raw);
    if !g.host_allowed(&host) {
        return ApiError::forbidden(format!(
            "Host `{host}` is not allowed (DNS-rebinding protection); use localhost or \
             127.0.0.1, or start the server with --allowed-host {host}"
        ))
        .with_code("host_not_allowed")
        .into_response();
    }

    let mut cors_origin = None;
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin
            .to_str()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_ascii_lowercase();
        if g.cors_allowed(&origin) {
            cors_origin = Some(origin);
        } else if origin_authority(&origin) != Some(host_raw.trim().to_ascii_lowercase()) {
            // Same origin (a page served by this host and port) is fine; any other
            // origin, including another port on localhost, is foreign.
            return ApiError::forbidden(format!(
                "cross-origin requests from `{origin}` are not allowed; start the server with \
                 --cors-origin {origin} to allow them"
            ))
            .with_code("origin_not_allowed")
            .into_response();
        }
    }

    let is_preflight = req.method() == Method::OPTIONS
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_preflight {
        if let Some(origin) = cors_origin {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            cors_headers(&mut resp, &origin);
            let h = resp.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            return resp;
        }
    }

    if let Some(key) = &g.api_key {
        if req.uri().path().starts_with("/v1") && !bearer_ok(headers, key) {
            let mut resp = ApiError::unauthorized(
                "missing or invalid API key: send `Authorization: Bearer <key>`",
            )
            .into_response();
            if let Some(origin) = &cors_origin {
                cors_headers(&mut resp, origin);
            }
            return resp;
        }
    }

    let mut resp = next.run(req).await;
    if let Some(origin) = &cors_origin {
        cors_headers(&mut resp, origin);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("LocalHost:10002"), "localhost");
        assert_eq!(normalize_host("[::1]:80"), "::1");
        assert_eq!(normalize_host("::1"), "::1");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(normalize_host("evil.com.:80"), "evil.com");
        assert_eq!(
            origin_authority("http://LocalHost:3000").as_deref(),
            Some("localhost:3000")
        );
        assert_eq!(origin_authority("null"), None);
    }

    #[test]
    fn bearer_is_checked_exactly() {
        let mut h = HeaderMap::new();
        assert!(!bearer_ok(&h, "k1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k1"));
        assert!(bearer_ok(&h, "k1"));
        assert!(!bearer_ok(&h, "k12"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic k1"));
        assert!(!bearer_ok(&h, "k1"));
    }
}
