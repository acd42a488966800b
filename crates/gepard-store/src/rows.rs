//! Reading columns portably: the `Any` driver hands back TEXT and BIGINT, and these helpers
//! turn them into ids, times, flags and JSON with an error that names the column.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::{Result, StoreError};

pub(crate) fn text(row: &AnyRow, col: &str) -> Result<String> {
    Ok(row.try_get::<String, _>(col)?)
}

pub(crate) fn opt_text(row: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

pub(crate) fn int(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

pub(crate) fn flag(row: &AnyRow, col: &str) -> Result<bool> {
    Ok(int(row, col)? != 0)
}

pub(crate) fn uuid(row: &AnyRow, col: &str) -> Result<Uuid> {
    parse_uuid(&text(row, col)?, col)
}

pub(crate) fn opt_uuid(row: &AnyRow, col: &str) -> Result<Option<Uuid>> {
    opt_text(row, col)?.map(|s| parse_uuid(&s, col)).transpose()
}

fn parse_uuid(s: &str, col: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

pub(crate) fn time(row: &AnyRow, col: &str) -> Result<DateTime<Utc>> {
    parse_time(&text(row, col)?, col)
}

pub(crate) fn opt_time(row: &AnyRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    opt_text(row, col)?.map(|s| parse_time(&s, col)).transpose()
}

fn parse_time(s: &str, col: &str) -> Result<DateTime<Utc>> {
    gepard_core::time::parse(s).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

pub(crate) fn json(row: &AnyRow, col: &str) -> Result<serde_json::Value> {
    parse_json(&text(row, col)?, col)
}

pub(crate) fn opt_json(row: &AnyRow, col: &str) -> Result<Option<serde_json::Value>> {
    opt_text(row, col)?.map(|s| parse_json(&s, col)).transpose()
}

fn parse_json(s: &str, col: &str) -> Result<serde_json::Value> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

/// A timestamp in the stored text form.
pub(crate) fn now_text() -> String {
    gepard_core::time::format(&gepard_core::time::now())
}
