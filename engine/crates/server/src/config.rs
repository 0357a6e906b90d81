//! Server settings (clap-free: the CLI and the desktop app both build a [`ServeConfig`]).

use std::net::{IpAddr, Ipv4Addr};

/// Default port, the one KTransformers' server and `test_speed.py` use.
pub const DEFAULT_PORT: u16 = 10002;

/// Per-request bounds. Every value that a client controls is capped by one of these.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest prompt in tokens (also capped by the context length).
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` a client may ask for.
    pub max_completion_tokens: usize,
    /// Completion length of a chat request without `max_tokens` (capped by the context).
    pub default_chat_max_tokens: usize,
    /// Most messages in one chat request.
    pub max_messages: usize,
    /// Most stop sequences (OpenAI allows 4).
    pub max_stop_sequences: usize,
    /// Longest stop sequence in bytes.
    pub max_stop_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_prompt_tokens: 131_072,
            max_completion_tokens: 32_768,
            default_chat_max_tokens: 4096,
            max_messages: 1024,
            max_stop_sequences: 4,
            max_stop_bytes: 256,
        }
    }
}

/// Everything `hmoe serve` takes besides the model and engine options.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Address to bind (an IP literal or `localhost`).
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Required as `Authorization: Bearer <key>` on `/v1/*` when set.
    pub api_key: Option<String>,
    /// Generations running at once (the engine batches them).
    pub max_concurrent: usize,
    /// Requests waiting for a slot; beyond that the server answers 429.
    pub max_queue: usize,
    /// Browser origins allowed to call the API (`*` allows any); empty: no CORS.
    pub cors_origins: Vec<String>,
    /// Extra names accepted in the `Host` header (besides loopback names and the bind host).
    pub allowed_hosts: Vec<String>,
    /// Name shown at `/v1/models` and required in requests (default: the engine's).
    pub served_model_name: Option<String>,
    /// Request bounds.
    pub limits: Limits,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_string(),
            port: DEFAULT_PORT,
            api_key: None,
            max_concurrent: 4,
            max_queue: 64,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            served_model_name: None,
            limits: Limits::default(),
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Binding beyond loopback would expose an open API.
    #[error("refusing to bind non-loopback host `{0}` without an API key (pass --api-key)")]
    NonLoopbackWithoutKey(String),
    /// Host is not an IP address or `localhost`.
    #[error("host `{0}` is not an IP address or `localhost`")]
    BadHost(String),
    /// A numeric setting is out of range.
    #[error("{name} = {value} is out of range ({range})")]
    OutOfRange {
        /// Setting name.
        name: &'static str,
        /// Given value.
        value: usize,
        /// Accepted range.
        range: &'static str,
    },
    /// An empty API key would accept `Authorization: Bearer `.
    #[error("the API key must not be empty")]
    EmptyApiKey,
}

/// Most concurrent generations a server accepts; beyond this KV memory is the limit anyway.
const MAX_CONCURRENT_CAP: usize = 1024;
/// Most queued requests.
const MAX_QUEUE_CAP: usize = 65_536;

impl ServeConfig {
    /// The address to bind, after checking the host.
    pub fn bind_ip(&self) -> Result<IpAddr, ConfigError> {
        if self.host.eq_ignore_ascii_case("localhost") {
            return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let trimmed = self.host.trim_start_matches('[').trim_end_matches(']');
        trimmed
            .parse::<IpAddr>()
            .map_err(|_| ConfigError::BadHost(self.host.clone()))
    }

    /// Checks the settings; called by [`crate::start`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ip = self.bind_ip()?;
        if matches!(&self.api_key, Some(k) if k.is_empty()) {
            return Err(ConfigError::EmptyApiKey);
        }
        if !ip.is_loopback() && self.api_key.is_none() {
            return Err(ConfigError::NonLoopbackWithoutKey(self.host.clone()));
        }
        check_range(
            "max_concurrent",
            self.max_concurrent,
            1,
            MAX_CONCURRENT_CAP,
            "1..=1024",
        )?;
        check_range("max_queue", self.max_queue, 0, MAX_QUEUE_CAP, "0..=65536")?;
        check_range(
            "max_body_bytes",
            self.limits.max_body_bytes,
            1024,
            1 << 30,
            "1 KiB..=1 GiB",
        )?;
        check_range(
            "max_completion_tokens",
            self.limits.max_completion_tokens,
            1,
            1 << 24,
            "1..=16777216",
        )?;
        Ok(())
    }
}

fn check_range(
    name: &'static str,
    value: usize,
    lo: usize,
    hi: usize,
    range: &'static str,
) -> Result<(), ConfigError> {
    if value < lo || value > hi {
        return Err(ConfigError::OutOfRange { name, value, range });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_without_key_is_fine() {
        assert_eq!(ServeConfig::default().validate(), Ok(()));
        let c = ServeConfig {
            host: "::1".into(),
            ..Default::default()
        };
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn non_loopback_needs_key() {
        let mut c = ServeConfig {
            host: "0.0.0.0".into(),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::NonLoopbackWithoutKey(_))
        ));
        c.api_key = Some(String::new());
        assert_eq!(c.validate(), Err(ConfigError::EmptyApiKey));
        c.api_key = Some("k".into());
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn hostnames_are_refused() {
        let c = ServeConfig {
            host: "example.com".into(),
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::BadHost(_))));
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let c = ServeConfig {
            max_concurrent: 0,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { .. })));
    }
}
