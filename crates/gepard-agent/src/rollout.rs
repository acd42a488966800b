//! One agent rollout on one dataset row: the candidate instructions as system message, the row
//! as user message, the row's tools offered, one model turn.
//!
//! Single turn by design: tool calls are recorded, never executed (the tool-call datasets score
//! the calls themselves). A per-row model failure becomes [`Outcome::error`] so the run goes on
//! and the row scores 0; an error that dooms the whole run ([`LlmError::is_fatal_for_run`]: bad
//! key, unknown model, unreachable server…) is returned as `Err` so the run can fail fast.

use gepard_llm::{ChatModel, ChatRequest, LlmError, Message, ToolCall, ToolSpec, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::recipe::{Recipe, Scored};

/// What the agent did on one row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The final text answer, if the model gave one.
    pub final_text: Option<String>,
    /// The tool calls the model made (not executed), in order.
    pub tool_calls: Vec<ToolCall>,
    /// The whole trajectory: system, user and (when the call succeeded) assistant messages.
    pub messages: Vec<Message>,
    /// Tokens used.
    pub usage: Usage,
    /// Why there is no answer (a non-fatal model error, or a row the mapping cannot read).
    pub error: Option<String>,
    /// The model refused the request as invalid (HTTP 400): usually about this one row (over
    /// the context length, filtered), unlike an outage. Not part of the recorded trajectory.
    #[serde(skip)]
    pub refused_as_invalid: bool,
}

impl Outcome {
    /// True when the model was called and failed (not when the row could not be turned into a
    /// request: the messages are set only once the request is ready to go out).
    pub fn model_failed(&self) -> bool {
        self.error.is_some() && !self.messages.is_empty()
    }

    /// The agent's output as one text, for the reflective dataset: the final text, then one line
    /// per tool call (`name({"arg": …})`), or the error.
    pub fn rendered(&self) -> String {
        if let Some(error) = &self.error {
            return format!("(no answer: {error})");
        }
        let mut parts = Vec::new();
        if let Some(text) = self.final_text.as_deref().filter(|t| !t.trim().is_empty()) {
            parts.push(text.to_owned());
        }
        parts.extend(
            self.tool_calls
                .iter()
                .map(|c| format!("{}({})", c.name, c.arguments)),
        );
        if parts.is_empty() {
            "(empty answer)".to_owned()
        } else {
            parts.join("\n")
        }
    }
}

/// How a row becomes the user message (the job's `config.dataset_input_mapping`).
///
/// The forms are Dreadnode's, whose clients send them and read them back (a list of field
/// names, or an object mapping a dataset field to a task input); a capability agent's task
/// takes one input, `goal`:
/// - absent / `null`: the row's `goal` (a non-string goal is sent as JSON);
/// - an object `{"question": "goal"}`: the row's `question` is the goal, verbatim;
/// - a list with one field, `["question"]`: that field, verbatim;
/// - a list of several fields, `["question", "context"]`: one `field: value` line each, in
///   order (gepard's own extension; a Dreadnode agent task cannot take several inputs).
///
/// Field names may be dotted paths into the row (`metadata.source`). A field the row lacks
/// makes that row's rollout fail (score 0, error as feedback); submission checks every row
/// first, so that is refused up front.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InputMapping {
    /// The row's `goal`.
    #[default]
    Goal,
    /// One row field, verbatim.
    Field(String),
    /// Several row fields rendered as `field: value` lines.
    Fields(Vec<String>),
}

impl InputMapping {
    /// Reads `config.dataset_input_mapping`; the error says what shape is expected.
    pub fn from_config(value: Option<&Value>) -> Result<Self, String> {
        const SHAPE: &str = "must be a list of row field names, such as [\"question\"], or an \
                             object mapping one row field to the agent's input `goal`, such as \
                             {\"question\": \"goal\"}";
        let bad = |why: &str| format!("dataset_input_mapping {why}");
        match value {
            None | Some(Value::Null) => Ok(Self::Goal),
            Some(Value::Array(fields)) if !fields.is_empty() => {
                let mut names = fields
                    .iter()
                    .map(|f| {
                        f.as_str()
                            .filter(|s| !s.trim().is_empty())
                            .map(str::to_owned)
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(SHAPE))?;
                Ok(if names.len() == 1 {
                    Self::Field(names.remove(0))
                } else {
                    Self::Fields(names)
                })
            }
            Some(Value::Object(map)) if !map.is_empty() => {
                let mut goal = None;
                for (field, input) in map {
                    match input.as_str() {
                        Some("goal") if goal.is_some() => {
                            return Err(bad("maps more than one row field to `goal`; the agent \
                                            takes one input"))
                        }
                        Some("goal") if !field.trim().is_empty() => goal = Some(field.clone()),
                        Some(other) => {
                            return Err(bad(&format!(
                                "maps `{field}` to `{other}`, but a capability agent takes one \
                                 input, `goal`: map one row field to it, such as \
                                 {{\"{field}\": \"goal\"}}"
                            )))
                        }
                        None => return Err(bad(SHAPE)),
                    }
                }
                goal.map(Self::Field).ok_or_else(|| bad(SHAPE))
            }
            Some(_) => Err(bad(SHAPE)),
        }
    }

    /// The user message for `row`, or why the row cannot provide it.
    pub fn user_message(&self, row: &Value) -> Result<String, String> {
        let missing =
            |path: &str| format!("the row has no `{path}` field (named in dataset_input_mapping)");
        match self {
            Self::Goal => lookup(row, "goal").map(text_of).ok_or_else(|| {
                "the row has no `goal` field (and no dataset_input_mapping was given)".to_owned()
            }),
            Self::Field(path) => lookup(row, path).map(text_of).ok_or_else(|| missing(path)),
            Self::Fields(fields) => fields
                .iter()
                .map(|path| {
                    lookup(row, path)
                        .map(|v| format!("{path}: {}", text_of(v)))
                        .ok_or_else(|| missing(path))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|lines| lines.join("\n")),
        }
    }
}

fn lookup<'a>(row: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(row, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Why a row cannot be rolled out, found without a model call. Displayed as the rest of a
/// sentence about the row: "row 3 of dataset … {problem}".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowProblem {
    /// The input mapping cannot build the user message (e.g. no `goal`).
    #[error("cannot become a user message: {0}")]
    UserMessage(String),
    /// The row's `tools` cannot be offered to the model.
    #[error("has tools the model cannot be offered: {0}")]
    Tools(String),
    /// The recipe has nothing to compare an answer with (it would score every answer 0).
    #[error("cannot be scored by {recipe}: {why}")]
    Unscorable {
        /// The recipe's name.
        recipe: &'static str,
        /// What the row lacks.
        why: String,
    },
}

/// Checks that `row` can be rolled out with `mapping` and scored by `recipe`: it yields a user
/// message, its tools are readable, and the recipe has something to compare an answer with.
/// The rollout and the recipe make the same checks (and score the row 0 when one fails);
/// running them up front turns such a row into an input error instead.
pub fn check_row(
    mapping: &InputMapping,
    recipe: Option<&crate::recipe::Recipe>,
    row: &Value,
) -> Result<(), RowProblem> {
    mapping.user_message(row).map_err(RowProblem::UserMessage)?;
    row_tools(row).map_err(RowProblem::Tools)?;
    if let Some(recipe) = recipe {
        recipe
            .check_row(row)
            .map_err(|why| RowProblem::Unscorable {
                recipe: recipe.name(),
                why,
            })?;
    }
    Ok(())
}

/// Sampling settings and the input mapping of a rollout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolloutOptions {
    /// How the row becomes the user message.
    pub input_mapping: InputMapping,
    /// Sampling temperature (provider default when `None`).
    pub temperature: Option<f32>,
    /// Output token limit (provider default when `None`).
    pub max_tokens: Option<u32>,
}

/// Runs the agent (`instructions` as system prompt) on `row` with `model`, one turn.
///
/// Returns `Err` only for errors fatal to the whole run; anything else that goes wrong is in
/// [`Outcome::error`].
pub async fn rollout(
    model: &dyn ChatModel,
    instructions: &str,
    row: &Value,
    options: &RolloutOptions,
) -> Result<Outcome, LlmError> {
    let mut outcome = Outcome::default();
    let user = match options.input_mapping.user_message(row) {
        Ok(text) => text,
        Err(e) => {
            outcome.error = Some(e);
            return Ok(outcome);
        }
    };
    let tools = match row_tools(row) {
        Ok(tools) => tools,
        Err(e) => {
            outcome.error = Some(e);
            return Ok(outcome);
        }
    };
    outcome.messages = vec![Message::system(instructions), Message::user(user)];
    let request = ChatRequest {
        model: String::new(),
        messages: outcome.messages.clone(),
        tools,
        temperature: options.temperature,
        max_tokens: options.max_tokens,
        stop: Vec::new(),
    };
    match model.chat(&request).await {
        Ok(response) => {
            outcome.messages.push(response.to_message());
            outcome.final_text = response.content;
            outcome.tool_calls = response.tool_calls;
            outcome.usage = response.usage;
        }
        Err(e) if e.is_fatal_for_run() => return Err(e),
        Err(e) => {
            outcome.refused_as_invalid = matches!(e, LlmError::InvalidRequest { .. });
            outcome.error = Some(e.to_string());
        }
    }
    Ok(outcome)
}

/// A rollout scored by `recipe`: the unit of work of one GEPA metric call.
pub async fn rollout_and_score(
    model: &dyn ChatModel,
    instructions: &str,
    row: &Value,
    recipe: &Recipe,
    options: &RolloutOptions,
) -> Result<(Outcome, Scored), LlmError> {
    let outcome = rollout(model, instructions, row, options).await?;
    let scored = recipe.score(row, &outcome);
    Ok((outcome, scored))
}

/// The row's `tools` as tool specs (none when absent or `null`), or why they cannot be offered
/// to the model, naming the entry (`tools[2]`).
///
/// Each entry is either gepard's own shape, `{"name", "description", "parameters"}`, or the
/// OpenAI chat API's, `{"type": "function", "function": {"name", "description", "parameters"}}`
/// (what people copy from their agent code). The rollout and the up-front row checks (job
/// submission, `gepard optimize local`) both call this, so a row that passes the check is a row
/// whose tools reach the model.
pub fn row_tools(row: &Value) -> Result<Vec<ToolSpec>, String> {
    match row.get("tools") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| tool_spec(t).map_err(|e| format!("the row's tools[{i}] {e}")))
            .collect(),
        Some(_) => Err("the row's `tools` must be a list of tool specs".to_owned()),
    }
}

/// One entry of a row's `tools`; the error is the rest of a sentence starting with the entry.
fn tool_spec(tool: &Value) -> Result<ToolSpec, String> {
    const SHAPES: &str = "expected {name, description, parameters} or the OpenAI form \
                          {\"type\": \"function\", \"function\": {name, description, parameters}}";
    let Value::Object(map) = tool else {
        return Err(format!("is not an object ({SHAPES})"));
    };
    // Only functions can be offered: another OpenAI tool type (a built-in such as
    // `code_interpreter`) has no schema the model could be asked to fill in.
    if let Some(kind) = map
        .get("type")
        .filter(|k| !k.is_null() && k.as_str() != Some("function"))
    {
        return Err(format!(
            "has \"type\": {kind}; only \"function\" tools can be offered to the model"
        ));
    }
    // The OpenAI form nests the spec under `function`; a top-level `name` means gepard's own
    // form (which may carry `"type": "function"` beside it).
    let spec = match map.get("function") {
        Some(function) if !map.contains_key("name") => function,
        _ => tool,
    };
    let spec = serde_json::from_value::<ToolSpec>(spec.clone())
        .map_err(|e| format!("is not a tool spec ({SHAPES}): {e}"))?;
    if spec.name.trim().is_empty() {
        return Err("has an empty `name`".to_owned());
    }
    // Providers reject a non-object schema for the whole request, which would fail the run.
    if !spec.parameters.is_object() {
        return Err(format!(
            "has `parameters` {}, not a JSON schema object",
            spec.parameters
        ));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::{Json, Router};
    use gepard_llm::{OpenAiModel, OpenAiProvider, ProviderSettings};
    use serde_json::json;

    /// A fake OpenAI server answering every request with `(status, body)`; returns the model
    /// and the request bodies it saw.
    async fn fake_openai(status: u16, answer: Value) -> (OpenAiModel, Arc<Mutex<Vec<Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let app = Router::new().route(
            "/v1/chat/completions",
            post(move |Json(body): Json<Value>| {
                let log = Arc::clone(&log);
                let answer = answer.clone();
                async move {
                    log.lock().unwrap().push(body);
                    (StatusCode::from_u16(status).unwrap(), Json(answer)).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let mut settings = ProviderSettings::new("openai", base).with_api_key("sk-test-12345");
        settings.retry.max_retries = 1;
        settings.retry.base_delay = Duration::from_millis(1);
        let model = OpenAiProvider::new(settings)
            .unwrap()
            .chat_model("gpt-test");
        (model, seen)
    }

    fn text_answer(text: &str) -> Value {
        json!({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 20, "completion_tokens": 2}})
    }

    fn tool_row() -> Value {
        json!({
            "goal": "Find hotels in Paris with at least 4 stars",
            "tools": [{"name": "hotel.find", "description": "Search hotels.", "parameters": {
                "type": "dict", "properties": {"location": {"type": "string"}, "stars": {"type": "integer"}},
                "required": ["location"]}}],
            "expected_trajectory": [{"name": "hotel.find", "arguments": {"location": "Paris", "stars": 4}}]
        })
    }

    #[tokio::test]
    async fn a_rollout_sends_instructions_and_goal_and_records_the_tool_calls_it_does_not_run() {
        let (model, seen) = fake_openai(
            200,
            json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "hotel_find",
                 "arguments": "{\"location\": \"Paris\", \"stars\": 4}"}}]}, "finish_reason": "tool_calls"}],
                   "usage": {"prompt_tokens": 50, "completion_tokens": 9}}),
        )
        .await;
        let row = tool_row();
        let recipe = Recipe::from_spec("trajectory_imitation_v1", &Value::Null).unwrap();
        let (outcome, scored) = rollout_and_score(
            &model,
            "Call the right tool.",
            &row,
            &recipe,
            &RolloutOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.tool_calls.len(), 1);
        assert_eq!(outcome.tool_calls[0].name, "hotel.find");
        assert_eq!(
            outcome.tool_calls[0].arguments,
            json!({"location": "Paris", "stars": 4})
        );
        assert_eq!(outcome.usage.input_tokens, 50);
        assert_eq!(outcome.messages.len(), 3);
        assert!((scored.score - 1.0).abs() < 1e-12, "{scored:?}");
        assert!(
            outcome.rendered().contains("hotel.find({"),
            "{}",
            outcome.rendered()
        );

        let body = seen.lock().unwrap()[0].clone();
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "one turn, tools are not executed"
        );
        assert_eq!(
            body["messages"],
            json!([{"role": "system", "content": "Call the right tool."},
                   {"role": "user", "content": "Find hotels in Paris with at least 4 stars"}])
        );
        assert_eq!(body["tools"][0]["function"]["parameters"]["type"], "object");
    }

    #[tokio::test]
    async fn a_row_without_tools_offers_none_and_scores_the_text() {
        let (model, seen) = fake_openai(200, text_answer("negative")).await;
        let row = json!({"goal": "Awful film.", "expected_output": "negative"});
        let recipe = Recipe::from_spec("exact_match_v1", &Value::Null).unwrap();
        let (outcome, scored) = rollout_and_score(
            &model,
            "Classify.",
            &row,
            &recipe,
            &RolloutOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(outcome.final_text.as_deref(), Some("negative"));
        assert!((scored.score - 1.0).abs() < 1e-12);
        assert!(seen.lock().unwrap()[0].get("tools").is_none());
    }

    #[tokio::test]
    async fn a_model_error_on_one_row_becomes_feedback_and_the_run_goes_on() {
        let (model, seen) = fake_openai(503, json!({"error": {"message": "overloaded"}})).await;
        let row = json!({"goal": "x", "expected_output": "y"});
        let recipe = Recipe::from_spec("exact_match_v1", &Value::Null).unwrap();
        let (outcome, scored) =
            rollout_and_score(&model, "Do it.", &row, &recipe, &RolloutOptions::default())
                .await
                .unwrap();
        assert_eq!(seen.lock().unwrap().len(), 2, "retried once, then given up");
        let error = outcome.error.as_deref().unwrap();
        assert!(
            error.contains("HTTP 503") && error.contains("overloaded"),
            "{error}"
        );
        assert!(scored.score.abs() < f64::EPSILON);
        assert!(scored.feedback.contains("HTTP 503"), "{}", scored.feedback);
    }

    #[tokio::test]
    async fn a_fatal_model_error_is_returned_so_the_run_can_fail_fast() {
        let (model, seen) = fake_openai(401, json!({"error": {"message": "invalid key"}})).await;
        let err = rollout(
            &model,
            "Do it.",
            &json!({"goal": "x"}),
            &RolloutOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(err.is_fatal_for_run());
        assert!(err.to_string().contains("401"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_input_mapping_builds_the_user_message_and_a_missing_field_skips_the_call() {
        let (model, seen) = fake_openai(200, text_answer("ok")).await;
        let row = json!({"question": "Who?", "goal": "g", "metadata": {"source": "trec"}});
        // Dreadnode's form: dataset field → the agent's input `goal`, sent verbatim.
        let mapped = InputMapping::from_config(Some(&json!({"question": "goal"}))).unwrap();
        let options = RolloutOptions {
            input_mapping: mapped,
            temperature: Some(0.0),
            max_tokens: Some(5),
        };
        rollout(&model, "Answer.", &row, &options).await.unwrap();
        let body = seen.lock().unwrap()[0].clone();
        assert_eq!(body["messages"][1]["content"], "Who?");
        assert_eq!(body["max_tokens"], 5);

        // The identity mappings Dreadnode clients send change nothing.
        for identity in [json!({"goal": "goal"}), json!(["goal"])] {
            let m = InputMapping::from_config(Some(&identity)).unwrap();
            assert_eq!(m.user_message(&row).unwrap(), "g", "{identity}");
        }
        let one = InputMapping::from_config(Some(&json!(["metadata.source"]))).unwrap();
        assert_eq!(one.user_message(&row).unwrap(), "trec");
        let several =
            InputMapping::from_config(Some(&json!(["question", "metadata.source"]))).unwrap();
        assert_eq!(
            several.user_message(&row).unwrap(),
            "question: Who?\nmetadata.source: trec"
        );

        // No goal and no mapping: the row fails alone, without a model call.
        let no_goal = json!({"question": "Who?"});
        let outcome = rollout(&model, "Answer.", &no_goal, &RolloutOptions::default())
            .await
            .unwrap();
        assert!(outcome.error.as_deref().unwrap().contains("no `goal`"));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_malformed_input_mapping_is_refused_with_the_expected_shape() {
        for bad in [
            json!(3),
            json!([]),
            json!({}),
            json!([""]),
            json!({"a": 1}),
            json!("Q: {question}"),
            json!(""),
        ] {
            let err = InputMapping::from_config(Some(&bad)).unwrap_err();
            assert!(
                err.starts_with("dataset_input_mapping must be a list of row field names"),
                "{bad}: {err}"
            );
        }
        let err = InputMapping::from_config(Some(&json!({"goal": "question"}))).unwrap_err();
        assert_eq!(
            err,
            "dataset_input_mapping maps `goal` to `question`, but a capability agent takes one \
             input, `goal`: map one row field to it, such as {\"goal\": \"goal\"}"
        );
        let err = InputMapping::from_config(Some(&json!({"a": "goal", "b": "goal"}))).unwrap_err();
        assert!(err.contains("more than one row field"), "{err}");
        assert_eq!(InputMapping::from_config(None).unwrap(), InputMapping::Goal);
    }

    #[tokio::test]
    async fn an_openai_format_tool_reaches_the_model_request_and_its_call_scores() {
        let (model, seen) = fake_openai(
            200,
            json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "geology_get_era",
                 "arguments": "{\"era_name\": \"Ice age\"}"}}]}, "finish_reason": "tool_calls"}]}),
        )
        .await;
        let row = json!({
            "goal": "How many years ago was the Ice age?",
            "tools": [{"type": "function", "function": {
                "name": "geology.get_era",
                "description": "Get the estimated date of a geological era.",
                "parameters": {"type": "dict", "properties": {
                    "era_name": {"type": "string"},
                    "calculate_years_ago": {"type": "boolean", "default": false}},
                    "required": ["era_name"]}}}],
            "expected_trajectory": [{"name": "geology.get_era", "arguments": {
                "era_name": "Ice age", "calculate_years_ago": false}}]
        });
        let recipe = Recipe::from_spec("trajectory_imitation_v1", &Value::Null).unwrap();
        let (outcome, scored) = rollout_and_score(
            &model,
            "Call the right tool.",
            &row,
            &recipe,
            &RolloutOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(outcome.error, None);
        let body = seen.lock().unwrap()[0].clone();
        let tool = &body["tools"][0]["function"];
        assert_eq!(
            tool["description"],
            "Get the estimated date of a geological era."
        );
        assert_eq!(tool["parameters"]["type"], "object");
        assert!(tool["parameters"]["properties"]["era_name"].is_object());
        // The call comes back under the dataset's name, and the schema's default (read from
        // the OpenAI form too) excuses the argument the model left out.
        assert_eq!(outcome.tool_calls[0].name, "geology.get_era");
        assert!((scored.score - 1.0).abs() < 1e-12, "{scored:?}");
    }

    #[test]
    fn a_tool_entry_that_cannot_be_offered_is_refused_naming_the_entry() {
        let err = row_tools(&json!({"tools": [
            {"type": "function", "function": {"name": "a"}},
            {"type": "code_interpreter"}
        ]}))
        .unwrap_err();
        assert!(
            err.contains("tools[1]") && err.contains("code_interpreter"),
            "{err}"
        );
        let err =
            row_tools(&json!({"tools": [{"type": "function", "function": {"description": "x"}}]}))
                .unwrap_err();
        assert!(
            err.contains("tools[0]") && err.contains("missing field `name`"),
            "{err}"
        );
        let err = row_tools(&json!({"tools": [{"name": "a", "parameters": "none"}]})).unwrap_err();
        assert!(err.contains("`parameters`"), "{err}");
        let err = row_tools(&json!({"tools": ["search"]})).unwrap_err();
        assert!(err.contains("tools[0] is not an object"), "{err}");
        // gepard's own form may carry `"type": "function"` too.
        let both = row_tools(&json!({"tools": [
            {"type": "function", "name": "a", "parameters": {"type": "object"}},
            {"type": "function", "function": {"name": "b"}}
        ]}))
        .unwrap();
        assert_eq!(
            both.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn a_row_with_malformed_tools_fails_alone() {
        let err = row_tools(&json!({"tools": [{"description": "no name"}]})).unwrap_err();
        assert!(err.contains("tools[0]"), "{err}");
        assert!(row_tools(&json!({"tools": "x"})).is_err());
        assert_eq!(row_tools(&tool_row()).unwrap()[0].name, "hotel.find");
    }
}
