//! The loaded model: weights, tokenizer and chat template from one GGUF, and a plain
//! single-threaded generation loop. Nothing here is async: [`crate::provider`] runs it on a
//! dedicated thread.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use gepard_llm::Message;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::Tokenizer;

use crate::error::LocalError;

/// ChatML, used when the GGUF carries no `tokenizer.chat_template`. It is SmolLM2's own
/// template, so both paths render the same text.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Output tokens when a request sets no `max_tokens`: enough for a row answer or a short
/// paragraph, small enough that a chatty 135M model does not ramble for a minute.
pub const DEFAULT_MAX_TOKENS: usize = 512;

/// How to decode one request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Output token limit (further bounded by the context window).
    pub max_tokens: usize,
    /// `None` or `<= 0`: greedy (deterministic). Otherwise sampling at this temperature.
    pub temperature: Option<f64>,
    /// The sampling seed (unused when greedy): the same seed and prompt give the same text.
    pub seed: u64,
    /// Stop strings: generation ends before the first occurrence of any of them.
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: DEFAULT_MAX_TOKENS,
            temperature: None,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// The model produced its end-of-turn token.
    EndOfTurn,
    /// A request stop string appeared (it is not included in the text).
    StopString,
    /// The token limit was reached.
    MaxTokens,
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text (without the end-of-turn token or stop string).
    pub text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (counting a final end-of-turn token, which the model did produce).
    pub completion_tokens: usize,
    /// Why it ended.
    pub stop: StopCause,
    /// Time of the prompt forward pass.
    pub prompt_time: Duration,
    /// Time spent generating after the prompt.
    pub generation_time: Duration,
}

/// A GGUF llama-family chat model loaded on the CPU.
pub struct LocalModel {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    template: String,
    /// Token ids that end a turn (`<|im_end|>`, `<|endoftext|>`).
    eos: Vec<u32>,
    context: usize,
    path: PathBuf,
    device: Device,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("path", &self.path)
            .field("context", &self.context)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

/// Builds the tokenizer stored in a GGUF, fixing what candle's generic builder gets wrong.
///
/// SmolLM2 (`tokenizer.ggml.pre = smollm`) splits digits one by one and uses byte-level BPE
/// *without* a prefix space; candle falls back to GPT-2's byte level with a prefix space for
/// unknown `pre` values, which turns "Hello" into "ĠHello" and changes the ids the model sees.
pub fn tokenizer_from_gguf(content: &gguf_file::Content) -> Result<Tokenizer, LocalError> {
    let mut tokenizer =
        Tokenizer::from_gguf(content).map_err(|e| LocalError::Tokenizer(e.to_string()))?;
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if pre == "smollm" {
        // SmolLM2's tokenizer.json: Sequence[Digits(individual), ByteLevel(no prefix space,
        // trim offsets, regex)].
        let seq = Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ]);
        tokenizer.with_pre_tokenizer(Some(seq));
        tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
    }
    Ok(tokenizer)
}

/// Renders `messages` with a Jinja chat template and the generation prompt appended.
/// Assistant tool calls and tool results are rendered as plain text (the model has no tools).
pub fn render_chat(template: &str, messages: &[Message]) -> Result<String, LocalError> {
    #[derive(serde::Serialize)]
    struct Msg<'a> {
        role: &'a str,
        content: String,
    }
    let msgs: Vec<Msg<'_>> = messages
        .iter()
        .map(|m| {
            let content = match m {
                Message::System { content } | Message::User { content } => content.clone(),
                Message::Assistant {
                    content,
                    tool_calls,
                } => {
                    let mut text = content.clone().unwrap_or_default();
                    for call in tool_calls {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(&format!("{}({})", call.name, call.arguments));
                    }
                    text
                }
                Message::Tool { content, .. } => content.clone(),
            };
            Msg {
                role: m.role(),
                content,
            }
        })
        .collect();
    let mut env = minijinja::Environment::new();
    env.add_template("chat", template)
        .map_err(|e| LocalError::Template(e.to_string()))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| LocalError::Template(e.to_string()))?;
    tmpl.render(minijinja::context! { messages => msgs, add_generation_prompt => true })
        .map_err(|e| LocalError::Template(e.to_string()))
}

impl LocalModel {
    /// Loads a GGUF from `path` onto the CPU.
    pub fn load(path: &Path) -> Result<Self, LocalError> {
        let load_err = |message: String| LocalError::Load {
            path: path.to_owned(),
            message,
        };
        let mut file = std::fs::File::open(path).map_err(|e| load_err(e.to_string()))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| load_err(e.to_string()))?;
        let tokenizer = tokenizer_from_gguf(&content)?;
        let template = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| CHATML_TEMPLATE.to_owned());
        let mut eos = Vec::new();
        if let Some(id) = content
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok())
        {
            eos.push(id);
        }
        // ChatML models end a turn with <|im_end|>; some GGUFs name <|endoftext|> as EOS instead.
        for special in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(id) = tokenizer.token_to_id(special) {
                if !eos.contains(&id) {
                    eos.push(id);
                }
            }
        }
        let trained = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(MAX_SEQ_LEN, |n| n as usize);
        // candle precomputes rotary tables for MAX_SEQ_LEN positions only.
        let context = trained.min(MAX_SEQ_LEN);
        let device = Device::Cpu;
        let weights = ModelWeights::from_gguf(content, &mut file, &device)
            .map_err(|e| load_err(e.to_string()))?;
        Ok(Self {
            weights,
            tokenizer,
            template,
            eos,
            context,
            path: path.to_owned(),
            device,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template (from the GGUF, or [`CHATML_TEMPLATE`]).
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The context window in tokens.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Token ids of `text`, special tokens (`<|im_start|>`…) recognised, no BOS added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LocalError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| LocalError::Tokenizer(e.to_string()))
    }

    /// The text of `ids`, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LocalError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| LocalError::Tokenizer(e.to_string()))
    }

    /// Renders `messages` with this model's template and generates the assistant turn.
    pub fn chat(
        &mut self,
        messages: &[Message],
        options: &GenerateOptions,
    ) -> Result<Generation, LocalError> {
        let prompt = render_chat(&self.template, messages)?;
        self.generate(&prompt, options)
    }

    /// Continues the raw `prompt` (already templated) until end of turn, a stop string or the
    /// token limit.
    pub fn generate(
        &mut self,
        prompt: &str,
        options: &GenerateOptions,
    ) -> Result<Generation, LocalError> {
        let prompt_ids = self.encode(prompt)?;
        let prompt_tokens = prompt_ids.len();
        if prompt_tokens == 0 || prompt_tokens >= self.context {
            return Err(LocalError::PromptTooLong {
                prompt_tokens,
                context: self.context,
            });
        }
        let max_tokens = options.max_tokens.min(self.context - prompt_tokens);
        let sampling = match options.temperature {
            Some(t) if t > 0.0 => Sampling::All { temperature: t },
            _ => Sampling::ArgMax,
        };
        let mut sampler = LogitsProcessor::from_sampling(options.seed, sampling);
        // Every request starts from an empty cache: requests are independent conversations.
        self.weights.clear_kv_cache();

        let started = Instant::now();
        let input = Tensor::new(prompt_ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let logits = self.weights.forward(&input, 0)?.squeeze(0)?;
        let mut next = sampler.sample(&logits)?;
        let prompt_time = started.elapsed();

        let started = Instant::now();
        let mut generated: Vec<u32> = Vec::new();
        let mut text = String::new();
        let mut stop = StopCause::MaxTokens;
        while generated.len() < max_tokens {
            generated.push(next);
            if self.eos.contains(&next) {
                stop = StopCause::EndOfTurn;
                break;
            }
            // Decoding the whole tail each step is quadratic but tiny next to a forward pass,
            // and it sees stop strings that span token boundaries.
            text = self.decode(&generated)?;
            if let Some(cut) = earliest_stop(&text, &options.stop) {
                text.truncate(cut);
                stop = StopCause::StopString;
                break;
            }
            if generated.len() >= max_tokens {
                break;
            }
            let input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
            let pos = prompt_tokens + generated.len() - 1;
            let logits = self.weights.forward(&input, pos)?.squeeze(0)?;
            next = sampler.sample(&logits)?;
        }
        Ok(Generation {
            text,
            prompt_tokens,
            completion_tokens: generated.len(),
            stop,
            prompt_time,
            generation_time: started.elapsed(),
        })
    }
}

/// Byte index of the earliest occurrence of any non-empty stop string.
fn earliest_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_stop_string_wins_and_empty_ones_are_ignored() {
        let stops = vec![String::new(), "END".into(), "\n".into()];
        assert_eq!(earliest_stop("abc\ndefEND", &stops), Some(3));
        assert_eq!(earliest_stop("abc", &stops), None);
    }

    #[test]
    fn chatml_renders_system_and_user_turns_and_opens_the_assistant_turn() {
        let text = render_chat(
            CHATML_TEMPLATE,
            &[Message::system("Be brief."), Message::user("Hi")],
        )
        .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn chatml_adds_the_default_system_prompt_when_there_is_none() {
        let text = render_chat(CHATML_TEMPLATE, &[Message::user("Hi")]).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
