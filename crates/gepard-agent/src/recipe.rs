//! Reward recipes: score one rollout against one dataset row, with feedback that GEPA's
//! reflection model reads.
//!
//! | recipe | params | scores |
//! |---|---|---|
//! | `exact_match_v1` | `expected?` | 1 when the trimmed final text equals `params.expected`, else the row's `expected_output`, else its `answer` (case-sensitive) |
//! | `contains_v1` | `needle`, `reward_if_true?` (1), `reward_if_false?` (0) | whether the final text contains `needle` (case-sensitive) |
//! | `row_reward_v1` | `default?` (0) | the row's `reward` (a number from 0 to 1; any other value is refused up front), else `params.default` |
//! | `trajectory_imitation_v1` | none | the row's `expected_trajectory` tool calls, call by call with partial credit (`[]`: no call may be made); rows without one: exact final answer |
//!
//! Every recipe gives 0 with the error as feedback when the rollout failed. Unknown params are
//! refused (a typo like `needel` would otherwise be silently ignored).

use std::fmt;

use gepard_llm::ToolCall;
use serde_json::{Map, Value};

use crate::rollout::{row_tools, Outcome};

/// The recipe names gepard knows, in the order they are documented.
pub const RECIPE_NAMES: &[&str] = &[
    "exact_match_v1",
    "contains_v1",
    "row_reward_v1",
    "trajectory_imitation_v1",
];

/// A validated reward recipe with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Recipe {
    /// `exact_match_v1`.
    ExactMatch {
        /// `params.expected`; `None`: the row's `expected_output` / `answer`.
        expected: Option<String>,
    },
    /// `contains_v1`.
    Contains {
        /// The required substring.
        needle: String,
        /// Score when the needle is present.
        reward_if_true: f64,
        /// Score when it is not.
        reward_if_false: f64,
    },
    /// `row_reward_v1`.
    RowReward {
        /// Score for rows without a numeric `reward`.
        default: f64,
    },
    /// `trajectory_imitation_v1`.
    TrajectoryImitation,
}

/// Why a recipe spec is not usable. Messages name the recipe and the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    /// The name is not one of [`RECIPE_NAMES`].
    #[error("unknown reward recipe `{name}`; known recipes: {known}")]
    UnknownRecipe {
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A parameter is missing, of the wrong type, out of range or not known.
    #[error("{recipe} needs {message}")]
    InvalidParam {
        /// The recipe name.
        recipe: &'static str,
        /// The parameter path (e.g. `params.needle`).
        param: String,
        /// What is expected, as the rest of the sentence.
        message: String,
    },
}

/// A score in `[0, 1]` and the feedback that explains it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The score, in `[0, 1]`.
    pub score: f64,
    /// What was right or wrong, precise enough for a reflection model.
    pub feedback: String,
}

impl Scored {
    fn new(score: f64, feedback: impl Into<String>) -> Self {
        Self {
            // `+ 0.0` turns -0.0 (what an empty f64 sum gives) into 0.0: a score is shown and
            // compared as a number, and `-0.000` reads like a bug.
            score: if score.is_finite() {
                score.clamp(0.0, 1.0) + 0.0
            } else {
                0.0
            },
            feedback: feedback.into(),
        }
    }
}

impl Recipe {
    /// Validates a recipe name and its params (`null` counts as `{}`).
    pub fn from_spec(name: &str, params: &Value) -> Result<Self, RecipeError> {
        let empty = Map::new();
        let recipe: &'static str = RECIPE_NAMES
            .iter()
            .find(|known| **known == name)
            .ok_or_else(|| RecipeError::UnknownRecipe {
                name: name.to_owned(),
                known: RECIPE_NAMES.join(", "),
            })?;
        let params = match params {
            Value::Null => &empty,
            Value::Object(map) => map,
            _ => {
                return Err(RecipeError::InvalidParam {
                    recipe,
                    param: "params".into(),
                    message: "params to be a JSON object".into(),
                })
            }
        };
        let p = Params { recipe, params };
        match recipe {
            "exact_match_v1" => {
                p.only(&["expected"])?;
                Ok(Self::ExactMatch {
                    expected: p.string("expected", false)?,
                })
            }
            "contains_v1" => {
                p.only(&["needle", "reward_if_true", "reward_if_false"])?;
                let needle = p
                    .string("needle", true)?
                    .expect("required strings are present");
                if needle.is_empty() {
                    return Err(p.invalid("needle", "params.needle (a non-empty string)"));
                }
                Ok(Self::Contains {
                    needle,
                    reward_if_true: p.unit_number("reward_if_true")?.unwrap_or(1.0),
                    reward_if_false: p.unit_number("reward_if_false")?.unwrap_or(0.0),
                })
            }
            "row_reward_v1" => {
                p.only(&["default"])?;
                Ok(Self::RowReward {
                    default: p.unit_number("default")?.unwrap_or(0.0),
                })
            }
            _ => {
                p.only(&[])?;
                Ok(Self::TrajectoryImitation)
            }
        }
    }

    /// The recipe's versioned name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ExactMatch { .. } => "exact_match_v1",
            Self::Contains { .. } => "contains_v1",
            Self::RowReward { .. } => "row_reward_v1",
            Self::TrajectoryImitation => "trajectory_imitation_v1",
        }
    }

    /// Whether this recipe can score answers on `row`, or what the row lacks (the same gaps
    /// for which [`Self::score`] gives every answer 0 with "Cannot score").
    pub fn check_row(&self, row: &Value) -> Result<(), String> {
        match self {
            Self::ExactMatch { expected: None } if row_expected(row).is_none() => Err(
                "the row has no expected_output (or answer) to compare the answer with, and the \
                 recipe has no params.expected"
                    .to_owned(),
            ),
            Self::TrajectoryImitation
                if row
                    .get("expected_trajectory")
                    .and_then(Value::as_array)
                    .is_none()
                    && row_expected(row).is_none() =>
            {
                Err(
                    "the row has neither expected_trajectory nor expected_output (or answer)"
                        .to_owned(),
                )
            }
            // An absent, null or blank reward takes params.default (a blank one is how a CSV
            // cell stored before blank cells were read as absent); a reward that is there but
            // not a number is a data error that would silently score the default on every
            // answer. One outside 0..1 would be clamped to 0 or 1 just as silently (rewards
            // are in [0, 1], as params.default must be), so it is refused too.
            Self::RowReward { .. } => match row.get("reward") {
                Some(r)
                    if !r.is_null()
                        && r.as_f64().is_none()
                        && !r.as_str().is_some_and(|t| t.trim().is_empty()) =>
                {
                    Err(format!(
                        "the row's reward is {}, not a number (row_reward_v1 scores with it)",
                        r.to_string().chars().take(100).collect::<String>()
                    ))
                }
                Some(r) if r.as_f64().is_some_and(|x| !(0.0..=1.0).contains(&x)) => Err(format!(
                    "the row's reward is {r}, not a number from 0 to 1 (row_reward_v1 scores \
                     with it, and a score is between 0 and 1)"
                )),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Scores `outcome` (the agent's answer on `row`). A failed rollout scores 0 with its error.
    pub fn score(&self, row: &Value, outcome: &Outcome) -> Scored {
        if let Some(error) = &outcome.error {
            return Scored::new(
                0.0,
                format!("No answer: the agent's model call failed ({error})."),
            );
        }
        match self {
            Self::ExactMatch { expected } => match expected.clone().or_else(|| row_expected(row)) {
                Some(expected) => exact_match(&expected, outcome),
                None => Scored::new(
                    0.0,
                    "Cannot score: the row has no expected_output (or answer) and the recipe has \
                     no params.expected.",
                ),
            },
            Self::Contains {
                needle,
                reward_if_true,
                reward_if_false,
            } => {
                let text = outcome.final_text.as_deref().unwrap_or("");
                if text.contains(needle.as_str()) {
                    Scored::new(
                        *reward_if_true,
                        format!("Correct: the answer contains {}.", quote(needle)),
                    )
                } else {
                    Scored::new(
                        *reward_if_false,
                        format!(
                            "Incorrect. The answer must contain {} (case-sensitive); got {}.",
                            quote(needle),
                            describe_text(outcome)
                        ),
                    )
                }
            }
            Self::RowReward { default } => match row.get("reward").and_then(Value::as_f64) {
                Some(r) => Scored::new(r, format!("Score taken from the row's reward ({r}).")),
                None => Scored::new(
                    *default,
                    format!("The row has no numeric reward; default score {default}."),
                ),
            },
            Self::TrajectoryImitation => {
                let expected = row.get("expected_trajectory").and_then(Value::as_array);
                // The tools as the rollout offered them (either accepted form); a row whose
                // tools cannot be read never got this far (its rollout failed).
                let tools = row_tools(row).unwrap_or_default();
                match (expected, row_expected(row)) {
                    // `[]` is a reference too: the agent must not call any tool.
                    (Some(calls), answer) if calls.is_empty() => {
                        trajectory::no_calls(answer.as_deref(), outcome)
                    }
                    (Some(calls), _) => trajectory::score(calls, &tools, outcome),
                    (None, Some(answer)) => exact_match(&answer, outcome),
                    (None, None) => Scored::new(
                        0.0,
                        "Cannot score: the row has neither expected_trajectory nor \
                         expected_output (or answer).",
                    ),
                }
            }
        }
    }
}

/// The row's expected output: `expected_output`, else `answer`; numbers are written as text.
fn row_expected(row: &Value) -> Option<String> {
    ["expected_output", "answer"]
        .iter()
        .filter_map(|k| row.get(*k))
        .find_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
            _ => None,
        })
}

fn exact_match(expected: &str, outcome: &Outcome) -> Scored {
    let expected = expected.trim();
    let Some(text) = outcome.final_text.as_deref() else {
        return Scored::new(
            0.0,
            format!(
                "Incorrect. Expected exactly {} and nothing else; got {}.",
                quote(expected),
                describe_text(outcome)
            ),
        );
    };
    let got = text.trim();
    if got == expected {
        return Scored::new(
            1.0,
            format!("Correct: the answer is exactly {}.", quote(expected)),
        );
    }
    let mut feedback = format!(
        "Incorrect. Expected exactly {} and nothing else; got {}.",
        quote(expected),
        quote(got)
    );
    let loose = |s: &str| {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    if !expected.is_empty() && loose(got) == loose(expected) {
        feedback.push_str(" The content is right but the case, spacing or punctuation differs: answer with the exact label only.");
    } else if !expected.is_empty() && got.contains(expected) {
        feedback
            .push_str(" The answer contains the expected text but adds more: reply with it alone.");
    }
    Scored::new(0.0, feedback)
}

fn describe_text(outcome: &Outcome) -> String {
    match outcome.final_text.as_deref() {
        Some(t) if !t.trim().is_empty() => quote(t.trim()),
        _ if !outcome.tool_calls.is_empty() => format!(
            "no text, only tool calls ({})",
            outcome
                .tool_calls
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "an empty answer".to_owned(),
    }
}

/// `'text'`, shortened to 300 characters.
fn quote(text: &str) -> String {
    let short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        format!("'{short}…'")
    } else {
        format!("'{short}'")
    }
}

struct Params<'a> {
    recipe: &'static str,
    params: &'a Map<String, Value>,
}

impl Params<'_> {
    fn invalid(&self, param: &str, message: &str) -> RecipeError {
        RecipeError::InvalidParam {
            recipe: self.recipe,
            param: format!("params.{param}"),
            message: message.to_owned(),
        }
    }

    fn only(&self, allowed: &[&str]) -> Result<(), RecipeError> {
        match self.params.keys().find(|k| !allowed.contains(&k.as_str())) {
            None => Ok(()),
            Some(key) => Err(RecipeError::InvalidParam {
                recipe: self.recipe,
                param: format!("params.{key}"),
                message: if allowed.is_empty() {
                    format!("no params, but got params.{key}")
                } else {
                    format!(
                        "only {}, but got params.{key}",
                        allowed
                            .iter()
                            .map(|a| format!("params.{a}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            }),
        }
    }

    fn string(&self, name: &str, required: bool) -> Result<Option<String>, RecipeError> {
        match self.params.get(name) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            None | Some(Value::Null) if !required => Ok(None),
            _ => Err(self.invalid(name, &format!("params.{name} (a string)"))),
        }
    }

    fn unit_number(&self, name: &str) -> Result<Option<f64>, RecipeError> {
        match self.params.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => Ok(Some(x)),
                _ => Err(self.invalid(name, &format!("params.{name} (a number from 0 to 1)"))),
            },
        }
    }
}

/// `trajectory_imitation_v1` on tool calls.
///
/// Calls are matched to expected calls one to one, ignoring order (single-turn rows ask for
/// parallel calls), by the assignment with the highest total credit. One pair's credit is 0 for
/// a different function name, else `(1 + matching expected arguments) / (1 + expected arguments +
/// unexpected arguments)`. The score is the total credit divided by the larger of the expected
/// and the actual number of calls, so both missing and extra calls cost.
///
/// Argument values match when equal, with numbers compared numerically (`4` = `4.0`) and strings
/// compared as BFCL does (case, spaces and `,./-_*^` ignored). An expected list for a parameter
/// whose schema type is a scalar or not declared (or a list of lists for an `array` one) is
/// BFCL's list of acceptable values, while the list itself also matches; `""` among them means the argument may be left out. An argument left out
/// also matches when the expected value is the schema's `default`; an extra argument equal to its
/// schema default is not held against the call.
mod trajectory {
    use super::{describe_text, quote, Scored, ToolCall};
    use crate::rollout::Outcome;
    use gepard_llm::ToolSpec;
    use serde_json::{Map, Value};

    struct Expected<'a> {
        name: &'a str,
        arguments: Map<String, Value>,
    }

    struct Comparison {
        credit: f64,
        problems: Vec<String>,
    }

    pub(super) fn score(expected: &[Value], tools: &[ToolSpec], outcome: &Outcome) -> Scored {
        let expected: Vec<Expected<'_>> = expected
            .iter()
            .map(|call| Expected {
                name: call.get("name").and_then(Value::as_str).unwrap_or(""),
                arguments: call
                    .get("arguments")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        let actual = &outcome.tool_calls;
        if actual.is_empty() {
            return Scored::new(
                0.0,
                format!(
                    "Incorrect. Expected {} tool call(s) ({}) but the agent made none; it answered {}.",
                    expected.len(),
                    expected.iter().map(|e| format!("`{}`", e.name)).collect::<Vec<_>>().join(", "),
                    describe_text(outcome)
                ),
            );
        }
        let table: Vec<Vec<Comparison>> = expected
            .iter()
            .map(|e| actual.iter().map(|a| compare(e, a, tools)).collect())
            .collect();
        let pairs = best_assignment(&table, expected.len(), actual.len());
        let total: f64 = pairs.iter().map(|&(e, a)| table[e][a].credit).sum();
        let score = total / expected.len().max(actual.len()) as f64;

        let mut notes = Vec::new();
        let mut matched_expected = vec![false; expected.len()];
        let mut matched_actual = vec![false; actual.len()];
        for &(e, a) in &pairs {
            matched_expected[e] = true;
            matched_actual[a] = true;
            let c = &table[e][a];
            if !c.problems.is_empty() {
                notes.push(format!(
                    "Call `{}` (call {} of the agent): {}.",
                    expected[e].name,
                    a + 1,
                    c.problems.join("; ")
                ));
            }
        }
        for (e, done) in matched_expected.iter().enumerate() {
            if !done {
                notes.push(format!(
                    "Missing call: `{}` with arguments {}.",
                    expected[e].name,
                    short_json(&Value::Object(expected[e].arguments.clone()))
                ));
            }
        }
        for (a, done) in matched_actual.iter().enumerate() {
            if !done {
                notes.push(format!(
                    "Unexpected call {}: `{}` with arguments {}.",
                    a + 1,
                    actual[a].name,
                    short_json(&actual[a].arguments)
                ));
            }
        }
        if notes.is_empty() {
            return Scored::new(
                1.0,
                format!(
                    "Correct: all {} expected tool call(s) were made with the expected arguments.",
                    expected.len()
                ),
            );
        }
        let scored = Scored::new(score, String::new());
        // A total miss is not "partly" anything: the reflection model reads this first.
        let verdict = if scored.score > 0.0 {
            "Partly correct"
        } else {
            "Incorrect"
        };
        let head = if expected.len() == actual.len() {
            format!("{verdict} (score {:.2}).", scored.score)
        } else {
            format!(
                "{verdict} (score {:.2}). Expected {} tool call(s), got {}.",
                scored.score,
                expected.len(),
                actual.len()
            )
        };
        Scored::new(scored.score, format!("{head} {}", notes.join(" ")))
    }

    /// A row whose `expected_trajectory` is `[]`: any tool call is wrong; without calls, the
    /// row's expected output (if it has one) must be the exact final answer.
    pub(super) fn no_calls(answer: Option<&str>, outcome: &Outcome) -> Scored {
        if !outcome.tool_calls.is_empty() {
            let calls: Vec<String> = outcome
                .tool_calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    format!(
                        "call {}: `{}` with arguments {}",
                        i + 1,
                        c.name,
                        short_json(&c.arguments)
                    )
                })
                .collect();
            return Scored::new(
                0.0,
                format!(
                    "Incorrect. No tool call was expected, but the agent made {} ({}).",
                    calls.len(),
                    calls.join("; ")
                ),
            );
        }
        match answer {
            Some(answer) => super::exact_match(answer, outcome),
            None => Scored::new(
                1.0,
                "Correct: no tool call was expected and the agent made none.",
            ),
        }
    }

    /// The one-to-one pairing of expected and actual calls with the highest total credit (pairs
    /// with no credit are dropped). Exhaustive over subsets of expected calls, which BFCL keeps
    /// small; beyond 12 expected calls a greedy pairing is used.
    fn best_assignment(table: &[Vec<Comparison>], n: usize, m: usize) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        if n <= 12 {
            // dp[mask] = best credit using expected calls in `mask` for the actual calls seen so
            // far; choice[i][mask] remembers which expected call actual call i took.
            let size = 1usize << n;
            let mut dp = vec![f64::NEG_INFINITY; size];
            dp[0] = 0.0;
            let mut choice = vec![vec![None; size]; m];
            for (a, choice_a) in choice.iter_mut().enumerate() {
                let mut next = dp.clone(); // actual call a left unmatched
                for (mask, &here) in dp.iter().enumerate() {
                    if here == f64::NEG_INFINITY {
                        continue;
                    }
                    for (e, row) in table.iter().enumerate() {
                        let credit = row[a].credit;
                        if mask & (1 << e) != 0 || credit <= 0.0 {
                            continue;
                        }
                        let to = mask | (1 << e);
                        if here + credit > next[to] {
                            next[to] = here + credit;
                            choice_a[to] = Some((e, mask));
                        }
                    }
                }
                // A choice is only recorded on strict improvement over leaving call `a`
                // unmatched, so `None` means "unmatched" when walking back.
                dp = next;
            }
            let mut mask = (0..size)
                .max_by(|x, y| dp[*x].total_cmp(&dp[*y]))
                .unwrap_or(0);
            for a in (0..m).rev() {
                if let Some((e, prev)) = choice[a][mask] {
                    pairs.push((e, a));
                    mask = prev;
                }
            }
        } else {
            let mut used_a = vec![false; m];
            for (e, row) in table.iter().enumerate() {
                let best = (0..m)
                    .filter(|a| !used_a[*a] && row[*a].credit > 0.0)
                    .max_by(|x, y| row[*x].credit.total_cmp(&row[*y].credit));
                if let Some(a) = best {
                    used_a[a] = true;
                    pairs.push((e, a));
                }
            }
        }
        pairs.sort_unstable();
        pairs
    }

    fn schema_of<'a>(tools: &'a [ToolSpec], function: &str, arg: &str) -> Option<&'a Value> {
        tools
            .iter()
            .find(|t| t.name == function)?
            .parameters
            .get("properties")?
            .get(arg)
    }

    fn compare(expected: &Expected<'_>, actual: &ToolCall, tools: &[ToolSpec]) -> Comparison {
        if expected.name != actual.name {
            return Comparison {
                credit: 0.0,
                problems: vec![format!("called `{}` instead", actual.name)],
            };
        }
        let empty = Map::new();
        let got = actual.arguments.as_object().unwrap_or(&empty);
        let mut problems = Vec::new();
        if !actual.arguments.is_object() {
            problems.push(format!(
                "the arguments are not a JSON object: {}",
                short_json(&actual.arguments)
            ));
        }
        let mut matched = 0usize;
        for (name, want) in &expected.arguments {
            let schema = schema_of(tools, expected.name, name);
            let ty = schema.and_then(|s| s.get("type")).and_then(Value::as_str);
            let default = schema.and_then(|s| s.get("default"));
            let alternatives: Vec<&Value> = match want {
                Value::Array(options) if !options.is_empty() => match ty {
                    // Scalar or undeclared parameter: BFCL's acceptable values (the list
                    // itself still matches too, see below).
                    None | Some("string" | "integer" | "number" | "float" | "boolean") => {
                        options.iter().collect()
                    }
                    Some("array" | "tuple") if options.iter().all(Value::is_array) => {
                        options.iter().collect()
                    }
                    _ => vec![want],
                },
                _ => vec![want],
            };
            match got.get(name) {
                Some(value) => {
                    if same(want, value) || alternatives.iter().any(|w| same(w, value)) {
                        matched += 1;
                    } else {
                        problems.push(format!(
                            "argument `{name}` expected {}, got {}",
                            show_expected(&alternatives),
                            short_json(value)
                        ));
                    }
                }
                None => {
                    let optional = alternatives.iter().any(|w| w.as_str() == Some(""))
                        || default.is_some_and(|d| alternatives.iter().any(|w| same(w, d)));
                    if optional {
                        matched += 1;
                    } else {
                        problems.push(format!(
                            "argument `{name}` is missing (expected {})",
                            show_expected(&alternatives)
                        ));
                    }
                }
            }
        }
        let mut extra = 0usize;
        for (name, value) in got {
            if expected.arguments.contains_key(name) {
                continue;
            }
            let default = schema_of(tools, expected.name, name).and_then(|s| s.get("default"));
            if default.is_some_and(|d| same(d, value)) {
                continue;
            }
            extra += 1;
            problems.push(format!(
                "unexpected argument `{name}` = {}",
                short_json(value)
            ));
        }
        let credit = (1 + matched) as f64 / (1 + expected.arguments.len() + extra) as f64;
        Comparison { credit, problems }
    }

    fn show_expected(alternatives: &[&Value]) -> String {
        let shown: Vec<String> = alternatives
            .iter()
            .filter(|v| v.as_str() != Some(""))
            .map(|v| short_json(v))
            .collect();
        match shown.len() {
            0 => "nothing".to_owned(),
            1 => shown[0].clone(),
            _ => format!("one of {}", shown.join(", ")),
        }
    }

    /// BFCL-style equality: numbers numerically, strings without case, spaces and `,./-_*^`,
    /// lists element by element in order, objects key by key.
    pub(super) fn same(want: &Value, got: &Value) -> bool {
        match (want, got) {
            (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                _ => a == b,
            },
            (Value::String(a), Value::String(b)) => a == b || loose(a) == loose(b),
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
            }
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
            }
            _ => want == got,
        }
    }

    fn loose(s: &str) -> String {
        s.chars()
            .filter(|c| !matches!(c, ' ' | ',' | '.' | '/' | '-' | '_' | '*' | '^'))
            .flat_map(char::to_lowercase)
            .collect()
    }

    fn short_json(value: &Value) -> String {
        match value {
            Value::String(s) => quote(s),
            other => {
                let text = other.to_string();
                if text.chars().count() > 200 {
                    format!("{}…", text.chars().take(200).collect::<String>())
                } else {
                    text
                }
            }
        }
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn text(t: &str) -> Outcome {
        Outcome {
            final_text: Some(t.to_owned()),
            ..Outcome::default()
        }
    }

    fn calls(calls: &[(&str, Value)]) -> Outcome {
        Outcome {
            tool_calls: calls
                .iter()
                .enumerate()
                .map(|(i, (name, arguments))| ToolCall {
                    id: format!("call_{i}"),
                    name: (*name).to_owned(),
                    arguments: arguments.clone(),
                })
                .collect(),
            ..Outcome::default()
        }
    }

    /// `shared/data/<file>` beside the repository (where CI lays it too).
    fn data_rows(file: &str) -> Vec<Value> {
        let path = std::env::var_os("GEPARD_SHARED_DATA").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
            PathBuf::from,
        );
        let path = path.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn trajectory_row() -> Value {
        data_rows("tool_calls.jsonl")
            .into_iter()
            .find(|r| r["metadata"]["id"] == "parallel_multiple_78")
            .expect("row parallel_multiple_78 is in tool_calls.jsonl")
    }

    #[test]
    fn a_recipe_with_a_missing_param_names_the_param() {
        let err = Recipe::from_spec("contains_v1", &json!({})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "contains_v1 needs params.needle (a string)"
        );
        let err = Recipe::from_spec("contains_v1", &json!({"needle": 3})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "contains_v1 needs params.needle (a string)"
        );
        let err = Recipe::from_spec("contains_v1", &json!({"needle": "x", "reward_if_true": 2}))
            .unwrap_err();
        assert!(
            matches!(&err, RecipeError::InvalidParam { param, .. } if param == "params.reward_if_true")
        );
        let err = Recipe::from_spec("exact_match_v1", &json!({"expectd": "x"})).unwrap_err();
        assert!(err.to_string().contains("params.expectd"), "{err}");
        let err = Recipe::from_spec("row_reward_v1", &json!("oops")).unwrap_err();
        assert!(err.to_string().contains("JSON object"), "{err}");
        let err = Recipe::from_spec("trajectory_imitation_v1", &json!({"x": 1})).unwrap_err();
        assert!(err.to_string().contains("no params"), "{err}");
    }

    #[test]
    fn an_unknown_recipe_lists_the_known_ones() {
        let err = Recipe::from_spec("f1_v1", &Value::Null).unwrap_err();
        let msg = err.to_string();
        for name in RECIPE_NAMES {
            assert!(msg.contains(name), "{msg}");
        }
        assert!(msg.contains("`f1_v1`"));
    }

    #[test]
    fn exact_match_is_trimmed_and_case_sensitive_with_feedback_for_reflection() {
        let row = &data_rows("sentiment_uci.jsonl")[1];
        assert_eq!(row["expected_output"], "negative");
        let recipe = Recipe::from_spec("exact_match_v1", &Value::Null).unwrap();
        let good = recipe.score(row, &text("  negative\n"));
        assert!((good.score - 1.0).abs() < f64::EPSILON, "{good:?}");
        let bad = recipe.score(row, &text("Negative."));
        assert!(bad.score.abs() < f64::EPSILON);
        assert!(
            bad.feedback.starts_with(
                "Incorrect. Expected exactly 'negative' and nothing else; got 'Negative.'"
            ),
            "{}",
            bad.feedback
        );
        assert!(bad.feedback.contains("case"), "{}", bad.feedback);
        let wordy = recipe.score(row, &text("The sentiment is negative"));
        assert!(wordy.feedback.contains("adds more"), "{}", wordy.feedback);
    }

    #[test]
    fn a_row_without_anything_to_compare_with_is_refused_only_by_recipes_that_need_it() {
        let bare = json!({"goal": "?"});
        let exact = Recipe::from_spec("exact_match_v1", &json!({})).unwrap();
        assert!(exact
            .check_row(&bare)
            .unwrap_err()
            .contains("no expected_output"));
        assert!(exact.check_row(&json!({"goal": "?", "answer": 4})).is_ok());
        let fixed = Recipe::from_spec("exact_match_v1", &json!({"expected": "x"})).unwrap();
        assert!(fixed.check_row(&bare).is_ok());
        let imitation = Recipe::from_spec("trajectory_imitation_v1", &json!({})).unwrap();
        assert!(imitation.check_row(&bare).is_err());
        assert!(imitation
            .check_row(&json!({"goal": "?", "expected_trajectory": []}))
            .is_ok());
        for lenient in [
            Recipe::from_spec("row_reward_v1", &json!({})).unwrap(),
            Recipe::from_spec("contains_v1", &json!({"needle": "x"})).unwrap(),
        ] {
            assert!(lenient.check_row(&bare).is_ok(), "{}", lenient.name());
        }
    }

    #[test]
    fn row_reward_refuses_a_row_whose_reward_is_there_but_not_a_number_from_0_to_1() {
        let recipe = Recipe::from_spec("row_reward_v1", &json!({"default": 0.5})).unwrap();
        assert_eq!(
            recipe.check_row(&json!({"goal": "?", "reward": "high"})),
            Err("the row's reward is \"high\", not a number (row_reward_v1 scores with it)".into())
        );
        for (outside, shown) in [(json!(5), "5"), (json!(-1), "-1"), (json!(1.5), "1.5")] {
            assert_eq!(
                recipe.check_row(&json!({"goal": "?", "reward": outside})),
                Err(format!(
                    "the row's reward is {shown}, not a number from 0 to 1 (row_reward_v1 \
                     scores with it, and a score is between 0 and 1)"
                )),
            );
        }
        for fine in [
            json!({"goal": "?", "reward": 0}),
            json!({"goal": "?", "reward": 1}),
            json!({"goal": "?", "reward": 0.3}),
            json!({"goal": "?", "reward": null}),
            json!({"goal": "?", "reward": " "}),
            json!({"goal": "?"}),
        ] {
            assert_eq!(recipe.check_row(&fine), Ok(()), "{fine}");
        }
    }

    #[test]
    fn exact_match_prefers_params_expected_then_expected_output_then_answer() {
        let recipe = Recipe::from_spec("exact_match_v1", &json!({"expected": "yes"})).unwrap();
        let row = json!({"goal": "?", "expected_output": "no"});
        assert!((recipe.score(&row, &text("yes")).score - 1.0).abs() < f64::EPSILON);
        let recipe = Recipe::from_spec("exact_match_v1", &json!({})).unwrap();
        let numeric = json!({"goal": "What is 80 plus 29?", "answer": 109});
        assert!((recipe.score(&numeric, &text("109")).score - 1.0).abs() < f64::EPSILON);
        let none = recipe.score(&json!({"goal": "x"}), &text("x"));
        assert!(none.score.abs() < f64::EPSILON);
        assert!(
            none.feedback.contains("no expected_output"),
            "{}",
            none.feedback
        );
    }

    #[test]
    fn every_real_arithmetic_row_scores_one_for_its_own_answer_and_zero_for_another() {
        let recipe = Recipe::from_spec("exact_match_v1", &Value::Null).unwrap();
        let rows = data_rows("arithmetic_2digit.jsonl");
        assert!(rows.len() > 1000);
        for row in &rows {
            let answer = row["expected_output"].as_str().unwrap();
            assert!((recipe.score(row, &text(answer)).score - 1.0).abs() < f64::EPSILON);
            assert!(recipe.score(row, &text("-1000")).score.abs() < f64::EPSILON);
        }
    }

    #[test]
    fn contains_uses_the_configured_rewards() {
        let recipe = Recipe::from_spec(
            "contains_v1",
            &json!({"needle": "spam", "reward_if_true": 0.9, "reward_if_false": 0.1}),
        )
        .unwrap();
        let row = json!({"goal": "x"});
        assert!((recipe.score(&row, &text("this is spam")).score - 0.9).abs() < 1e-12);
        let miss = recipe.score(&row, &text("SPAM"));
        assert!((miss.score - 0.1).abs() < 1e-12);
        assert!(
            miss.feedback.contains("must contain 'spam'"),
            "{}",
            miss.feedback
        );
        let defaults = Recipe::from_spec("contains_v1", &json!({"needle": "a"})).unwrap();
        assert!((defaults.score(&row, &text("a")).score - 1.0).abs() < f64::EPSILON);
        assert!(defaults.score(&row, &text("b")).score.abs() < f64::EPSILON);
    }

    #[test]
    fn row_reward_reads_the_row_else_the_default_and_stays_in_range() {
        let recipe = Recipe::from_spec("row_reward_v1", &json!({"default": 0.25})).unwrap();
        let o = text("whatever");
        assert!((recipe.score(&json!({"reward": 0.7}), &o).score - 0.7).abs() < 1e-12);
        assert!((recipe.score(&json!({"reward": 3}), &o).score - 1.0).abs() < 1e-12);
        assert!((recipe.score(&json!({"reward": "high"}), &o).score - 0.25).abs() < 1e-12);
        let plain = Recipe::from_spec("row_reward_v1", &Value::Null).unwrap();
        assert!(plain.score(&json!({}), &o).score.abs() < f64::EPSILON);
    }

    #[test]
    fn a_failed_rollout_scores_zero_with_the_error_as_feedback() {
        let outcome = Outcome {
            error: Some("provider `vllm` failed with HTTP 503".into()),
            ..Outcome::default()
        };
        for name in RECIPE_NAMES {
            let params = if *name == "contains_v1" {
                json!({"needle": "x"})
            } else {
                Value::Null
            };
            let scored = Recipe::from_spec(name, &params)
                .unwrap()
                .score(&json!({"reward": 1.0, "expected_output": "x"}), &outcome);
            assert!(scored.score.abs() < f64::EPSILON, "{name}");
            assert!(
                scored.feedback.contains("HTTP 503"),
                "{name}: {}",
                scored.feedback
            );
        }
    }

    #[test]
    fn trajectory_imitation_gives_full_credit_in_any_order_on_a_real_row() {
        let row = trajectory_row();
        let expected = row["expected_trajectory"].as_array().unwrap();
        let mut made: Vec<(&str, Value)> = expected
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["arguments"].clone()))
            .collect();
        made.reverse();
        let recipe = Recipe::TrajectoryImitation;
        let scored = recipe.score(&row, &calls(&made));
        assert!((scored.score - 1.0).abs() < 1e-12, "{scored:?}");
        assert!(
            scored.feedback.starts_with("Correct"),
            "{}",
            scored.feedback
        );
    }

    #[test]
    fn trajectory_imitation_gives_partial_credit_and_names_the_wrong_argument() {
        let row = trajectory_row();
        let recipe = Recipe::TrajectoryImitation;
        let made = vec![
            (
                "maps.shortest_path",
                json!({"start_location": "New York City", "end_location": "Metropolitan Museum of Art", "mode": "walk"}),
            ),
            (
                "maps.shortest_path",
                json!({"start_location": "Metropolitan Museum of Art", "end_location": "Central Park", "mode": "bike"}),
            ),
            (
                "maps.route_times",
                json!({"route": "New York City to Metropolitan Museum of Art", "mode": "walk"}),
            ),
            (
                "maps.route_times",
                json!({"route": "Metropolitan Museum of Art to Central Park", "mode": "walk"}),
            ),
        ];
        let scored = recipe.score(&row, &calls(&made));
        // Three perfect calls, one with 2 of 3 (name + route, not mode): (3 + 2/3) / 4.
        assert!(
            (scored.score - (3.0 + 2.0 / 3.0) / 4.0).abs() < 1e-9,
            "{scored:?}"
        );
        assert!(
            scored.feedback.contains("`maps.route_times`")
                && scored
                    .feedback
                    .contains("argument `mode` expected 'bike', got 'walk'"),
            "{}",
            scored.feedback
        );

        // A missing call costs a quarter and is named.
        let scored = recipe.score(&row, &calls(&made[..3]));
        assert!((scored.score - 0.75).abs() < 1e-9, "{scored:?}");
        assert!(
            scored.feedback.contains("Missing call: `maps.route_times`"),
            "{}",
            scored.feedback
        );
        assert!(
            scored.feedback.contains("Expected 4 tool call(s), got 3"),
            "{}",
            scored.feedback
        );

        // An extra call dilutes the score.
        let mut extra = made[..2].to_vec();
        extra.extend_from_slice(&made[2..3]);
        extra.push((
            "maps.route_times",
            json!({"route": "Metropolitan Museum of Art to Central Park", "mode": "bike"}),
        ));
        extra.push(("weather.get", json!({"city": "NYC"})));
        let scored = recipe.score(&row, &calls(&extra));
        assert!((scored.score - 0.8).abs() < 1e-9, "{scored:?}");
        assert!(
            scored.feedback.contains("Unexpected call 5: `weather.get`"),
            "{}",
            scored.feedback
        );
    }

    #[test]
    fn trajectory_imitation_accepts_defaults_numeric_forms_and_bfcl_string_leniency() {
        let row = trajectory_row();
        let recipe = Recipe::TrajectoryImitation;
        // `mode` defaults to "walk" in the schema: leaving it out of a walking call is right.
        let made = vec![
            (
                "maps.shortest_path",
                json!({"start_location": "new york city", "end_location": "Metropolitan Museum of Art"}),
            ),
            (
                "maps.shortest_path",
                json!({"start_location": "Metropolitan Museum of Art", "end_location": "Central Park", "mode": "bike"}),
            ),
            (
                "maps.route_times",
                json!({"route": "New York City to Metropolitan Museum of Art"}),
            ),
            (
                "maps.route_times",
                json!({"route": "Metropolitan Museum of Art to Central Park", "mode": "bike"}),
            ),
        ];
        let scored = recipe.score(&row, &calls(&made));
        assert!((scored.score - 1.0).abs() < 1e-12, "{scored:?}");

        let hotel = json!({
            "goal": "hotels",
            "tools": [{"name": "hotel.find", "parameters": {"type": "dict", "properties": {
                "location": {"type": "string"}, "stars": {"type": "integer"},
                "amenities": {"type": "array", "items": {"type": "string"}}}}}],
            "expected_trajectory": [{"name": "hotel.find", "arguments": {
                "location": ["Paris", "Paris, France"], "stars": 4, "amenities": ["Gym", "Free WiFi"],
                "currency": ["", "EUR"]}}]
        });
        let ok = recipe.score(&hotel, &calls(&[("hotel.find", json!({"location": "Paris, France", "stars": 4.0, "amenities": ["Gym", "Free WiFi"]}))]));
        assert!((ok.score - 1.0).abs() < 1e-12, "{ok:?}");
        // For an array parameter the list is the value itself, not a choice of one element.
        let wrong = recipe.score(
            &hotel,
            &calls(&[(
                "hotel.find",
                json!({"location": "Paris", "stars": 4, "amenities": "Gym"}),
            )]),
        );
        assert!(wrong.score < 1.0, "{wrong:?}");
        assert!(
            wrong.feedback.contains("argument `amenities`"),
            "{}",
            wrong.feedback
        );
        let outside = recipe.score(
            &hotel,
            &calls(&[(
                "hotel.find",
                json!({"location": "Lyon", "stars": 4, "amenities": ["Gym", "Free WiFi"]}),
            )]),
        );
        assert!(
            outside
                .feedback
                .contains("expected one of 'Paris', 'Paris, France', got 'Lyon'"),
            "{}",
            outside.feedback
        );
    }

    #[test]
    fn trajectory_imitation_explains_a_text_answer_when_calls_were_expected() {
        let row = trajectory_row();
        let scored = Recipe::TrajectoryImitation.score(&row, &text("Sure, walk north."));
        assert!(scored.score.abs() < f64::EPSILON);
        assert!(
            scored.feedback.contains("Expected 4 tool call(s)")
                && scored.feedback.contains("made none")
                && scored.feedback.contains("'Sure, walk north.'"),
            "{}",
            scored.feedback
        );
        // Rows without a trajectory fall back to the exact final answer.
        let plain = json!({"goal": "2+2?", "expected_output": "4"});
        assert!((Recipe::TrajectoryImitation.score(&plain, &text("4")).score - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_total_trajectory_miss_scores_plain_zero_and_is_not_called_partly_correct() {
        let row = trajectory_row();
        let scored = Recipe::TrajectoryImitation
            .score(&row, &calls(&[("weather.get", json!({"city": "NYC"}))]));
        assert_eq!(scored.score.to_bits(), 0.0f64.to_bits(), "{scored:?}");
        assert!(
            scored.feedback.starts_with("Incorrect (score 0.00)."),
            "{}",
            scored.feedback
        );
        assert!(!scored.feedback.contains("Partly"), "{}", scored.feedback);
        assert!(
            scored.feedback.contains("Unexpected call 1: `weather.get`"),
            "{}",
            scored.feedback
        );
    }

    #[test]
    fn no_recipe_ever_scores_negative_zero() {
        let scored = Scored::new(-0.0, "x");
        assert_eq!(scored.score.to_bits(), 0.0f64.to_bits());
        assert_eq!(format!("{:.3}", scored.score), "0.000");
    }

    #[test]
    fn an_empty_expected_trajectory_means_the_agent_must_make_no_tool_call() {
        let row = json!({"goal": "Tell me a joke.", "tools": [{"name": "search"}],
                         "expected_trajectory": []});
        let recipe = Recipe::TrajectoryImitation;
        let none = recipe.score(&row, &text("Why did the chicken cross the road?"));
        assert!((none.score - 1.0).abs() < f64::EPSILON, "{none:?}");
        assert!(none.feedback.starts_with("Correct"), "{}", none.feedback);

        let some = recipe.score(&row, &calls(&[("search", json!({"q": "joke"}))]));
        assert_eq!(some.score.to_bits(), 0.0f64.to_bits(), "{some:?}");
        assert!(
            some.feedback.contains("No tool call was expected")
                && some
                    .feedback
                    .contains("`search` with arguments {\"q\":\"joke\"}"),
            "{}",
            some.feedback
        );

        // With an expected output as well, the answer must also be exactly right.
        let answered = json!({"goal": "2+2?", "expected_trajectory": [], "expected_output": "4"});
        assert!((recipe.score(&answered, &text("4")).score - 1.0).abs() < f64::EPSILON);
        assert!(recipe.score(&answered, &text("5")).score.abs() < f64::EPSILON);
    }

    #[test]
    fn every_real_tool_call_row_scores_one_for_its_reference_and_zero_for_nothing() {
        let rows = data_rows("tool_calls.jsonl");
        assert_eq!(rows.len(), 300);
        let recipe = Recipe::from_spec("trajectory_imitation_v1", &Value::Null).unwrap();
        for row in &rows {
            let reference: Vec<(&str, Value)> = row["expected_trajectory"]
                .as_array()
                .unwrap()
                .iter()
                .rev()
                .map(|c| (c["name"].as_str().unwrap(), c["arguments"].clone()))
                .collect();
            let id = &row["metadata"]["id"];
            let full = recipe.score(row, &calls(&reference));
            assert!((full.score - 1.0).abs() < 1e-12, "{id}: {full:?}");
            let none = recipe.score(row, &text(""));
            assert!(none.score.abs() < f64::EPSILON, "{id}");
            // Dropping the first call's arguments must cost something.
            let mut broken = reference.clone();
            broken[0].1 = json!({});
            let partial = recipe.score(row, &calls(&broken));
            let has_args = !row["expected_trajectory"][reference.len() - 1]["arguments"]
                .as_object()
                .unwrap()
                .is_empty();
            if has_args {
                assert!(partial.score < 1.0, "{id}: {partial:?}");
            }
        }
    }
}
