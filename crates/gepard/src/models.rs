//! The model registry every command uses, and `gepard model pull|list`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use gepard_llm::{ModelRegistry, ProvidersConfig};

/// Environment variable holding the named providers of the server config (DESIGN "Models"):
/// the path of a YAML or JSON file, or the configuration itself as inline JSON (`{…}`). The
/// format is `gepard_llm::ProvidersConfig`'s, e.g. `vllm: {kind: openai, base_url: …}`.
/// Workers pass it on to their runners, so every process resolves the same providers.
pub const PROVIDERS_ENV: &str = "GEPARD_PROVIDERS";

/// The named providers from [`PROVIDERS_ENV`] (none when it is unset or empty).
pub fn providers_config() -> anyhow::Result<ProvidersConfig> {
    let value = std::env::var(PROVIDERS_ENV).unwrap_or_default();
    let value = value.trim();
    if value.is_empty() {
        return Ok(ProvidersConfig::default());
    }
    // Inline configuration (JSON, or YAML flow style such as `corp: {kind: openai, …}`) unless
    // the value names a file.
    let inline = value.starts_with('{') || (!Path::new(value).is_file() && value.contains(": "));
    let (text, origin) = if inline {
        (value.to_owned(), format!("{PROVIDERS_ENV} (inline)"))
    } else {
        let text = std::fs::read_to_string(value)
            .with_context(|| format!("{PROVIDERS_ENV}: cannot read the provider file {value}"))?;
        (text, format!("{PROVIDERS_ENV} file {value}"))
    };
    serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{origin} is not a valid provider configuration"))
}

/// Providers from the environment (`openai/…`, `anthropic/…`, and the named ones of
/// [`PROVIDERS_ENV`]), plus, with the `local-model` feature, the embedded `local/…` model
/// (cached under `data_dir`) and `builtin/rules`.
pub fn registry(data_dir: &Path) -> anyhow::Result<ModelRegistry> {
    Ok(registry_with(&providers_config()?, data_dir))
}

/// [`registry`] over an already read provider configuration.
pub fn registry_with(providers: &ProvidersConfig, data_dir: &Path) -> ModelRegistry {
    let registry = ModelRegistry::from_config(providers);
    #[cfg(feature = "local-model")]
    {
        gepard_local::register(
            &registry,
            gepard_local::LocalConfig::with_data_dir(data_dir),
        );
        gepard_local::register_builtin(&registry);
    }
    #[cfg(not(feature = "local-model"))]
    let _ = data_dir;
    registry
}

/// `gepard model …`.
#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Fetch, verify and cache a local model (e.g. smollm2-135m-instruct).
    Pull {
        /// Model name.
        #[arg(default_value = "smollm2-135m-instruct")]
        name: String,
        /// Data directory (the cache is its `models/` folder).
        #[arg(long, env = "GEPARD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Talks to no server: the client flags are not listed in its help.
        #[command(flatten)]
        client_flags: crate::args::HiddenClientFlags,
    },
    /// List cached local models.
    List {
        /// Data directory.
        #[arg(long, env = "GEPARD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Talks to no server: the client flags are not listed in its help.
        #[command(flatten)]
        client_flags: crate::args::HiddenClientFlags,
    },
}

/// Runs `gepard model …`.
#[cfg(feature = "local-model")]
pub async fn run(cmd: ModelCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Pull { name, data_dir, .. } => {
            let dir = gepard_local::models_dir(&crate::settings::data_dir(data_dir.as_deref()));
            let sources = gepard_local::default_sources(&name)?;
            let bar = indicatif::ProgressBar::new(0);
            if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let path = gepard_local::pull(&name, &sources, &dir, &|event| {
                use gepard_local::PullEvent as E;
                match event {
                    E::Downloaded { bytes, total } => {
                        bar.set_length(total.unwrap_or(bytes));
                        bar.set_position(bytes);
                    }
                    other => bar.println(format!("{other:?}")),
                }
            })
            .await?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::json!({"name": name, "path": path}));
            } else {
                println!("{name} is ready at {}", path.display());
            }
        }
        ModelCommand::List { data_dir, .. } => {
            let dir = gepard_local::models_dir(&crate::settings::data_dir(data_dir.as_deref()));
            let cached = gepard_local::list_cached(&dir);
            if json {
                println!("{}", serde_json::to_string_pretty(&cached)?);
            } else if cached.is_empty() {
                println!(
                    "no local models cached in {} (run `gepard model pull`)",
                    dir.display()
                );
            } else {
                for m in cached {
                    println!(
                        "{}  {:.1} MB  {}",
                        m.name,
                        m.size_bytes as f64 / 1e6,
                        m.path.display()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Without the `local-model` feature there is nothing to pull.
#[cfg(not(feature = "local-model"))]
pub async fn run(_cmd: ModelCommand, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("this gepard was built without the `local-model` feature")
}
