//! Records as the API serves them. The store returns these, the server sends them, the client
//! reads them: one definition per entity, so the three cannot drift apart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Scopes;

/// Longest `max_runtime_sec` gepard allows a job (the platform ceiling).
pub const PLATFORM_MAX_RUNTIME_SECONDS: i64 = 24 * 3600;
/// `max_runtime_sec` a job gets when it does not set one.
pub const PLATFORM_DEFAULT_RUNTIME_SECONDS: i64 = 2 * 3600;

const RUNTIME_LIMIT_ERROR: &str = "exceeded max_runtime_sec of ";

/// The `error` of a job whose run was stopped by its `max_runtime_sec`. Such a job ends
/// `failed` but keeps the best result it validated, which can be promoted like a cancelled
/// job's: see [`is_runtime_limit_error`].
pub fn runtime_limit_error(max_runtime_sec: u64) -> String {
    format!("{RUNTIME_LIMIT_ERROR}{max_runtime_sec} s")
}

/// A job's wall-clock limit in seconds: its `config.max_runtime_sec`, else the platform
/// default. The worker stops its runner there, and an outside runtime's report past it ends
/// the run; both read it here so they agree.
pub fn max_runtime_sec(config: &serde_json::Value) -> u64 {
    config
        .get("max_runtime_sec")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(PLATFORM_DEFAULT_RUNTIME_SECONDS.unsigned_abs())
}

/// Whether a job's `error` says its run was stopped by `max_runtime_sec`.
pub fn is_runtime_limit_error(error: &str) -> bool {
    error.starts_with(RUNTIME_LIMIT_ERROR)
}

/// A person or automation that holds API keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Stable id.
    pub id: Uuid,
    /// Email, when known. Served as `""` when unknown: existing clients of the Dreadnode API
    /// require a string here.
    #[serde(
        default,
        serialize_with = "empty_string_if_none",
        deserialize_with = "none_if_empty"
    )]
    #[schema(value_type = String, required = true)]
    pub email_address: Option<String>,
    /// Login-style name.
    pub username: String,
    /// Display name.
    pub full_name: Option<String>,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
}

/// See [`User::email_address`].
fn empty_string_if_none<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_deref().unwrap_or(""))
}

/// See [`User::email_address`].
fn none_if_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// An organization: the top of the tenancy tree and the owner of registries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Organization {
    /// Stable id.
    pub id: Uuid,
    /// URL key, `[a-z0-9-]`.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Inactive organizations are kept but refuse work.
    pub is_active: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Ceiling applied to a job's `max_runtime_sec`.
    pub effective_max_sandbox_runtime_seconds: i64,
    /// Where that ceiling comes from (`platform`).
    pub max_sandbox_runtime_source_level: String,
    /// `max_runtime_sec` when a job sets none.
    pub effective_default_sandbox_runtime_seconds: i64,
    /// Where that default comes from (`platform`).
    pub default_sandbox_runtime_source_level: String,
    /// The platform-wide ceiling.
    pub platform_max_sandbox_runtime_seconds: i64,
    /// The platform-wide default.
    pub platform_default_sandbox_runtime_seconds: i64,
}

/// A workspace inside an organization; jobs live in workspaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    /// Stable id.
    pub id: Uuid,
    /// URL key, `[a-z0-9-]`.
    pub key: String,
    /// Display name.
    pub name: String,
    /// The owning organization.
    pub org_id: Uuid,
    /// Whether this is the organization's default workspace.
    pub is_default: bool,
    /// Inactive workspaces are kept but refuse work.
    pub is_active: bool,
    /// Number of projects in it.
    pub project_count: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A project inside a workspace; jobs are project-scoped records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    /// Stable id.
    pub id: Uuid,
    /// URL key, `[a-z0-9-]`.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The owning workspace.
    pub workspace_id: Uuid,
    /// Whether this is the workspace's default project.
    pub is_default: bool,
    /// Number of runtimes bootstrapped for it.
    pub runtime_count: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A runtime record: what a project gets when its first job bootstraps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Runtime {
    /// Stable id.
    pub id: Uuid,
    /// The owning project.
    pub project_id: Uuid,
    /// URL key.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// An API key as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfo {
    /// Stable id (used to revoke).
    pub id: Uuid,
    /// What the key is for.
    pub name: String,
    /// First characters of the key, to tell keys apart.
    pub prefix: String,
    /// Organization key the key is scoped to.
    pub org: String,
    /// Workspace key the key is limited to, if any.
    pub workspace: Option<String>,
    /// What the key may do.
    #[schema(value_type = Vec<String>)]
    pub scopes: Scopes,
    /// The user the key acts as.
    pub user_id: Uuid,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last time the key authenticated a request (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the key was revoked; revoked keys authenticate nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A newly created API key: the only time the secret is returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key's record.
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The secret itself. Shown once; store it now.
    pub key: String,
}

/// The two kinds of registry artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// Agents whose markdown body is their instructions.
    Capability,
    /// Rows for training and validation.
    Dataset,
}

impl ArtifactKind {
    /// The kind as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Capability => "capability",
            Self::Dataset => "dataset",
        }
    }
}

/// A capability or dataset as listed: its name and latest version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactSummary {
    /// Stable id of the artifact (all versions).
    pub id: Uuid,
    /// The artifact's name.
    pub name: String,
    /// Description of the latest version.
    pub description: Option<String>,
    /// Highest published version (semver order).
    pub latest_version: String,
    /// Number of published versions.
    pub version_count: i64,
    /// First publication.
    pub created_at: DateTime<Utc>,
    /// Last publication.
    pub updated_at: DateTime<Utc>,
}

/// One version in a versions listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VersionSummary {
    /// Stable id of this version.
    pub id: Uuid,
    /// The version.
    pub version: String,
    /// Content digest.
    pub sha256: String,
    /// Publication time.
    pub created_at: DateTime<Utc>,
}

/// A stored file of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileInfo {
    /// Bundle-relative path.
    pub path: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: i64,
}

/// An agent of a capability version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentInfo {
    /// The agent's name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// Model it was written for.
    pub model: Option<String>,
    /// Tools from its front matter.
    #[schema(value_type = Vec<Object>)]
    pub tools: Value,
    /// Its instructions (the markdown body).
    pub instructions: String,
    /// The file it came from.
    pub path: String,
}

/// A capability version in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CapabilityVersion {
    /// Stable id of this version (the job's `capability.artifact_id`).
    pub id: Uuid,
    /// Capability name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: Option<String>,
    /// Content digest over all files.
    pub sha256: String,
    /// Agents in manifest order.
    pub agents: Vec<AgentInfo>,
    /// Stored files.
    pub files: Vec<FileInfo>,
    /// For promoted versions: where the instructions came from.
    #[schema(value_type = Option<Object>)]
    pub provenance: Option<Value>,
    /// Who published it (user id).
    pub created_by: Option<Uuid>,
    /// Publication time.
    pub created_at: DateTime<Utc>,
}

/// A dataset version in full (without its rows; page them separately).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetVersion {
    /// Stable id of this version.
    pub id: Uuid,
    /// Dataset name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: Option<String>,
    /// Content digest over all files.
    pub sha256: String,
    /// Number of rows.
    pub row_count: i64,
    /// Inferred schema: per field, the JSON types seen and whether every row has it.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// Rows file format (`jsonl`, `csv` or `parquet`).
    pub format: String,
    /// The rows file.
    pub rows_file: String,
    /// Stored files.
    pub files: Vec<FileInfo>,
    /// Who published it (user id).
    pub created_by: Option<Uuid>,
    /// Publication time.
    pub created_at: DateTime<Utc>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// Items over all pages.
    pub total: i64,
    /// 1-based page number.
    #[schema(minimum = 1)]
    pub page: u32,
    /// Page size asked for.
    #[schema(minimum = 1, maximum = 100)]
    pub page_size: u32,
}

/// A window of dataset rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RowsPage {
    /// Rows, each a JSON object.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
    /// Index of the first row returned.
    pub offset: i64,
    /// Most rows asked for.
    pub limit: i64,
    /// Rows in the version.
    pub total: i64,
}

/// One field-level problem of a 422.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// Where: `["body", "config", "max_metric_calls"]`, `["query", "page_size"]`, …
    pub loc: Vec<String>,
    /// What is wrong, as a sentence.
    pub msg: String,
    /// Machine-readable kind (`value_error`, `missing`, …).
    #[serde(rename = "type")]
    pub kind: String,
}

/// The error body: `{code, type, detail, errors?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status again.
    pub code: u16,
    /// Snake-case kind (`not_found`, `validation_error`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// A human sentence.
    pub detail: String,
    /// Field problems (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}
/// A pinned `{name, version}` reference as jobs carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionRef {
    /// Name, with or without the `org/` prefix as submitted.
    pub name: String,
    /// Exact version.
    pub version: String,
}

/// The capability version a job pins, resolved at submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CapabilitySnapshot {
    /// Id of the capability version.
    pub artifact_id: Uuid,
    /// Capability name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Content digest of the version (`sha256:…`).
    pub runtime_digest: String,
}

/// A reward recipe and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RewardRecipeSpec {
    /// Versioned recipe name, e.g. `exact_match_v1`.
    pub name: String,
    /// Recipe parameters.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Value,
}

/// What a job consumed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobUsage {
    /// (candidate, example) evaluations.
    pub metric_calls: i64,
    /// Model calls (target and reflection).
    pub model_calls: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
}

impl JobUsage {
    /// What a resumed runner reports (`self`, counted from its own start) on top of what the
    /// earlier runners of the same attempt had recorded (`earlier`). Model calls and tokens
    /// add up, because each runner counts only its own; metric calls do not, because the
    /// engine restores them from the checkpoint and reports the attempt's total.
    pub fn on_top_of(&self, earlier: &JobUsage) -> JobUsage {
        JobUsage {
            metric_calls: self.metric_calls,
            model_calls: earlier.model_calls.saturating_add(self.model_calls),
            input_tokens: earlier.input_tokens.saturating_add(self.input_tokens),
            output_tokens: earlier.output_tokens.saturating_add(self.output_tokens),
        }
    }
}

/// The pinned inputs of a job; fixed at submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobSpec {
    /// Training dataset.
    pub dataset_ref: VersionRef,
    /// Validation dataset (`None`: the training set also validates).
    pub val_dataset_ref: Option<VersionRef>,
    /// The capability version, resolved.
    pub capability: CapabilitySnapshot,
    /// The agent whose instructions are optimized.
    pub agent_name: String,
    /// Reward recipe.
    pub reward_recipe: RewardRecipeSpec,
    /// Optimized components (`["instructions"]`).
    pub components: Vec<String>,
    /// Engine configuration, defaults filled in.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Free tags.
    pub tags: Vec<String>,
}

/// An optimization job, as API.md's job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// Stable id.
    pub id: Uuid,
    /// Owning organization.
    pub organization_id: Uuid,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// Lifecycle state.
    pub status: crate::job::JobStatus,
    /// Display name.
    pub name: Option<String>,
    /// Always `gepa`.
    pub backend: String,
    /// Always `capability_agent`.
    pub target_kind: String,
    /// Target model id (`provider/model`).
    pub model: String,
    /// Project key.
    pub project: String,
    /// Project id.
    pub project_id: Uuid,
    /// Caller's reference for the run.
    pub run_ref: Option<String>,
    /// Training dataset.
    pub dataset_ref: VersionRef,
    /// Validation dataset.
    pub val_dataset_ref: Option<VersionRef>,
    /// What is being optimized for, in words.
    pub objective: Option<String>,
    /// The pinned capability version.
    pub capability: CapabilitySnapshot,
    /// The agent being optimized.
    pub agent_name: String,
    /// Reward recipe.
    pub reward_recipe: RewardRecipeSpec,
    /// Optimized components.
    pub components: Vec<String>,
    /// Engine configuration.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Metric series of the current attempt.
    pub metrics: std::collections::BTreeMap<String, Vec<crate::progress::MetricPoint>>,
    /// Summary of the current attempt.
    pub summary: crate::progress::JobSummary,
    /// Artifacts of the current attempt.
    #[schema(value_type = Object)]
    pub artifacts: Value,
    /// Free tags.
    pub tags: Vec<String>,
    /// Why the job failed, when it did.
    pub error: Option<String>,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// Submitting user.
    pub created_by: Option<Uuid>,
    /// When the current attempt started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When the current attempt ended.
    pub completed_at: Option<DateTime<Utc>>,
    /// When a cancel was requested for the running attempt.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last progress event.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Attempt number (1, then + 1 per retry).
    pub attempt: i64,
    /// What the current attempt consumed.
    pub usage: JobUsage,
}

/// A finished attempt, kept in the job's history when it is retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobAttempt {
    /// Attempt number.
    pub attempt: i64,
    /// How it ended.
    pub status: crate::job::JobStatus,
    /// Its summary.
    pub summary: crate::progress::JobSummary,
    /// Its artifacts.
    #[schema(value_type = Object)]
    pub artifacts: Value,
    /// Its usage.
    pub usage: JobUsage,
    /// Its error.
    pub error: Option<String>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub completed_at: Option<DateTime<Utc>>,
}

fn first_attempt() -> i64 {
    1
}

/// A log entry with its sequence number (SSE event id, `after` cursor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SequencedLog {
    /// Position in the job's log, from 1.
    pub seq: i64,
    /// The attempt that wrote it: a retried job keeps its earlier attempts' entries (the
    /// attempt history), and this tells them apart.
    #[serde(default = "first_attempt")]
    pub attempt: i64,
    /// The entry.
    #[serde(flatten)]
    pub entry: crate::progress::LogEntry,
}

/// The capability version and agent a job optimized, as a promotion preview shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PromotionSource {
    /// Capability name.
    pub name: String,
    /// The pinned version.
    pub version: String,
    /// The optimized agent.
    pub agent_name: String,
    /// The agent's instructions in that version.
    pub instructions: String,
}

/// What promoting a job would write, and whether it may (`GET …/promotion-preview`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PromotionPreview {
    /// Whether `POST …/promote` to this target would succeed now.
    pub promotable: bool,
    /// Why not, one sentence each (empty when promotable).
    pub reasons: Vec<String>,
    /// The job.
    pub job_id: Uuid,
    /// Its current attempt (promotion takes this attempt's best candidate).
    pub attempt: i64,
    /// Its status.
    pub status: crate::job::JobStatus,
    /// Where the instructions came from.
    pub source: PromotionSource,
    /// The version promotion would write (or, once promoted, did write).
    pub target: VersionRef,
    /// The best candidate's instructions (`None` before the run found any).
    pub optimized_instructions: Option<String>,
    /// Index of the best candidate among the job's candidates, when known.
    pub candidate_index: Option<i64>,
    /// Unified diff from the source instructions to the optimized ones (empty if equal).
    pub diff: String,
    /// Validation score of the source instructions.
    pub seed_score: Option<f64>,
    /// Validation score of the best candidate.
    pub best_score: Option<f64>,
}

/// One entry of an organization's audit log (who did what to which subject, when).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Stable id.
    pub id: Uuid,
    /// Workspace the action happened in, if any.
    pub workspace_id: Option<Uuid>,
    /// Who: `{user_id, key_id, key_name, key_prefix}`.
    #[schema(value_type = Object)]
    pub actor: Value,
    /// What, e.g. `capability.promote`.
    pub action: String,
    /// To what, e.g. `capability sentiment@1.0.1`.
    pub subject: String,
    /// Everything else worth keeping (job, candidate, scores, source and new version).
    #[schema(value_type = Object)]
    pub details: Value,
    /// When.
    pub created_at: DateTime<Utc>,
}
