//! Promotion: a completed job's best candidate becomes a new, immutable capability version.
//!
//! The preview and the promotion share one plan built from the same reads. The promotion
//! builds it again inside its write transaction (on SQLite `BEGIN IMMEDIATE`, so writers
//! queue), which makes what it checks exactly what it writes: two concurrent promotions of
//! one job cannot both write, and the loser is told which version the winner wrote. The new
//! version, its provenance, the job's promotion record, a job log line and the audit entry are
//! committed together or not at all.

use gepard_agent::bundle::{Bundle, BundleFile, Capability};
use gepard_core::job::JobStatus;
use gepard_core::model::{
    ArtifactKind, AuditEntry, CapabilityVersion, JobSpec, Page, PromotionPreview, PromotionSource,
    VersionRef,
};
use gepard_core::names::ArtifactName;
use gepard_core::progress::JobSummary;
use gepard_core::PageRequest;
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::execution::mark_best;
use crate::jobs::{from_json, status};
use crate::notify::Notifier;
use crate::registry::{insert_version, NewVersion};
use crate::rows::{int, json, opt_text, opt_uuid, text, time, uuid};
use crate::{is_unique_violation, Published, Result, Store, StoreError};

/// What a promotion (or its preview) asks for.
#[derive(Debug, Clone)]
pub struct PromotionRequest {
    /// The job's organization.
    pub org_id: Uuid,
    /// The workspace in the request path: a job of another workspace is not found.
    pub workspace_id: Uuid,
    /// The job.
    pub job_id: Uuid,
    /// Target capability name (default: the source capability's).
    pub name: Option<ArtifactName>,
    /// Target version (default: see `default_version`).
    pub version: Option<semver::Version>,
}

/// Who promotes, as provenance and the audit log record it.
#[derive(Debug, Clone)]
pub struct Promoter {
    /// The user the key acts as.
    pub user_id: Uuid,
    /// The API key used.
    pub key_id: Uuid,
    /// The key's name.
    pub key_name: String,
    /// The key's display prefix.
    pub key_prefix: String,
}

impl Promoter {
    fn to_json(&self) -> Value {
        json!({
            "user_id": self.user_id, "key_id": self.key_id,
            "key_name": self.key_name, "key_prefix": self.key_prefix,
        })
    }
}

/// The preview plus what writing needs.
struct Plan {
    preview: PromotionPreview,
    source: Capability,
    spec: JobSpec,
    model: String,
    artifacts: Value,
    log_seq: i64,
    target_name: ArtifactName,
    target_version: semver::Version,
}

/// The version after `highest`: the release of a pre-release (`1.1.0-rc.1` → `1.1.0`, which is
/// free because it sorts above its pre-releases), else the next patch.
/// `None` when the patch number is already the largest there is.
fn next_version(highest: &semver::Version) -> Option<semver::Version> {
    if highest.pre.is_empty() {
        let patch = highest.patch.checked_add(1)?;
        Some(semver::Version::new(highest.major, highest.minor, patch))
    } else {
        Some(semver::Version::new(
            highest.major,
            highest.minor,
            highest.patch,
        ))
    }
}

/// The version a promotion writes when none is asked for.
///
/// Under the source's own name it is the source's next free patch (`1.0.0` → `1.0.1`, or
/// `1.0.2` when `1.0.1` exists), so a result optimized from `1.0.0` never becomes a `2.0.1`
/// that silently drops whatever `2.0.0` changed. Under another name it continues that name's
/// line (the patch after its highest version), or starts at the source's version.
/// `None` when the line has run out of patch numbers (`X.Y.18446744073709551615`): the
/// promotion then needs an explicit version.
fn default_version(
    source: &semver::Version,
    same_name: bool,
    existing: &[semver::Version],
) -> Option<semver::Version> {
    if !same_name {
        return existing
            .iter()
            .max()
            .map_or_else(|| Some(source.clone()), next_version);
    }
    let mut v = next_version(source)?;
    while existing.contains(&v) {
        v = next_version(&v)?;
    }
    Some(v)
}

async fn load_capability(
    conn: &mut AnyConnection,
    org_id: Uuid,
    name: &str,
    version: &str,
) -> Result<Capability> {
    let version_id: String = sqlx::query_scalar(
        "SELECT v.id FROM artifact_versions v JOIN artifacts a ON a.id = v.artifact_id \
         WHERE a.org_id = $1 AND a.kind = $2 AND a.name = $3 AND v.version = $4",
    )
    .bind(org_id.to_string())
    .bind(ArtifactKind::Capability.as_str())
    .bind(name)
    .bind(version)
    .fetch_optional(&mut *conn)
    .await?
    // Versions are never deleted and jobs pin published ones: a missing one is corruption.
    .ok_or_else(|| StoreError::Corrupt(format!("pinned capability {name}@{version} is gone")))?;
    let rows = sqlx::query("SELECT path, content FROM artifact_files WHERE version_id = $1")
        .bind(&version_id)
        .fetch_all(&mut *conn)
        .await?;
    let files = rows
        .iter()
        .map(|r| {
            Ok(BundleFile::new(
                text(r, "path")?,
                r.try_get::<Vec<u8>, _>("content")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Capability::parse(Bundle::from_files(files))
        .map_err(|e| StoreError::Corrupt(format!("stored capability {name}@{version}: {e}")))
}

/// Whether a version of `target` was promoted from `source`, or one of `source` from `target`:
/// then the two names are one line of work (e.g. a `-tuned` copy promoted again, or a tuned
/// copy's result promoted back), and a promotion may continue it.
async fn linked_by_promotion(
    conn: &mut AnyConnection,
    org_id: Uuid,
    source: &ArtifactName,
    target: &ArtifactName,
) -> Result<bool> {
    let rows = sqlx::query(
        "SELECT a.name, v.provenance FROM artifact_versions v \
         JOIN artifacts a ON a.id = v.artifact_id \
         WHERE a.org_id = $1 AND a.kind = $2 AND a.name IN ($3, $4) \
         AND v.provenance IS NOT NULL",
    )
    .bind(org_id.to_string())
    .bind(ArtifactKind::Capability.as_str())
    .bind(source.as_str())
    .bind(target.as_str())
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let name = text(row, "name")?;
        let promoted_from = json(row, "provenance")?["source"]["name"]
            .as_str()
            .map(str::to_owned);
        let other = if name == source.as_str() {
            target
        } else {
            source
        };
        if promoted_from.as_deref() == Some(other.as_str()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Index of the candidate holding `instructions`: the one marked best ([`mark_best`]), else
/// the best scoring one with that text, else what the run's artifacts say.
fn candidate_index(candidates: &[Value], instructions: &str, artifacts: &Value) -> Option<i64> {
    let same = |c: &&Value| c["instructions"].as_str() == Some(instructions);
    candidates
        .iter()
        .filter(same)
        .find(|c| c["best"] == true)
        .or_else(|| {
            candidates.iter().filter(same).max_by(|a, b| {
                let score = |c: &Value| c["val_score"].as_f64().unwrap_or(f64::NEG_INFINITY);
                score(a).total_cmp(&score(b))
            })
        })
        .and_then(|c| c["index"].as_i64())
        .or_else(|| artifacts["best_candidate_index"].as_i64())
}

/// Builds the plan. `lock` is empty for the preview and `Backend::for_update` for the
/// promotion: on PostgreSQL it locks the job and the target capability, so a concurrent
/// promotion waits and then plans on what this one committed, exactly like SQLite's queued
/// writers (the same answers on both, "already promoted" included).
async fn plan(conn: &mut AnyConnection, req: &PromotionRequest, lock: &str) -> Result<Plan> {
    let job_id = req.job_id.to_string();
    let row = sqlx::query(&format!(
        "SELECT status, attempt, model, spec, summary, artifacts, log_seq, error FROM jobs \
         WHERE id = $1 AND workspace_id = $2 AND org_id = $3{lock}"
    ))
    .bind(&job_id)
    .bind(req.workspace_id.to_string())
    .bind(req.org_id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("job {}", req.job_id)))?;
    let job_status = status(&row, "status")?;
    let attempt = int(&row, "attempt")?;
    let spec: JobSpec = from_json(json(&row, "spec")?, "spec")?;
    let summary: JobSummary = from_json(json(&row, "summary")?, "summary")?;
    let artifacts = json(&row, "artifacts")?;
    let source = load_capability(
        conn,
        req.org_id,
        &spec.capability.name,
        &spec.capability.version,
    )
    .await?;
    let source_instructions = source
        .agents
        .iter()
        .find(|a| a.name == spec.agent_name)
        .map(|a| a.instructions.clone())
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "pinned capability {}@{} has no agent {}",
                spec.capability.name, spec.capability.version, spec.agent_name
            ))
        })?;
    let optimized = summary
        .best_candidate
        .as_ref()
        .and_then(|c| c.get("instructions"))
        .and_then(Value::as_str)
        .map(str::to_owned);

    let mut reasons = Vec::new();
    // A cancelled job keeps the best result it had validated when it stopped (a person often
    // cancels because that result is good enough), and so does one its runtime limit stopped;
    // a job that failed otherwise, or has not finished, is not a result.
    let stopped_by_limit = job_status == JobStatus::Failed
        && opt_text(&row, "error")?
            .as_deref()
            .is_some_and(gepard_core::model::is_runtime_limit_error);
    if !matches!(job_status, JobStatus::Completed | JobStatus::Cancelled) && !stopped_by_limit {
        reasons.push(format!(
            "job {} is {}, only completed or cancelled jobs (or one stopped by its \
             max_runtime_sec) can be promoted",
            req.job_id,
            job_status.as_str()
        ));
    }
    match optimized.as_deref().map(str::trim) {
        None => reasons.push(format!("job {} has no best candidate", req.job_id)),
        Some("") => reasons.push("the best candidate's instructions are empty".to_owned()),
        Some(t) if t == source_instructions.trim() => {
            reasons
                .push("the best candidate's instructions are identical to the source".to_owned());
        }
        Some(_) => {}
    }

    let target_name = req.name.clone().unwrap_or_else(|| source.name.clone());
    let promoted: Vec<(String, String)> =
        sqlx::query("SELECT name, version FROM job_promotions WHERE job_id = $1 AND attempt = $2")
            .bind(&job_id)
            .bind(attempt)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| Ok((text(r, "name")?, text(r, "version")?)))
            .collect::<Result<_>>()?;
    if !lock.is_empty() {
        sqlx::query(&format!(
            "SELECT id FROM artifacts WHERE org_id = $1 AND kind = $2 AND name = $3{lock}"
        ))
        .bind(req.org_id.to_string())
        .bind(ArtifactKind::Capability.as_str())
        .bind(target_name.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    }
    let existing: Vec<semver::Version> = sqlx::query_scalar::<_, String>(
        "SELECT v.version FROM artifact_versions v JOIN artifacts a ON a.id = v.artifact_id \
         WHERE a.org_id = $1 AND a.kind = $2 AND a.name = $3",
    )
    .bind(req.org_id.to_string())
    .bind(ArtifactKind::Capability.as_str())
    .bind(target_name.as_str())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .filter_map(|v| semver::Version::parse(v).ok())
    .collect();
    if target_name != source.name
        && !existing.is_empty()
        && !linked_by_promotion(conn, req.org_id, &source.name, &target_name).await?
    {
        // A promotion writes the source capability's whole bundle under the target name:
        // into an unrelated capability's line that would replace its agents and files.
        let src = &source.name;
        reasons.push(format!(
            "capability {target_name} already exists and is not linked to {src} by an earlier \
             promotion: its next version would hold {src}'s agents and files instead of its \
             own; choose a new name, or promote under {src}"
        ));
    }
    let already = |version: &semver::Version| {
        format!(
            "job {} was already promoted to {target_name}@{version}",
            req.job_id
        )
    };
    let target_version = match &req.version {
        Some(v) => {
            if promoted.contains(&(target_name.to_string(), v.to_string())) {
                reasons.push(already(v));
            } else if existing.contains(v) {
                reasons.push(format!("version {v} of {target_name} already exists"));
            }
            v.clone()
        }
        None => {
            // The default target of a job already promoted to this name is that promotion:
            // promoting again would write a second copy of the same result.
            let earlier = promoted
                .iter()
                .filter(|(n, _)| n == target_name.as_str())
                .filter_map(|(_, v)| semver::Version::parse(v).ok())
                .max();
            match earlier {
                Some(v) => {
                    reasons.push(already(&v));
                    v
                }
                None => default_version(&source.version, target_name == source.name, &existing)
                    .unwrap_or_else(|| {
                        reasons.push(format!(
                            "{target_name} has no next patch version: its patch number is \
                             already the largest; give a version"
                        ));
                        source.version.clone()
                    }),
            }
        }
    };

    let mut candidates: Vec<Value> = sqlx::query_scalar::<_, String>(
        "SELECT data FROM job_candidates WHERE job_id = $1 AND attempt = $2 ORDER BY idx",
    )
    .bind(&job_id)
    .bind(attempt)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .filter_map(|s| serde_json::from_str(s).ok())
    .collect();
    mark_best(&mut candidates);
    let candidate_index = optimized
        .as_deref()
        .and_then(|o| candidate_index(&candidates, o, &artifacts));
    let diff = gepard_agent::diff::unified(
        &source_instructions,
        optimized.as_deref().unwrap_or(&source_instructions),
        &format!("{}@{} ({})", source.name, source.version, spec.agent_name),
        &format!("{target_name}@{target_version} ({})", spec.agent_name),
    );
    let preview = PromotionPreview {
        promotable: reasons.is_empty(),
        reasons,
        job_id: req.job_id,
        attempt,
        status: job_status,
        source: PromotionSource {
            name: source.name.to_string(),
            version: source.version.to_string(),
            agent_name: spec.agent_name.clone(),
            instructions: source_instructions,
        },
        target: VersionRef {
            name: target_name.to_string(),
            version: target_version.to_string(),
        },
        optimized_instructions: optimized,
        candidate_index,
        diff,
        seed_score: summary.seed_score,
        best_score: summary.best_score,
    };
    Ok(Plan {
        preview,
        source,
        model: text(&row, "model")?,
        log_seq: int(&row, "log_seq")?,
        spec,
        artifacts,
        target_name,
        target_version,
    })
}

impl Store {
    /// What promoting the job would write and whether it may, without writing anything.
    pub async fn promotion_preview(&self, req: &PromotionRequest) -> Result<PromotionPreview> {
        let mut conn = self.pool.acquire().await?;
        Ok(plan(&mut conn, req, "").await?.preview)
    }

    /// Promotes the job's best candidate into a new capability version: equal to the pinned
    /// source version except the agent's instructions, with provenance, a promotion record on
    /// the job, a job log line and an audit entry, all in one transaction. Refusals are
    /// [`StoreError::Conflict`] naming every reason; a job of another workspace is
    /// [`StoreError::NotFound`].
    pub async fn promote_job(
        &self,
        notifier: &dyn Notifier,
        req: &PromotionRequest,
        by: &Promoter,
    ) -> Result<CapabilityVersion> {
        let mut attempts = 0;
        loop {
            match self.try_promote_job(notifier, req, by).await {
                // PostgreSQL: a concurrent writer created the target capability (or version)
                // after we looked, which the row locks cannot cover for rows not yet there.
                // Planning again sees it and answers as SQLite would have.
                Err(StoreError::Database(e)) if is_unique_violation(&e) && attempts < 3 => {
                    attempts += 1;
                }
                Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict(format!(
                        "job {} could not be promoted: its target is being written \
                         concurrently; try again",
                        req.job_id
                    )))
                }
                other => return other,
            }
        }
    }

    async fn try_promote_job(
        &self,
        notifier: &dyn Notifier,
        req: &PromotionRequest,
        by: &Promoter,
    ) -> Result<CapabilityVersion> {
        let mut tx = self.write_tx().await?;
        let plan = plan(&mut tx, req, self.backend.for_update()).await?;
        if !plan.preview.promotable {
            return Err(StoreError::Conflict(plan.preview.reasons.join("; ")));
        }
        let p = &plan.preview;
        let (name, version) = (&plan.target_name, &plan.target_version);
        let derived = plan
            .source
            .with_agent_instructions(
                name,
                version,
                &plan.spec.agent_name,
                p.optimized_instructions.as_deref().unwrap_or_default(),
            )
            .map_err(|e| {
                StoreError::Conflict(format!(
                    "the optimized instructions do not make a valid capability: {e}"
                ))
            })?;
        let now = gepard_core::time::now();
        let now_text = gepard_core::time::format(&now);
        let provenance = json!({
            "job_id": req.job_id,
            "workspace_id": req.workspace_id,
            "attempt": p.attempt,
            "candidate_index": p.candidate_index,
            "seed_score": p.seed_score,
            "best_score": p.best_score,
            "source": {
                "name": p.source.name, "version": p.source.version,
                "agent_name": p.source.agent_name, "sha256": plan.source.sha256,
            },
            "dataset": plan.spec.dataset_ref,
            "val_dataset": plan.spec.val_dataset_ref,
            "reward_recipe": plan.spec.reward_recipe,
            "model": plan.model,
            "reflection_model": plan.spec.config.get("reflection_lm").cloned().unwrap_or_else(|| plan.model.clone().into()),
            "promoted_by": by.to_json(),
            "promoted_at": now_text,
        });
        let taken = || StoreError::Conflict(format!("version {version} of {name} already exists"));
        let nv = NewVersion::capability(&derived, Some(by.user_id))?;
        let version_id = match insert_version(
            &mut tx,
            self.backend,
            req.org_id,
            &nv,
            Some(&provenance.to_string()),
        )
        .await?
        {
            Published::Created(id) => id,
            Published::Existing(_) => return Err(taken()),
        };
        sqlx::query(
            "INSERT INTO job_promotions (job_id, attempt, name, version, version_id, promoted_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(req.job_id.to_string())
        .bind(p.attempt)
        .bind(name.as_str())
        .bind(version.to_string())
        .bind(&version_id)
        .bind(by.user_id.to_string())
        .bind(&now_text)
        .execute(&mut *tx)
        .await?;

        let mut artifacts = plan.artifacts.as_object().cloned().unwrap_or_default();
        let mut promoted = artifacts
            .get("promoted_versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        promoted.push(json!({
            "name": name.as_str(), "version": version.to_string(), "sha256": derived.sha256,
            "candidate_index": p.candidate_index, "promoted_at": now_text,
            "promoted_by": by.user_id,
        }));
        artifacts.insert("promoted_versions".into(), Value::Array(promoted));
        sqlx::query(
            "UPDATE jobs SET artifacts = $1, log_seq = log_seq + 1, revision = revision + 1, updated_at = $2 WHERE id = $3",
        )
        .bind(Value::Object(artifacts).to_string())
        .bind(&now_text)
        .bind(req.job_id.to_string())
        .execute(&mut *tx)
        .await?;
        let message = format!(
            "promoted to capability {name}@{version} by key {} ({}…)",
            by.key_name, by.key_prefix
        );
        sqlx::query(
            "INSERT INTO job_logs (job_id, seq, attempt, timestamp, level, message, data) \
             VALUES ($1, $2, $3, $4, 'info', $5, $6)",
        )
        .bind(req.job_id.to_string())
        .bind(plan.log_seq + 1)
        .bind(p.attempt)
        .bind(&now_text)
        .bind(&message)
        .bind(
            json!({"source": "gepard", "name": name.as_str(), "version": version.to_string()})
                .to_string(),
        )
        .execute(&mut *tx)
        .await?;

        let details = json!({
            "job_id": req.job_id, "attempt": p.attempt, "candidate_index": p.candidate_index,
            "seed_score": p.seed_score, "best_score": p.best_score,
            "source": format!("{}@{}", p.source.name, p.source.version),
            "agent_name": p.source.agent_name,
            "version": format!("{name}@{version}"), "version_id": version_id,
            "sha256": derived.sha256,
        });
        sqlx::query(
            "INSERT INTO audit_log (id, org_id, workspace_id, actor, action, subject, details, created_at) \
             VALUES ($1, $2, $3, $4, 'capability.promote', $5, $6, $7)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(req.org_id.to_string())
        .bind(req.workspace_id.to_string())
        .bind(by.to_json().to_string())
        .bind(format!("capability {name}@{version}"))
        .bind(details.to_string())
        .bind(&now_text)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        crate::lifecycle::publish(self, notifier, plan.log_seq, req.workspace_id, req.job_id)
            .await?;
        self.capability_version(req.org_id, name.as_str(), &version.to_string())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("capability {name}@{version}")))
    }

    /// An organization's audit log, newest first; with `workspace`, only that workspace's
    /// entries (what a key limited to one workspace may see).
    pub async fn audit_log(
        &self,
        org_id: Uuid,
        workspace: Option<Uuid>,
        page: PageRequest,
    ) -> Result<Page<AuditEntry>> {
        // `$2` is NULL for the whole organization; a fixed text keeps the SQL a constant.
        const SCOPE: &str = "org_id = $1 AND ($2 IS NULL OR workspace_id = $2)";
        let ws = workspace.map(|w| w.to_string());
        let total: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM audit_log WHERE {SCOPE}"))
                .bind(org_id.to_string())
                .bind(ws.clone())
                .fetch_one(&self.pool)
                .await?;
        let rows = sqlx::query(&format!(
            "SELECT * FROM audit_log WHERE {SCOPE} ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(org_id.to_string())
        .bind(ws)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: uuid(r, "id")?,
                    workspace_id: opt_uuid(r, "workspace_id")?,
                    actor: json(r, "actor")?,
                    action: text(r, "action")?,
                    subject: text(r, "subject")?,
                    details: json(r, "details")?,
                    created_at: time(r, "created_at")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page {
            items,
            total,
            page: page.page,
            page_size: page.page_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn the_next_version_is_the_next_patch_or_the_release_of_a_pre_release() {
        assert_eq!(next_version(&v("1.0.0")), Some(v("1.0.1")));
        assert_eq!(next_version(&v("2.3.9")), Some(v("2.3.10")));
        assert_eq!(next_version(&v("1.1.0-rc.1")), Some(v("1.1.0")));
    }

    #[test]
    fn the_default_version_is_the_sources_next_free_patch_never_above_a_newer_line() {
        let existing = [v("1.0.0"), v("1.0.1"), v("2.0.0")];
        let default = |source: &str, same: bool, existing: &[semver::Version]| {
            default_version(&v(source), same, existing)
        };
        assert_eq!(default("1.0.0", true, &existing), Some(v("1.0.2")));
        assert_eq!(default("2.0.0", true, &existing), Some(v("2.0.1")));
        assert_eq!(
            default("1.1.0-rc.1", true, &[v("1.1.0-rc.1"), v("1.1.0")]),
            Some(v("1.1.1"))
        );
        // Another name continues its own line, or starts at the source's version.
        assert_eq!(default("1.0.0", false, &existing), Some(v("2.0.1")));
        assert_eq!(default("1.0.0", false, &[]), Some(v("1.0.0")));
    }

    #[test]
    fn a_line_whose_patch_number_is_at_its_largest_has_no_default_version() {
        let max = format!("1.0.{}", u64::MAX);
        assert_eq!(next_version(&v(&max)), None);
        assert_eq!(default_version(&v("1.0.0"), false, &[v(&max)]), None);
        assert_eq!(default_version(&v(&max), true, &[v(&max)]), None);
        let below = format!("1.0.{}", u64::MAX - 1);
        assert_eq!(
            default_version(&v(&below), true, &[v(&below)]),
            Some(v(&max))
        );
    }

    #[test]
    fn the_promoted_candidate_is_the_one_marked_best_with_that_text() {
        let c = vec![
            json!({"index": 0, "instructions": "A", "val_score": 0.1}),
            json!({"index": 1, "instructions": "B", "val_score": 0.5}),
            json!({"index": 2, "instructions": "B", "val_score": 0.9}),
            json!({"index": 3, "instructions": "C", "val_score": 0.9, "best": true}),
        ];
        let none = json!({});
        assert_eq!(candidate_index(&c, "C", &none), Some(3));
        assert_eq!(
            candidate_index(&c, "B", &none),
            Some(2),
            "highest score wins"
        );
        assert_eq!(
            candidate_index(&c, "Z", &json!({"best_candidate_index": 7})),
            Some(7)
        );
        assert_eq!(candidate_index(&c, "Z", &none), None);
    }
}
