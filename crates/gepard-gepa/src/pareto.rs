//! Per-example Pareto fronts over the validation set, and parent selection from them.

use std::borrow::Cow;
use std::collections::BTreeSet;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::config::FrontierType;

/// The best score seen on one validation example and every candidate that reaches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Front {
    /// The highest score any candidate got on this example.
    pub best: f64,
    /// The candidates (by index) that tie for `best`, in increasing order.
    pub members: BTreeSet<usize>,
}

/// One [`Front`] per validation example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Fronts(pub Vec<Front>);

impl Fronts {
    /// The fronts of a run holding only the seed (candidate 0) with these scores.
    pub fn from_seed(scores: &[f64]) -> Self {
        Self(
            scores
                .iter()
                .map(|&best| Front {
                    best,
                    members: BTreeSet::from([0]),
                })
                .collect(),
        )
    }

    /// Adds `candidate`'s validation scores: it replaces a front it beats and joins a front it
    /// ties. Returns whether any front changed.
    pub fn add(&mut self, candidate: usize, scores: &[f64]) -> bool {
        debug_assert_eq!(scores.len(), self.0.len());
        let mut changed = false;
        for (front, &score) in self.0.iter_mut().zip(scores) {
            if score > front.best {
                front.best = score;
                front.members = BTreeSet::from([candidate]);
                changed = true;
            } else if score == front.best {
                changed |= front.members.insert(candidate);
            }
        }
        changed
    }

    /// The fronts `frontier_type` is made of, given each candidate's validation mean.
    ///
    /// The per-example fronts are kept up to date as candidates arrive; the objective front
    /// (the candidates with the highest mean) is derived here because it follows from the
    /// means alone. With one objective the cartesian fronts are the per-example ones. In the
    /// hybrid view the objective front comes after the per-example fronts, as in the
    /// reference's mapping.
    pub fn view(&self, frontier_type: FrontierType, means: &[f64]) -> Cow<'_, Fronts> {
        let objective = || {
            let best = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            Front {
                best,
                members: (0..means.len()).filter(|&i| means[i] == best).collect(),
            }
        };
        match frontier_type {
            FrontierType::Instance | FrontierType::Cartesian => Cow::Borrowed(self),
            FrontierType::Objective if means.is_empty() => Cow::Owned(Fronts::default()),
            FrontierType::Objective => Cow::Owned(Fronts(vec![objective()])),
            FrontierType::Hybrid => {
                let mut all = self.0.clone();
                if !means.is_empty() {
                    all.push(objective());
                }
                Cow::Owned(Fronts(all))
            }
        }
    }

    /// Every candidate on at least one front, in increasing order.
    pub fn members(&self) -> BTreeSet<usize> {
        self.0
            .iter()
            .flat_map(|f| f.members.iter().copied())
            .collect()
    }

    /// The mean over examples of the best score: what the whole front achieves together.
    pub fn aggregate_score(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.iter().map(|f| f.best).sum::<f64>() / self.0.len() as f64
    }

    /// The candidates that survive domination pruning, each with the number of fronts it is on
    /// (its sampling weight), in the order the reference builds its sampling list: by first
    /// appearance, walking the examples in order and each front in increasing index.
    ///
    /// A candidate is dominated when every front it is on also holds another surviving
    /// candidate. Candidates are examined from the lowest validation mean up (`means`, stable
    /// on index), and one is removed at a time, so two candidates that tie on exactly the same
    /// fronts never remove each other: the weaker one goes, the other stays.
    pub fn undominated_weights(&self, means: &[f64]) -> Vec<(usize, usize)> {
        let mut order: Vec<usize> = Vec::new();
        for front in &self.0 {
            for &p in &front.members {
                if !order.contains(&p) {
                    order.push(p);
                }
            }
        }
        let mut by_score = order.clone();
        by_score.sort_by(|a, b| means[*a].total_cmp(&means[*b]));

        let mut dominated: BTreeSet<usize> = BTreeSet::new();
        loop {
            let victim = by_score.iter().copied().find(|&y| {
                !dominated.contains(&y)
                    && self
                        .0
                        .iter()
                        .filter(|f| f.members.contains(&y))
                        .all(|f| f.members.iter().any(|&o| o != y && !dominated.contains(&o)))
            });
            match victim {
                Some(y) => {
                    dominated.insert(y);
                }
                None => break,
            }
        }

        order
            .into_iter()
            .filter(|p| !dominated.contains(p))
            .map(|p| {
                let weight = self.0.iter().filter(|f| f.members.contains(&p)).count();
                (p, weight)
            })
            .collect()
    }
}

/// The index of the highest validation mean; ties go to the lower index.
pub fn best_index(means: &[f64]) -> usize {
    let mut best = 0;
    for (i, &m) in means.iter().enumerate() {
        if m > means[best] {
            best = i;
        }
    }
    best
}

/// GEPA's Pareto parent selection: one uniform draw from the list in which every undominated
/// candidate appears once per front it is on.
pub fn select_pareto<R: Rng>(fronts: &Fronts, means: &[f64], rng: &mut R) -> usize {
    let weights = fronts.undominated_weights(means);
    let total: usize = weights.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return best_index(means);
    }
    let mut pick = rng.random_range(0..total);
    for (p, w) in weights {
        if pick < w {
            return p;
        }
        pick -= w;
    }
    unreachable!("the draw is below the total weight")
}

/// Epsilon-greedy selection: explore a uniformly random candidate with probability `epsilon`,
/// otherwise take the best. The draw happens every time so that the RNG advances the same way
/// whatever the outcome.
pub fn select_epsilon_greedy<R: Rng>(means: &[f64], epsilon: f64, rng: &mut R) -> usize {
    if rng.random::<f64>() < epsilon {
        rng.random_range(0..means.len())
    } else {
        best_index(means)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn fronts(sets: &[&[usize]]) -> Fronts {
        Fronts(
            sets.iter()
                .map(|s| Front {
                    best: 1.0,
                    members: s.iter().copied().collect(),
                })
                .collect(),
        )
    }

    #[test]
    fn dominated_candidates_are_never_selected_as_parents() {
        // 1 is only on fronts that 2 is on too; 2 has its own front as well.
        let f = fronts(&[&[1, 2], &[1, 2], &[2], &[0]]);
        let means = [0.2, 0.5, 0.6];
        let weights = f.undominated_weights(&means);
        assert_eq!(weights, vec![(2, 3), (0, 1)]);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..500 {
            assert_ne!(select_pareto(&f, &means, &mut rng), 1);
        }
    }

    #[test]
    fn candidates_tied_on_the_same_fronts_keep_the_stronger_one() {
        let f = fronts(&[&[0, 1], &[0, 1]]);
        assert_eq!(f.undominated_weights(&[0.9, 0.4]), vec![(0, 2)]);
        assert_eq!(f.undominated_weights(&[0.4, 0.9]), vec![(1, 2)]);
    }

    #[test]
    fn each_candidate_on_a_unique_front_survives() {
        let f = fronts(&[&[0], &[1, 0], &[2]]);
        assert_eq!(
            f.undominated_weights(&[0.5, 0.9, 0.1]),
            vec![(0, 2), (2, 1)],
            "1 only shares a front with 0, which has another front of its own"
        );
    }

    #[test]
    fn sampling_weights_follow_front_frequency() {
        let f = fronts(&[&[0], &[0], &[0], &[1]]);
        let means = [0.75, 0.25];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0usize; 2];
        for _ in 0..4000 {
            counts[select_pareto(&f, &means, &mut rng)] += 1;
        }
        // Expected 3000 : 1000; a fair draw stays well within these bounds.
        assert!((2800..3200).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[0] + counts[1], 4000);
    }

    #[test]
    fn adding_a_candidate_replaces_beaten_fronts_and_joins_ties() {
        let mut f = Fronts::from_seed(&[0.0, 1.0, 0.5]);
        assert!(f.add(1, &[1.0, 1.0, 0.0]));
        assert_eq!(f.0[0].members, BTreeSet::from([1]));
        assert_eq!(f.0[1].members, BTreeSet::from([0, 1]));
        assert_eq!(f.0[2].members, BTreeSet::from([0]));
        assert_eq!(f.aggregate_score(), 2.5 / 3.0);
        assert!(
            !f.add(2, &[0.0, 0.0, 0.0]),
            "a weaker candidate changes nothing"
        );
        assert_eq!(f.members(), BTreeSet::from([0, 1]));
    }

    #[test]
    fn the_objective_view_is_one_front_of_the_candidates_with_the_best_mean() {
        let f = fronts(&[&[0], &[1, 2], &[2]]);
        let means = [0.5, 0.8, 0.8];
        let objective = f.view(FrontierType::Objective, &means);
        assert_eq!(objective.0.len(), 1);
        assert_eq!(objective.0[0].best, 0.8);
        assert_eq!(objective.0[0].members, BTreeSet::from([1, 2]));
        // Tied on the one front, the pruning keeps one of them, never the weaker 0.
        let weights = objective.undominated_weights(&means);
        assert_eq!(weights.len(), 1);
        assert_ne!(weights[0].0, 0);
    }

    #[test]
    fn the_hybrid_view_adds_the_objective_front_after_the_per_example_fronts() {
        let f = fronts(&[&[0], &[1]]);
        let means = [0.4, 0.6];
        let hybrid = f.view(FrontierType::Hybrid, &means);
        assert_eq!(hybrid.0.len(), 3);
        assert_eq!(hybrid.0[..2], f.0[..]);
        assert_eq!(hybrid.0[2].members, BTreeSet::from([1]));
        // The best candidate gains one unit of weight for the objective front.
        assert_eq!(hybrid.undominated_weights(&means), vec![(0, 1), (1, 2)]);
        assert_eq!(
            *f.view(FrontierType::Cartesian, &means),
            *f.view(FrontierType::Instance, &means),
            "with one objective the cartesian fronts are the per-example fronts"
        );
    }

    #[test]
    fn the_best_index_prefers_the_lower_index_on_ties() {
        assert_eq!(best_index(&[0.5, 0.7, 0.7, 0.1]), 1);
        assert_eq!(best_index(&[0.5]), 0);
    }

    #[test]
    fn epsilon_zero_is_current_best_and_epsilon_one_explores() {
        let means = [0.1, 0.9, 0.3];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert!((0..100).all(|_| select_epsilon_greedy(&means, 0.0, &mut rng) == 1));
        let explored: BTreeSet<usize> = (0..200)
            .map(|_| select_epsilon_greedy(&means, 1.0, &mut rng))
            .collect();
        assert_eq!(explored, BTreeSet::from([0, 1, 2]));
    }
}
