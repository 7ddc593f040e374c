//! One HTTP client under every API backend: limits, retries, timeouts, usage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{ApiKey, ApiOptions, RetryPolicy, Usage};
use crate::error::{LlmError, Result};

/// How a key is sent.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer KEY` (OpenAI).
    Bearer(ApiKey),
    /// The key alone in a header of this name (`x-goog-api-key`, Gemini), never in the URL.
    Header(&'static str, ApiKey),
}

/// Requests spaced at least `interval` apart: a requests-per-minute limit without bursts.
struct Pace {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pace {
    async fn wait(&self) {
        let slot = {
            // A poisoned lock only means another task panicked between two lines that
            // cannot panic; the instant inside is still valid.
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// The outcome of one attempt.
enum Attempt {
    Done(Vec<u8>),
    Retry {
        error: LlmError,
        retry_after: Option<Duration>,
    },
    Fail(LlmError),
}

/// An HTTP client for one model: JSON POSTs with retries, limits and usage accounting.
pub struct HttpClient {
    name: String,
    client: reqwest::Client,
    headers: HeaderMap,
    retry: RetryPolicy,
    request_timeout: Duration,
    in_flight: Semaphore,
    pace: Option<Pace>,
    requests: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("name", &self.name)
            .field("retry", &self.retry)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client for the model named `name` (used in errors and logs).
    pub fn new(name: String, auth: Option<Auth>, options: &ApiOptions) -> Result<Self> {
        if options.max_in_flight == 0 {
            return Err(LlmError::InvalidParams(
                "max_in_flight must be at least 1".into(),
            ));
        }
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            let (header, value) = match &auth {
                Auth::Bearer(key) => (
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {}", key.expose()),
                ),
                Auth::Header(header, key) => {
                    (HeaderName::from_static(header), key.expose().to_string())
                }
            };
            // The error would quote the value; say only what is wrong.
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                LlmError::InvalidParams(format!(
                    "model {name}: the API key holds characters an HTTP header cannot"
                ))
            })?;
            // Sensitive values print as `Sensitive` in any Debug output of the request.
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .build()
            .map_err(|e| LlmError::InvalidParams(format!("building the HTTP client: {e}")))?;
        let pace = match options.requests_per_minute {
            Some(0) => {
                return Err(LlmError::InvalidParams(
                    "requests_per_minute must be at least 1".into(),
                ))
            }
            Some(rpm) => Some(Pace {
                interval: Duration::from_secs_f64(60.0 / rpm as f64),
                next: Mutex::new(Instant::now()),
            }),
            None => None,
        };
        Ok(Self {
            name,
            client,
            headers,
            retry: options.retry.clone(),
            request_timeout: options.request_timeout,
            in_flight: Semaphore::new(options.max_in_flight),
            pace,
            requests: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Add what one answered request cost.
    pub fn add_usage(&self, prompt_tokens: u64, completion_tokens: u64) {
        self.prompt_tokens
            .fetch_add(prompt_tokens, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion_tokens, Ordering::Relaxed);
    }

    pub fn usage(&self) -> Usage {
        Usage {
            requests: self.requests.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
        }
    }

    /// An error saying the answer was not what the API documents.
    pub fn bad_response(&self, what: impl Into<String>) -> LlmError {
        LlmError::BadResponse {
            name: self.name.clone(),
            what: what.into(),
        }
    }

    /// POST `body` as JSON to `url` and parse the answer, retrying what may succeed later.
    pub async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        // The semaphore is never closed, so acquire cannot fail; stay correct if it were.
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| LlmError::InvalidParams("request limiter closed".into()))?;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            if let Some(pace) = &self.pace {
                pace.wait().await;
            }
            tracing::debug!(model = %self.name, url, attempt, "request");
            match self.attempt(url, body, attempt).await {
                Attempt::Done(bytes) => {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| self.bad_response(format!("{e} in {}", excerpt(&bytes))));
                }
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry { error, retry_after } => {
                    if attempt > self.retry.max_retries {
                        return Err(error);
                    }
                    let delay = self.delay(attempt, retry_after);
                    tracing::warn!(model = %self.name, attempt, ?delay, "{error}; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Exponential backoff with jitter, or the server's `Retry-After` (capped).
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let mut rng = rand::thread_rng();
        match retry_after {
            Some(wait) => wait.min(self.retry.max_retry_after),
            None => {
                let doublings = attempt.saturating_sub(1).min(30);
                let base = self
                    .retry
                    .initial_backoff
                    .saturating_mul(1u32 << doublings)
                    .min(self.retry.max_backoff);
                base.mul_f64(rng.gen_range(0.5..=1.0))
            }
        }
    }

    async fn attempt(&self, url: &str, body: &serde_json::Value, attempt: u32) -> Attempt {
        let response = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .json(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return self.transport_error(e, attempt),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return self.transport_error(e, attempt),
        };
        if status.is_success() {
            return Attempt::Done(bytes.to_vec());
        }
        let error = LlmError::Http {
            name: self.name.clone(),
            status: status.as_u16(),
            attempts: attempt,
            message: error_message(&bytes),
        };
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Attempt::Retry { error, retry_after }
        } else {
            Attempt::Fail(error)
        }
    }

    fn transport_error(&self, e: reqwest::Error, attempt: u32) -> Attempt {
        if e.is_builder() {
            return Attempt::Fail(LlmError::InvalidParams(format!(
                "model {}: {}",
                self.name,
                chain(&e)
            )));
        }
        let error = if e.is_timeout() {
            LlmError::Timeout {
                name: self.name.clone(),
                timeout: self.request_timeout,
                attempts: attempt,
            }
        } else {
            LlmError::Connection {
                name: self.name.clone(),
                attempts: attempt,
                message: chain(&e),
            }
        };
        Attempt::Retry {
            error,
            retry_after: None,
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form falls back to our own backoff).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The `error.message` of an OpenAI- or Gemini-style error body, else the start of the body.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| excerpt(body))
}

/// At most 300 characters of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// An error and its sources on one line (reqwest's own message leaves out the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_is_read() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn error_message_prefers_the_json_message() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad model"}}"#),
            "bad model"
        );
        assert_eq!(error_message(b"oops"), "\"oops\"");
    }
}
