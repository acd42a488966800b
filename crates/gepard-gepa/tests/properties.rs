//! Property tests of GEPA's bookkeeping: over generated worlds, sizes, budgets and strategies,
//! every checkpoint and every result keeps the fronts, the best candidate, the budget and the
//! tallies consistent with each other.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use async_trait::async_trait;
use common::{fnv, SkillEvaluator, SkillProposer, SEED_TEXT};
use gepard_gepa::{
    best_index, CancelToken, CandidateSelection, Checkpoint, Config, Engine, Evaluation, Evaluator,
    Event, FatalError, Front, Fronts, ReflectiveRecord, Split,
};
use proptest::prelude::*;

/// Scores in {0, 0.5, 1} from a hash of (text, example): many ties, no structure.
struct NoisyEvaluator;

#[async_trait]
impl Evaluator for NoisyEvaluator {
    async fn evaluate(
        &self,
        candidate: &str,
        example: usize,
        split: Split,
        capture_traces: bool,
    ) -> Result<Evaluation, FatalError> {
        let h = fnv(&[candidate, &format!("{split:?}{example}")]);
        let score = (h % 3) as f64 / 2.0;
        Ok(Evaluation {
            score,
            reflective: capture_traces.then(|| ReflectiveRecord {
                inputs: format!("input {example}"),
                generated_outputs: "out".into(),
                feedback: if score < 1.0 {
                    "Incorrect. Missing skills: alpha, delta.".into()
                } else {
                    "Correct.".into()
                },
            }),
        })
    }
}

fn check_state(cp: &Checkpoint, budget: u64, val: usize) -> Result<(), TestCaseError> {
    prop_assert!(cp.metric_calls <= budget, "budget exceeded");
    prop_assert_eq!(cp.fronts.0.len(), val);
    for (e, front) in cp.fronts.0.iter().enumerate() {
        let best = cp
            .candidates
            .iter()
            .map(|c| c.val_scores[e])
            .fold(f64::MIN, f64::max);
        let members: BTreeSet<usize> = cp
            .candidates
            .iter()
            .filter(|c| c.val_scores[e] == best)
            .map(|c| c.index)
            .collect();
        prop_assert_eq!(front.best, best, "front {} best", e);
        prop_assert_eq!(&front.members, &members, "front {} members", e);
    }
    let means: Vec<f64> = cp.candidates.iter().map(|c| c.val_score).collect();
    prop_assert_eq!(cp.best, best_index(&means));
    for (i, c) in cp.candidates.iter().enumerate() {
        prop_assert_eq!(c.index, i);
        prop_assert!(c.parents.iter().all(|&p| p < i));
        let mean = c.val_scores.iter().sum::<f64>() / val as f64;
        prop_assert_eq!(c.val_score, mean);
    }
    prop_assert!(cp
        .candidates
        .windows(2)
        .all(|w| w[0].discovered_at_metric_calls < w[1].discovered_at_metric_calls));
    let counts = cp.counts;
    prop_assert_eq!(counts.accepted as usize, cp.candidates.len() - 1);
    prop_assert_eq!(
        cp.iterations,
        counts.accepted + counts.rejected + counts.skipped + counts.proposals_rejected
    );
    prop_assert!(cp
        .curve
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    prop_assert_eq!(cp.curve.last().map(|p| p.1), Some(means[cp.best]));
    Ok(())
}

fn selection() -> impl Strategy<Value = CandidateSelection> {
    prop_oneof![
        Just(CandidateSelection::Pareto),
        Just(CandidateSelection::CurrentBest),
        (0.0..=1.0f64).prop_map(|epsilon| CandidateSelection::EpsilonGreedy { epsilon }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn bookkeeping_stays_consistent_and_within_budget(
        train in 1usize..15,
        val in 1usize..10,
        minibatch_size in 1usize..5,
        seed in any::<u64>(),
        extra_budget in 0u64..250,
        candidate_selection in selection(),
        skip_perfect_score in any::<bool>(),
        noisy in any::<bool>(),
    ) {
        let budget = val as u64 + extra_budget;
        let config = Config {
            seed,
            max_metric_calls: Some(budget),
            minibatch_size,
            candidate_selection,
            skip_perfect_score,
            concurrency: 3,
            ..Config::default()
        };
        let engine = Engine::new(config, SEED_TEXT, train, val).unwrap();
        let checkpoints: Mutex<Vec<Checkpoint>> = Mutex::new(Vec::new());
        let sink = |e: &Event| {
            if let Event::Checkpoint { checkpoint, .. } = e {
                checkpoints.lock().unwrap().push((**checkpoint).clone());
            }
        };
        let evaluator: Box<dyn Evaluator> = if noisy {
            Box::new(NoisyEvaluator)
        } else {
            Box::new(SkillEvaluator::default())
        };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let result = runtime
            .block_on(engine.run(
                evaluator.as_ref(),
                &SkillProposer::default(),
                &sink,
                &CancelToken::new(),
                None,
            ))
            .unwrap();

        let checkpoints = checkpoints.into_inner().unwrap();
        prop_assert_eq!(checkpoints.len() as u64, result.iterations + 1);
        for (k, cp) in checkpoints.iter().enumerate() {
            prop_assert_eq!(cp.iterations, k as u64);
            check_state(cp, budget, val)?;
        }
        prop_assert!(checkpoints.windows(2).all(|w| w[0].metric_calls < w[1].metric_calls));
        let last = checkpoints.last().unwrap();
        prop_assert_eq!(result.metric_calls_used, last.metric_calls);
        prop_assert!(result.metric_calls_used <= budget);
        let worst = 2 * minibatch_size as u64 + val as u64;
        prop_assert!(budget - result.metric_calls_used < worst, "stopped with budget to spare");
        // The frontier is what Pareto selection can draw: the undominated candidates, which
        // still cover every example's front.
        let means: Vec<f64> = last.candidates.iter().map(|c| c.val_score).collect();
        let frontier: Vec<usize> = last
            .fronts
            .undominated_weights(&means)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        for c in &result.candidates {
            prop_assert_eq!(c.on_frontier, frontier.contains(&c.index));
        }
        prop_assert_eq!(result.frontier_size, frontier.len());
        for front in &last.fronts.0 {
            prop_assert!(front.members.iter().any(|m| frontier.contains(m)), "a front lost all its members");
        }
        prop_assert_eq!(result.best_candidate, last.best);
    }

    #[test]
    fn pareto_pruning_keeps_every_front_covered_and_only_picks_undominated_candidates(
        table in prop::collection::vec(prop::collection::vec(0u8..3, 1..8), 1..7),
    ) {
        // table[c][e]: candidate c's score on example e (rows cut to a common width).
        let width = table.iter().map(Vec::len).min().unwrap();
        let scores: Vec<Vec<f64>> = table
            .iter()
            .map(|row| row[..width].iter().map(|&s| f64::from(s) / 2.0).collect())
            .collect();
        let mut fronts = Fronts::from_seed(&scores[0]);
        for (c, row) in scores.iter().enumerate().skip(1) {
            fronts.add(c, row);
        }
        let means: Vec<f64> = scores.iter().map(|r| r.iter().sum::<f64>() / width as f64).collect();
        let survivors = fronts.undominated_weights(&means);
        let alive: BTreeSet<usize> = survivors.iter().map(|(p, _)| *p).collect();
        for Front { members, .. } in &fronts.0 {
            prop_assert!(members.iter().any(|m| alive.contains(m)), "a front lost all members");
        }
        for &(p, w) in &survivors {
            prop_assert_eq!(w, fronts.0.iter().filter(|f| f.members.contains(&p)).count());
            // Undominated: some front of p holds no other survivor.
            let has_own_front = fronts.0.iter().any(|f| {
                f.members.contains(&p) && f.members.iter().all(|&o| o == p || !alive.contains(&o))
            });
            prop_assert!(has_own_front, "survivor {} is dominated", p);
        }
    }
}
