//! What every HTTP chat provider shares: one transport per endpoint, models that borrow it, and
//! the call itself (tool-name mapping, request, response parsing, redacted errors). A provider
//! differs only in its [`Wire`] format: path, headers, request body and response parsing.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::LlmError;
use crate::http::{HttpTransport, ProviderSettings};
use crate::schema::ToolNames;
use crate::types::{ChatRequest, ChatResponse};
use crate::{ChatModel, ProviderFactory};

/// One chat API's wire format (OpenAI chat completions, Anthropic Messages).
pub trait Wire: Send + Sync + 'static {
    /// The request path below the endpoint's base URL.
    fn path(settings: &ProviderSettings) -> &'static str;

    /// The headers of every request (credentials, API version).
    fn headers(settings: &ProviderSettings) -> Vec<(&'static str, String)>;

    /// The JSON body asking `model` for `request`.
    fn request_body(request: &ChatRequest, model: &str) -> Value;

    /// The answer read from a successful response body, or what is wrong with it.
    fn parse_response(value: &Value) -> Result<ChatResponse, String>;
}

/// An endpoint speaking wire format `W`; hands out models that share its client, retries and
/// concurrency limit.
pub struct HttpProvider<W> {
    transport: Arc<HttpTransport>,
    wire: PhantomData<W>,
}

// Derived `Clone` would require `W: Clone`; the wire is only a marker.
impl<W> Clone for HttpProvider<W> {
    fn clone(&self) -> Self {
        Self {
            transport: Arc::clone(&self.transport),
            wire: PhantomData,
        }
    }
}

impl<W: Wire> HttpProvider<W> {
    /// A provider talking to `settings.base_url`.
    pub fn new(settings: ProviderSettings) -> Result<Self, LlmError> {
        Ok(Self {
            transport: Arc::new(HttpTransport::new(settings)?),
            wire: PhantomData,
        })
    }

    /// The model `name` (provider-side, e.g. `gpt-4o-mini`) at this endpoint.
    pub fn chat_model(&self, name: &str) -> HttpModel<W> {
        HttpModel {
            transport: Arc::clone(&self.transport),
            id: format!("{}/{name}", self.transport.settings.name),
            model: name.to_owned(),
            wire: PhantomData,
        }
    }
}

impl<W: Wire> ProviderFactory for HttpProvider<W> {
    fn model(&self, name: &str) -> Result<Arc<dyn ChatModel>, LlmError> {
        Ok(Arc::new(self.chat_model(name)))
    }
}

/// One model at an endpoint speaking wire format `W`.
pub struct HttpModel<W> {
    transport: Arc<HttpTransport>,
    id: String,
    model: String,
    wire: PhantomData<W>,
}

#[async_trait]
impl<W: Wire> ChatModel for HttpModel<W> {
    fn id(&self) -> &str {
        &self.id
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let model = if request.model.is_empty() {
            self.model.as_str()
        } else {
            request.model.as_str()
        };
        // Tool names the API would refuse are sent mapped and mapped back in the answer.
        let names = ToolNames::for_request(request);
        let body = W::request_body(&names.apply(request), model);
        let settings = &self.transport.settings;
        let url = self.transport.url(W::path(settings));
        let value = self
            .transport
            .post_json(&url, &W::headers(settings), &body, model)
            .await?;
        let mut response = W::parse_response(&value).map_err(|detail| LlmError::BadResponse {
            provider: settings.name.clone(),
            url,
            status: 200,
            detail: self.transport.redact(&detail),
        })?;
        names.restore(&mut response);
        Ok(response)
    }
}

/// A JSON value as text for an error message, cut to 200 characters.
pub(crate) fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}
