//! Reflection: the prompt that shows a model the current instruction with examples and feedback,
//! and the strict extraction of the new instruction from its answer.

use async_trait::async_trait;

use crate::traits::{Proposal, ProposeError, Proposer, ReflectiveRecord};

/// Why a text model call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// This call failed (after the adapter's own retries); the run may go on.
    #[error("{0}")]
    Failed(String),
    /// No call can succeed (bad credentials, unknown model): the run must stop.
    #[error("{0}")]
    Fatal(String),
}

/// A text-in, text-out model: the reflection model as seen by the engine. The chat adapter that
/// implements it lives in another crate, so this one stays free of HTTP.
#[async_trait]
pub trait TextModel: Send + Sync {
    /// Sends `prompt` as one user message and returns the answer text. An answer cut off by a
    /// length limit may be returned as is: a missing closing fence gets it rejected.
    async fn complete(&self, prompt: &str) -> Result<String, ModelError>;
}

/// Why no instruction could be taken from a reflection answer. Such an answer is never adopted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// No ``` fence at all.
    #[error("the answer has no ``` fenced block")]
    Unfenced,
    /// An odd number of fences, or a last fence with a language tag: a block was opened and
    /// never closed, i.e. the answer was cut off.
    #[error("the answer has an unclosed ``` fence (truncated?)")]
    Unclosed,
    /// The fenced block holds nothing but whitespace (or only a language tag).
    #[error("the fenced block is empty")]
    Empty,
}

const FENCE: &str = "```";

/// Extracts the text between the first and the last ``` fence of `answer`, without a language
/// tag on the opening fence line and without surrounding whitespace.
///
/// Taking first-to-last keeps instructions that contain fenced examples of their own intact.
/// An answer with one fence, or any odd number of them, was cut off and is refused.
pub fn extract_fenced(answer: &str) -> Result<String, FenceError> {
    let fences = answer.matches(FENCE).count();
    if fences == 0 {
        return Err(FenceError::Unfenced);
    }
    if fences % 2 == 1 {
        return Err(FenceError::Unclosed);
    }
    // Both exist and differ because there are at least two non-overlapping fences.
    let start = answer
        .find(FENCE)
        .map(|i| i + FENCE.len())
        .unwrap_or_default();
    let end = answer.rfind(FENCE).unwrap_or(answer.len());
    // A closing fence never carries an info string: a last fence like ```json opens a block that
    // the cut-off answer never closed.
    if answer[end + FENCE.len()..]
        .chars()
        .next()
        .is_some_and(char::is_alphanumeric)
    {
        return Err(FenceError::Unclosed);
    }
    let mut body = &answer[start..end];
    // A tag is a single token glued to the fence (```text, ```markdown); anything with spaces on
    // that line is already instruction text and must be kept.
    if let Some(newline) = body.find('\n') {
        let first_line = body[..newline].trim_end_matches('\r');
        if first_line
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
        {
            body = &body[newline + 1..];
        }
    }
    let body = body.trim();
    if body.is_empty() {
        return Err(FenceError::Empty);
    }
    Ok(body.to_owned())
}

/// Builds GEPA's default reflection prompt: one user message whose first fenced block is the
/// current instruction, followed by the examples as markdown sections (each input on its own
/// lines, then the output and the feedback), asking for the new instruction inside ``` fences.
pub fn reflection_prompt(current: &str, examples: &[ReflectiveRecord]) -> String {
    let rendered = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "# Example {n}\n## Inputs\n{inputs}\n\n## Generated Outputs\n{outputs}\n\n## Feedback\n{feedback}\n\n",
                n = i + 1,
                inputs = e.inputs,
                outputs = e.generated_outputs,
                feedback = e.feedback,
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    format!(
        "I provided an assistant with the following instructions to perform a task for me:\n\
         ```\n{current}\n```\n\n\
         The following are examples of different task inputs provided to the assistant along \
         with the assistant's response for each of them, and some feedback on how the \
         assistant's response could be better:\n\
         ```\n{rendered}\n```\n\n\
         Your task is to write a new instruction for the assistant.\n\n\
         Read the inputs carefully and identify the input format and infer detailed task \
         description about the task I wish to solve with the assistant.\n\n\
         Read all the assistant responses and the corresponding feedback. Identify all niche and \
         domain specific factual information about the task and include it in the instruction, \
         as a lot of it may not be available to the assistant in the future. The assistant may \
         have utilized a generalizable strategy to solve the task, if so, include that in the \
         instruction as well.\n\n\
         Provide the new instructions within ``` blocks."
    )
}

const CUT_MARK: &str = " …[truncated]";

fn cut(text: &mut String, max_chars: usize) {
    if text.chars().count() <= max_chars {
        return;
    }
    let keep = max_chars.saturating_sub(CUT_MARK.chars().count());
    let byte_end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
    text.truncate(byte_end);
    text.push_str(CUT_MARK);
}

/// Trims a reflective dataset to the configured limits: the first `max_examples` records, and
/// about `max_chars` characters in total, shared equally among them. Within a record the output is
/// cut first, then the feedback, and the input last, because a model (and the benchmark's
/// simulator) must recognise the input to learn anything from the example.
pub fn trim_examples(
    records: &[ReflectiveRecord],
    max_examples: usize,
    max_chars: usize,
) -> Vec<ReflectiveRecord> {
    let kept = &records[..records.len().min(max_examples)];
    if kept.is_empty() {
        return Vec::new();
    }
    let per_record = max_chars / kept.len();
    kept.iter()
        .map(|r| {
            let mut r = r.clone();
            let len = |s: &String| s.chars().count();
            let total = len(&r.inputs) + len(&r.generated_outputs) + len(&r.feedback);
            if total > per_record {
                let others = len(&r.inputs) + len(&r.feedback);
                cut(&mut r.generated_outputs, per_record.saturating_sub(others));
                let others = len(&r.inputs) + len(&r.generated_outputs);
                cut(&mut r.feedback, per_record.saturating_sub(others));
                let others = len(&r.generated_outputs) + len(&r.feedback);
                cut(&mut r.inputs, per_record.saturating_sub(others));
            }
            r
        })
        .collect()
}

/// The reflective proposer of GEPA: asks a [`TextModel`] for a better instruction with
/// [`reflection_prompt`] and takes the answer through [`extract_fenced`].
#[derive(Debug, Clone)]
pub struct LlmReflector<M> {
    model: M,
}

impl<M: TextModel> LlmReflector<M> {
    /// Wraps a reflection model.
    pub fn new(model: M) -> Self {
        Self { model }
    }
}

#[async_trait]
impl<M: TextModel> Proposer for LlmReflector<M> {
    async fn propose(
        &self,
        current: &str,
        examples: &[ReflectiveRecord],
    ) -> Result<Proposal, ProposeError> {
        let prompt = reflection_prompt(current, examples);
        let answer = self.model.complete(&prompt).await.map_err(|e| match e {
            ModelError::Failed(m) => ProposeError::Failed(m),
            ModelError::Fatal(m) => ProposeError::Fatal(m),
        })?;
        let text = extract_fenced(&answer).map_err(|e| ProposeError::Rejected(e.to_string()))?;
        Ok(Proposal { text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_between_the_first_and_last_fence_is_extracted() {
        let answer = "Here is a better one.\n\n```\nAnswer with one word.\n```\nGood luck.";
        assert_eq!(extract_fenced(answer).unwrap(), "Answer with one word.");
    }

    #[test]
    fn a_language_tag_on_the_opening_fence_is_stripped() {
        for tag in ["text", "markdown", "plain-text", "c++"] {
            let answer = format!("```{tag}\nBe brief.\n```");
            assert_eq!(extract_fenced(&answer).unwrap(), "Be brief.", "tag {tag}");
        }
    }

    #[test]
    fn an_opening_line_with_spaces_is_kept_as_instruction_text() {
        let answer = "```Be brief and polite.\nNever say neutral.\n```";
        assert_eq!(
            extract_fenced(answer).unwrap(),
            "Be brief and polite.\nNever say neutral."
        );
    }

    #[test]
    fn nested_fenced_examples_inside_the_instruction_survive() {
        let answer = "New:\n```\nReply as JSON, e.g.\n```json\n{\"label\": \"positive\"}\n```\nNothing else.\n```";
        assert_eq!(
            extract_fenced(answer).unwrap(),
            "Reply as JSON, e.g.\n```json\n{\"label\": \"positive\"}\n```\nNothing else."
        );
    }

    #[test]
    fn an_unfenced_answer_is_rejected() {
        assert_eq!(
            extract_fenced("Answer with one word."),
            Err(FenceError::Unfenced)
        );
    }

    #[test]
    fn a_single_fence_is_rejected_as_truncated() {
        assert_eq!(
            extract_fenced("Sure:\n```\nAnswer with one word and"),
            Err(FenceError::Unclosed)
        );
    }

    #[test]
    fn a_truncated_answer_with_an_open_inner_block_is_rejected() {
        let answer = "```\nReply as JSON, e.g.\n```json\n{\"label\": \"pos";
        assert_eq!(extract_fenced(answer), Err(FenceError::Unclosed));
    }

    #[test]
    fn an_empty_or_tag_only_block_is_rejected() {
        assert_eq!(extract_fenced("``````"), Err(FenceError::Empty));
        assert_eq!(extract_fenced("```\n  \n```"), Err(FenceError::Empty));
        assert_eq!(extract_fenced("```text\n```"), Err(FenceError::Empty));
    }

    fn record(i: usize) -> ReflectiveRecord {
        ReflectiveRecord {
            inputs: format!("the movie was not good {i}"),
            generated_outputs: format!("The sentiment is Positive {i}."),
            feedback: format!("Incorrect. Expected exactly 'negative' {i}"),
        }
    }

    #[test]
    fn the_prompt_opens_with_the_current_instruction_as_its_first_fenced_block() {
        let prompt = reflection_prompt("Classify the sentiment.", &[record(0), record(1)]);
        let first = prompt.find(FENCE).unwrap();
        let second = prompt[first + 3..].find(FENCE).unwrap() + first + 3;
        assert_eq!(prompt[first + 3..second].trim(), "Classify the sentiment.");
        assert!(prompt.to_lowercase().contains("feedback"));
        // Each input verbatim on its own line, followed by its output and feedback.
        for i in 0..2 {
            let r = record(i);
            let line = prompt.lines().position(|l| l == r.inputs).unwrap();
            let rest: Vec<&str> = prompt.lines().skip(line).collect();
            let rest = rest.join("\n");
            assert!(rest.find(&r.generated_outputs).unwrap() < rest.find(&r.feedback).unwrap());
        }
        assert!(prompt.contains("# Example 2\n## Inputs\n"));
        assert!(prompt.ends_with("Provide the new instructions within ``` blocks."));
    }

    #[test]
    fn trimming_keeps_the_first_examples_and_cuts_outputs_before_inputs() {
        let long = ReflectiveRecord {
            inputs: "i".repeat(50),
            generated_outputs: "o".repeat(500),
            feedback: "f".repeat(30),
        };
        let records = vec![long.clone(), record(1), record(2)];
        let trimmed = trim_examples(&records, 2, 200);
        assert_eq!(trimmed.len(), 2);
        assert_eq!(trimmed[0].inputs, long.inputs);
        assert_eq!(trimmed[0].feedback, long.feedback);
        assert!(trimmed[0].generated_outputs.ends_with(CUT_MARK));
        let size = |r: &ReflectiveRecord| {
            r.inputs.chars().count()
                + r.generated_outputs.chars().count()
                + r.feedback.chars().count()
        };
        assert!(size(&trimmed[0]) <= 100);
        assert_eq!(trimmed[1], record(1), "a small record is left alone");
    }

    #[test]
    fn trimming_cuts_the_input_only_when_nothing_else_is_left() {
        let huge = ReflectiveRecord {
            inputs: "é".repeat(300),
            generated_outputs: "o".repeat(300),
            feedback: "f".repeat(300),
        };
        let trimmed = trim_examples(&[huge], 10, 100);
        assert!(trimmed[0].inputs.chars().count() <= 100);
        assert!(trimmed[0].inputs.starts_with("éé"));
    }

    struct Canned(Result<String, ModelError>);

    #[async_trait]
    impl TextModel for Canned {
        async fn complete(&self, _prompt: &str) -> Result<String, ModelError> {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn the_reflector_maps_answers_and_model_errors() {
        let ok = LlmReflector::new(Canned(Ok("x\n```\nNew text.\n```".into())));
        assert_eq!(
            ok.propose("Old.", &[record(0)]).await.unwrap().text,
            "New text."
        );
        let cut = LlmReflector::new(Canned(Ok("```\nNew te".into())));
        assert!(matches!(
            cut.propose("Old.", &[]).await,
            Err(ProposeError::Rejected(_))
        ));
        let failed = LlmReflector::new(Canned(Err(ModelError::Failed("429".into()))));
        assert_eq!(
            failed.propose("Old.", &[]).await,
            Err(ProposeError::Failed("429".into()))
        );
        let fatal = LlmReflector::new(Canned(Err(ModelError::Fatal("401".into()))));
        assert_eq!(
            fatal.propose("Old.", &[]).await,
            Err(ProposeError::Fatal("401".into()))
        );
    }
}
