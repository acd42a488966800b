//! Whole runs of the engine against a scripted world: the result is pinned, independent of
//! concurrency, reproducible from any checkpoint, within budget, and stoppable at once.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::{HangingEvaluator, HangingProposer, SkillEvaluator, SkillProposer, SEED_TEXT};
use gepard_gepa::{
    CancelToken, CandidateSelection, Checkpoint, Config, Engine, EngineError, Evaluation,
    Evaluator, Event, FatalError, FrontierType, LlmReflector, ModelError, NullSink, RecordingSink,
    RunResult, SkipReason, Split, StopReason, TextModel,
};

const TRAIN: usize = 12;
const VAL: usize = 8;

fn config() -> Config {
    Config {
        seed: 7,
        max_metric_calls: Some(200),
        concurrency: 4,
        ..Config::default()
    }
}

async fn run_with(config: Config) -> (RunResult, Vec<Event>) {
    let engine = Engine::new(config, SEED_TEXT, TRAIN, VAL).unwrap();
    let sink = RecordingSink::default();
    let result = engine
        .run(
            &SkillEvaluator::default(),
            &SkillProposer::default(),
            &sink,
            &CancelToken::new(),
            None,
        )
        .await
        .unwrap();
    (result, sink.events())
}

#[tokio::test]
async fn a_scripted_run_produces_the_pinned_result() {
    let (result, _) = run_with(config()).await;
    // Sanity before the snapshot: the run did real work of every kind.
    assert!(result.counts.accepted >= 2, "{:?}", result.counts);
    assert!(result.counts.rejected + result.counts.proposals_rejected >= 1);
    assert!(result.best_score > result.seed_score);
    insta::assert_json_snapshot!(result);
}

#[tokio::test]
async fn the_objective_frontier_always_extends_a_candidate_with_the_best_mean() {
    let (result, events) = run_with(Config {
        frontier_type: FrontierType::Objective,
        ..config()
    })
    .await;
    assert!(result.counts.accepted >= 2, "{:?}", result.counts);
    let mut means: Vec<f64> = Vec::new();
    let mut parents = 0;
    for e in &events {
        match e {
            Event::IterationStarted {
                parent,
                parent_val_score,
                ..
            } => {
                let best = means.iter().copied().fold(f64::MIN, f64::max);
                assert_eq!(*parent_val_score, best, "parent {parent} of {means:?}");
                parents += 1;
            }
            Event::ValsetEvaluated {
                candidate,
                val_score,
                ..
            } => {
                assert_eq!(*candidate, means.len(), "candidates arrive in order");
                means.push(*val_score);
            }
            Event::FrontUpdated { frontier, .. } => {
                // One front, so pruning leaves one of the candidates tied for the best mean.
                let best = means.iter().copied().fold(f64::MIN, f64::max);
                assert_eq!(frontier.len(), 1, "{frontier:?} of {means:?}");
                assert_eq!(means[frontier[0]], best, "{frontier:?} of {means:?}");
            }
            _ => {}
        }
    }
    assert_eq!(parents, result.iterations);
    // Only a best-mean candidate is on an objective frontier.
    let on: Vec<_> = result.candidates.iter().filter(|c| c.on_frontier).collect();
    assert_eq!(on.len(), 1, "{:?}", result.candidates);
    assert_eq!(on[0].val_score, result.best_score);
}

#[tokio::test]
async fn every_frontier_type_runs_to_the_budget_and_cartesian_is_instance_with_one_objective() {
    let mut results = Vec::new();
    for frontier_type in FrontierType::ALL {
        let (result, _) = run_with(Config {
            frontier_type,
            ..config()
        })
        .await;
        assert!(result.metric_calls_used <= 200, "{frontier_type:?}");
        assert!(result.best_score >= result.seed_score, "{frontier_type:?}");
        results.push(result);
    }
    assert_eq!(results[3], results[0], "cartesian equals instance");
    assert_eq!(
        results[0],
        run_with(config()).await.0,
        "instance is the default"
    );
}

#[tokio::test]
async fn concurrency_never_changes_the_outcome() {
    let mut results = Vec::new();
    for concurrency in [1, 8] {
        let engine = Engine::new(
            Config {
                concurrency,
                ..config()
            },
            SEED_TEXT,
            TRAIN,
            VAL,
        )
        .unwrap();
        let evaluator = SkillEvaluator {
            shuffle_completion: true,
            ..SkillEvaluator::default()
        };
        let result = engine
            .run(
                &evaluator,
                &SkillProposer::default(),
                &NullSink,
                &CancelToken::new(),
                None,
            )
            .await
            .unwrap();
        results.push(result);
    }
    assert_eq!(results[0], results[1]);
    assert!(results[0].candidates.len() > 1);
}

/// Runs until checkpoint `k` is emitted, then cancels; returns that checkpoint.
async fn checkpoint_at(config: &Config, k: u64) -> Option<Checkpoint> {
    let engine = Engine::new(config.clone(), SEED_TEXT, TRAIN, VAL).unwrap();
    let cancel = CancelToken::new();
    let caught: Mutex<Option<Checkpoint>> = Mutex::new(None);
    let sink = |event: &Event| {
        if let Event::Checkpoint {
            iteration,
            checkpoint,
        } = event
        {
            if *iteration == k {
                *caught.lock().unwrap() = Some((**checkpoint).clone());
                cancel.cancel();
            }
        }
    };
    let result = engine
        .run(
            &SkillEvaluator::default(),
            &SkillProposer::default(),
            &sink,
            &cancel,
            None,
        )
        .await
        .unwrap();
    let checkpoint = caught.into_inner().unwrap();
    if checkpoint.is_some() {
        assert_eq!(result.stop_reason, StopReason::Cancelled);
    }
    checkpoint
}

#[tokio::test]
async fn resuming_from_any_checkpoint_reproduces_the_uninterrupted_run() {
    for config in [
        config(),
        Config {
            seed: 3,
            candidate_selection: CandidateSelection::EpsilonGreedy { epsilon: 0.3 },
            minibatch_size: 5,
            max_metric_calls: Some(260),
            ..config()
        },
    ] {
        let (uninterrupted, _) = run_with(config.clone()).await;
        assert!(uninterrupted.iterations >= 5);
        let engine = Engine::new(config.clone(), SEED_TEXT, TRAIN, VAL).unwrap();
        for k in 0..=uninterrupted.iterations {
            let checkpoint = checkpoint_at(&config, k)
                .await
                .unwrap_or_else(|| panic!("no checkpoint {k}"));
            assert_eq!(checkpoint.iterations, k);
            let restored = Checkpoint::from_json(&checkpoint.to_json()).unwrap();
            assert_eq!(restored, checkpoint, "JSON round trip at {k}");
            let resumed = engine
                .run(
                    &SkillEvaluator::default(),
                    &SkillProposer::default(),
                    &NullSink,
                    &CancelToken::new(),
                    Some(restored),
                )
                .await
                .unwrap();
            assert_eq!(resumed, uninterrupted, "resumed from checkpoint {k}");
        }
    }
}

#[tokio::test]
async fn a_checkpoint_from_another_setup_is_refused() {
    let checkpoint = checkpoint_at(&config(), 1).await.unwrap();
    let other = Engine::new(config(), SEED_TEXT, TRAIN + 1, VAL).unwrap();
    let err = other
        .run(
            &SkillEvaluator::default(),
            &SkillProposer::default(),
            &NullSink,
            &CancelToken::new(),
            Some(checkpoint.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Checkpoint(_)), "{err}");
    let other_seed = Engine::new(config(), "Another seed.", TRAIN, VAL).unwrap();
    let err = other_seed
        .run(
            &SkillEvaluator::default(),
            &SkillProposer::default(),
            &NullSink,
            &CancelToken::new(),
            Some(checkpoint),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Checkpoint(_)), "{err}");
}

#[tokio::test]
async fn metric_calls_are_counted_per_candidate_and_example_and_never_exceed_the_budget() {
    for budget in [VAL as u64, 20, 29, 30, 57, 100, 163] {
        let (result, events) = run_with(Config {
            max_metric_calls: Some(budget),
            ..config()
        })
        .await;
        assert!(result.metric_calls_used <= budget, "budget {budget}");
        // Recount from the events: seed pass, then per iteration the parent minibatch, the child
        // minibatch when a child was proposed, and the validation set when it was accepted.
        let mut expected = VAL as u64;
        for event in &events {
            match event {
                Event::IterationStarted { minibatch, .. } => expected += minibatch.len() as u64,
                Event::CandidateRejected { child_scores, .. } => {
                    expected += child_scores.len() as u64;
                }
                Event::CandidateAccepted { child_scores, .. } => {
                    expected += child_scores.len() as u64 + VAL as u64;
                }
                _ => {}
            }
        }
        assert_eq!(result.metric_calls_used, expected, "budget {budget}");
        let needs = 2 * 3 + VAL as u64;
        assert_eq!(
            result.stop_reason,
            StopReason::MaxMetricCalls {
                used: result.metric_calls_used,
                limit: budget,
                iteration_needs: needs,
            }
        );
        assert!(
            budget - result.metric_calls_used < needs,
            "stopped too soon"
        );
        let last_budget = events.iter().rev().find_map(|e| match e {
            Event::BudgetUpdated {
                metric_calls_used,
                metric_calls_remaining,
            } => Some((*metric_calls_used, *metric_calls_remaining)),
            _ => None,
        });
        assert_eq!(
            last_budget,
            Some((
                result.metric_calls_used,
                Some(budget - result.metric_calls_used)
            ))
        );
    }
}

#[tokio::test]
async fn every_validation_score_follows_the_budget_update_that_paid_for_it() {
    let (_, events) = run_with(config()).await;
    let mut used = 0;
    let mut validated = 0;
    for event in &events {
        match event {
            Event::BudgetUpdated {
                metric_calls_used, ..
            } => used = *metric_calls_used,
            Event::ValsetEvaluated { candidate, .. } => {
                // The seed's pass, then each accepted child's: the calls that produced the
                // score are already counted when a watcher sees it.
                validated += VAL as u64;
                assert!(
                    used >= validated,
                    "candidate {candidate} scored with only {used} calls counted"
                );
            }
            _ => {}
        }
    }
    assert!(validated > VAL as u64, "children were validated");
}

#[tokio::test]
async fn acceptance_requires_a_strictly_better_minibatch_sum() {
    let (result, events) = run_with(config()).await;
    let mut accepted = 0;
    let mut rejected = 0;
    for event in &events {
        match event {
            Event::CandidateAccepted {
                parent_scores,
                child_scores,
                candidate,
                parent,
                ..
            } => {
                accepted += 1;
                assert!(child_scores.iter().sum::<f64>() > parent_scores.iter().sum::<f64>());
                assert_eq!(result.candidates[*candidate].parents, vec![*parent]);
            }
            Event::CandidateRejected {
                parent_scores,
                child_scores,
                ..
            } => {
                rejected += 1;
                assert!(child_scores.iter().sum::<f64>() <= parent_scores.iter().sum::<f64>());
            }
            _ => {}
        }
    }
    assert!(accepted > 0 && rejected > 0, "{accepted} / {rejected}");
    assert_eq!(result.counts.accepted, accepted);
    assert_eq!(result.counts.rejected, rejected);
    assert_eq!(result.candidates.len() as u64, 1 + accepted);
}

#[tokio::test]
async fn the_best_candidate_has_the_highest_val_mean_and_the_curve_tracks_improvements() {
    let (result, _) = run_with(config()).await;
    let top = result
        .candidates
        .iter()
        .map(|c| c.val_score)
        .fold(f64::MIN, f64::max);
    let first_top = result
        .candidates
        .iter()
        .position(|c| c.val_score == top)
        .unwrap();
    assert_eq!(result.best_candidate, first_top);
    assert_eq!(result.best_score, top);
    assert_eq!(result.best_text, result.candidates[first_top].text);
    assert_eq!(result.curve[0], (VAL as u64, result.seed_score));
    assert_eq!(
        *result.curve.last().unwrap(),
        (result.candidates[first_top].discovered_at_metric_calls, top)
    );
    assert!(result
        .curve
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
}

#[tokio::test]
async fn unusable_proposals_are_counted_and_never_adopted() {
    struct Unfenced;
    #[async_trait]
    impl TextModel for Unfenced {
        async fn complete(&self, _prompt: &str) -> Result<String, ModelError> {
            Ok("Sure! Here it is:\n```\nUse alpha and beta and".into())
        }
    }
    let engine = Engine::new(
        Config {
            max_trials: Some(6),
            ..config()
        },
        SEED_TEXT,
        TRAIN,
        VAL,
    )
    .unwrap();
    let sink = RecordingSink::default();
    let result = engine
        .run(
            &SkillEvaluator::default(),
            &LlmReflector::new(Unfenced),
            &sink,
            &CancelToken::new(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(result.candidates.len(), 1);
    assert_eq!(result.best_text, SEED_TEXT);
    assert_eq!(result.stop_reason, StopReason::MaxTrials { trials: 6 });
    assert_eq!(result.counts.proposals_rejected, 6);
    assert_eq!(result.counts.reflection_calls, 6);
    // Only the parent minibatches were paid for.
    assert_eq!(result.metric_calls_used, VAL as u64 + 6 * 3);
    let rejections = sink
        .events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::IterationSkipped {
                    reason: SkipReason::ProposalRejected { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(rejections, 6);
}

#[tokio::test]
async fn the_reflection_model_sees_the_parent_text_and_the_minibatch_feedback() {
    struct Recorder(Arc<Mutex<Vec<String>>>);
    #[async_trait]
    impl TextModel for Recorder {
        async fn complete(&self, prompt: &str) -> Result<String, ModelError> {
            self.0.lock().unwrap().push(prompt.to_owned());
            Ok("```\nSolve the task. Use alpha.\n```".into())
        }
    }
    let prompts = Arc::new(Mutex::new(Vec::new()));
    let engine = Engine::new(
        Config {
            max_trials: Some(1),
            ..config()
        },
        SEED_TEXT,
        TRAIN,
        VAL,
    )
    .unwrap();
    let sink = RecordingSink::default();
    engine
        .run(
            &SkillEvaluator::default(),
            &LlmReflector::new(Recorder(prompts.clone())),
            &sink,
            &CancelToken::new(),
            None,
        )
        .await
        .unwrap();
    let minibatch = sink
        .events()
        .into_iter()
        .find_map(|e| match e {
            Event::IterationStarted { minibatch, .. } => Some(minibatch),
            _ => None,
        })
        .unwrap();
    let prompts = prompts.lock().unwrap();
    assert_eq!(prompts.len(), 1);
    assert!(prompts[0].contains(&format!("```\n{SEED_TEXT}\n```")));
    for id in minibatch {
        assert!(prompts[0].contains(&format!("\nTrain input #{id}\n")));
    }
    assert!(prompts[0].contains("Missing skills"));
}

struct Perfect;

#[async_trait]
impl Evaluator for Perfect {
    async fn evaluate(
        &self,
        _candidate: &str,
        _example: usize,
        _split: Split,
        _capture_traces: bool,
    ) -> Result<Evaluation, FatalError> {
        Ok(Evaluation {
            score: 1.0,
            reflective: Some(gepard_gepa::ReflectiveRecord {
                inputs: "x".into(),
                generated_outputs: "y".into(),
                feedback: "Correct.".into(),
            }),
        })
    }
}

#[tokio::test]
async fn perfect_minibatches_are_skipped_unless_configured_otherwise() {
    for skip in [true, false] {
        let engine = Engine::new(
            Config {
                max_trials: Some(4),
                skip_perfect_score: skip,
                ..config()
            },
            SEED_TEXT,
            TRAIN,
            VAL,
        )
        .unwrap();
        let result = engine
            .run(
                &Perfect,
                &SkillProposer::default(),
                &NullSink,
                &CancelToken::new(),
                None,
            )
            .await
            .unwrap();
        if skip {
            assert_eq!(result.counts.skipped, 4);
            assert_eq!(result.counts.reflection_calls, 0);
        } else {
            assert_eq!(result.counts.skipped, 0);
            assert_eq!(result.counts.reflection_calls, 4);
        }
    }
}

#[tokio::test]
async fn a_run_without_improvement_stops_after_the_configured_trials() {
    let (result, _) = run_with(Config {
        max_trials_without_improvement: Some(2),
        max_metric_calls: None,
        ..config()
    })
    .await;
    assert_eq!(
        result.stop_reason,
        StopReason::MaxTrialsWithoutImprovement { trials: 2 }
    );
    let last_improvement = result
        .candidates
        .iter()
        .filter(|c| c.index == result.best_candidate)
        .map(|c| c.iteration)
        .next()
        .unwrap();
    assert_eq!(result.iterations, last_improvement + 2);
}

#[tokio::test]
async fn a_fatal_evaluator_error_aborts_the_run_with_its_message() {
    let engine = Engine::new(config(), SEED_TEXT, TRAIN, VAL).unwrap();
    let evaluator = SkillEvaluator {
        fatal_on_call: Some(VAL as u64 + 2),
        ..SkillEvaluator::default()
    };
    let sink = RecordingSink::default();
    let err = engine
        .run(
            &evaluator,
            &SkillProposer::default(),
            &sink,
            &CancelToken::new(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::Evaluator("invalid API key".into()));
    assert!(matches!(
        sink.events().last(),
        Some(Event::Error { message }) if message.contains("invalid API key")
    ));
}

#[tokio::test]
async fn cancelling_stops_a_hanging_evaluation_and_keeps_the_best_so_far() {
    let hung = Arc::new(tokio::sync::Notify::new());
    let evaluator = HangingEvaluator {
        inner: SkillEvaluator::default(),
        hang_from: VAL as u64 + 2,
        hung: hung.clone(),
    };
    let engine = Engine::new(
        Config {
            concurrency: 1,
            ..config()
        },
        SEED_TEXT,
        TRAIN,
        VAL,
    )
    .unwrap();
    let sink = RecordingSink::default();
    let cancel = CancelToken::new();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            hung.notified().await;
            cancel.cancel();
        })
    };
    let result = engine
        .run(&evaluator, &SkillProposer::default(), &sink, &cancel, None)
        .await
        .unwrap();
    canceller.await.unwrap();
    assert_eq!(result.stop_reason, StopReason::Cancelled);
    assert_eq!(result.iterations, 0);
    assert_eq!(result.candidates.len(), 1);
    // The seed pass and the one parent evaluation that completed before the hang.
    assert_eq!(result.metric_calls_used, VAL as u64 + 1);
    assert_eq!(evaluator.inner.calls.load(Ordering::SeqCst), VAL as u64 + 1);
    let last_budget = sink.events().into_iter().rev().find_map(|e| match e {
        Event::BudgetUpdated {
            metric_calls_used, ..
        } => Some(metric_calls_used),
        _ => None,
    });
    assert_eq!(
        last_budget,
        Some(VAL as u64 + 1),
        "the last budget event counts the evaluation paid for before the cancel"
    );
}

#[tokio::test]
async fn cancelling_stops_a_hanging_reflection() {
    let started = Arc::new(tokio::sync::Notify::new());
    let proposer = HangingProposer {
        started: started.clone(),
    };
    let engine = Engine::new(config(), SEED_TEXT, TRAIN, VAL).unwrap();
    let cancel = CancelToken::new();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            started.notified().await;
            cancel.cancel();
        })
    };
    let result = engine
        .run(
            &SkillEvaluator::default(),
            &proposer,
            &NullSink,
            &cancel,
            None,
        )
        .await
        .unwrap();
    canceller.await.unwrap();
    assert_eq!(result.stop_reason, StopReason::Cancelled);
    assert_eq!(result.metric_calls_used, VAL as u64 + 3);
    assert_eq!(
        result.counts.reflection_calls, 0,
        "the abandoned iteration is not committed"
    );
}

#[tokio::test]
async fn cancelling_during_the_seed_pass_reports_that_there_is_no_result() {
    let cancel = CancelToken::new();
    cancel.cancel();
    let engine = Engine::new(config(), SEED_TEXT, TRAIN, VAL).unwrap();
    let err = engine
        .run(
            &SkillEvaluator::default(),
            &SkillProposer::default(),
            &NullSink,
            &cancel,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::StoppedBeforeSeed(StopReason::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn the_runtime_limit_stops_the_run() {
    // Paused time: the hanging evaluation lets the clock jump to the deadline, so nothing here
    // depends on how fast the machine is.
    let evaluator = HangingEvaluator {
        inner: SkillEvaluator::default(),
        hang_from: VAL as u64 + 4,
        hung: Arc::new(tokio::sync::Notify::new()),
    };
    let engine = Engine::new(
        Config {
            concurrency: 1,
            max_runtime: Some(std::time::Duration::from_secs(3600)),
            max_metric_calls: None,
            ..config()
        },
        SEED_TEXT,
        TRAIN,
        VAL,
    )
    .unwrap();
    let result = engine
        .run(
            &evaluator,
            &SkillProposer::default(),
            &NullSink,
            &CancelToken::new(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(result.stop_reason, StopReason::MaxRuntime);
    assert_eq!(result.metric_calls_used, VAL as u64 + 3);
}
