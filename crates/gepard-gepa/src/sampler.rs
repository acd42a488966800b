//! Epoch-shuffled training minibatches, tied to the iteration number.

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Where the minibatch sampler stands; part of the checkpoint.
///
/// Every epoch is a fresh permutation of the training ids drawn from the run's RNG, padded with
/// the least-used ids up to a multiple of the minibatch size so that every minibatch is full.
/// Iteration `i` (0-based) reads slots `i * size .. (i + 1) * size` modulo the epoch length, which
/// ties the data an iteration sees to its number, as in the reference sampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochSampler {
    minibatch_size: usize,
    train_size: usize,
    /// The current epoch's order (with padding).
    order: Vec<usize>,
    /// The epoch `order` belongs to; `None` before the first minibatch.
    epoch: Option<u64>,
    /// How often each id has been scheduled so far: padding uses the least scheduled ids, so over
    /// many epochs every example is seen about equally often.
    scheduled: Vec<u64>,
}

impl EpochSampler {
    /// A sampler over `train_size` ids in minibatches of `minibatch_size` (both at least 1).
    pub fn new(train_size: usize, minibatch_size: usize) -> Self {
        Self {
            minibatch_size,
            train_size,
            order: Vec::new(),
            epoch: None,
            scheduled: vec![0; train_size],
        }
    }

    /// The minibatch size this sampler was made for.
    pub fn minibatch_size(&self) -> usize {
        self.minibatch_size
    }

    /// The training-set size this sampler was made for.
    pub fn train_size(&self) -> usize {
        self.train_size
    }

    fn reshuffle<R: Rng>(&mut self, rng: &mut R) {
        self.order = (0..self.train_size).collect();
        self.order.shuffle(rng);
        for &id in &self.order {
            self.scheduled[id] += 1;
        }
        let remainder = self.train_size % self.minibatch_size;
        if remainder != 0 {
            for _ in 0..self.minibatch_size - remainder {
                // Least scheduled, lowest id on ties: deterministic without touching the RNG.
                let id = (0..self.train_size)
                    .min_by_key(|&i| (self.scheduled[i], i))
                    .unwrap_or_default();
                self.order.push(id);
                self.scheduled[id] += 1;
            }
        }
    }

    /// The training ids of 0-based iteration `iteration`. Call with increasing iterations; an
    /// iteration that starts a new epoch draws the new permutation from `rng`.
    pub fn minibatch<R: Rng>(&mut self, iteration: u64, rng: &mut R) -> Vec<usize> {
        let base = iteration * self.minibatch_size as u64;
        let epoch = match self.epoch {
            None => 0,
            Some(_) => base / self.order.len() as u64,
        };
        if self.epoch.is_none_or(|current| epoch > current) {
            self.epoch = Some(epoch);
            self.reshuffle(rng);
        }
        let start = (base % self.order.len() as u64) as usize;
        self.order[start..start + self.minibatch_size].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn batches(train: usize, size: usize, seed: u64, n: u64) -> Vec<Vec<usize>> {
        let mut sampler = EpochSampler::new(train, size);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|i| sampler.minibatch(i, &mut rng)).collect()
    }

    #[test]
    fn each_epoch_is_a_permutation_of_the_training_ids() {
        // 12 ids in batches of 3: 4 iterations per epoch, 5 epochs.
        let all = batches(12, 3, 42, 20);
        let mut epochs = Vec::new();
        for epoch in all.chunks(4) {
            let mut ids: Vec<usize> = epoch.concat();
            let order = ids.clone();
            ids.sort_unstable();
            assert_eq!(ids, (0..12).collect::<Vec<_>>());
            epochs.push(order);
        }
        assert!(
            epochs.windows(2).any(|w| w[0] != w[1]),
            "epochs are reshuffled"
        );
    }

    #[test]
    fn the_order_is_deterministic_for_a_seed_and_differs_between_seeds() {
        assert_eq!(batches(10, 3, 5, 12), batches(10, 3, 5, 12));
        assert_ne!(batches(10, 3, 5, 12), batches(10, 3, 6, 12));
    }

    #[test]
    fn an_uneven_epoch_is_padded_with_the_least_used_ids() {
        // 10 ids, size 3: each epoch holds 12 slots, every id once plus 2 padded ones.
        let all = batches(10, 3, 9, 8);
        assert!(all.iter().all(|b| b.len() == 3));
        let first: Vec<usize> = all[..4].concat();
        let second: Vec<usize> = all[4..].concat();
        let mut counts = [0; 10];
        for &id in first.iter().chain(&second) {
            counts[id] += 1;
        }
        // Padding spreads: after two epochs nobody is scheduled more than once over the others.
        assert!(counts.iter().all(|&c| (2..=3).contains(&c)), "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 24);
    }

    #[test]
    fn the_minibatch_depends_on_the_iteration_number_within_an_epoch() {
        let mut sampler = EpochSampler::new(12, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let third = sampler.minibatch(2, &mut rng);
        let mut again = EpochSampler::new(12, 3);
        let mut rng2 = ChaCha8Rng::seed_from_u64(1);
        let all: Vec<Vec<usize>> = (0..3).map(|i| again.minibatch(i, &mut rng2)).collect();
        assert_eq!(third, all[2]);
    }

    #[test]
    fn a_minibatch_larger_than_the_training_set_is_filled_by_padding() {
        let all = batches(2, 3, 0, 3);
        for b in &all {
            assert_eq!(b.len(), 3);
            assert!(b.contains(&0) && b.contains(&1));
        }
    }
}
