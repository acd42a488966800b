//! Run configuration and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the parent of the next mutation is chosen among the candidates found so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CandidateSelection {
    /// GEPA's default: drop candidates dominated on the per-example fronts, then sample the rest
    /// with weight = the number of validation examples whose front they are on.
    #[default]
    Pareto,
    /// Always the candidate with the best validation mean (ties: lower index).
    CurrentBest,
    /// With probability `epsilon` a uniformly random candidate, otherwise the current best.
    EpsilonGreedy {
        /// Exploration probability in `[0, 1]`.
        epsilon: f64,
    },
}

/// Which fronts Pareto parent selection (and the reported frontier) is built from; the names
/// and meanings are those of GEPA's `frontier_type`.
///
/// gepard scores one objective, the reward, so the objective front is the set of candidates
/// with the highest validation mean, and the cartesian fronts (one per example and objective)
/// are the per-example fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FrontierType {
    /// One front per validation example: the candidates with the best score on it.
    #[default]
    Instance,
    /// One front per objective: the candidates with the best validation mean.
    Objective,
    /// The per-example fronts and the objective front together.
    Hybrid,
    /// One front per (example, objective) pair; with one objective, the per-example fronts.
    Cartesian,
}

impl FrontierType {
    /// Every frontier type, in the order of GEPA's documentation.
    pub const ALL: [FrontierType; 4] = [
        FrontierType::Instance,
        FrontierType::Objective,
        FrontierType::Hybrid,
        FrontierType::Cartesian,
    ];

    /// The name as GEPA and the job config spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            FrontierType::Instance => "instance",
            FrontierType::Objective => "objective",
            FrontierType::Hybrid => "hybrid",
            FrontierType::Cartesian => "cartesian",
        }
    }

    /// The frontier type named `name`, if there is one.
    pub fn parse(name: &str) -> Option<FrontierType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// Everything that shapes a run. Limits left `None` do not apply, but at least one limit must be
/// set so that a run always ends without outside help. Fields missing from serialized input take
/// their [`Default`] values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Seed of the one RNG behind every random choice (parent selection, minibatch order).
    pub seed: u64,
    /// Upper bound on metric calls (one call = one candidate evaluated on one example),
    /// including the seed's validation pass. Never exceeded: an iteration that might not fit
    /// is not started.
    pub max_metric_calls: Option<u64>,
    /// Upper bound on iterations (a skipped or rejected iteration counts too).
    pub max_trials: Option<u64>,
    /// Stop after this many consecutive iterations that did not raise the best validation mean.
    pub max_trials_without_improvement: Option<u64>,
    /// Wall-clock limit of one [`crate::Engine::run`] call (it restarts on resume; the caller
    /// passes what is left when it resumes a run).
    pub max_runtime: Option<Duration>,
    /// How many evaluations of one batch may be in flight at once. Never changes the outcome.
    pub concurrency: usize,
    /// Training examples per reflection minibatch.
    pub minibatch_size: usize,
    /// Parent selection strategy.
    pub candidate_selection: CandidateSelection,
    /// The fronts Pareto selection draws from and the reported frontier is made of.
    pub frontier_type: FrontierType,
    /// Skip the reflection when the parent already scores `perfect_score` on every minibatch
    /// example (nothing to learn from).
    pub skip_perfect_score: bool,
    /// The score that counts as perfect for `skip_perfect_score`.
    pub perfect_score: f64,
    /// At most this many examples go into one reflection prompt.
    pub max_reflection_examples: usize,
    /// Character budget for all examples of one reflection prompt together (inputs, outputs and
    /// feedback). Outputs are cut first, then feedback, inputs last.
    pub max_side_info_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 0,
            max_metric_calls: None,
            max_trials: None,
            max_trials_without_improvement: None,
            max_runtime: None,
            concurrency: 8,
            minibatch_size: 3,
            candidate_selection: CandidateSelection::Pareto,
            frontier_type: FrontierType::Instance,
            skip_perfect_score: true,
            perfect_score: 1.0,
            max_reflection_examples: 10,
            max_side_info_chars: 4000,
        }
    }
}

/// A configuration (or dataset shape) that cannot run, naming the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid GEPA configuration: `{field}` {problem}")]
pub struct ConfigError {
    /// The field at fault, as spelled in [`Config`] (or `train_size` / `val_size`).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Checks the configuration against the sizes of the training and validation sets.
    pub fn validate(&self, train_size: usize, val_size: usize) -> Result<(), ConfigError> {
        if train_size == 0 {
            return Err(ConfigError::new("train_size", "must be at least 1"));
        }
        if val_size == 0 {
            return Err(ConfigError::new("val_size", "must be at least 1"));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::new("concurrency", "must be at least 1"));
        }
        if self.minibatch_size == 0 {
            return Err(ConfigError::new("minibatch_size", "must be at least 1"));
        }
        if self.max_reflection_examples == 0 {
            return Err(ConfigError::new(
                "max_reflection_examples",
                "must be at least 1",
            ));
        }
        if self.max_side_info_chars == 0 {
            return Err(ConfigError::new(
                "max_side_info_chars",
                "must be at least 1",
            ));
        }
        if !self.perfect_score.is_finite() {
            return Err(ConfigError::new("perfect_score", "must be a finite number"));
        }
        if let CandidateSelection::EpsilonGreedy { epsilon } = self.candidate_selection {
            if !(0.0..=1.0).contains(&epsilon) {
                return Err(ConfigError::new(
                    "candidate_selection.epsilon",
                    format!("must be within [0, 1], got {epsilon}"),
                ));
            }
        }
        if let Some(max) = self.max_metric_calls {
            if max < val_size as u64 {
                return Err(ConfigError::new(
                    "max_metric_calls",
                    format!(
                        "must cover at least the seed's validation pass ({val_size} calls), got {max}"
                    ),
                ));
            }
        }
        if self.max_runtime.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("max_runtime", "must be longer than zero"));
        }
        if self.max_metric_calls.is_none()
            && self.max_trials.is_none()
            && self.max_trials_without_improvement.is_none()
            && self.max_runtime.is_none()
        {
            return Err(ConfigError::new(
                "max_metric_calls",
                "or another limit (max_trials, max_trials_without_improvement, max_runtime) must be set",
            ));
        }
        Ok(())
    }

    /// Metric calls one iteration may spend at most: parent and child on the minibatch, then the
    /// child on the whole validation set.
    pub fn worst_case_iteration_calls(&self, val_size: usize) -> u64 {
        2 * self.minibatch_size as u64 + val_size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited() -> Config {
        Config {
            max_metric_calls: Some(100),
            ..Config::default()
        }
    }

    #[test]
    fn defaults_match_the_reference_settings() {
        let c = Config::default();
        assert_eq!(c.minibatch_size, 3);
        assert!(c.skip_perfect_score);
        assert_eq!(c.perfect_score, 1.0);
        assert_eq!(c.max_reflection_examples, 10);
        assert_eq!(c.max_side_info_chars, 4000);
        assert_eq!(c.candidate_selection, CandidateSelection::Pareto);
        assert_eq!(c.frontier_type, FrontierType::Instance);
    }

    #[test]
    fn frontier_types_parse_from_their_gepa_names() {
        for t in FrontierType::ALL {
            assert_eq!(FrontierType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(FrontierType::parse("pareto"), None);
    }

    #[test]
    fn a_partial_json_config_takes_the_defaults_for_missing_fields() {
        let c: Config = serde_json::from_str(
            r#"{"seed": 3, "max_metric_calls": 300,
                "candidate_selection": {"kind": "epsilon_greedy", "epsilon": 0.1}}"#,
        )
        .unwrap();
        assert_eq!(c.seed, 3);
        assert_eq!(c.max_metric_calls, Some(300));
        assert_eq!(
            c.candidate_selection,
            CandidateSelection::EpsilonGreedy { epsilon: 0.1 }
        );
        assert_eq!(c.minibatch_size, 3);
        assert_eq!(c.concurrency, Config::default().concurrency);
    }

    #[test]
    fn a_config_without_any_limit_is_rejected_naming_max_metric_calls() {
        let err = Config::default().validate(5, 5).unwrap_err();
        assert_eq!(err.field, "max_metric_calls");
    }

    #[test]
    fn a_budget_smaller_than_the_seed_validation_pass_is_rejected() {
        let c = Config {
            max_metric_calls: Some(9),
            ..Config::default()
        };
        assert_eq!(c.validate(5, 10).unwrap_err().field, "max_metric_calls");
        assert!(c.validate(5, 9).is_ok());
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    concurrency: 0,
                    ..limited()
                },
                "concurrency",
            ),
            (
                Config {
                    minibatch_size: 0,
                    ..limited()
                },
                "minibatch_size",
            ),
            (
                Config {
                    max_reflection_examples: 0,
                    ..limited()
                },
                "max_reflection_examples",
            ),
            (
                Config {
                    max_side_info_chars: 0,
                    ..limited()
                },
                "max_side_info_chars",
            ),
            (
                Config {
                    perfect_score: f64::NAN,
                    ..limited()
                },
                "perfect_score",
            ),
            (
                Config {
                    candidate_selection: CandidateSelection::EpsilonGreedy { epsilon: 1.5 },
                    ..limited()
                },
                "candidate_selection.epsilon",
            ),
            (
                Config {
                    max_runtime: Some(Duration::ZERO),
                    ..limited()
                },
                "max_runtime",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(config.validate(5, 5).unwrap_err().field, field);
        }
        assert_eq!(limited().validate(0, 5).unwrap_err().field, "train_size");
        assert_eq!(limited().validate(5, 0).unwrap_err().field, "val_size");
    }
}
