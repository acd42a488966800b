//! `gepard optimize local` through the real binary, against a scripted OpenAI-compatible server
//! on 127.0.0.1 (plain std threads: no HTTP framework is a dependency of this crate).
//!
//! The pinned result lives in `tests/snapshots/local_optimize_scripted_run.json`; run with
//! `UPDATE_SNAPSHOTS=1` to rewrite it after an intended change, and review the diff.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// The scripted model. Task calls (system + user message): a row needs the phrase "one word"
/// in the instructions to answer with the bare label, "negation" when its goal contains "not",
/// and "sarcasm" when it contains "yeah right"; a missing skill gives a wrong answer.
/// Reflection calls (one user message with ``` fences and "feedback"): the current instruction
/// (first fenced block) gains the sentence of the first skill it lacks for which the quoted
/// examples show evidence; with none, a light rewording.
fn answer(body: &Value) -> Value {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let text_of = |m: &Value| m["content"].as_str().unwrap_or_default().to_owned();
    let system = messages.iter().find(|m| m["role"] == "system").map(text_of);
    let user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(text_of)
        .unwrap_or_default();
    let content = match system {
        Some(system) => task_answer(&system, &user),
        // A reflection model whose answers have no ``` fence: every proposal is unusable.
        None if body["model"] == "unfenced" => "Be more careful.".to_owned(),
        None => reflect(&user),
    };
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": (system_len(&messages) / 4) + 1, "completion_tokens": 3}
    })
}

fn system_len(messages: &[Value]) -> usize {
    messages
        .iter()
        .map(|m| m["content"].as_str().map_or(0, str::len))
        .sum()
}

fn task_answer(system: &str, goal: &str) -> String {
    let s = system.to_lowercase();
    let g = goal.to_lowercase();
    // The model reads the surface sentiment, and flips it for negation or sarcasm only when the
    // instructions tell it to (the gold label flips for both).
    let mut positive = g.contains("good") || g.contains("great") || g.contains("love");
    if g.starts_with("not ") && s.contains("negation") {
        positive = !positive;
    }
    if g.starts_with("yeah right") && s.contains("sarcasm") {
        positive = !positive;
    }
    let label = if positive { "positive" } else { "negative" };
    if s.contains("one word") {
        label.to_owned()
    } else {
        format!("The sentiment is {label}.")
    }
}

fn reflect(prompt: &str) -> String {
    if !(prompt.matches("```").count() >= 2 && prompt.to_lowercase().contains("feedback")) {
        return "I do not understand.".to_owned();
    }
    let current = prompt.split("```").nth(1).unwrap_or_default().trim();
    let examples = prompt.to_lowercase();
    let lower = current.to_lowercase();
    let skills = [
        (
            "one word",
            "the sentiment is",
            "Answer with one word: positive or negative.",
        ),
        (
            "negation",
            "\nnot ",
            "Watch for negation, which flips the sentiment.",
        ),
        (
            "sarcasm",
            "\nyeah right",
            "Treat sarcasm as the opposite of its surface sentiment.",
        ),
    ];
    let addition = skills
        .iter()
        .find(|(phrase, evidence, _)| !lower.contains(phrase) && examples.contains(evidence))
        .map_or("Be careful.", |(_, _, sentence)| sentence);
    format!("Based on the feedback, here is a better instruction:\n```\n{current} {addition}\n```")
}

/// A running fake; it lives until the test process ends.
struct Fake {
    base_url: String,
    calls: Arc<AtomicUsize>,
    /// The last user message of every request, in arrival order.
    users: Arc<Mutex<Vec<String>>>,
}

/// How the fake behaves.
#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// Answer every request with 401.
    reject_keys: bool,
    /// Answer with 401 from this many requests on (a key revoked half-way through a run).
    reject_keys_after: Option<usize>,
    /// Wait this long before answering (a slow model).
    delay: Duration,
}

fn start_fake(reject_keys: bool) -> Fake {
    start_fake_with(Behaviour {
        reject_keys,
        ..Behaviour::default()
    })
}

fn start_fake_with(behaviour: Behaviour) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let users = Arc::new(Mutex::new(Vec::new()));
    let (counter, log) = (Arc::clone(&calls), Arc::clone(&users));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (counter, log) = (Arc::clone(&counter), Arc::clone(&log));
            std::thread::spawn(move || serve(stream, &counter, &log, behaviour));
        }
    });
    Fake {
        base_url,
        calls,
        users,
    }
}

/// Serves HTTP/1.1 requests on one keep-alive connection until the client closes it.
fn serve(stream: TcpStream, calls: &AtomicUsize, users: &Mutex<Vec<String>>, behaviour: Behaviour) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let user = body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        users.lock().unwrap().push(user);
        let seen = calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(behaviour.delay);
        let revoked = behaviour.reject_keys_after.is_some_and(|n| seen >= n);
        let (status, reply) = if behaviour.reject_keys || revoked {
            (
                "401 Unauthorized",
                json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
            )
        } else if request_line.starts_with("POST") && request_line.contains("/chat/completions") {
            ("200 OK", answer(&body))
        } else {
            (
                "404 Not Found",
                json!({"error": {"message": "no such route"}}),
            )
        };
        let reply = reply.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

const GOALS: &[(&str, &str)] = &[
    ("a good film", "positive"),
    ("a great cast", "positive"),
    ("i love it", "positive"),
    ("a dull plot", "negative"),
    ("bad sound", "negative"),
    ("not good at all", "negative"),
    ("not a great ending", "negative"),
    ("yeah right, a great movie", "negative"),
    ("yeah right, i love waiting", "negative"),
    ("not bad", "positive"),
    ("good acting", "positive"),
    ("boring", "negative"),
];

fn write_rows(path: &Path, rows: &[(&str, &str)]) {
    let text: String = rows
        .iter()
        .map(|(goal, label)| json!({"goal": goal, "expected_output": label}).to_string() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

/// `rows` as a Parquet file with two text columns, as `write_rows` writes them as JSON lines.
fn write_parquet(path: &Path, rows: &[(&str, &str)]) {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = parquet::schema::parser::parse_message_type(
        "message rows { REQUIRED BYTE_ARRAY goal (UTF8); REQUIRED BYTE_ARRAY expected_output (UTF8); }",
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema), props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    for column in [0, 1] {
        let values: Vec<ByteArray> = rows
            .iter()
            .map(|&(goal, label)| ByteArray::from(if column == 0 { goal } else { label }))
            .collect();
        let mut writer = group.next_column().unwrap().unwrap();
        writer
            .typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        writer.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

/// A capability directory and train / val / test files in a fresh temporary directory.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("cap");
        std::fs::create_dir_all(cap.join("agents")).unwrap();
        std::fs::write(
            cap.join("capability.yaml"),
            "schema: 1\nname: sentiment\nversion: 1.0.0\ndescription: Sentiment demo\n",
        )
        .unwrap();
        std::fs::write(
            cap.join("agents/classifier.md"),
            "---\nname: classifier\ndescription: Labels sentiment\n---\nClassify the sentiment of the text.\n",
        )
        .unwrap();
        std::fs::write(
            cap.join("agents/other.md"),
            "---\nname: other\n---\nSomething else.\n",
        )
        .unwrap();
        write_rows(&dir.path().join("train.jsonl"), GOALS);
        let val: Vec<_> = GOALS.iter().rev().copied().collect();
        write_rows(&dir.path().join("val.jsonl"), &val);
        write_rows(&dir.path().join("test.jsonl"), &GOALS[3..9]);
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The standard run's arguments, with `extra` appended.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "optimize",
            "local",
            "--capability",
            self.path("cap").to_str().unwrap(),
            "--dataset",
            self.path("train.jsonl").to_str().unwrap(),
            "--val-dataset",
            self.path("val.jsonl").to_str().unwrap(),
            "--test-dataset",
            self.path("test.jsonl").to_str().unwrap(),
            "--model",
            "openai/scripted",
            "--reflection-lm",
            "openai/scripted-reflect",
            "--reward-recipe",
            "exact_match_v1",
            "--max-metric-calls",
            "150",
            "--seed",
            "3",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }
}

fn gepard(args: &[String], base_url: &str, key: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gepard"))
        .args(args)
        .env("OPENAI_BASE_URL", base_url)
        .env("OPENAI_API_KEY", key)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the standard scripted run with `extra` flags and returns its JSON without the timing.
fn scripted_json(extra: &[&str]) -> Value {
    let fake = start_fake(false);
    let inputs = Inputs::new();
    let mut flags = vec!["--json"];
    flags.extend_from_slice(extra);
    let out = gepard(&inputs.args(&flags), &fake.base_url, "sk-test");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let wall = report
        .as_object_mut()
        .unwrap()
        .remove("wall_seconds")
        .unwrap();
    assert!(wall.as_f64().unwrap() >= 0.0);
    report
}

/// `--dataset` and friends take what `dataset push` takes too: a dataset directory, or a CSV
/// or Parquet file; the run is the same as on the JSONL files.
#[test]
fn rows_from_a_dataset_directory_a_csv_or_a_parquet_file_give_the_same_run_as_jsonl() {
    let expected = scripted_json(&[]);
    let fake = start_fake(false);
    let inputs = Inputs::new();
    let dir = inputs.path("train-ds");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("dataset.yaml"), "name: train\nversion: 1.0.0\n").unwrap();
    std::fs::copy(inputs.path("train.jsonl"), dir.join("rows.jsonl")).unwrap();
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let csv: String = std::iter::once("goal,expected_output\n".to_owned())
        .chain(
            GOALS
                .iter()
                .rev()
                .map(|(g, l)| format!("{},{}\n", quote(g), quote(l))),
        )
        .collect();
    std::fs::write(inputs.path("val.csv"), csv).unwrap();
    write_parquet(&inputs.path("test.parquet"), &GOALS[3..9]);
    let mut args = inputs.args(&["--json"]);
    for (flag, path) in [
        ("--dataset", &dir),
        ("--val-dataset", &inputs.path("val.csv")),
        ("--test-dataset", &inputs.path("test.parquet")),
    ] {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = path.to_str().unwrap().to_owned();
    }
    let out = gepard(&args, &fake.base_url, "sk-test");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report.as_object_mut().unwrap().remove("wall_seconds");
    assert_eq!(report, expected);
}

#[test]
fn a_scripted_run_through_the_binary_produces_the_pinned_result() {
    let report = scripted_json(&[]);
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots/local_optimize_scripted_run.json");
    let rendered = serde_json::to_string_pretty(&report).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(pinned.parent().unwrap()).unwrap();
        std::fs::write(&pinned, &rendered).unwrap();
    }
    let expected = std::fs::read_to_string(&pinned).unwrap_or_else(|_| {
        panic!(
            "no pinned result at {}; run with UPDATE_SNAPSHOTS=1 to write it:\n{rendered}",
            pinned.display()
        )
    });
    assert_eq!(rendered, expected, "the run differs from the pinned result");
    // What the pinned result says, spelled out.
    assert!(report["metric_calls"].as_u64().unwrap() <= 150);
    assert!(report["best_val_score"].as_f64() > report["seed_val_score"].as_f64());
    assert!(report["best_test_score"].as_f64().is_some());
}

#[test]
fn the_same_run_at_concurrency_1_and_8_gives_the_same_result() {
    let one = scripted_json(&["--concurrency", "1"]);
    let eight = scripted_json(&["--concurrency", "8"]);
    assert_eq!(one, eight);
}

#[test]
fn a_rejected_api_key_fails_fast_with_the_providers_message_after_few_calls() {
    let fake = start_fake(true);
    let inputs = Inputs::new();
    let out = gepard(&inputs.args(&["--json"]), &fake.base_url, "sk-wrong");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("rejected the credentials (HTTP 401)")
            && err.contains("Incorrect API key provided"),
        "{err}"
    );
    assert!(!err.contains("sk-wrong"), "the key never shows: {err}");
    let calls = fake.calls.load(Ordering::SeqCst);
    assert!(
        calls <= 8,
        "no more than the calls already in flight: {calls}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_key_revoked_half_way_fails_the_run_but_still_reports_the_best_result_found_before() {
    // The scripted run's first child is accepted at 30 metric calls (31 model calls with its
    // reflection); the key stops working at the 45th call.
    let fake = start_fake_with(Behaviour {
        reject_keys_after: Some(45),
        ..Behaviour::default()
    });
    let inputs = Inputs::new();
    let out = gepard(
        &inputs.args(&["--json", "--concurrency", "1"]),
        &fake.base_url,
        "sk-test",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("rejected the credentials (HTTP 401)"), "{err}");
    assert!(
        err.contains("the test set (--test-dataset) was not scored"),
        "{err}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["best_val_score"].as_f64().unwrap() >= 0.58,
        "{report}"
    );
    assert!(report["best_candidate"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 401")),
        "{report}"
    );
    assert!(report["stop_reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("failed: ")));
    assert!(report.get("best_test_score").is_none());
}

#[test]
fn a_missing_dataset_file_exits_2_naming_the_file() {
    let fake = start_fake(false);
    let inputs = Inputs::new();
    let mut args = inputs.args(&[]);
    let i = args.iter().position(|a| a == "--dataset").unwrap();
    args[i + 1] = inputs.path("nope.jsonl").to_str().unwrap().to_owned();
    let out = gepard(&args, &fake.base_url, "sk-test");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--dataset") && err.contains("nope.jsonl"),
        "{err}"
    );
    assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
}

/// A byte flip that makes the Parquet decoder itself panic (some do; the reader catches it)
/// gives the same clean exit 2 as any unreadable file, and no crash report on stderr.
#[test]
fn a_parquet_file_that_crashes_the_decoder_exits_2_without_a_crash_report() {
    let inputs = Inputs::new();
    write_parquet(&inputs.path("good.parquet"), GOALS);
    let whole = std::fs::read(inputs.path("good.parquet")).unwrap();
    // Only a caught decoder panic gives this message.
    let panicking = (0..whole.len())
        .map(|at| {
            let mut bytes = whole.clone();
            bytes[at] ^= 0xA5;
            bytes
        })
        .find(|bytes| {
            gepard_agent::bundle::rows_of_file("rows.parquet", bytes.clone())
                .is_err_and(|e| e.to_string().contains("its data is malformed"))
        })
        .expect("some flipped byte makes the decoder panic");
    std::fs::write(inputs.path("val.parquet"), panicking).unwrap();
    let mut args = inputs.args(&[]);
    let i = args.iter().position(|a| a == "--val-dataset").unwrap();
    args[i + 1] = inputs.path("val.parquet").to_str().unwrap().to_owned();
    let out = gepard(&args, "http://127.0.0.1:9/v1", "sk-test");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("its data is malformed"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_malformed_row_exits_2_naming_the_file_and_line() {
    let inputs = Inputs::new();
    std::fs::write(inputs.path("val.jsonl"), "{\"goal\": \"a\"}\n{oops\n").unwrap();
    let out = gepard(&inputs.args(&[]), "http://127.0.0.1:9/v1", "sk-test");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--val-dataset") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn a_row_without_goal_is_refused_before_the_run_naming_the_file_and_row() {
    for flag in ["--dataset", "--val-dataset", "--test-dataset"] {
        let fake = start_fake(false);
        let inputs = Inputs::new();
        let file = inputs.path("nogoal.jsonl");
        std::fs::write(
            &file,
            "{\"goal\": \"a good film\", \"expected_output\": \"positive\"}\n\
             {\"question\": \"a dull plot\", \"expected_output\": \"negative\"}\n",
        )
        .unwrap();
        let mut args = inputs.args(&[]);
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = file.to_str().unwrap().to_owned();
        let out = gepard(&args, &fake.base_url, "sk-test");
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{flag} {}: row 2 cannot become a user message",
                file.display()
            )) && err.contains("no `goal` field"),
            "{flag}: {err}"
        );
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            0,
            "{flag}: no model call"
        );
    }
}

#[test]
fn a_row_whose_tools_cannot_be_offered_exits_2_naming_the_row() {
    let inputs = Inputs::new();
    std::fs::write(
        inputs.path("val.jsonl"),
        "{\"goal\": \"a\", \"expected_output\": \"x\", \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]}\n\
         {\"goal\": \"b\", \"expected_output\": \"x\", \"tools\": [{\"type\": \"retrieval\"}]}\n",
    )
    .unwrap();
    let out = gepard(&inputs.args(&[]), "http://127.0.0.1:9/v1", "sk-test");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--val-dataset")
            && err.contains("row 2 has tools the model cannot be offered")
            && err.contains("tools[0]")
            && err.contains("retrieval"),
        "{err}"
    );
}

#[test]
fn a_row_reward_outside_0_to_1_exits_2_naming_the_row_before_any_model_call() {
    for reward in ["5", "-1"] {
        let fake = start_fake(false);
        let inputs = Inputs::new();
        std::fs::write(
            inputs.path("val.jsonl"),
            format!(
                "{{\"goal\": \"a\", \"reward\": 0.5}}\n{{\"goal\": \"b\", \"reward\": {reward}}}\n"
            ),
        )
        .unwrap();
        let mut args = inputs.args(&[]);
        let i = args.iter().position(|a| a == "exact_match_v1").unwrap();
        args[i] = "row_reward_v1".to_owned();
        let out = gepard(&args, &fake.base_url, "sk-test");
        assert_eq!(out.status.code(), Some(2), "{reward}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "--val-dataset {}: row 2 cannot be scored by row_reward_v1: the row's reward is \
                 {reward}, not a number from 0 to 1",
                inputs.path("val.jsonl").display()
            )),
            "{reward}: {err}"
        );
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            0,
            "{reward}: no model call"
        );
    }
}

/// Ctrl-C through a real child process and a slow model: the run stops, the test set is not
/// scored (no test row ever reaches the model), the best result so far is still printed, and
/// the exit code says the run was interrupted.
#[test]
fn ctrl_c_stops_the_run_skips_the_test_scoring_and_exits_130() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let fake = start_fake_with(Behaviour {
        delay: Duration::from_millis(20),
        ..Behaviour::default()
    });
    let inputs = Inputs::new();
    let test_rows: Vec<(String, &str)> = (0..40)
        .map(|i| (format!("test-only row {i}: a good film"), "positive"))
        .collect();
    let test_rows: Vec<(&str, &str)> = test_rows.iter().map(|(g, l)| (g.as_str(), *l)).collect();
    write_rows(&inputs.path("test.jsonl"), &test_rows);
    let mut args = inputs.args(&["--json", "--concurrency", "1"]);
    // A budget the run would take minutes to spend at this model speed.
    let i = args.iter().position(|a| a == "150").unwrap();
    args[i] = "100000".to_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gepard"))
        .args(&args)
        .env("OPENAI_BASE_URL", &fake.base_url)
        .env("OPENAI_API_KEY", "sk-test")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Past the seed's validation pass (12 rows), so there is a result to report.
    while fake.calls.load(Ordering::SeqCst) < 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was interrupted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();

    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("the test set (--test-dataset) was not scored"),
        "{err}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stop_reason"], "cancelled");
    assert!(report["best_val_score"].is_number(), "{report}");
    assert!(report.get("best_test_score").is_none(), "{report}");
    let users = fake.users.lock().unwrap();
    assert!(
        !users.iter().any(|u| u.starts_with("test-only row")),
        "no test row was sent to the model"
    );
}

#[test]
fn the_human_summary_counts_unusable_proposals_apart_from_rejected_and_skipped_iterations() {
    let fake = start_fake(false);
    let inputs = Inputs::new();
    let run = |extra: &[&str]| {
        let mut args = inputs.args(extra);
        let i = args
            .iter()
            .position(|a| a == "openai/scripted-reflect")
            .unwrap();
        args[i] = "openai/unfenced".to_owned();
        let out = gepard(&args, &fake.base_url, "sk-test");
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let report: Value = serde_json::from_str(&run(&["--json"])).unwrap();
    let count = |key: &str| report[key].as_u64().unwrap();
    assert!(count("proposals_rejected") > 0, "{report}");
    let human = run(&[]);
    let expected = format!(
        "{} iterations: {} accepted, {} rejected, {} unusable proposals, {} skipped (perfect \
         minibatch); {} candidates, {} reflection calls.",
        count("iterations"),
        count("accepted"),
        count("rejected"),
        count("proposals_rejected"),
        count("skipped"),
        count("candidates"),
        count("reflection_calls"),
    );
    assert!(human.contains(&expected), "{expected:?} in:\n{human}");
}

#[test]
fn local_serve_and_worker_help_list_no_client_flags_and_other_commands_keep_them() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gepard"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let client_flags = ["--server", "--api-key", "--org", "--workspace", "--project"];
    let local = help(&["optimize", "local"]);
    for flag in client_flags {
        assert!(!local.contains(flag), "{flag} in:\n{local}");
    }
    assert!(
        local.contains("--capability") && local.contains("--json"),
        "{local}"
    );
    // The server and the worker talk to the database, not to a server: no client flags,
    // and no --json either (they have no output of their own to format).
    for command in [&["serve"][..], &["worker"][..], &["quickstart"][..]] {
        let text = help(command);
        for flag in client_flags.iter().chain(&["--json"]) {
            assert!(!text.contains(flag), "{flag} in {command:?}:\n{text}");
        }
        assert!(text.contains("--data-dir"), "{text}");
    }
    // Local models: no server either, but `model list --json` formats its output.
    for command in [&["model", "pull"][..], &["model", "list"][..]] {
        let text = help(command);
        for flag in client_flags {
            assert!(!text.contains(flag), "{flag} in {command:?}:\n{text}");
        }
    }
    for command in [
        &["optimize", "list"][..],
        &["capability", "push"][..],
        &["keys", "list"][..],
    ] {
        let text = help(command);
        for flag in client_flags {
            assert!(text.contains(flag), "{flag} in {command:?}:\n{text}");
        }
    }
}

#[test]
fn bad_recipe_params_exit_2_naming_the_parameter() {
    let inputs = Inputs::new();
    let out = gepard(
        &inputs.args(&["--reward-params", r#"{"expectd": "x"}"#]),
        "http://127.0.0.1:9/v1",
        "sk-test",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("exact_match_v1") && err.contains("expectd"),
        "{err}"
    );

    let out = gepard(
        &inputs.args(&["--reward-params", "{not json"]),
        "http://127.0.0.1:9/v1",
        "sk-test",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--reward-params"), "{}", stderr(&out));
}

#[test]
fn an_unknown_recipe_or_agent_exits_2_listing_what_exists() {
    let inputs = Inputs::new();
    let mut args = inputs.args(&[]);
    let i = args.iter().position(|a| a == "exact_match_v1").unwrap();
    args[i] = "exact_match_v9".to_owned();
    let out = gepard(&args, "http://127.0.0.1:9/v1", "sk-test");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("contains_v1"), "{}", stderr(&out));

    let out = gepard(
        &inputs.args(&["--agent-name", "nobody"]),
        "http://127.0.0.1:9/v1",
        "sk-test",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("nobody") && err.contains("classifier, other"),
        "{err}"
    );
}

#[test]
fn a_negative_number_exits_2_naming_its_flag() {
    let inputs = Inputs::new();
    for flag in [
        "--max-metric-calls",
        "--seed",
        "--minibatch",
        "--concurrency",
    ] {
        let mut args = inputs.args(&[]);
        match args.iter().position(|a| a == flag) {
            Some(i) => args[i + 1] = "-5".to_owned(),
            None => args.extend([flag.to_owned(), "-5".to_owned()]),
        }
        let out = gepard(&args, "http://127.0.0.1:9/v1", "sk-test");
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("invalid value '-5' for '{flag}")),
            "{err}"
        );
    }
}

#[test]
fn a_budget_below_the_seed_validation_pass_exits_2_naming_the_flag() {
    let inputs = Inputs::new();
    let mut args = inputs.args(&[]);
    let i = args.iter().position(|a| a == "150").unwrap();
    args[i] = "5".to_owned();
    let out = gepard(&args, "http://127.0.0.1:9/v1", "sk-test");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--max-metric-calls"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_malformed_model_id_exits_2_naming_it() {
    let inputs = Inputs::new();
    let mut args = inputs.args(&[]);
    let i = args.iter().position(|a| a == "openai/scripted").unwrap();
    args[i] = "scripted".to_owned();
    let out = gepard(&args, "http://127.0.0.1:9/v1", "sk-test");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid model id `scripted`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn without_a_val_dataset_the_training_rows_validate_and_the_run_says_so_in_human_output() {
    let fake = start_fake(false);
    let inputs = Inputs::new();
    let args: Vec<String> = [
        "optimize",
        "local",
        "--capability",
        inputs.path("cap").to_str().unwrap(),
        "--agent-name",
        "classifier",
        "--dataset",
        inputs.path("train.jsonl").to_str().unwrap(),
        "--model",
        "openai/scripted",
        "--reward-recipe",
        "exact_match_v1",
        "--max-metric-calls",
        "100",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let out = gepard(&args, &fake.base_url, "sk-test");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("no --val-dataset given: the 12 training rows are also the validation set"),
        "{}",
        stderr(&out)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "12 training / 12 validation rows",
        "seed  val 0.000",
        "best  val",
        "Stop reason: stopped with ",
        "of 100",
        "Answer with one word",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
}

/// A provider named in `GEPARD_PROVIDERS` (inline JSON here; a YAML file works the same) is
/// resolved by its name, with its own base URL and key variable: the built-in `openai`
/// provider points at a closed port and is never used.
#[test]
fn a_provider_named_in_gepard_providers_runs_the_optimization() {
    let fake = start_fake(false);
    let inputs = Inputs::new();
    let mut args = inputs.args(&["--json"]);
    for a in &mut args {
        if a.starts_with("openai/") {
            *a = a.replacen("openai/", "corp/", 1);
        }
    }
    let providers =
        json!({"corp": {"kind": "openai", "base_url": fake.base_url, "api_key_env": "CORP_KEY"}});
    let out = Command::new(env!("CARGO_BIN_EXE_gepard"))
        .args(&args)
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .env_remove("OPENAI_API_KEY")
        .env("CORP_KEY", "sk-test")
        .env("GEPARD_PROVIDERS", providers.to_string())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["best_val_score"],
        scripted_json(&[])["best_val_score"],
        "the same scripted run, through the named provider"
    );

    let broken = Command::new(env!("CARGO_BIN_EXE_gepard"))
        .args(&args)
        .env("GEPARD_PROVIDERS", inputs.path("no-such-providers.yaml"))
        .output()
        .unwrap();
    assert_eq!(broken.status.code(), Some(2), "{}", stderr(&broken));
    assert!(
        stderr(&broken).contains("GEPARD_PROVIDERS: cannot read the provider file"),
        "{}",
        stderr(&broken)
    );
}
