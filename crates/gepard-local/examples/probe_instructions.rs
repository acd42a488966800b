//! Scores instructions on dataset rows with the local model, the way an optimization job's
//! rollout does (instructions as system message, the row's `goal` as user message, greedy,
//! `exact_match_v1` on the trimmed answer), and prints every answer. For finding out what the
//! 135M model can do with an instruction before an optimizer tries.
//!
//! `cargo run --release -p gepard-local --example probe_instructions -- INSTRUCTIONS_FILE ROWS.jsonl [MAX_TOKENS]`
//!
//! `INSTRUCTIONS_FILE` holds one or more instructions separated by lines of `=====`.
//! `PROBE_USER_TEMPLATE` (e.g. `Review: {goal}`) changes the user message, as a job's
//! `dataset_input_mapping` would.

use gepard_llm::Message;
use gepard_local::{
    default_data_dir, default_sources, models_dir, pull, GenerateOptions, LocalModel, DEFAULT_MODEL,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(instructions), Some(rows)) = (args.get(1), args.get(2)) else {
        return Err("usage: probe_instructions INSTRUCTIONS_FILE ROWS.jsonl [MAX_TOKENS]".into());
    };
    let max_tokens: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(8);
    let instructions = std::fs::read_to_string(instructions)?;
    let candidates: Vec<&str> = instructions
        .split("\n=====\n")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(rows)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sources = default_sources(DEFAULT_MODEL)?;
    let path = rt.block_on(pull(
        DEFAULT_MODEL,
        &sources,
        &models_dir(&default_data_dir()),
        &|_| {},
    ))?;
    let mut model = LocalModel::load(&path)?;
    let template = std::env::var("PROBE_USER_TEMPLATE").unwrap_or_else(|_| "{goal}".to_owned());
    let options = GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    };
    for (n, candidate) in candidates.iter().enumerate() {
        let mut correct = 0;
        println!("### candidate {n}\n{candidate}\n---");
        for row in &rows {
            let goal = row["goal"].as_str().unwrap_or_default();
            let expected = row["expected_output"].as_str().unwrap_or_default();
            let g = model.chat(
                &[
                    Message::system(*candidate),
                    Message::user(template.replace("{goal}", goal)),
                ],
                &options,
            )?;
            let ok = g.text.trim() == expected.trim();
            correct += usize::from(ok);
            println!(
                "{} {expected:<8} {:?}  <- {}",
                if ok { "+" } else { "-" },
                g.text,
                goal.chars().take(60).collect::<String>()
            );
        }
        println!(
            "=> candidate {n}: {correct}/{} = {:.3}\n",
            rows.len(),
            correct as f64 / rows.len().max(1) as f64
        );
    }
    Ok(())
}
