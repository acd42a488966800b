//! A whole GEPA run with no API key and no network: the target model is
//! `local/smollm2-135m-instruct`, the reflection strategy is `builtin/rules`, the task is a tiny
//! sentiment-labelling set scored by exact match with gepard's feedback wording.
//!
//! `cargo run --release -p gepard-local --example offline_run [-- MAX_METRIC_CALLS]`

use std::sync::Arc;

use async_trait::async_trait;
use gepard_gepa::{
    CancelToken, Config, Engine, Evaluation, Evaluator, FatalError, NullSink, ReflectiveRecord,
    Split,
};
use gepard_llm::{ChatModel, ChatRequest, Message, ModelRegistry};
use gepard_local::{LocalConfig, RulesProposer};

const TRAIN: &[(&str, &str)] = &[
    ("The food was cold and the waiter was rude.", "negative"),
    (
        "Absolutely wonderful stay, the staff were lovely.",
        "positive",
    ),
    ("The package arrived on Tuesday.", "neutral"),
    ("Worst purchase I have made this year.", "negative"),
    ("I would happily recommend this to a friend.", "positive"),
    ("The meeting is scheduled for 3 pm.", "neutral"),
];

const VAL: &[(&str, &str)] = &[
    ("This phone broke after two days.", "negative"),
    (
        "A delightful little film, I smiled all the way through.",
        "positive",
    ),
    ("The store opens at nine.", "neutral"),
    ("Great value and fast shipping!", "positive"),
    ("Never again. Complete waste of money.", "negative"),
    ("The report has twelve pages.", "neutral"),
];

struct Labeller {
    model: Arc<dyn ChatModel>,
}

#[async_trait]
impl Evaluator for Labeller {
    async fn evaluate(
        &self,
        candidate: &str,
        example: usize,
        split: Split,
        capture_traces: bool,
    ) -> Result<Evaluation, FatalError> {
        let (input, expected) = match split {
            Split::Train => TRAIN[example],
            Split::Val => VAL[example],
        };
        let mut request = ChatRequest::new(vec![
            Message::system(candidate),
            Message::user(format!("Review: {input}")),
        ]);
        request.max_tokens = Some(12);
        let answer = self
            .model
            .chat(&request)
            .await
            .map_err(|e| FatalError(e.to_string()))?;
        let got = answer.content.unwrap_or_default();
        let got = got.trim();
        if std::env::var_os("OFFLINE_RUN_VERBOSE").is_some() {
            eprintln!("[{split:?} {example}] {got:?} (expected {expected:?})");
        }
        let (score, feedback) = if got == expected {
            (1.0, format!("Correct: the answer is exactly '{expected}'."))
        } else {
            (
                0.0,
                format!("Incorrect. Expected exactly '{expected}' and nothing else; got '{got}'."),
            )
        };
        Ok(Evaluation {
            score,
            reflective: capture_traces.then(|| ReflectiveRecord {
                inputs: format!("Review: {input}"),
                generated_outputs: got.to_owned(),
                feedback,
            }),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let budget: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let registry = ModelRegistry::empty();
    gepard_local::register(&registry, LocalConfig::default());
    let model = registry.resolve("local/smollm2-135m-instruct")?;
    let config = Config {
        max_metric_calls: Some(budget),
        concurrency: 2,
        ..Config::default()
    };
    let seed = "Classify the sentiment of the review.";
    let engine = Engine::new(config, seed, TRAIN.len(), VAL.len())?;
    let result = engine
        .run(
            &Labeller { model },
            &RulesProposer::new(),
            &NullSink,
            &CancelToken::new(),
            None,
        )
        .await?;
    println!(
        "seed score {:.3} -> best score {:.3} after {} metric calls, {} iterations, {} candidates ({:?})",
        result.seed_score,
        result.best_score,
        result.metric_calls_used,
        result.iterations,
        result.candidates.len(),
        result.stop_reason
    );
    println!("best instruction:\n{}", result.best_text);
    println!("usage: {:?}", registry.usage().snapshot());
    Ok(())
}
