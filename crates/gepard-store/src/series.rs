//! Metric series of recently read jobs, so that reading a job again fetches only the points
//! written since.
//!
//! Every progress event of a running job ends with a read of the job (to return it and to
//! publish it to watchers), and that read used to load the attempt's whole series, a row per
//! point: a long run's events grew slower as it went (docs/benchmarks.md, "Execution"). Now
//! the store remembers, per job, the series it last read and the highest point sequence
//! number in it, and asks the database only for points after that.
//!
//! Why this is exact, also with other processes writing the same database:
//! - Within one attempt, points are only ever appended, with increasing `seq` (the writer
//!   takes `MAX(seq) + 1` inside its write transaction, and writers of one job exclude each
//!   other), so "the points after `seq` N" is everything that is new.
//! - The one deletion, a rewind to a checkpoint before a resume, bumps the job's
//!   `metrics_epoch` in the same transaction, and the points that follow may reuse the deleted
//!   sequence numbers. A remembered series is used only under the attempt and epoch it was
//!   read at, and the epoch is read by the same statement as the new points (one snapshot),
//!   so a read never mixes points from before and after a rewind.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use gepard_core::progress::MetricPoint;
use uuid::Uuid;

/// A job's metric series: name → points in step order, and in write order among equal steps.
/// Write order alone is not step order when a runtime sends reports in parallel, and a chart
/// (or the CLI's "latest point") read in write order went back and forth.
pub(crate) type Series = BTreeMap<String, Vec<MetricPoint>>;

/// How many jobs' series a store remembers: the running and watched ones are what matter.
const KEEP: usize = 64;

/// The remembered series of recently read jobs.
#[derive(Debug, Default)]
pub(crate) struct SeriesCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<Uuid, Remembered>,
    /// Counts reads; a job's `used` is the count at its last read, for evicting the stalest.
    clock: u64,
}

#[derive(Debug)]
struct Remembered {
    attempt: i64,
    epoch: i64,
    /// Highest `seq` among `series`' points (0 when there are none).
    last_seq: i64,
    /// The series, each point with its `seq`.
    series: BTreeMap<String, Vec<(i64, MetricPoint)>>,
    used: u64,
}

/// One point as read, with its sequence number.
pub(crate) struct SeqPoint {
    pub(crate) seq: i64,
    pub(crate) name: String,
    pub(crate) point: MetricPoint,
}

impl SeriesCache {
    /// The sequence number after which new points of `job`'s `attempt` are to be read, if its
    /// series is remembered (under whichever epoch; [`SeriesCache::extend`] checks that).
    pub(crate) fn read_after(&self, job: Uuid, attempt: i64) -> Option<i64> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .jobs
            .get(&job)
            .filter(|r| r.attempt == attempt)
            .map(|r| r.last_seq)
    }

    /// The whole series after a read of the points after `after` (`None`: every point of the
    /// attempt), read under `epoch` in a snapshot whose last point is `upto`: only the points
    /// up to it, although another read may have remembered newer ones, so the series is the
    /// snapshot's. `None` when the remembered series cannot be extended by this read (a
    /// rewind happened, or it was replaced meanwhile): read every point then.
    pub(crate) fn extend(
        &self,
        job: Uuid,
        attempt: i64,
        epoch: i64,
        after: Option<i64>,
        points: Vec<SeqPoint>,
        upto: i64,
    ) -> Option<Series> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.clock += 1;
        let now = inner.clock;
        let Some(after) = after else {
            let mut fresh = Remembered {
                attempt,
                epoch,
                last_seq: 0,
                series: BTreeMap::new(),
                used: now,
            };
            fresh.append(points);
            let series = fresh.upto(upto);
            if inner.jobs.len() >= KEEP && !inner.jobs.contains_key(&job) {
                if let Some(stalest) = inner
                    .jobs
                    .iter()
                    .min_by_key(|(_, r)| r.used)
                    .map(|(id, _)| *id)
                {
                    inner.jobs.remove(&stalest);
                }
            }
            inner.jobs.insert(job, fresh);
            return Some(series);
        };
        let known = inner.jobs.get_mut(&job)?;
        // Another read may have extended it past `after` already (same attempt and epoch, so
        // the same points): skip those. One that went back below `after` would leave a gap.
        if known.attempt != attempt || known.epoch != epoch || known.last_seq < after {
            return None;
        }
        known.append(points);
        known.used = now;
        Some(known.upto(upto))
    }
}

impl Remembered {
    /// The series as of point `upto`.
    fn upto(&self, upto: i64) -> Series {
        self.series
            .iter()
            .map(|(name, points)| {
                let kept = points.iter().filter(|(seq, _)| *seq <= upto);
                (name.clone(), kept.map(|(_, p)| *p).collect::<Vec<_>>())
            })
            .filter(|(_, points)| !points.is_empty())
            .collect()
    }

    fn append(&mut self, points: Vec<SeqPoint>) {
        for p in points {
            if p.seq > self.last_seq {
                self.last_seq = p.seq;
                let points = self.series.entry(p.name).or_default();
                // Nearly always the end: a search, then a push.
                let at = points.partition_point(|(_, q)| q.step <= p.point.step);
                points.insert(at, (p.seq, p.point));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(seq: i64, name: &str, value: f64) -> SeqPoint {
        SeqPoint {
            seq,
            name: name.into(),
            point: MetricPoint {
                value,
                step: seq,
                timestamp: None,
            },
        }
    }

    fn values(s: &Series, name: &str) -> Vec<f64> {
        s[name].iter().map(|p| p.value).collect()
    }

    #[test]
    fn a_read_after_the_remembered_points_extends_them() {
        let c = SeriesCache::default();
        let id = Uuid::new_v4();
        c.extend(
            id,
            1,
            0,
            None,
            vec![p(1, "a", 1.0), p(2, "b", 2.0)],
            i64::MAX,
        );
        assert_eq!(c.read_after(id, 1), Some(2));
        let s = c
            .extend(id, 1, 0, Some(2), vec![p(3, "a", 3.0)], i64::MAX)
            .unwrap();
        assert_eq!(values(&s, "a"), [1.0, 3.0]);
        assert_eq!(values(&s, "b"), [2.0]);
        assert_eq!(c.read_after(id, 1), Some(3));
    }

    #[test]
    fn a_read_from_an_older_snapshot_gets_that_snapshots_series_not_a_newer_reads() {
        let c = SeriesCache::default();
        let id = Uuid::new_v4();
        c.extend(id, 1, 0, None, vec![p(1, "a", 1.0), p(2, "a", 2.0)], 2);
        // A newer read remembered point 3 (and a new series)…
        let newer = c
            .extend(id, 1, 0, Some(2), vec![p(3, "a", 3.0), p(4, "b", 4.0)], 4)
            .unwrap();
        assert_eq!(values(&newer, "a"), [1.0, 2.0, 3.0]);
        // …before a read whose snapshot ended at point 2 came back: it gets its own.
        let older = c.extend(id, 1, 0, Some(2), vec![], 2).unwrap();
        assert_eq!(values(&older, "a"), [1.0, 2.0]);
        assert!(!older.contains_key("b"));
    }

    #[test]
    fn points_written_out_of_step_order_are_kept_in_step_order() {
        let c = SeriesCache::default();
        let id = Uuid::new_v4();
        let at = |seq: i64, step: i64| SeqPoint {
            seq,
            name: "a".into(),
            point: MetricPoint {
                value: seq as f64,
                step,
                timestamp: None,
            },
        };
        c.extend(
            id,
            1,
            0,
            None,
            vec![at(1, 0), at(2, 5), at(3, 2), at(4, 5)],
            i64::MAX,
        );
        let s = c
            .extend(id, 1, 0, Some(4), vec![at(5, 1)], i64::MAX)
            .unwrap();
        let order: Vec<(i64, f64)> = s["a"].iter().map(|p| (p.step, p.value)).collect();
        // Equal steps keep their write order (the value is the point's seq).
        assert_eq!(order, [(0, 1.0), (1, 5.0), (2, 3.0), (5, 2.0), (5, 4.0)]);
    }

    #[test]
    fn points_another_read_already_added_are_not_added_twice() {
        let c = SeriesCache::default();
        let id = Uuid::new_v4();
        c.extend(id, 1, 0, None, vec![p(1, "a", 1.0)], i64::MAX);
        c.extend(id, 1, 0, Some(1), vec![p(2, "a", 2.0)], i64::MAX);
        let s = c
            .extend(
                id,
                1,
                0,
                Some(1),
                vec![p(2, "a", 2.0), p(3, "a", 3.0)],
                i64::MAX,
            )
            .unwrap();
        assert_eq!(values(&s, "a"), [1.0, 2.0, 3.0]);
    }

    #[test]
    fn a_read_under_another_epoch_or_attempt_cannot_extend() {
        let c = SeriesCache::default();
        let id = Uuid::new_v4();
        c.extend(id, 1, 0, None, vec![p(1, "a", 1.0)], i64::MAX);
        assert!(c
            .extend(id, 1, 1, Some(1), vec![p(2, "a", 2.0)], i64::MAX)
            .is_none());
        assert!(c.extend(id, 2, 0, Some(1), vec![], i64::MAX).is_none());
        assert_eq!(c.read_after(id, 2), None);
        // A gap (the remembered series went back below the read's starting point).
        c.extend(id, 1, 0, None, vec![], i64::MAX);
        assert!(c
            .extend(id, 1, 0, Some(1), vec![p(2, "a", 2.0)], i64::MAX)
            .is_none());
    }

    #[test]
    fn the_stalest_job_is_forgotten_first() {
        let c = SeriesCache::default();
        let ids: Vec<Uuid> = (0..=KEEP).map(|_| Uuid::new_v4()).collect();
        for id in &ids[..KEEP] {
            c.extend(*id, 1, 0, None, vec![], i64::MAX);
        }
        c.extend(ids[0], 1, 0, Some(0), vec![], i64::MAX);
        c.extend(ids[KEEP], 1, 0, None, vec![], i64::MAX);
        assert!(c.read_after(ids[0], 1).is_some(), "read recently");
        assert!(c.read_after(ids[1], 1).is_none(), "the stalest");
        assert!(c.read_after(ids[KEEP], 1).is_some());
    }
}
