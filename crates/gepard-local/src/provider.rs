//! The `local` provider: [`LocalProvider`] for the [`ModelRegistry`], [`LocalChatModel`] for
//! each request, and one inference thread per loaded model file, shared by the whole process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use async_trait::async_trait;
use gepard_llm::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, LlmError, ModelRegistry, ProviderFactory,
    Usage,
};
use tokio::sync::oneshot;

use crate::error::LocalError;
use crate::model::{GenerateOptions, Generation, LocalModel, StopCause, DEFAULT_MAX_TOKENS};
use crate::pull::{self, ModelSource, PullEvent};

/// The provider name: ids are `local/<model>`.
pub const PROVIDER: &str = "local";

/// How the `local` provider finds its models.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// The model cache (`<data_dir>/models`).
    pub cache_dir: PathBuf,
    /// Sources for an automatic pull; `None`: [`pull::default_sources`].
    pub sources: Option<Vec<ModelSource>>,
    /// Pull on first use when the model is not cached (default true). When false, a missing
    /// model is an error telling the user to run `gepard model pull`.
    pub auto_pull: bool,
    /// Use this GGUF as is, skipping the cache, pull and checksum (tests, custom builds).
    pub model_file: Option<PathBuf>,
    /// Seed for sampled (temperature > 0) requests; every such request starts from it.
    pub seed: u64,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            cache_dir: pull::models_dir(&pull::default_data_dir()),
            sources: None,
            auto_pull: true,
            model_file: None,
            seed: 0,
        }
    }
}

impl LocalConfig {
    /// The defaults with the cache under `data_dir`.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: pull::models_dir(&data_dir.into()),
            ..Self::default()
        }
    }
}

/// Makes `local/<model>` models. Register it with [`register`] (or
/// [`ModelRegistry::register_provider`]).
#[derive(Debug, Clone)]
pub struct LocalProvider {
    config: Arc<LocalConfig>,
}

impl LocalProvider {
    /// A provider with this configuration.
    pub fn new(config: LocalConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }
}

/// Adds the `local` provider to `registry`.
pub fn register(registry: &ModelRegistry, config: LocalConfig) {
    registry.register_provider(PROVIDER, Arc::new(LocalProvider::new(config)));
}

impl ProviderFactory for LocalProvider {
    fn model(&self, name: &str) -> Result<Arc<dyn ChatModel>, LlmError> {
        // With an explicit file any name is accepted: it names that file's model.
        if self.config.model_file.is_none() {
            pull::known_model(name).map_err(|e| LlmError::ModelNotFound {
                provider: PROVIDER.to_owned(),
                model: name.to_owned(),
                url: "in-process".to_owned(),
                status: 404,
                message: e.to_string(),
            })?;
        }
        Ok(Arc::new(LocalChatModel {
            id: format!("{PROVIDER}/{name}"),
            name: name.to_owned(),
            config: Arc::clone(&self.config),
        }))
    }
}

/// One `local/<model>` chat model. Cheap: the weights are loaded lazily, once per process and
/// file, on the first request, and shared by every `LocalChatModel` naming the same file.
#[derive(Debug, Clone)]
pub struct LocalChatModel {
    id: String,
    name: String,
    config: Arc<LocalConfig>,
}

impl LocalChatModel {
    /// The path of the GGUF this model runs, pulling it first when allowed and needed.
    pub async fn model_path(&self) -> Result<PathBuf, LocalError> {
        if let Some(file) = &self.config.model_file {
            return Ok(file.clone());
        }
        if let Some(path) = pull::cached_path(&self.name, &self.config.cache_dir)? {
            return Ok(path);
        }
        if !self.config.auto_pull {
            return Err(LocalError::Load {
                path: self.config.cache_dir.clone(),
                message: format!(
                    "model `{}` is not in the cache; run `gepard model pull {}`",
                    self.name, self.name
                ),
            });
        }
        // One pull at a time per process: concurrent first requests wait for the first pull
        // instead of each downloading the same 100 MB.
        static PULLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _guard = PULLING.lock().await;
        if let Some(path) = pull::cached_path(&self.name, &self.config.cache_dir)? {
            return Ok(path);
        }
        let sources = match &self.config.sources {
            Some(s) => s.clone(),
            None => pull::default_sources(&self.name)?,
        };
        let log = |event: PullEvent| tracing::info!(?event, "local model pull");
        Ok(pull::pull(&self.name, &sources, &self.config.cache_dir, &log).await?)
    }

    /// Generates with the shared worker of this model's file (loading it on first use).
    pub async fn generate(&self, request: &ChatRequest) -> Result<Generation, LocalError> {
        if !request.tools.is_empty() {
            return Err(LocalError::Unsupported(
                "local models cannot call tools; use a hosted model for tool-using agents"
                    .to_owned(),
            ));
        }
        let path = self.model_path().await?;
        let worker = worker_for(path).await?;
        let options = GenerateOptions {
            max_tokens: request
                .max_tokens
                .map_or(DEFAULT_MAX_TOKENS, |n| n as usize),
            temperature: request.temperature.map(f64::from),
            seed: self.config.seed,
            stop: request.stop.clone(),
        };
        let (reply, answer) = oneshot::channel();
        worker
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(Job {
                messages: request.messages.clone(),
                options,
                reply,
            })
            .map_err(|_| LocalError::WorkerGone)?;
        answer.await.map_err(|_| LocalError::WorkerGone)?
    }
}

fn to_llm_error(e: LocalError) -> LlmError {
    let provider = PROVIDER.to_owned();
    let url = "in-process".to_owned();
    match e {
        // The model cannot be had: nothing else in this run can succeed either.
        LocalError::Pull(_) | LocalError::Load { .. } | LocalError::WorkerGone => {
            LlmError::Config {
                provider,
                message: e.to_string(),
            }
        }
        // Tools asked of a model that has none: every row with tools gets the same refusal,
        // so the run fails at once with it instead of scoring those rows 0.
        LocalError::Unsupported(_) => LlmError::Config {
            provider,
            message: e.to_string(),
        },
        // About this one prompt: that row scores 0, the others go on.
        LocalError::PromptTooLong { .. } => LlmError::InvalidRequest {
            provider,
            url,
            status: 400,
            message: e.to_string(),
        },
        LocalError::Template(_) | LocalError::Tokenizer(_) | LocalError::Inference(_) => {
            LlmError::Server {
                provider,
                url,
                status: 500,
                attempts: 1,
                message: e.to_string(),
            }
        }
    }
}

#[async_trait]
impl ChatModel for LocalChatModel {
    fn id(&self) -> &str {
        &self.id
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let generation = self.generate(request).await.map_err(to_llm_error)?;
        Ok(ChatResponse {
            content: Some(generation.text),
            tool_calls: Vec::new(),
            usage: Usage {
                input_tokens: generation.prompt_tokens as u64,
                output_tokens: generation.completion_tokens as u64,
            },
            finish_reason: Some(match generation.stop {
                StopCause::EndOfTurn | StopCause::StopString => FinishReason::Stop,
                StopCause::MaxTokens => FinishReason::Length,
            }),
        })
    }
}

struct Job {
    messages: Vec<gepard_llm::Message>,
    options: GenerateOptions,
    reply: oneshot::Sender<Result<Generation, LocalError>>,
}

/// The inference thread of one model file. Requests wait in its channel in arrival order (a
/// FIFO), so a burst from one job cannot starve another; the thread owns the weights, so the
/// async executor never runs a forward pass.
struct Worker {
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// Loaded workers by file. Entries are never removed: one model per process, for its lifetime.
fn workers() -> &'static tokio::sync::Mutex<HashMap<PathBuf, Arc<Worker>>> {
    static WORKERS: OnceLock<tokio::sync::Mutex<HashMap<PathBuf, Arc<Worker>>>> = OnceLock::new();
    WORKERS.get_or_init(|| tokio::sync::Mutex::new(HashMap::new()))
}

async fn worker_for(path: PathBuf) -> Result<Arc<Worker>, LocalError> {
    // Held across the load so concurrent first requests load the weights once, not N times.
    let mut map = workers().lock().await;
    if let Some(w) = map.get(&path) {
        return Ok(Arc::clone(w));
    }
    let load_path = path.clone();
    let model = tokio::task::spawn_blocking(move || LocalModel::load(&load_path))
        .await
        .map_err(|e| LocalError::Load {
            path: path.clone(),
            message: e.to_string(),
        })??;
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("gepard-local-inference".to_owned())
        .spawn(move || run_worker(model, &rx))
        .map_err(|e| LocalError::Load {
            path: path.clone(),
            message: format!("cannot start the inference thread: {e}"),
        })?;
    let worker = Arc::new(Worker {
        jobs: Mutex::new(tx),
    });
    map.insert(path, Arc::clone(&worker));
    Ok(worker)
}

fn run_worker(mut model: LocalModel, jobs: &mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        // A caller that gave up (dropped its future) no longer needs the answer.
        if job.reply.is_closed() {
            continue;
        }
        let result = model.chat(&job.messages, &job.options);
        let _ = job.reply.send(result);
    }
}
