//! Client commands: keys, capabilities, datasets. Each talks to a server through
//! `gepard-client`, prints a human summary by default and the API's JSON with `--json`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use gepard_agent::bundle::{Bundle, Capability, Dataset};
use gepard_client::{Client, PublishOutcome};
use gepard_core::model::ArtifactKind;
use gepard_core::names::TenantKey;
use gepard_core::ArtifactRef;
use serde::Serialize;

use crate::args::PrefixedName;
use crate::settings;

/// The server a client command talks to when neither `--server`, `GEPARD_SERVER` nor a
/// credentials file names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8321";

/// Options every client command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalOpts {
    /// gepard server URL (default: the server named in the credentials file the server wrote
    /// in the data directory, else http://127.0.0.1:8321).
    #[arg(
        long,
        global = true,
        env = "GEPARD_SERVER",
        value_parser = crate::args::server_url
    )]
    pub server: Option<String>,
    /// API key (default: the credentials file the server wrote in the data directory).
    #[arg(long, global = true, env = "GEPARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Organization key.
    #[arg(long, global = true, env = "GEPARD_ORG", default_value = "local")]
    pub org: String,
    /// Workspace key.
    #[arg(
        long,
        global = true,
        env = "GEPARD_WORKSPACE",
        default_value = "default"
    )]
    pub workspace: String,
    /// Project key or id: where `optimize submit` puts a job (default: the workspace's default
    /// project) and which jobs `optimize list` shows (default: those of every project).
    #[arg(long, global = true, env = "GEPARD_PROJECT")]
    pub project: Option<String>,
    /// Print JSON instead of a human summary.
    #[arg(long, global = true)]
    pub json: bool,
}

impl GlobalOpts {
    /// A client for the chosen server, with the key from the flag, the environment or the
    /// credentials file.
    pub fn client(&self) -> Client {
        let file = settings::read_credentials(&settings::data_dir(
            std::env::var_os("GEPARD_DATA_DIR")
                .map(PathBuf::from)
                .as_deref(),
        ));
        // The credentials file names the server that wrote it: a server started with its own
        // --listen is found without repeating the address to every command.
        let (server, key) = settings::server_and_key(
            self.server.as_deref(),
            self.api_key.as_deref(),
            file.as_ref(),
        );
        Client::new(&server, key)
    }
}

/// `gepard keys …`.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key (its secret is shown once).
    Create {
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: read, write, promote, admin, runner.
        #[arg(long, default_value = "read", value_parser = crate::args::scopes)]
        scope: gepard_core::Scopes,
        /// Limit the key to one workspace.
        #[arg(long = "for-workspace")]
        for_workspace: Option<String>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id (a key already revoked is reported as such, with success).
    Revoke {
        /// The key's id.
        id: String,
    },
}

/// `gepard capability …` / `gepard dataset …`.
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Publish a directory as a new version.
    Push {
        /// The directory (with capability.yaml or dataset.yaml).
        dir: PathBuf,
    },
    /// List published names.
    List {
        /// Only names containing this text.
        #[arg(long)]
        search: Option<String>,
        /// 1-based page.
        #[arg(long, default_value_t = 1)]
        page: u32,
        /// Items per page (1–100).
        #[arg(long, default_value_t = 20)]
        page_size: u32,
    },
    /// Show one version: NAME@VERSION (or ORG/NAME@VERSION).
    Show {
        /// The ref, e.g. sentiment@1.0.0.
        #[arg(value_parser = crate::args::artifact_ref)]
        reference: ArtifactRef,
        /// Rows to show, 1 to 1000 (datasets only; default 5).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=1000))]
        rows: Option<i64>,
    },
    /// List the versions of a name: NAME (or ORG/NAME).
    Versions {
        /// The capability or dataset name, e.g. sentiment or local/sentiment.
        #[arg(value_parser = crate::args::prefixed_name)]
        name: PrefixedName,
    },
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows as aligned columns.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Runs `gepard keys …`.
pub async fn keys(opts: &GlobalOpts, cmd: KeysCommand) -> anyhow::Result<()> {
    let client = opts.client();
    match cmd {
        KeysCommand::Create {
            name,
            scope,
            for_workspace,
        } => {
            let scopes: Vec<String> = scope.as_slice().iter().map(ToString::to_string).collect();
            let created = client
                .create_key(&opts.org, &name, &scopes, for_workspace.as_deref())
                .await?;
            if opts.json {
                return print_json(&created);
            }
            println!(
                "created key {} ({}) with scopes {}",
                created.info.id,
                created.info.name,
                created.info.scopes.to_list()
            );
            println!(
                "secret (shown once, store it now):\n\n    {}\n",
                created.key
            );
        }
        KeysCommand::List => {
            let keys = client.list_keys(&opts.org).await?;
            if opts.json {
                return print_json(&keys);
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.to_string(),
                        k.name.clone(),
                        format!("{}…", k.prefix),
                        k.scopes.to_list(),
                        k.workspace.clone().unwrap_or_else(|| "*".into()),
                        if k.revoked_at.is_some() {
                            "revoked".into()
                        } else {
                            "active".into()
                        },
                    ]
                })
                .collect();
            print_table(
                &["ID", "NAME", "PREFIX", "SCOPES", "WORKSPACE", "STATE"],
                &rows,
            );
        }
        KeysCommand::Revoke { id } => {
            // Revoking is idempotent on the server (a second DELETE answers 200 with the
            // first revocation's time), so only the record read beforehand can tell "revoked
            // now" from "already revoked". Both end with the key revoked, which is what the
            // caller asked for: exit 0 either way, and say which it was.
            // An id that matches no key falls through to the server, whose 404 says so.
            let before = client
                .list_keys(&opts.org)
                .await?
                .into_iter()
                .find(|k| k.id.to_string().eq_ignore_ascii_case(id.trim()));
            let (key, already) = match before {
                Some(k) if k.revoked_at.is_some() => (k, true),
                _ => (client.revoke_key(&opts.org, &id).await?, false),
            };
            if opts.json {
                let mut value = serde_json::to_value(&key)?;
                if let Some(record) = value.as_object_mut() {
                    record.insert("already_revoked".into(), already.into());
                }
                return print_json(&value);
            }
            match key.revoked_at.filter(|_| already) {
                Some(at) => println!(
                    "key {} ({}) was already revoked at {}",
                    key.id,
                    key.name,
                    at.to_rfc3339()
                ),
                None => println!("revoked key {} ({})", key.id, key.name),
            }
        }
    }
    Ok(())
}

fn read_dir_bundle(dir: &Path) -> anyhow::Result<Bundle> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    Bundle::from_dir(dir).with_context(|| format!("reading {}", dir.display()))
}

/// The org a name is looked up in: its own prefix wins over `--org`.
fn org_of(opts: &GlobalOpts, prefix: Option<&TenantKey>) -> String {
    prefix.map_or_else(|| opts.org.clone(), ToString::to_string)
}

/// Splits a ref and picks its org (the ref's prefix wins over `--org`).
fn split_ref(opts: &GlobalOpts, r: &ArtifactRef) -> (String, String, String) {
    (
        org_of(opts, r.org.as_ref()),
        r.name.to_string(),
        r.version.to_string(),
    )
}

/// Runs `gepard capability …` or `gepard dataset …`.
pub async fn registry(
    opts: &GlobalOpts,
    kind: ArtifactKind,
    cmd: RegistryCommand,
) -> anyhow::Result<()> {
    let client = opts.client();
    match cmd {
        RegistryCommand::Push { dir } => push(opts, &client, kind, &dir).await,
        RegistryCommand::List {
            search,
            page,
            page_size,
        } => {
            let page = client
                .list_artifacts(&opts.org, kind, search.as_deref(), page, page_size)
                .await?;
            if opts.json {
                return print_json(&page);
            }
            let rows: Vec<Vec<String>> = page
                .items
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        a.latest_version.clone(),
                        a.version_count.to_string(),
                        a.description.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(&["NAME", "LATEST", "VERSIONS", "DESCRIPTION"], &rows);
            println!(
                "({} of {}, page {})",
                page.items.len(),
                page.total,
                page.page
            );
            Ok(())
        }
        RegistryCommand::Versions { name } => {
            let org = org_of(opts, name.org.as_ref());
            let versions = client.versions(&org, kind, name.name.as_str()).await?;
            if opts.json {
                return print_json(&versions);
            }
            let rows: Vec<Vec<String>> = versions
                .iter()
                .map(|v| {
                    vec![
                        v.version.clone(),
                        v.sha256[..12].to_owned(),
                        v.created_at.to_rfc3339(),
                    ]
                })
                .collect();
            print_table(&["VERSION", "SHA256", "PUBLISHED"], &rows);
            Ok(())
        }
        RegistryCommand::Show { reference, rows } => {
            let (org, name, version) = split_ref(opts, &reference);
            match kind {
                ArtifactKind::Capability => {
                    let cap = client.capability_version(&org, &name, &version).await?;
                    if opts.json {
                        return print_json(&cap);
                    }
                    println!("{}@{}  sha256 {}", cap.name, cap.version, cap.sha256);
                    if let Some(d) = &cap.description {
                        println!("{d}");
                    }
                    if let Some(p) = &cap.provenance {
                        println!();
                        for line in provenance_lines(p) {
                            println!("{line}");
                        }
                    }
                    for agent in &cap.agents {
                        println!("\n== agent {} ({}) ==", agent.name, agent.path);
                        if let Some(d) = &agent.description {
                            println!("{d}");
                        }
                        if let Some(m) = &agent.model {
                            println!("model: {m}");
                        }
                        println!("--- instructions ---\n{}", agent.instructions);
                    }
                    Ok(())
                }
                ArtifactKind::Dataset => {
                    let ds = client.dataset_version(&org, &name, &version).await?;
                    let page = client
                        .dataset_rows(&org, &name, &version, 0, rows.unwrap_or(5))
                        .await?;
                    if opts.json {
                        return print_json(&serde_json::json!({"dataset": ds, "rows": page.items}));
                    }
                    println!(
                        "{}@{}  {} rows ({})  sha256 {}",
                        ds.name, ds.version, ds.row_count, ds.format, ds.sha256
                    );
                    if let Some(d) = &ds.description {
                        println!("{d}");
                    }
                    println!("schema: {}", ds.schema);
                    println!("first {} rows:", page.items.len());
                    for row in &page.items {
                        println!("  {row}");
                    }
                    Ok(())
                }
            }
        }
    }
}

/// The version detail the server answered, plus `created`: `true` when this push wrote the
/// version (201), `false` when identical content was already published (200). The status is
/// not in the body, so without it a script could not tell the two apart.
fn published_json<T: Serialize>(out: &PublishOutcome<T>) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(&out.version)?;
    let detail = value
        .as_object_mut()
        .context("the server's version detail is not a JSON object")?;
    detail.insert("created".into(), out.created.into());
    Ok(value)
}

/// A promoted version's provenance (written by the store's promotion) as aligned lines: the
/// job, the source, the scores, what it was optimized on and who promoted it, so a reader
/// of `capability show` need not ask for `--json` to learn where the instructions came
/// from. Fields that are absent (an older record) are left out rather than printed empty.
fn provenance_lines(p: &serde_json::Value) -> Vec<String> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let at_version =
        |r: &serde_json::Value| Some(format!("{}@{}", text(&r["name"])?, text(&r["version"])?));
    let mut lines = vec!["== provenance ==".to_owned()];
    if let Some(job) = text(&p["job_id"]) {
        let mut line = format!("job        {job}");
        if let Some(a) = p["attempt"].as_i64() {
            line.push_str(&format!(", attempt {a}"));
        }
        if let Some(c) = p["candidate_index"].as_i64() {
            line.push_str(&format!(", candidate {c}"));
        }
        lines.push(line);
    }
    if let Some(source) = at_version(&p["source"]) {
        let agent = text(&p["source"]["agent_name"])
            .map(|a| format!(" agent {a}"))
            .unwrap_or_default();
        lines.push(format!("source     {source}{agent}"));
    }
    if p["seed_score"].is_number() || p["best_score"].is_number() {
        lines.push(format!(
            "validation seed {} → best {}",
            crate::jobs_cli::score(p["seed_score"].as_f64()),
            crate::jobs_cli::score(p["best_score"].as_f64())
        ));
    }
    if let Some(train) = at_version(&p["dataset"]) {
        let val = at_version(&p["val_dataset"])
            .map(|v| format!(", validation {v}"))
            .unwrap_or_default();
        lines.push(format!("datasets   training {train}{val}"));
    }
    if let Some(recipe) = text(&p["reward_recipe"]["name"]) {
        lines.push(format!("recipe     {recipe}"));
    }
    if let Some(model) = text(&p["model"]) {
        let reflection = text(&p["reflection_model"])
            .map(|r| format!(" (reflection {r})"))
            .unwrap_or_default();
        lines.push(format!("model      {model}{reflection}"));
    }
    let by = &p["promoted_by"];
    let promoted: Vec<String> = [
        text(&p["promoted_at"]),
        text(&by["key_name"]).map(|name| match text(&by["key_prefix"]) {
            Some(prefix) => format!("by key {name} ({prefix}…)"),
            None => format!("by key {name}"),
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !promoted.is_empty() {
        lines.push(format!("promoted   {}", promoted.join(" ")));
    }
    lines
}

/// Publishes a directory, validating it locally first so errors name the local file.
pub async fn push(
    opts: &GlobalOpts,
    client: &Client,
    kind: ArtifactKind,
    dir: &Path,
) -> anyhow::Result<()> {
    let bundle = read_dir_bundle(dir)?;
    let bytes = bundle.to_tar_gz();
    match kind {
        ArtifactKind::Capability => {
            Capability::parse(bundle)
                .with_context(|| format!("{} is not a valid capability", dir.display()))?;
            let out = client.publish_capability(&opts.org, bytes).await?;
            if opts.json {
                return print_json(&published_json(&out)?);
            }
            let v = &out.version;
            let what = if out.created {
                "published"
            } else {
                "already published (identical content)"
            };
            println!(
                "{what}: capability {}@{} with {} agent(s), sha256 {}",
                v.name,
                v.version,
                v.agents.len(),
                v.sha256
            );
        }
        ArtifactKind::Dataset => {
            Dataset::parse(bundle)
                .with_context(|| format!("{} is not a valid dataset", dir.display()))?;
            let out = client.publish_dataset(&opts.org, bytes).await?;
            if opts.json {
                return print_json(&published_json(&out)?);
            }
            let v = &out.version;
            let what = if out.created {
                "published"
            } else {
                "already published (identical content)"
            };
            println!(
                "{what}: dataset {}@{} with {} rows, sha256 {}",
                v.name, v.version, v.row_count, v.sha256
            );
        }
    }
    Ok(())
}
