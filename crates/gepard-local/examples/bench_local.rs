//! Measures the local model on this machine: load time, prompt and generation throughput, and
//! peak resident memory.
//!
//! `cargo run --release -p gepard-local --example bench_local [-- RUNS]`
//!
//! Uses the cached `smollm2-135m-instruct` (pulling it first if needed) or the GGUF named by
//! `GEPARD_BENCH_GGUF` as is (e.g. the shipped Q4_1, to compare).

use std::time::{Duration, Instant};

use gepard_llm::Message;
use gepard_local::{
    default_data_dir, default_sources, models_dir, pull, GenerateOptions, LocalModel, DEFAULT_MODEL,
};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let path = match std::env::var_os("GEPARD_BENCH_GGUF") {
        Some(p) => p.into(),
        None => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let cache = models_dir(&default_data_dir());
            let sources = default_sources(DEFAULT_MODEL)?;
            rt.block_on(pull(DEFAULT_MODEL, &sources, &cache, &|e| {
                eprintln!("pull: {e:?}");
            }))?
        }
    };
    println!("model: {}", path.display());
    let started = Instant::now();
    let mut model = LocalModel::load(&path)?;
    let load = started.elapsed();
    println!("load: {:.2} s", load.as_secs_f64());

    // A realistic row-classification prompt (~150 tokens) and a long greedy answer; the
    // stop strings are empty so generation runs to the limit unless the model ends its turn.
    let messages = [
        Message::system(
            "You classify customer reviews. Reply with exactly one word: positive, negative or \
             neutral. Do not explain. Lowercase only, no punctuation.",
        ),
        Message::user(
            "Review: I ordered the blue jacket in medium. It arrived two days late and the \
             zipper broke the first time I used it. Customer service promised a refund but I \
             am still waiting three weeks later. The fabric itself feels nice, but overall I \
             would not buy from this shop again and I would tell my friends to avoid it.\n\
             Then write a long paragraph explaining your reasoning in detail.",
        ),
    ];
    let options = GenerateOptions {
        max_tokens: 128,
        ..GenerateOptions::default()
    };
    let (mut p_tok, mut p_time, mut g_tok, mut g_time) =
        (0usize, Duration::ZERO, 0usize, Duration::ZERO);
    for run in 0..runs {
        let g = model.chat(&messages, &options)?;
        println!(
            "run {run}: prompt {} tok in {:.3} s, generated {} tok in {:.3} s ({:?})",
            g.prompt_tokens,
            g.prompt_time.as_secs_f64(),
            g.completion_tokens,
            g.generation_time.as_secs_f64(),
            g.stop
        );
        p_tok += g.prompt_tokens;
        p_time += g.prompt_time;
        // The first generated token comes out of the prompt pass; the rest are timed here.
        g_tok += g.completion_tokens.saturating_sub(1);
        g_time += g.generation_time;
    }
    println!(
        "prompt: {:.1} tok/s, generation: {:.1} tok/s, candle threads: {}, load average: {}",
        p_tok as f64 / p_time.as_secs_f64(),
        g_tok as f64 / g_time.as_secs_f64(),
        candle_core::utils::get_num_threads(),
        // Other work on the machine changes these numbers a lot: print it with them.
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned())
    );
    if let Some(kib) = peak_rss_kib() {
        println!("peak RSS (VmHWM): {:.0} MB", kib as f64 / 1024.0);
    }
    Ok(())
}
