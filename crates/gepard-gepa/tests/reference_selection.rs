//! Pareto parent selection against the reference implementation: 400 random candidate pools
//! whose sampling weights were computed by gepa 0.1.4 itself (`remove_dominated_programs`,
//! then one entry per front a survivor is on). Regenerate the fixture with
//! `bench/reference_selection_cases.py` (it needs the `gepa` package).
//!
//! Survivors are compared by their per-example scores, not their indices: when two candidates
//! have exactly the same scores, which one the reference keeps follows CPython's set
//! iteration order (hash slots, so index 8 can come before index 2), an artifact of its data
//! structures rather than of the algorithm. gepard keeps the newer one, as the reference does
//! whenever its sets iterate in index order.

use gepard_gepa::Fronts;
use serde_json::Value;

#[test]
fn surviving_candidates_and_their_weights_match_the_reference_on_400_random_pools() {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("fixtures/reference_selection.json")).unwrap();
    assert_eq!(cases.len(), 400);
    let mut mismatches = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let pool: Vec<Vec<f64>> = serde_json::from_value(case["val_scores"].clone()).unwrap();
        let expected: Vec<(usize, usize)> =
            serde_json::from_value(case["weights"].clone()).unwrap();
        let mut fronts = Fronts::from_seed(&pool[0]);
        for (index, scores) in pool.iter().enumerate().skip(1) {
            fronts.add(index, scores);
        }
        let means: Vec<f64> = pool
            .iter()
            .map(|s| s.iter().sum::<f64>() / s.len() as f64)
            .collect();
        let by_scores = |weights: &[(usize, usize)]| {
            let mut v: Vec<(String, usize)> = weights
                .iter()
                .map(|&(p, w)| (format!("{:?}", pool[p]), w))
                .collect();
            v.sort();
            v
        };
        let got = fronts.undominated_weights(&means);
        if by_scores(&got) != by_scores(&expected) {
            mismatches.push(format!("case {n}: gepard {got:?}, reference {expected:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of 400 pools differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
