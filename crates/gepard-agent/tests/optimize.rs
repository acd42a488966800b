//! The glue between the GEPA engine and rollouts: evaluator, reflection adapter, whole runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gepard_agent::optimize::{
    evaluate_rows, optimize, ChatTextModel, OptimizeSpec, RolloutEvaluator, RunModels,
};
use gepard_agent::recipe::Recipe;
use gepard_agent::rollout::RolloutOptions;
use gepard_gepa::{
    CancelToken, Config, EngineError, Evaluator, ModelError, NullSink, RecordingSink, Split,
    TextModel,
};
use gepard_llm::{ChatModel, ChatRequest, ChatResponse, FinishReason, LlmError, Message, Usage};
use serde_json::{json, Value};

/// A deterministic stand-in for a model. Task calls (with a system message): rows whose goal
/// contains "not" need the phrase "negation" in the instructions, and every answer is chatty
/// unless the instructions say "one word". Reflection calls (one user message): the current
/// instruction gains the sentence for the first skill it lacks.
#[derive(Default)]
struct Scripted {
    calls: AtomicUsize,
    /// Goals whose task call fails with a (non-fatal) server error.
    failing_goal: Option<String>,
    /// Every call fails with this (fatal) error.
    fatal: bool,
    /// The task call on this goal is refused as invalid (HTTP 400, e.g. over the context).
    refused_goal: Option<String>,
    /// Every call fails with a server error (after its retries).
    down: bool,
    /// Reflection answers come back cut off at the output token limit.
    cut_off: bool,
    prompts: Mutex<Vec<ChatRequest>>,
}

fn text(content: &str) -> ChatResponse {
    ChatResponse {
        content: Some(content.to_owned()),
        tool_calls: Vec::new(),
        usage: Usage {
            input_tokens: 10,
            output_tokens: 2,
        },
        finish_reason: Some(FinishReason::Stop),
    }
}

#[async_trait]
impl ChatModel for Scripted {
    fn id(&self) -> &str {
        "scripted/model"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.prompts.lock().unwrap().push(request.clone());
        if self.fatal {
            return Err(LlmError::Auth {
                provider: "openai".into(),
                url: "http://127.0.0.1:1/v1/chat/completions".into(),
                status: 401,
                message: "invalid api key".into(),
            });
        }
        if self.down {
            return Err(LlmError::Server {
                provider: "openai".into(),
                url: "http://127.0.0.1:1/v1/chat/completions".into(),
                status: 500,
                attempts: 3,
                message: "internal error".into(),
            });
        }
        let (system, user) = match request.messages.as_slice() {
            [Message::System { content: s }, Message::User { content: u }] => {
                (Some(s.as_str()), u.as_str())
            }
            [Message::User { content: u }] => (None, u.as_str()),
            other => panic!("unexpected conversation {other:?}"),
        };
        let Some(system) = system else {
            let current = user.split("```").nth(1).unwrap().trim();
            let addition = if !current.contains("one word") {
                "Answer with one word."
            } else {
                "Watch for negation."
            };
            let mut answer = text(&format!("Here you go:\n```\n{current} {addition}\n```"));
            if self.cut_off {
                answer.finish_reason = Some(FinishReason::Length);
            }
            return Ok(answer);
        };
        if self.refused_goal.as_deref() == Some(user) {
            return Err(LlmError::InvalidRequest {
                provider: "openai".into(),
                url: "http://127.0.0.1:1/v1/chat/completions".into(),
                status: 400,
                message: "This model's maximum context length is 8192 tokens".into(),
            });
        }
        if self.failing_goal.as_deref() == Some(user) {
            return Err(LlmError::Server {
                provider: "openai".into(),
                url: "http://127.0.0.1:1/v1/chat/completions".into(),
                status: 503,
                attempts: 3,
                message: "overloaded".into(),
            });
        }
        let negative = user.contains("not") || user.contains("awful");
        let flipped = user.contains("not") && !system.contains("negation");
        let label = if negative != flipped {
            "negative"
        } else {
            "positive"
        };
        if system.contains("one word") {
            Ok(text(label))
        } else {
            Ok(text(&format!("The sentiment is {label}.")))
        }
    }
}

fn rows() -> Vec<Value> {
    [
        ("A great film.", "positive"),
        ("An awful film.", "negative"),
        ("This was not good at all.", "negative"),
        ("Lovely.", "positive"),
        ("I did not enjoy it.", "negative"),
        ("Fine acting.", "positive"),
    ]
    .iter()
    .map(|(goal, label)| json!({"goal": goal, "expected_output": label}))
    .collect()
}

fn exact() -> Recipe {
    Recipe::from_spec("exact_match_v1", &Value::Null).unwrap()
}

fn spec(concurrency: usize) -> OptimizeSpec {
    OptimizeSpec {
        seed_instructions: "Classify the sentiment.".into(),
        train: rows(),
        val: rows(),
        recipe: exact(),
        rollout: RolloutOptions::default(),
        config: Config {
            max_metric_calls: Some(60),
            concurrency,
            ..Config::default()
        },
    }
}

#[tokio::test]
async fn a_whole_run_learns_the_instructions_that_fix_every_failure_and_counts_its_usage() {
    let model = Arc::new(Scripted::default());
    let models = RunModels::new(model.clone(), None);
    let sink = RecordingSink::default();
    let outcome = optimize(&spec(4), &models, &sink, &CancelToken::new(), None)
        .await
        .unwrap();
    let r = &outcome.result;
    assert_eq!(r.seed_score, 0.0);
    assert_eq!(r.best_score, 1.0);
    assert_eq!(
        r.best_text,
        "Classify the sentiment. Answer with one word. Watch for negation."
    );
    assert!(r.metric_calls_used <= 60);
    // Every metric call is one task-model call; every reflection one reflection-model call.
    assert_eq!(outcome.usage.task.model_calls, r.metric_calls_used);
    assert_eq!(
        outcome.usage.reflection.model_calls,
        r.counts.reflection_calls
    );
    assert_eq!(
        outcome.usage.total().model_calls,
        model.calls.load(Ordering::SeqCst) as u64,
        "the reflection model defaults to the target model"
    );
    assert_eq!(outcome.usage.task.input_tokens, 10 * r.metric_calls_used);
    assert!(!sink.events().is_empty());
}

#[tokio::test]
async fn concurrency_does_not_change_the_outcome() {
    let one = optimize(
        &spec(1),
        &RunModels::new(Arc::new(Scripted::default()), None),
        &NullSink,
        &CancelToken::new(),
        None,
    )
    .await
    .unwrap();
    let eight = optimize(
        &spec(8),
        &RunModels::new(Arc::new(Scripted::default()), None),
        &NullSink,
        &CancelToken::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(one, eight);
}

#[tokio::test]
async fn the_reflective_record_holds_the_goal_verbatim_the_rendered_output_and_the_feedback() {
    let model = Scripted::default();
    let (train, val, recipe, options) = (rows(), rows(), exact(), RolloutOptions::default());
    let evaluator = RolloutEvaluator::new(&model, &train, &val, &recipe, &options);
    let e = evaluator
        .evaluate("Be brief.", 2, Split::Train, true)
        .await
        .unwrap();
    assert_eq!(e.score, 0.0);
    let record = e.reflective.unwrap();
    assert_eq!(record.inputs, "This was not good at all.");
    assert_eq!(record.generated_outputs, "The sentiment is positive.");
    assert!(
        record.feedback.contains("negative") && record.feedback.contains("The sentiment is"),
        "{}",
        record.feedback
    );
    let untraced = evaluator
        .evaluate("Answer with one word.", 0, Split::Val, false)
        .await
        .unwrap();
    assert_eq!(untraced.score, 1.0);
    assert_eq!(untraced.reflective, None);
}

#[tokio::test]
async fn a_model_error_on_one_example_scores_zero_with_the_error_as_feedback() {
    let model = Scripted {
        failing_goal: Some("Lovely.".into()),
        ..Scripted::default()
    };
    let (train, val, recipe, options) = (rows(), rows(), exact(), RolloutOptions::default());
    let evaluator = RolloutEvaluator::new(&model, &train, &val, &recipe, &options);
    let e = evaluator
        .evaluate("Answer with one word.", 3, Split::Train, true)
        .await
        .unwrap();
    assert_eq!(e.score, 0.0);
    let record = e.reflective.unwrap();
    assert!(record.feedback.contains("HTTP 503"), "{}", record.feedback);
    assert!(
        record.generated_outputs.contains("overloaded"),
        "{}",
        record.generated_outputs
    );
    // The next example is unaffected.
    let next = evaluator
        .evaluate("Answer with one word.", 0, Split::Train, true)
        .await
        .unwrap();
    assert_eq!(next.score, 1.0);
}

/// Runs `model` (which must fail) on 40 validation rows with budget to spare, two calls at a
/// time; the error, which must come from the evaluator.
async fn failed_run_on_forty_rows(model: &Arc<Scripted>) -> gepard_agent::optimize::OptimizeError {
    let mut spec = spec(2);
    spec.val = (0..40)
        .map(|i| json!({"goal": format!("row {i}"), "expected_output": "x"}))
        .collect();
    spec.config.max_metric_calls = Some(1000);
    let err = optimize(
        &spec,
        &RunModels::new(model.clone(), None),
        &NullSink,
        &CancelToken::new(),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err.error, EngineError::Evaluator(_)), "{err:?}");
    err
}

#[tokio::test]
async fn a_run_fatal_model_error_aborts_the_run_with_its_message_after_few_calls() {
    let model = Arc::new(Scripted {
        fatal: true,
        ..Scripted::default()
    });
    let err = failed_run_on_forty_rows(&model).await;
    let message = err.to_string();
    assert!(
        message.contains("rejected the credentials (HTTP 401)")
            && message.contains("invalid api key"),
        "{message}"
    );
    let calls = model.calls.load(Ordering::SeqCst);
    assert!(calls <= 2, "at most the calls already in flight: {calls}");
    assert_eq!(err.usage.task.failed_calls, calls as u64);
}

#[tokio::test]
async fn once_a_fatal_error_is_seen_later_evaluations_fail_without_calling_the_model() {
    let model = Scripted {
        fatal: true,
        ..Scripted::default()
    };
    let (train, val, recipe, options) = (rows(), rows(), exact(), RolloutOptions::default());
    let evaluator = RolloutEvaluator::new(&model, &train, &val, &recipe, &options);
    let first = evaluator
        .evaluate("x", 0, Split::Val, false)
        .await
        .unwrap_err();
    let second = evaluator
        .evaluate("x", 1, Split::Val, false)
        .await
        .unwrap_err();
    assert_eq!(first, second);
    assert_eq!(model.calls.load(Ordering::SeqCst), 1);
    assert_eq!(evaluator.fatal_error(), Some(first.0.as_str()));
}

#[tokio::test]
async fn a_fatal_reflection_error_aborts_the_run() {
    let task = Arc::new(Scripted::default());
    let reflection = Arc::new(Scripted {
        fatal: true,
        ..Scripted::default()
    });
    let err = optimize(
        &spec(2),
        &RunModels::new(task, Some(reflection.clone())),
        &NullSink,
        &CancelToken::new(),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err.error, EngineError::Proposer(_)), "{err:?}");
    assert_eq!(reflection.calls.load(Ordering::SeqCst), 1);
    assert_eq!(err.usage.reflection.failed_calls, 1);
}

#[tokio::test]
async fn the_text_model_sends_one_user_message_and_classifies_errors() {
    let model = Arc::new(Scripted::default());
    let adapter = ChatTextModel::new(model.clone());
    let answer = adapter.complete("```\nOld.\n```\nfeedback").await.unwrap();
    assert!(
        answer.contains("```\nOld. Answer with one word.\n```"),
        "{answer}"
    );
    let sent = model.prompts.lock().unwrap()[0].clone();
    assert_eq!(
        sent.messages,
        vec![Message::user("```\nOld.\n```\nfeedback")]
    );
    let fatal = ChatTextModel::new(Arc::new(Scripted {
        fatal: true,
        ..Scripted::default()
    }));
    assert!(matches!(
        fatal.complete("x").await,
        Err(ModelError::Fatal(m)) if m.contains("401")
    ));
}

#[tokio::test]
async fn fixed_instructions_are_scored_on_a_row_set_in_row_order() {
    let model = Scripted::default();
    let scored = evaluate_rows(
        &model,
        "Answer with one word.",
        &rows(),
        &exact(),
        &RolloutOptions::default(),
        3,
    )
    .await
    .unwrap();
    assert_eq!(scored.scores, vec![1.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    assert!((scored.mean - 4.0 / 6.0).abs() < 1e-12);
    let fatal = Scripted {
        fatal: true,
        ..Scripted::default()
    };
    let err = evaluate_rows(
        &fatal,
        "x",
        &rows(),
        &exact(),
        &RolloutOptions::default(),
        1,
    )
    .await
    .unwrap_err();
    assert!(err.is_fatal_for_run());
}

#[tokio::test]
async fn a_request_refused_as_invalid_on_one_example_scores_it_zero_and_the_run_goes_on() {
    let model = Arc::new(Scripted {
        refused_goal: Some("Lovely.".into()),
        ..Scripted::default()
    });
    let outcome = optimize(
        &spec(2),
        &RunModels::new(model, None),
        &NullSink,
        &CancelToken::new(),
        None,
    )
    .await
    .unwrap();
    // Five of six validation rows can be right; the refused one never.
    assert!((outcome.result.best_score - 5.0 / 6.0).abs() < 1e-12);
    assert_eq!(
        outcome.result.best_text,
        "Classify the sentiment. Answer with one word. Watch for negation."
    );
    assert!(outcome.usage.task.failed_calls > 0);
}

#[tokio::test]
async fn a_model_failing_every_call_fails_the_run_with_the_last_error_after_ten_calls() {
    let model = Arc::new(Scripted {
        down: true,
        ..Scripted::default()
    });
    let err = failed_run_on_forty_rows(&model).await;
    let message = err.to_string();
    assert!(
        message.contains("the last 10 calls of the target model all failed")
            && message.contains("HTTP 500")
            && message.contains("internal error"),
        "{message}"
    );
    let calls = model.calls.load(Ordering::SeqCst);
    assert!(
        (10..=11).contains(&calls),
        "ten, and at most one more already in flight: {calls}"
    );
}

#[tokio::test]
async fn a_call_that_succeeds_between_failures_starts_the_count_again() {
    let model = Scripted {
        failing_goal: Some("Lovely.".into()),
        ..Scripted::default()
    };
    let (train, val, recipe, options) = (rows(), rows(), exact(), RolloutOptions::default());
    let evaluator = RolloutEvaluator::new(&model, &train, &val, &recipe, &options);
    for _ in 0..2 {
        for _ in 0..9 {
            let failed = evaluator.evaluate("x", 3, Split::Val, false).await.unwrap();
            assert_eq!(failed.score, 0.0);
        }
        evaluator.evaluate("x", 0, Split::Val, false).await.unwrap();
    }
    for _ in 0..9 {
        evaluator.evaluate("x", 3, Split::Val, false).await.unwrap();
    }
    let tenth = evaluator
        .evaluate("x", 3, Split::Val, false)
        .await
        .unwrap_err();
    assert!(tenth.0.contains("HTTP 503"), "{tenth:?}");
    assert_eq!(evaluator.fatal_error(), Some(tenth.0.as_str()));
}

#[tokio::test]
async fn a_reflection_answer_cut_off_at_the_token_limit_is_never_adopted() {
    let task = Arc::new(Scripted::default());
    let reflection = Arc::new(Scripted {
        cut_off: true,
        ..Scripted::default()
    });
    let adapter = ChatTextModel::new(reflection.clone());
    // Whole-looking (both fences are there), but the model says it stopped at its limit.
    assert!(matches!(
        adapter.complete("```\nOld.\n```\nfeedback").await,
        Err(ModelError::Failed(m)) if m.contains("cut off at its output token limit")
    ));
    let sink = RecordingSink::default();
    let outcome = optimize(
        &spec(2),
        &RunModels::new(task, Some(reflection.clone())),
        &sink,
        &CancelToken::new(),
        None,
    )
    .await
    .unwrap();
    // Every proposal was discarded (not counted as failed calls: the run went on to its
    // budget), and the seed is still the best.
    let r = &outcome.result;
    assert_eq!(r.best_candidate, 0);
    assert_eq!(r.candidates.len(), 1);
    assert_eq!(r.counts.accepted, 0);
    assert!(r.counts.proposals_rejected > 5, "{:?}", r.counts);
    assert!(
        !sink
            .events()
            .iter()
            .any(|e| format!("{e:?}").contains("Accepted")),
        "nothing was adopted"
    );
}

#[tokio::test]
async fn a_checkpoint_that_does_not_fit_is_refused_without_a_result_so_far() {
    let sink = RecordingSink::default();
    optimize(
        &spec(2),
        &RunModels::new(Arc::new(Scripted::default()), None),
        &sink,
        &CancelToken::new(),
        None,
    )
    .await
    .unwrap();
    let mut checkpoint = sink
        .events()
        .into_iter()
        .find_map(|e| match e {
            gepard_gepa::Event::Checkpoint { checkpoint, .. } => Some(*checkpoint),
            _ => None,
        })
        .unwrap();
    // Points at a candidate that does not exist: reading a result from it would panic.
    checkpoint.best = checkpoint.candidates.len() + 5;
    let err = optimize(
        &spec(2),
        &RunModels::new(Arc::new(Scripted::default()), None),
        &NullSink,
        &CancelToken::new(),
        Some(checkpoint),
    )
    .await
    .unwrap_err();
    assert!(matches!(err.error, EngineError::Checkpoint(_)), "{err:?}");
    assert!(err.best_so_far.is_none());
}

#[tokio::test]
async fn rows_refused_as_invalid_side_by_side_do_not_fail_a_run_whose_model_answers_the_others() {
    // Twelve rows in a row over the context length, after rows the model answers.
    let mut val = rows();
    val.extend((0..12).map(|i| json!({"goal": "too long", "expected_output": format!("x{i}")})));
    let model = Arc::new(Scripted {
        refused_goal: Some("too long".into()),
        ..Scripted::default()
    });
    let mut spec = spec(1);
    spec.val = val;
    let outcome = optimize(
        &spec,
        &RunModels::new(model, None),
        &NullSink,
        &CancelToken::new(),
        None,
    )
    .await
    .unwrap();
    assert!(outcome.usage.task.failed_calls >= 12);
    // When the model has never answered, the same refusals say the request itself is wrong.
    let model = Arc::new(Scripted {
        refused_goal: Some("too long".into()),
        ..Scripted::default()
    });
    let mut refused_first = spec.clone();
    refused_first.val.rotate_left(6);
    let err = optimize(
        &refused_first,
        &RunModels::new(model, None),
        &NullSink,
        &CancelToken::new(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("the last 10 calls of the target model all failed"),
        "{err}"
    );
}
