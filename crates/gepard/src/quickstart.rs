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

/// Runs the quickstart.
pub async fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let examples = examples_dir(args.examples.as_deref())?;
    serve::init_tracing(LogFormat::Text, "warn");
    let serve_args = ServeArgs {
        listen: "127.0.0.1:0".parse()?,
        data_dir: Some(args.data_dir.clone()),
        database_url: None,
        workers: 0,
        log_format: LogFormat::Text,
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
        server: server.clone(),
        api_key: Some(key.clone()),
        org: "local".into(),
        workspace: "default".into(),
        project: None,
        json: false,
    };
    let client = Client::new(&server, Some(key));
    let result = steps(&opts, &client, &examples).await;
    let _ = stop.send(());
    running.task.await.context("server task")??;
    running.store.close().await;
    result?;
    println!(
        "\nDone. Next: `gepard serve --data-dir {}` and explore with `gepard capability list`.",
        args.data_dir.display()
    );
    Ok(())
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
