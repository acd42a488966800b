//! `builtin/rules`: a reflection strategy that needs no model.
//!
//! It reads the reward feedback of the reflective dataset (gepard's recipes write feedback such
//! as `Incorrect. Expected exactly 'negative' and nothing else; got 'Negative.'.`), infers the
//! answer vocabulary and format from the expected answers quoted there, classifies the mistakes
//! (wrong case, extra punctuation, extra words, wrong label, chatter), and rewrites the
//! instruction with a bounded "answer rules" section: the labels, the format, the recurring
//! mistakes and a few worked examples from the failures. The output depends only on its input.
//!
//! Worked examples are written as the conversation the target model is in (`User: <input>`,
//! then `Assistant: <expected answer>`) and close the section: a model too small to follow
//! rules still copies that pattern. They accumulate across rounds (the earlier section's
//! examples are kept, the newest of each answer first, at most four), so the instruction does
//! not forget an answer that the latest minibatch happened not to contain.
//!
//! It exists so a machine with no API key can run a real optimization with a tiny local model,
//! which cannot write prompts itself. It makes the edits a careful person makes from feedback;
//! it does not understand the task. An LLM reflection model is the real thing.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use gepard_gepa::{Proposal, ProposeError, Proposer, ReflectiveRecord};
use gepard_llm::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, LlmError, Message, ModelRegistry,
    ProviderFactory, Usage,
};

/// The strategy id (as a job's reflection model).
pub const RULES_ID: &str = "builtin/rules";

/// The heading that opens the generated section. Text after it in the current instruction was
/// written by this strategy and is replaced (its labels are kept) on the next proposal.
pub const RULES_HEADING: &str = "## Answer rules (learned from feedback)";

/// The generated section never exceeds this many characters.
pub const MAX_RULES_CHARS: usize = 1600;

const MAX_LABELS: usize = 16;
const FINAL_PREFIX: &str = "Reply with exactly one word or phrase: ";
const MAX_LABEL_CHARS: usize = 40;
const MAX_EXAMPLES: usize = 4;
/// Longer expected answers are not shown as worked examples (they would not fit whole).
const MAX_EXPECTED_CHARS: usize = 200;
const MAX_EXAMPLE_INPUT_CHARS: usize = 240;
const MAX_SHOWN_OUTPUT_CHARS: usize = 60;

/// The `builtin/rules` proposer. Stateless and deterministic.
#[derive(Debug, Clone, Copy, Default)]
pub struct RulesProposer;

impl RulesProposer {
    /// A new proposer.
    pub fn new() -> Self {
        Self
    }
}

/// What the feedback of one record says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Judged {
    expected: String,
    got: Option<String>,
    correct: bool,
}

/// A mistake kind, in the order the rules mention them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mistake {
    Case,
    Punctuation,
    ExtraWords,
    WrongLabel,
    Other,
}

/// Text between a quote at `open` and the quote that ends it: the last quote followed by
/// `terminator` (or the end). Quotes inside the text survive because the recipe does not
/// escape them.
fn quoted_after<'a>(text: &'a str, marker: &str, terminators: &[&str]) -> Option<&'a str> {
    let start = text.find(marker)? + marker.len();
    let rest = &text[start..];
    let quote = rest.chars().next()?;
    if quote != '\'' && quote != '"' {
        return None;
    }
    let body = &rest[1..];
    let mut best: Option<usize> = None;
    for t in terminators {
        let pat = format!("{quote}{t}");
        if let Some(i) = body.find(&pat) {
            best = Some(best.map_or(i, |b| b.min(i)));
        }
    }
    // With no terminator found, the answer ran to the last quote.
    let end = best.or_else(|| body.rfind(quote))?;
    Some(body[..end].strip_suffix('…').unwrap_or(&body[..end]))
}

fn judge(feedback: &str) -> Option<Judged> {
    if let Some(expected) = quoted_after(feedback, "Expected exactly ", &[" and nothing else"]) {
        let got = if feedback.contains("; got '") || feedback.contains("; got \"") {
            let start = feedback.find("; got ")? + "; got ".len();
            let rest = &feedback[start..];
            let quote = rest.chars().next()?;
            let body = &rest[1..];
            // The answer ends at the last `'.` (later hint sentences carry no quotes).
            let end = body
                .rfind(&format!("{quote}."))
                .or_else(|| body.rfind(quote))?;
            Some(body[..end].to_owned())
        } else {
            None
        };
        return Some(Judged {
            expected: expected.to_owned(),
            got,
            correct: false,
        });
    }
    if let Some(expected) = quoted_after(feedback, "the answer is exactly ", &["."]) {
        return Some(Judged {
            expected: expected.to_owned(),
            got: None,
            correct: true,
        });
    }
    None
}

fn loose(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn classify(expected: &str, got: &str, labels: &BTreeSet<String>) -> Mistake {
    let (e, g) = (expected.trim(), got.trim());
    if e != g && e.to_lowercase() == g.to_lowercase() {
        return Mistake::Case;
    }
    if loose(e) == loose(g) {
        return Mistake::Punctuation;
    }
    let gl = g.to_lowercase();
    if labels.iter().any(|l| {
        l != e
            && (loose(l) == loose(g)
                || gl.split_whitespace().count() <= 3 && gl.contains(&l.to_lowercase()))
    }) && !gl.contains(&e.to_lowercase())
    {
        return Mistake::WrongLabel;
    }
    if gl.contains(&e.to_lowercase()) {
        return Mistake::ExtraWords;
    }
    Mistake::Other
}

fn shorten(text: &str, max: usize) -> String {
    // One line, and no ``` that would unbalance the fences a reflector extracts the text from.
    let one_line = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("```", "'''");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn quote_list(labels: &BTreeSet<String>) -> String {
    labels
        .iter()
        .map(|l| format!("\"{l}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A worked example as the section shows it: the user message, then the exact reply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Worked {
    input: String,
    answer: String,
}

const USER_PREFIX: &str = "User: ";
const ASSISTANT_PREFIX: &str = "Assistant: ";

/// What an earlier rules section in `current` holds, beside the person-written part.
struct Current {
    base: String,
    labels: BTreeSet<String>,
    worked: Vec<Worked>,
}

/// Splits `current` into the person-written part and the labels and worked examples of an
/// earlier rules section.
fn split_current(current: &str) -> Current {
    let Some(at) = current.find(RULES_HEADING) else {
        return Current {
            base: current.trim_end().to_owned(),
            labels: BTreeSet::new(),
            worked: Vec::new(),
        };
    };
    let base = current[..at].trim_end().to_owned();
    let mut labels = BTreeSet::new();
    let mut worked = Vec::new();
    let mut pending_input: Option<&str> = None;
    for line in current[at..].lines() {
        if let Some(rest) = line.strip_prefix("- Allowed answers: ") {
            let mut parts = rest.split('"');
            // Quoted items are at odd positions: `"a", "b"` splits as ["", a, ", ", b, ...].
            parts.next();
            for (i, p) in parts.enumerate() {
                if i % 2 == 0 && !p.is_empty() {
                    labels.insert(p.to_owned());
                }
            }
        } else if let Some(input) = line.strip_prefix(USER_PREFIX) {
            pending_input = Some(input);
        } else if let (Some(answer), Some(input)) =
            (line.strip_prefix(ASSISTANT_PREFIX), pending_input.take())
        {
            worked.push(Worked {
                input: input.to_owned(),
                answer: answer.to_owned(),
            });
        }
    }
    Current {
        base,
        labels,
        worked,
    }
}

/// At most [`MAX_EXAMPLES`] of `candidates` (oldest first), the newest of each answer taken in
/// turn so every answer keeps an example, returned oldest first.
fn choose_worked(candidates: Vec<Worked>) -> Vec<Worked> {
    // A later example for the same input supersedes an earlier one.
    let mut unique: Vec<Worked> = Vec::new();
    for w in candidates {
        unique.retain(|u| u.input != w.input);
        unique.push(w);
    }
    // Answers in the order of their newest example; each with its examples newest first.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, w) in unique.iter().enumerate().rev() {
        match groups.iter_mut().find(|(a, _)| *a == w.answer) {
            Some((_, members)) => members.push(i),
            None => groups.push((w.answer.clone(), vec![i])),
        }
    }
    let mut chosen = BTreeSet::new();
    let mut round = 0;
    while chosen.len() < MAX_EXAMPLES && chosen.len() < unique.len() {
        for (_, members) in &groups {
            if chosen.len() < MAX_EXAMPLES {
                if let Some(&i) = members.get(round) {
                    chosen.insert(i);
                }
            }
        }
        round += 1;
    }
    chosen.into_iter().map(|i| unique[i].clone()).collect()
}

/// The new instruction for `current` given `examples`, or why there is none.
pub fn propose_rules(current: &str, examples: &[ReflectiveRecord]) -> Result<String, ProposeError> {
    if examples.is_empty() {
        return Err(ProposeError::Rejected(
            "no reflective examples to learn from".to_owned(),
        ));
    }
    let Current {
        base,
        mut labels,
        worked: earlier,
    } = split_current(current);
    let judged: Vec<(usize, Option<Judged>)> = examples
        .iter()
        .enumerate()
        .map(|(i, r)| (i, judge(&r.feedback)))
        .collect();
    for (_, j) in &judged {
        if let Some(j) = j {
            let e = j.expected.trim();
            if !e.is_empty() && e.chars().count() <= MAX_LABEL_CHARS {
                labels.insert(e.to_owned());
            }
        }
    }
    let expected: Vec<&str> = judged
        .iter()
        .filter_map(|(_, j)| j.as_ref().map(|j| j.expected.trim()))
        .filter(|e| !e.is_empty())
        .collect();
    let mut lines: Vec<String> = Vec::new();

    // Vocabulary and format, when the answers look like labels.
    let label_task = !labels.is_empty()
        && labels.len() <= MAX_LABELS
        && labels.iter().all(|l| l.split_whitespace().count() <= 4);
    if label_task {
        lines.push(format!("- Allowed answers: {}.", quote_list(&labels)));
        lines.push(
            "- Reply with exactly one allowed answer and nothing else: no explanation, no extra \
             words, no quotes, no trailing punctuation."
                .to_owned(),
        );
    }
    if !expected.is_empty() {
        if expected.iter().all(|e| e.parse::<f64>().is_ok()) {
            lines.push(
                "- The answer is a number: write only its digits, no units or words.".to_owned(),
            );
        } else if labels.iter().all(|l| *l == l.to_lowercase()) && label_task {
            lines.push("- Write the answer in lowercase, spelled exactly as listed.".to_owned());
        } else if label_task {
            lines.push("- Spell and capitalize the answer exactly as listed.".to_owned());
        }
    }

    // Recurring mistakes, each with its first instance.
    let mut mistakes: Vec<(Mistake, usize, String, String)> = Vec::new();
    for (i, j) in &judged {
        let Some(j) = j else { continue };
        if j.correct {
            continue;
        }
        let got = j
            .got
            .clone()
            .unwrap_or_else(|| examples[*i].generated_outputs.clone());
        let kind = classify(&j.expected, &got, &labels);
        mistakes.push((kind, *i, j.expected.clone(), got));
    }
    let mut kinds: Vec<Mistake> = mistakes.iter().map(|m| m.0).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let count = mistakes.iter().filter(|m| m.0 == kind).count();
        let (_, _, e, g) = mistakes
            .iter()
            .find(|m| m.0 == kind)
            .expect("counted above");
        let (e, g) = (
            shorten(e, MAX_LABEL_CHARS),
            shorten(g, MAX_SHOWN_OUTPUT_CHARS),
        );
        let times = if count == 1 {
            "once".to_owned()
        } else {
            format!("{count} times")
        };
        lines.push(match kind {
            Mistake::Case => format!(
                "- Mistake seen {times}: wrong capitalization (\"{g}\" instead of \"{e}\"). Match the case exactly."
            ),
            Mistake::Punctuation => format!(
                "- Mistake seen {times}: extra punctuation or spacing (\"{g}\" instead of \"{e}\"). Add nothing around the answer."
            ),
            Mistake::ExtraWords => format!(
                "- Mistake seen {times}: extra words around the answer (\"{g}\" instead of \"{e}\"). Give the answer alone."
            ),
            Mistake::WrongLabel => format!(
                "- Mistake seen {times}: the wrong answer (\"{g}\" where \"{e}\" was right). Read the input carefully before choosing."
            ),
            Mistake::Other => format!(
                "- Mistake seen {times}: an answer that is not in the expected form (\"{g}\" instead of \"{e}\"). Do not chat; output only the answer."
            ),
        });
    }

    // Feedback this strategy cannot parse still carries information: quote it, briefly.
    if judged.iter().all(|(_, j)| j.is_none()) {
        let mut seen = BTreeSet::new();
        for r in examples {
            let f = shorten(&r.feedback, 160);
            if !f.is_empty() && seen.insert(f.clone()) && seen.len() <= 3 {
                lines.push(format!("- Feedback to heed: {f}"));
            }
        }
    }

    // Worked examples: the failures of this batch added to the earlier ones, shown as the
    // conversation the model is in (the user message, then the exact reply), so that even a
    // model that ignores rules can copy the pattern.
    let mut candidates = earlier;
    // A long or multi-line answer cannot be shown whole on one line: no example then.
    candidates.extend(
        mistakes
            .iter()
            .filter(|(_, _, e, _)| {
                let e = e.trim();
                !e.is_empty() && !e.contains('\n') && e.chars().count() <= MAX_EXPECTED_CHARS
            })
            .map(|(_, i, e, _)| Worked {
                input: shorten(&examples[*i].inputs, MAX_EXAMPLE_INPUT_CHARS),
                answer: e.trim().to_owned(),
            }),
    );
    let mut worked = choose_worked(candidates);

    if lines.is_empty() && worked.is_empty() {
        return Err(ProposeError::Rejected(
            "the feedback holds nothing this strategy can turn into a rule".to_owned(),
        ));
    }

    let closing = label_task.then(|| {
        let mut names: Vec<&str> = labels.iter().map(String::as_str).collect();
        let last = names.pop().unwrap_or_default();
        let list = if names.is_empty() {
            last.to_owned()
        } else {
            format!("{} or {last}", names.join(", "))
        };
        format!("{FINAL_PREFIX}{list}. Nothing else.")
    });

    // Assemble within the bound: drop the oldest worked examples, then rule lines.
    let render = |lines: &[String], worked: &[Worked]| {
        let mut s = RULES_HEADING.to_owned();
        for line in lines {
            s.push('\n');
            s.push_str(line);
        }
        if worked.is_empty() {
            // Small models follow the last thing they read: end on the answer format, restated.
            if let Some(last) = &closing {
                s.push_str("\n\n");
                s.push_str(last);
            }
        } else {
            // No header and nothing after the examples: measured with SmolLM2-135M, a section
            // that ends on a user/reply pair is copied far more often than one that ends on a
            // restated rule (docs/benchmarks.md).
            for w in worked {
                s.push_str(&format!(
                    "\n\n{USER_PREFIX}{}\n{ASSISTANT_PREFIX}{}",
                    w.input, w.answer
                ));
            }
        }
        s
    };
    let mut section = render(&lines, &worked);
    while section.chars().count() > MAX_RULES_CHARS {
        if worked.is_empty() {
            if lines.pop().is_none() {
                break;
            }
        } else {
            worked.remove(0);
        }
        section = render(&lines, &worked);
    }
    let text = if base.is_empty() {
        section
    } else {
        format!("{base}\n\n{section}")
    };
    if text.trim() == current.trim() {
        return Err(ProposeError::Rejected(
            "the feedback adds nothing to the current rules".to_owned(),
        ));
    }
    Ok(text)
}

#[async_trait]
impl Proposer for RulesProposer {
    async fn propose(
        &self,
        current: &str,
        examples: &[ReflectiveRecord],
    ) -> Result<Proposal, ProposeError> {
        propose_rules(current, examples).map(|text| Proposal { text })
    }
}

/// The provider name under which [`RulesChatModel`] is registered: ids are `builtin/rules`.
pub const BUILTIN_PROVIDER: &str = "builtin";

/// `builtin/rules` as a [`ChatModel`], so it plugs in wherever a reflection *model* id is
/// expected (the engine's `LlmReflector` sends GEPA's reflection prompt as one user message).
///
/// It reads the current instruction and the examples back out of that prompt (the format of
/// [`gepard_gepa::reflection_prompt`]), runs [`propose_rules`], and answers with the new
/// instruction inside ``` fences, which is what the reflector extracts. A prompt it cannot
/// parse, or a batch with nothing to learn, gets an unfenced answer, which the reflector
/// rejects: the iteration ends without a child, as with a useless model answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RulesChatModel;

/// Makes the `builtin/rules` model; any other name under `builtin/` is unknown.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinProvider;

/// Adds the `builtin` provider (`builtin/rules`) to `registry`.
pub fn register_builtin(registry: &ModelRegistry) {
    registry.register_provider(BUILTIN_PROVIDER, Arc::new(BuiltinProvider));
}

impl ProviderFactory for BuiltinProvider {
    fn model(&self, name: &str) -> Result<Arc<dyn ChatModel>, LlmError> {
        if name == "rules" {
            Ok(Arc::new(RulesChatModel))
        } else {
            Err(LlmError::ModelNotFound {
                provider: BUILTIN_PROVIDER.to_owned(),
                model: name.to_owned(),
                url: "in-process".to_owned(),
                status: 404,
                message: "the only builtin model is `rules` (builtin/rules)".to_owned(),
            })
        }
    }
}

/// Reads `(current instruction, examples)` back out of a [`gepard_gepa::reflection_prompt`].
pub fn parse_reflection_prompt(prompt: &str) -> Option<(String, Vec<ReflectiveRecord>)> {
    const OPEN: &str = "to perform a task for me:\n```\n";
    const EXAMPLES: &str = "could be better:\n```\n";
    const TAIL: &str = "\n```\n\nYour task is to write a new instruction";
    let start = prompt.find(OPEN)? + OPEN.len();
    let examples_at = prompt.find(EXAMPLES)?;
    let current_end = prompt[..examples_at].rfind("\n```\n\n")?;
    let current = prompt.get(start..current_end)?.to_owned();
    let body_start = examples_at + EXAMPLES.len();
    let body_end = prompt.rfind(TAIL)?;
    let body = prompt.get(body_start..body_end)?;
    let mut records = Vec::new();
    let mut n = 1;
    let mut rest = body;
    loop {
        let head = format!("# Example {n}\n## Inputs\n");
        let Some(at) = rest.find(&head) else { break };
        rest = &rest[at + head.len()..];
        let next_head = format!("# Example {}\n## Inputs\n", n + 1);
        let end = rest.find(&next_head).unwrap_or(rest.len());
        let block = &rest[..end];
        let (inputs, after) = block.split_once("\n\n## Generated Outputs\n")?;
        let (outputs, feedback) = after.rsplit_once("\n\n## Feedback\n")?;
        records.push(ReflectiveRecord {
            inputs: inputs.to_owned(),
            generated_outputs: outputs.to_owned(),
            feedback: feedback.trim_end_matches('\n').to_owned(),
        });
        rest = &rest[end..];
        n += 1;
    }
    Some((current, records))
}

#[async_trait]
impl ChatModel for RulesChatModel {
    fn id(&self) -> &str {
        RULES_ID
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let prompt = request
            .messages
            .iter()
            .rev()
            .find_map(|m| match m {
                Message::User { content } => Some(content.as_str()),
                _ => None,
            })
            .unwrap_or_default();
        let answer = match parse_reflection_prompt(prompt) {
            None => "builtin/rules could not read a GEPA reflection prompt here.".to_owned(),
            Some((current, examples)) => match propose_rules(&current, &examples) {
                Ok(text) => format!("```\n{text}\n```"),
                Err(e) => format!("builtin/rules: {e}"),
            },
        };
        Ok(ChatResponse {
            content: Some(answer),
            tool_calls: Vec::new(),
            usage: Usage::default(),
            finish_reason: Some(FinishReason::Stop),
        })
    }
}
