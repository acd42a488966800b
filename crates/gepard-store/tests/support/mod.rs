//! Fixtures shared by the store's integration tests. Each test file is its own binary and uses
//! only part of them, hence the `dead_code` allowance.
#![allow(dead_code)]

use gepard_agent::bundle::{Bundle, BundleFile, Capability};
use gepard_core::auth::ApiKeySecret;
use gepard_store::{Bootstrap, Store};
use uuid::Uuid;

/// Capability `sentiment@version` whose one agent, `classifier`, has `instructions` as its body.
pub fn capability(version: &str, instructions: &str) -> Capability {
    Capability::parse(Bundle::from_files(vec![
        BundleFile::new(
            "capability.yaml",
            format!("name: sentiment\nversion: {version}\n").into_bytes(),
        ),
        BundleFile::new(
            "agents/classifier.md",
            format!("---\nname: classifier\n---\n{instructions}\n").into_bytes(),
        ),
    ]))
    .unwrap()
}

/// Bootstraps `store` with the first-start layout and returns the ids of organization
/// `local`, its workspace `default` and that workspace's default project.
pub async fn first_start(store: &Store) -> (Uuid, Uuid, Uuid) {
    store
        .bootstrap(&Bootstrap::first_start(ApiKeySecret::generate()))
        .await
        .unwrap();
    let org = store.org_by_key("local").await.unwrap().unwrap().id;
    let ws = store
        .workspace_by_key(org, "default")
        .await
        .unwrap()
        .unwrap()
        .id;
    let project = store.default_project(ws).await.unwrap().unwrap().id;
    (org, ws, project)
}
