//! The HTTP transport shared by all models of one provider: timeout, retries with backoff and
//! `Retry-After`, a concurrency limit, and error classification.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::error::LlmError;

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default number of retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 4;
/// Default first backoff step.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(500);
/// Default cap of one backoff step.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);
/// Default cap of a server-given `Retry-After`.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Default number of requests in flight per provider.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;

/// When and how often a failed call is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts at most).
    pub max_retries: u32,
    /// Backoff before retry `n` (1-based) is uniform in `[0, min(max_delay, base_delay * 2^(n-1))]`
    /// ("full jitter").
    pub base_delay: Duration,
    /// Cap of one backoff step.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is shortened to it (a server asking for an hour would
    /// otherwise stall a run).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: DEFAULT_MAX_RETRIES,
            base_delay: DEFAULT_BASE_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

impl RetryPolicy {
    /// The jittered backoff before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(20));
        let ceiling = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        if ceiling_ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::rng().random_range(0..=ceiling_ms))
    }
}

/// Everything needed to talk to one provider endpoint.
#[derive(Clone)]
pub struct ProviderSettings {
    /// The provider's name (the `provider` part of model ids), used in messages.
    pub name: String,
    /// Base URL, e.g. `https://api.openai.com/v1` (OpenAI-compatible) or
    /// `https://api.anthropic.com` (Anthropic). A trailing slash is ignored.
    pub base_url: String,
    /// The API key, if any. Never printed.
    pub api_key: Option<String>,
    /// Requests in flight at once, across all models of this provider.
    pub max_concurrency: usize,
    /// Per-request timeout (connect + answer).
    pub timeout: Duration,
    /// Retry behaviour.
    pub retry: RetryPolicy,
}

impl ProviderSettings {
    /// Settings with the defaults (120 s timeout, 4 retries, 8 in flight) and no key.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into(),
            api_key: None,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("max_concurrency", &self.max_concurrency)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// One provider's HTTP client, shared by all its models.
pub(crate) struct HttpTransport {
    pub(crate) settings: ProviderSettings,
    client: reqwest::Client,
    semaphore: Arc<Semaphore>,
}

/// What went wrong in one attempt, before deciding whether to retry.
enum AttemptError {
    Final(LlmError),
    Retryable {
        error: LlmError,
        wait: Option<Duration>,
    },
}

impl HttpTransport {
    pub(crate) fn new(settings: ProviderSettings) -> Result<Self, LlmError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| LlmError::Config {
                provider: settings.name.clone(),
                message: format!("could not build the HTTP client: {}", error_chain(&e)),
            })?;
        let permits = settings.max_concurrency.max(1);
        Ok(Self {
            settings,
            client,
            semaphore: Arc::new(Semaphore::new(permits)),
        })
    }

    /// `{base_url}/{path}` without a doubled slash.
    pub(crate) fn url(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.settings.base_url.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    /// POSTs `body` as JSON and returns the parsed JSON answer, retrying what is worth retrying.
    /// `model` is only used in error messages.
    pub(crate) async fn post_json(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &Value,
        model: &str,
    ) -> Result<Value, LlmError> {
        let policy = self.settings.retry;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result = self.attempt(url, headers, body, model, attempt).await;
            match result {
                Ok(value) => return Ok(value),
                Err(AttemptError::Final(error)) => return Err(error),
                Err(AttemptError::Retryable { error, wait }) => {
                    if attempt > policy.max_retries {
                        return Err(error);
                    }
                    let delay = match wait {
                        Some(wait) => wait.min(policy.max_retry_after),
                        None => policy.backoff(attempt),
                    };
                    tracing::warn!(
                        provider = %self.settings.name,
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "retrying model call: {error}"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &Value,
        model: &str,
        attempt: u32,
    ) -> Result<Value, AttemptError> {
        let provider = self.settings.name.clone();
        let response = {
            // The permit is held for the request only, not while backing off.
            let _permit = self
                .semaphore
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let mut request = self.client.post(url).json(body);
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    match response.text().await {
                        Ok(text) => Ok((status, headers, text)),
                        // An error status says what went wrong without its body.
                        Err(e) if !(200..300).contains(&status) && !e.is_timeout() => {
                            Ok((status, headers, String::new()))
                        }
                        Err(e) => Err((Some(status), e)),
                    }
                }
                Err(e) => Err((None, e)),
            }
        };
        let (status, response_headers, text) = match response {
            Ok(parts) => parts,
            // The server answered success but its body broke off (connection closed early, a
            // proxy cut it): a failure of this call, worth another attempt, not proof that the
            // server cannot be reached.
            Err((Some(status), e)) if !e.is_timeout() => {
                return Err(AttemptError::Retryable {
                    error: LlmError::BadResponse {
                        provider,
                        url: url.to_owned(),
                        status,
                        detail: format!(
                            "the body broke off before its end ({})",
                            self.redact(&error_chain(&e))
                        ),
                    },
                    wait: None,
                })
            }
            Err((_, e)) => return Err(self.transport_error(url, attempt, &e)),
        };
        if (200..300).contains(&status) {
            return serde_json::from_str::<Value>(&text).map_err(|e| {
                AttemptError::Final(LlmError::BadResponse {
                    provider,
                    url: url.to_owned(),
                    status,
                    detail: format!(
                        "the body is not valid JSON ({e}); it starts with {:?}",
                        self.redact(&truncate(&text, 200))
                    ),
                })
            });
        }
        let message = self.redact(&error_message(&text));
        let url = url.to_owned();
        let error = match status {
            401 | 403 => {
                return Err(AttemptError::Final(LlmError::Auth {
                    provider,
                    url,
                    status,
                    message,
                }))
            }
            404 => {
                return Err(AttemptError::Final(LlmError::ModelNotFound {
                    provider,
                    model: model.to_owned(),
                    url,
                    status,
                    message,
                }))
            }
            429 => LlmError::RateLimited {
                provider,
                url,
                attempts: attempt,
                message,
            },
            408 | 500..=599 => LlmError::Server {
                provider,
                url,
                status,
                attempts: attempt,
                message,
            },
            _ if looks_like_model_not_found(&message) => {
                return Err(AttemptError::Final(LlmError::ModelNotFound {
                    provider,
                    model: model.to_owned(),
                    url,
                    status,
                    message,
                }))
            }
            400 | 422 => {
                return Err(AttemptError::Final(LlmError::InvalidRequest {
                    provider,
                    url,
                    status,
                    message,
                }))
            }
            _ => {
                return Err(AttemptError::Final(LlmError::Server {
                    provider,
                    url,
                    status,
                    attempts: attempt,
                    message,
                }))
            }
        };
        Err(AttemptError::Retryable {
            error,
            wait: retry_after(&response_headers, SystemTime::now()),
        })
    }

    fn transport_error(&self, url: &str, attempt: u32, e: &reqwest::Error) -> AttemptError {
        let provider = self.settings.name.clone();
        let url = url.to_owned();
        let error = if e.is_timeout() {
            LlmError::Timeout {
                provider,
                url,
                attempts: attempt,
                timeout_ms: u64::try_from(self.settings.timeout.as_millis()).unwrap_or(u64::MAX),
            }
        } else if e.is_builder() {
            return AttemptError::Final(LlmError::Config {
                provider,
                message: format!(
                    "the request to {url} could not be built: {}",
                    self.redact(&error_chain(e))
                ),
            });
        } else {
            // Connection refused, DNS, TLS, reset: the server is not reachable as configured.
            LlmError::Unreachable {
                provider,
                url,
                attempts: attempt,
                message: self.redact(&error_chain(e)),
            }
        };
        AttemptError::Retryable { error, wait: None }
    }

    /// Removes the API key from provider text, should a server echo it back.
    pub(crate) fn redact(&self, text: &str) -> String {
        match &self.settings.api_key {
            Some(key) if key.len() >= 4 => text.replace(key.as_str(), "[redacted]"),
            _ => text.to_owned(),
        }
    }
}

/// The error and its sources, joined: `error sending request: connection refused`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn truncate(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out
}

/// The human part of an error body: `error.message` (OpenAI, Anthropic), `error` (Ollama),
/// `message` / `detail` (vLLM, gateways), else the body itself, shortened.
pub(crate) fn error_message(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "(empty body)".to_owned();
    }
    if let Ok(json) = serde_json::from_str::<Value>(trimmed) {
        let candidates = [
            json.pointer("/error/message"),
            json.get("error"),
            json.get("message"),
            json.get("detail"),
        ];
        for candidate in candidates.into_iter().flatten() {
            if let Some(s) = candidate.as_str() {
                return truncate(s, 500);
            }
        }
    }
    truncate(trimmed, 500)
}

fn looks_like_model_not_found(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("model_not_found")
        || (m.contains("model")
            && (m.contains("not found")
                || m.contains("does not exist")
                || m.contains("not exist")
                || m.contains("unknown model")))
}

/// The wait a `Retry-After` header asks for: delta-seconds or an HTTP date (IMF-fixdate).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn parse_http_date(text: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_weekday, day, month, year, time, zone] = parts.as_slice() else {
        return None;
    };
    if *zone != "GMT" && *zone != "UTC" {
        return None;
    }
    let day: u32 = day.parse().ok()?;
    let month = match *month {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days.checked_mul(86_400)? + i64::try_from(h * 3600 + m * 60 + s).ok()?;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn an_http_date_is_parsed_to_the_right_instant() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        assert!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").is_none());
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770);
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(3)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn backoff_stays_within_the_capped_exponential_ceiling() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(1),
        };
        for _ in 0..200 {
            assert!(policy.backoff(1) <= Duration::from_millis(10));
            assert!(policy.backoff(2) <= Duration::from_millis(20));
            assert!(policy.backoff(9) <= Duration::from_millis(50));
        }
    }

    #[test]
    fn provider_error_messages_are_extracted_from_common_shapes() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad key","type":"x"}}"#),
            "bad key"
        );
        assert_eq!(
            error_message(r#"{"error":"model \"x\" not found"}"#),
            "model \"x\" not found"
        );
        assert_eq!(
            error_message(r#"{"object":"error","message":"nope"}"#),
            "nope"
        );
        assert_eq!(error_message("  "), "(empty body)");
        assert_eq!(error_message("plain text"), "plain text");
        assert!(looks_like_model_not_found(
            "The model `foo` does not exist."
        ));
        assert!(!looks_like_model_not_found("messages: field required"));
    }
}
