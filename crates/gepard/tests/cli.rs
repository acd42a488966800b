//! Pins the operator and client experience end to end: a real `gepard serve` child process on
//! a real SQLite file (and once on PostgreSQL), driven by the real `gepard` CLI (credentials
//! file, publish, list, show, keys, exit codes, graceful shutdown).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_gepard");

/// `optimize submit` of the example capability and training set, to add flags to.
const SUBMIT: [&str; 8] = [
    "optimize",
    "submit",
    "--model",
    "openai/m",
    "--capability",
    "sentiment@1.0.0",
    "--dataset",
    "sentiment-train@1.0.0",
];

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    url: String,
    data_dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base_command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("GEPARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("GEPARD_DATA_DIR", data_dir)
        .env("GEPARD_LOG", "warn");
    cmd
}

fn start_server(admin_key: Option<&str>) -> Server {
    start_server_with(admin_key, &[])
}

/// `gepard serve` with more `serve` flags (`--database-url …`, `--workers 0`); by default
/// SQLite in the data directory and one embedded worker.
fn start_server_with(admin_key: Option<&str>, serve_args: &[&str]) -> Server {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = base_command(data_dir.path());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(serve_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(k) = admin_key {
        cmd.env("GEPARD_ADMIN_KEY", k);
    }
    let child = cmd.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let server = Server {
        child,
        url,
        data_dir,
    };
    assert!(comes_up(port), "gepard serve did not start listening");
    server
}

/// Waits until /healthz answers on `port`, for up to 10 s (startup takes well under a
/// second); whether it did. Not a bare TCP connect: that could land in the listen backlog
/// before the first-start bootstrap has finished.
fn comes_up(port: u16) -> bool {
    for _ in 0..200 {
        if healthy(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
}

/// The bootstrap admin key of the servers [`server_with_an_unrun_job`] starts.
const ADMIN_KEY: &str = "ci-admin-key-0123456789abcdef";

/// A server without workers (plus `serve_args`), with the example capability and dataset
/// published and one job submitted that nothing runs: the server and the job's id.
fn server_with_an_unrun_job(serve_args: &[&str]) -> (Server, String) {
    let server = start_server_with(Some(ADMIN_KEY), &[&["--workers", "0"], serve_args].concat());
    let examples = examples();
    server.admin_cli(&[
        "capability",
        "push",
        examples.join("capabilities/sentiment").to_str().unwrap(),
    ]);
    server.admin_cli(&[
        "dataset",
        "push",
        examples.join("datasets/sentiment-train").to_str().unwrap(),
    ]);
    let job: serde_json::Value = serde_json::from_str(
        &server.admin_cli(&[&["--json"][..], &SUBMIT, &["--max-metric-calls", "500"]].concat()),
    )
    .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    (server, id)
}

impl Server {
    /// The CLI with [`ADMIN_KEY`], which must succeed; its stdout.
    fn admin_cli(&self, args: &[&str]) -> String {
        let out = self.cli(&[&["--api-key", ADMIN_KEY], args].concat());
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }

    fn cli(&self, args: &[&str]) -> Output {
        base_command(self.data_dir.path())
            .env("GEPARD_SERVER", &self.url)
            .args(args)
            .output()
            .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn first_start_writes_a_private_credentials_file_that_the_cli_uses() {
    let server = start_server(None);
    let creds = server.data_dir.path().join("credentials.json");
    let text = std::fs::read_to_string(&creds).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(json["api_key"].as_str().unwrap().starts_with("gpd_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let out = server.cli(&["keys", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys[0]["scopes"], serde_json::json!(["admin"]));
    // The file also names the server (started on its own port here): no --server needed.
    assert_eq!(json["server"], server.url.as_str());
    let found = base_command(server.data_dir.path())
        .args(["keys", "list", "--json"])
        .output()
        .unwrap();
    assert!(found.status.success(), "{}", stderr(&found));
    assert_eq!(found.stdout, out.stdout);
}

/// `gepard serve` on `data_dir` at `port`, until it answers /healthz.
fn serve_on(data_dir: &Path, port: u16) -> Child {
    let mut child = base_command(data_dir)
        .args([
            "serve",
            "--workers",
            "0",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if comes_up(port) {
        return child;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("gepard serve did not start listening");
}

/// The quickstart's server (a random port) and then `gepard serve` (another) share a data
/// directory: the CLI's default must follow to the server running now, or every command the
/// quickstart suggests next fails with "connection refused".
#[test]
fn a_later_start_on_another_port_points_the_credentials_file_at_itself() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.json");
    let mut first = serve_on(dir.path(), free_port());
    let _ = first.kill();
    let _ = first.wait();
    let before: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    let port = free_port();
    let mut second = serve_on(dir.path(), port);
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    let listed = base_command(dir.path())
        .args(["keys", "list", "--json"])
        .output()
        .unwrap();
    // While the server the file names answers, another start leaves the file alone.
    let mut beside = serve_on(dir.path(), free_port());
    let while_running: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    for child in [&mut beside, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(while_running, after);
    assert_eq!(after["server"], format!("http://127.0.0.1:{port}"));
    assert_eq!(after["api_key"], before["api_key"], "the key stays");
    assert!(listed.status.success(), "{}", stderr(&listed));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // A file whose key this server's database does not know is not about this server.
    let foreign = serde_json::json!({"server": "http://127.0.0.1:1", "org": "local",
        "api_key": "gpd_000000000000000000000000000000000000000a"});
    std::fs::write(&creds, foreign.to_string()).unwrap();
    let mut third = serve_on(dir.path(), free_port());
    let _ = third.kill();
    let _ = third.wait();
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    assert_eq!(kept, foreign);
}

#[test]
fn a_misspelled_log_level_is_named_in_a_warning_at_start() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = base_command(dir.path())
        .env("GEPARD_LOG", "debg")
        .args(["worker"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.starts_with("warning: GEPARD_LOG=\"debg\": `debg` is not a level"),
        "{first}"
    );
}

#[test]
fn a_worker_process_with_no_workers_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = base_command(dir.path())
        .args(["worker", "--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--workers"), "{}", stderr(&out));
    assert!(!dir.path().join("gepard.db").exists());
}

#[cfg(unix)]
#[test]
fn first_start_creates_a_data_directory_and_database_only_their_owner_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    // Not there yet, nor its parent: serve creates both.
    let data_dir = root.path().join("state/gepard");
    let port = free_port();
    let mut child = base_command(&data_dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = comes_up(port);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut seen: Vec<(String, u32)> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                mode(&e.path()),
            )
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "gepard serve did not start listening");
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&root.path().join("state")), 0o700);
    seen.sort();
    let db: Vec<_> = seen
        .iter()
        .filter(|(n, _)| n.starts_with("gepard.db"))
        .collect();
    assert!(!db.is_empty(), "{seen:?}");
    for (name, mode) in seen {
        assert_eq!(mode & 0o077, 0, "{name} is {mode:o}");
    }
}

#[test]
fn a_bad_provider_configuration_stops_serve_before_it_sets_up_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = base_command(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(
            "GEPARD_PROVIDERS",
            "corp: {kind: opnai, base_url: \"http://x\"}",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("GEPARD_PROVIDERS (inline) is not a valid provider configuration"),
        "{err}"
    );
    assert!(!err.contains("admin API key"), "{err}");
    assert!(!dir.path().join("credentials.json").exists());
    assert!(!dir.path().join("gepard.db").exists());
}

#[test]
fn the_cli_publishes_lists_and_shows_the_examples() {
    let server = start_server(None);
    let cap = examples().join("capabilities/sentiment");
    let out = server.cli(&["capability", "push", cap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("published: capability sentiment@1.0.0"),
        "{}",
        stdout(&out)
    );
    let again = server.cli(&["capability", "push", cap.to_str().unwrap()]);
    assert!(
        stdout(&again).contains("already published (identical content)"),
        "{}",
        stdout(&again)
    );

    let list = server.cli(&["capability", "list"]);
    assert!(
        stdout(&list).contains("sentiment") && stdout(&list).contains("1.0.0"),
        "{}",
        stdout(&list)
    );
    let show = server.cli(&["capability", "show", "sentiment@1.0.0"]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(
        stdout(&show).contains("Classify the sentiment of the text."),
        "{}",
        stdout(&show)
    );
    let prefixed = server.cli(&["capability", "show", "local/sentiment@1.0.0", "--json"]);
    let detail: serde_json::Value = serde_json::from_slice(&prefixed.stdout).unwrap();
    assert_eq!(detail["agents"][0]["name"], "classifier");

    let ds = examples().join("datasets/sentiment-val");
    let out = server.cli(&["dataset", "push", ds.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("sentiment-val@1.0.0 with 30 rows"),
        "{}",
        stdout(&out)
    );
    let show = server.cli(&["dataset", "show", "sentiment-val@1.0.0", "--rows", "2"]);
    let text = stdout(&show);
    assert!(
        text.contains("30 rows")
            && text.contains("first 2 rows")
            && text.contains("expected_output"),
        "{text}"
    );
}

#[test]
fn push_json_says_whether_the_version_was_created_or_already_published() {
    let server = start_server(None);
    for (kind, dir) in [
        ("capability", "capabilities/sentiment"),
        ("dataset", "datasets/sentiment-val"),
    ] {
        let dir = examples().join(dir);
        let push = || {
            let out = server.cli(&["--json", kind, "push", dir.to_str().unwrap()]);
            assert!(out.status.success(), "{}", stderr(&out));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        let first = push();
        assert_eq!(first["created"], true, "{first}");
        assert_eq!(
            first["version"], "1.0.0",
            "the detail's fields stay: {first}"
        );
        let again = push();
        assert_eq!(again["created"], false, "{again}");
        assert_eq!(again["sha256"], first["sha256"]);
    }
}

#[test]
fn versions_takes_a_name_with_its_org_prefix_like_show_takes_a_ref() {
    let server = start_server(None);
    for (kind, dir, name) in [
        ("capability", "capabilities/sentiment", "sentiment"),
        ("dataset", "datasets/sentiment-val", "sentiment-val"),
    ] {
        let out = server.cli(&[kind, "push", examples().join(dir).to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let prefixed = format!("local/{name}");
        let versions = server.cli(&[kind, "versions", &prefixed]);
        assert!(versions.status.success(), "{}", stderr(&versions));
        assert!(stdout(&versions).contains("1.0.0"), "{}", stdout(&versions));
        // The prefix names the org, as in refs: it wins over --org.
        let elsewhere = server.cli(&["--org", "nope", kind, "versions", &prefixed]);
        assert!(elsewhere.status.success(), "{}", stderr(&elsewhere));
    }
    let bad = server.cli(&["capability", "versions", "Local/Sentiment"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("Local"), "{}", stderr(&bad));
}

#[test]
fn serve_runs_on_postgresql_and_the_cli_publishes_and_reads_back() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let test = "cli::serve_runs_on_postgresql_and_the_cli_publishes_and_reads_back";
    let Some(database) = rt.block_on(gepard_store::testing::TestDatabase::postgres(test)) else {
        return;
    };
    let server = start_server_with(None, &["--database-url", database.url()]);
    let cap = examples().join("capabilities/sentiment");
    let out = server.cli(&["capability", "push", cap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let show = server.cli(&["capability", "show", "sentiment@1.0.0", "--json"]);
    assert!(show.status.success(), "{}", stderr(&show));
    let detail: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(detail["agents"][0]["name"], "classifier");
    assert!(
        !server.data_dir.path().join("gepard.db").exists(),
        "no SQLite file beside a PostgreSQL server"
    );
    // The version is in PostgreSQL itself, where another process (here: the test) reads it.
    let found = rt.block_on(async {
        let store = database.store().await;
        let org = store.org_by_key("local").await.unwrap().unwrap();
        store
            .capability_version(org.id, "sentiment", "1.0.0")
            .await
            .unwrap()
    });
    assert_eq!(found.unwrap().agents[0].name, "classifier");
    drop(server);
}

#[test]
fn keys_created_by_the_cli_work_and_stop_working_when_revoked() {
    let server = start_server(None);
    let out = server.cli(&[
        "keys", "create", "--name", "reader", "--scope", "read", "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let as_reader = |args: &[&str]| {
        base_command(server.data_dir.path())
            .env("GEPARD_SERVER", &server.url)
            .env("GEPARD_API_KEY", secret)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(as_reader(&["capability", "list"]).status.success());
    let denied = as_reader(&[
        "capability",
        "push",
        examples().join("capabilities/sentiment").to_str().unwrap(),
    ]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        stderr(&denied).contains("lacks the `write` scope"),
        "{}",
        stderr(&denied)
    );
    assert!(server.cli(&["keys", "revoke", id]).status.success());
    let revoked = as_reader(&["capability", "list"]);
    assert_eq!(revoked.status.code(), Some(1));
    assert!(
        stderr(&revoked).contains("unknown or revoked"),
        "{}",
        stderr(&revoked)
    );
}

#[test]
fn revoking_a_revoked_key_again_says_when_it_was_revoked_and_succeeds() {
    let server = start_server(None);
    let out = server.cli(&["--json", "keys", "create", "--name", "ci"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap();

    let first = server.cli(&["keys", "revoke", id]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(stdout(&first).trim(), format!("revoked key {id} (ci)"));
    let record = server.cli(&["--json", "keys", "revoke", id]);
    assert!(record.status.success(), "{}", stderr(&record));
    let record: serde_json::Value = serde_json::from_slice(&record.stdout).unwrap();
    assert_eq!(record["already_revoked"], true, "{record}");
    let revoked_at = record["revoked_at"].as_str().unwrap();

    let again = server.cli(&["keys", "revoke", id]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let text = stdout(&again);
    assert!(
        text.contains("was already revoked at") && !text.contains("revoked key"),
        "{text}"
    );
    // The same instant (to the second; the two print fractions differently).
    assert!(text.contains(&revoked_at[..19]), "{text} vs {revoked_at}");
}

#[test]
fn failures_exit_1_with_the_reason_and_usage_errors_exit_2() {
    let server = start_server(None);
    let missing = server.cli(&["capability", "show", "nope@1.0.0"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("capability nope@1.0.0 not found"),
        "{}",
        stderr(&missing)
    );
    let bad_ref = server.cli(&["capability", "show", "sentiment"]);
    assert_eq!(
        bad_ref.status.code(),
        Some(2),
        "a malformed ref is a usage error"
    );
    assert!(
        stderr(&bad_ref).contains("NAME@VERSION"),
        "{}",
        stderr(&bad_ref)
    );
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("capability.yaml"),
        "name: x\nversion: 1.0.0\n",
    )
    .unwrap();
    let invalid = server.cli(&["capability", "push", broken.path().to_str().unwrap()]);
    assert_eq!(invalid.status.code(), Some(1));
    assert!(
        stderr(&invalid).contains("agents/*.md"),
        "{}",
        stderr(&invalid)
    );
    let usage = server.cli(&["capability", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    // Flags that would be ignored or bent are usage errors that say why.
    for (args, says) in [
        (
            &["capability", "show", "sentiment@1.0.0", "--rows", "2"][..],
            "--rows applies to datasets only",
        ),
        (
            &["optimize", "promote", "some-job", "--version", "2.0"][..],
            "invalid version `2.0`",
        ),
        (
            &["dataset", "show", "sentiment-val@1.0.0", "--rows", "0"][..],
            "0 is not in 1..=1000",
        ),
        (
            &["dataset", "show", "sentiment-val@1.0.0", "--rows", "5000"][..],
            "5000 is not in 1..=1000",
        ),
        (&[&SUBMIT[..], &["--timeout", "5"]].concat()[..], "--wait"),
    ] {
        let out = server.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let unreachable = base_command(server.data_dir.path())
        .env("GEPARD_SERVER", format!("http://127.0.0.1:{}", free_port()))
        .args(["capability", "list"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        stderr(&unreachable).contains("cannot reach the gepard server"),
        "{}",
        stderr(&unreachable)
    );
}

#[test]
fn gepard_admin_key_becomes_the_bootstrap_key_without_a_credentials_file() {
    let key = "ci-admin-key-0123456789abcdef";
    let server = start_server(Some(key));
    assert!(!server.data_dir.path().join("credentials.json").exists());
    let out = base_command(server.data_dir.path())
        .env("GEPARD_SERVER", &server.url)
        .env("GEPARD_API_KEY", key)
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("bootstrap admin"), "{}", stdout(&out));
}

#[cfg(unix)]
#[test]
fn serve_exits_cleanly_on_sigterm() {
    let mut server = start_server(None);
    let status = sigterm(&mut server.child).expect("gepard serve did not stop after SIGTERM");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

/// Sends SIGTERM and waits (bounded) for the process to exit; `None` if it did not.
#[cfg(unix)]
fn sigterm(child: &mut Child) -> Option<std::process::ExitStatus> {
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// An open event stream of a job that will not finish soon must not hold a shutting-down
/// server: the stream ends (clients reconnect elsewhere with Last-Event-ID) and the process
/// exits. Before, graceful shutdown waited for the watched job to end.
#[cfg(unix)]
#[test]
fn sigterm_ends_open_event_streams_and_the_server_exits() {
    use std::io::{BufRead, BufReader, Write};
    let key = ADMIN_KEY;
    let (mut server, id) = server_with_an_unrun_job(&[]);
    let id = id.as_str();

    // Nobody runs the job (no workers): its stream stays open until something ends it.
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /api/v1/org/local/ws/default/optimization/jobs/{id}/events HTTP/1.1\r\n\
         Host: localhost\r\nX-API-Key: {key}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while !line.starts_with("event: snapshot") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream closed early"
        );
    }

    let status =
        sigterm(&mut server.child).expect("gepard serve kept running with an event stream open");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

/// A server log redirected to a file is read with `less`, `grep` and log shippers: colour
/// codes there are noise. They belong only on a terminal.
#[cfg(unix)]
#[test]
fn the_server_log_written_to_a_file_has_no_colour_codes() {
    let data_dir = tempfile::tempdir().unwrap();
    let log_path = data_dir.path().join("server.log");
    let port = free_port();
    let mut child = base_command(data_dir.path())
        .env("GEPARD_LOG", "info")
        .env_remove("NO_COLOR")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let up = comes_up(port);
    let status = sigterm(&mut child);
    assert!(up, "gepard serve did not start listening");
    assert!(status.is_some(), "gepard serve did not stop after SIGTERM");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("INFO"), "the log has info lines: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in the log file: {log:?}"
    );
}

/// Whoever reads the server's log may go away (a log shipper restarting, `| head`): the log
/// lines are then lost, but the server goes on answering and still stops on SIGTERM. It
/// used to panic on the broken pipe in whatever task was logging, and hang when that was a
/// database connection's.
#[cfg(unix)]
#[test]
fn the_server_keeps_serving_after_the_reader_of_its_log_goes_away() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = base_command(data_dir.path())
        .env("GEPARD_LOG", "debug")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read until the server listens, then hang up, as `head -3` would.
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut log, &mut first).unwrap();
    let up = comes_up(port);
    drop(log);
    // Every request logs (at debug, the database's too): each write now meets a closed pipe.
    let answered = (0..20).filter(|_| healthy(port)).count();
    let still_running = child.try_wait().unwrap().is_none();
    let status = sigterm(&mut child);
    if status.is_none() {
        let _ = child.kill();
    }
    assert!(up, "gepard serve did not start listening");
    assert!(still_running, "the server exited");
    assert_eq!(answered, 20, "every request after the hang-up was answered");
    assert!(status.is_some(), "gepard serve did not stop after SIGTERM");
}

/// A database server that is not there is named as such at start (the pool alone would wait
/// its 30 s acquire timeout and then say only "pool timed out"), with the password hidden.
#[test]
fn serve_names_an_unreachable_database_and_exits_1() {
    let data_dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://gepard:s3cret@127.0.0.1:{}/gepard", free_port());
    let out = base_command(data_dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--database-url", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Connection refused"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    assert_eq!(
        err.matches("Connection refused").count(),
        1,
        "said once: {err}"
    );
}

#[test]
fn quickstart_publishes_and_lists_the_examples() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("qs");
    // `quickstart --no-job` on the same data directory, after `global` client flags.
    let quickstart = |global: &[&str]| {
        base_command(dir.path())
            .args(global)
            .args(["quickstart", "--no-job", "--data-dir"])
            .arg(&data)
            .arg("--examples")
            .arg(examples())
            .output()
            .unwrap()
    };
    let out = quickstart(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("capability sentiment@1.0.0"), "{text}");
    assert!(text.contains("dataset    sentiment-train@1.0.0"), "{text}");
    // A second run reuses the database and finds everything already published.
    let again = quickstart(&[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("already published"),
        "{}",
        stdout(&again)
    );
    assert!(
        !stderr(&again).contains("are not used"),
        "no note without such flags"
    );
    // The client flags are global; the quickstart says it does not use them.
    let scoped = quickstart(&["--workspace", "team-a"]);
    assert!(scoped.status.success(), "{}", stderr(&scoped));
    assert!(
        stderr(&scoped).contains("--org, --workspace and --project"),
        "{}",
        stderr(&scoped)
    );
}

/// One HTTP/1.0 request with a JSON body; the status code and the JSON answer.
fn post_json(
    url: &str,
    key: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nX-API-Key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    let json = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| serde_json::from_str(b).unwrap_or(serde_json::Value::Null))
        .unwrap_or_default();
    (status, json)
}

/// An outside runtime (a runner key reporting through `POST …/progress`, no gepard worker)
/// runs a job; when it dies silently the server itself takes the job back after the runtime
/// lease, so another runtime can pick it up. Before, a job became running only when a worker
/// claimed it, and with `--workers 0` nothing reaped leases at all.
#[test]
fn a_job_whose_outside_runtime_falls_silent_is_queued_again_after_its_lease() {
    let (server, id) = server_with_an_unrun_job(&["--runtime-lease-secs", "1"]);
    let cli = |args: &[&str]| server.admin_cli(args);
    let runner: serde_json::Value = serde_json::from_str(&cli(&[
        "--json",
        "keys",
        "create",
        "--name",
        "runtime",
        "--scope",
        "read,runner",
    ]))
    .unwrap();
    let runner_key = runner["key"].as_str().unwrap();
    let progress = format!("/api/v1/org/local/ws/default/optimization/jobs/{id}/progress");

    let (status, job) = post_json(
        &server.url,
        runner_key,
        &progress,
        &serde_json::json!({"event_type": "optimization_start", "message": "runtime up"}),
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "running");

    // The runtime dies: no report renews its one-second lease.
    let status_now = || {
        let out = cli(&["--json", "optimize", "get", &id]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut requeued = false;
    for _ in 0..100 {
        if status_now() == "queued" {
            requeued = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(requeued, "the silent runtime's job went back to the queue");
    let logs = cli(&["optimize", "logs", &id]);
    assert!(logs.contains("lease expired"), "{logs}");
}
