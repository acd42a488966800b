//! The unified diff of two instruction texts, as promotion previews and the quickstart show it.

/// A unified line diff from `source` to `optimized`, with `---`/`+++` headers naming both
/// sides; empty when the texts are equal. Both texts are compared with one final newline, so
/// a missing trailing newline is not reported as a change.
pub fn unified(source: &str, optimized: &str, source_label: &str, optimized_label: &str) -> String {
    let a = format!("{}\n", source.trim_end());
    let b = format!("{}\n", optimized.trim_end());
    if a == b {
        return String::new();
    }
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header(source_label, optimized_label)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_names_both_sides_and_marks_removed_and_added_lines() {
        let d = unified(
            "Label it.\nBe terse.",
            "Label it.\nAnswer with one word.\n",
            "a@1",
            "b@2",
        );
        assert_eq!(
            d,
            "--- a@1\n+++ b@2\n@@ -1,2 +1,2 @@\n Label it.\n-Be terse.\n+Answer with one word.\n"
        );
        assert_eq!(unified("Same.\n", "Same.", "a", "b"), "");
    }
}
