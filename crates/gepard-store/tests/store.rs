//! Part of the conformance suite: every test runs on a fresh SQLite file (`sqlite::…`) and on a
//! fresh PostgreSQL database (`postgres::…`, see `gepard_store::testing`). Pins bootstrap,
//! tenancy, keys, and the registries' publish / conflict / idempotent re-publish / listing /
//! paging rules.

use gepard_agent::bundle::{Bundle, BundleFile, Capability, Dataset};
use gepard_core::auth::{ApiKeySecret, Scopes};
use gepard_core::model::ArtifactKind;
use gepard_core::PageRequest;
use gepard_store::{Bootstrap, Published, StoreError};
use support::{capability, first_start};

mod support;

fn bootstrap(key: &ApiKeySecret) -> Bootstrap {
    Bootstrap::first_start(key.clone())
}

fn dataset(rows: usize) -> Dataset {
    let body: String = (0..rows)
        .map(|i| format!("{{\"goal\": \"row {i}\", \"expected_output\": \"x\"}}\n"))
        .collect();
    Dataset::parse(Bundle::from_files(vec![
        BundleFile::new("dataset.yaml", b"name: rows\nversion: 1.0.0\n".to_vec()),
        BundleFile::new("rows.jsonl", body.into_bytes()),
    ]))
    .unwrap()
}

gepard_store::conformance_tests! {
    async fn bootstrap_creates_the_local_tree_once_and_its_key_authenticates(db) {
        let store = db.store().await;
        let key = ApiKeySecret::generate();
        assert!(store.bootstrap(&bootstrap(&key)).await.unwrap());
        assert!(
            !store
                .bootstrap(&bootstrap(&ApiKeySecret::generate()))
                .await
                .unwrap(),
            "second bootstrap is a no-op"
        );

        let org = store.org_by_key("local").await.unwrap().unwrap();
        let ws = store
            .workspace_by_key(org.id, "default")
            .await
            .unwrap()
            .unwrap();
        assert!(ws.is_default);
        assert_eq!(ws.project_count, 1);
        let project = store.default_project(ws.id).await.unwrap().unwrap();
        assert_eq!(project.key, "default");

        let auth = store.authenticate(key.expose()).await.unwrap().unwrap();
        assert_eq!(auth.info.org, "local");
        assert!(auth.info.scopes.allows(gepard_core::Scope::Admin));
        assert!(store
            .authenticate("gpd_not-a-key-at-all-000000")
            .await
            .unwrap()
            .is_none());
    }

    async fn a_write_cancelled_at_any_point_never_leaves_the_database_locked(db) {
        // A request whose client goes away, or a worker task that is aborted, drops its write
        // wherever it is; the next write must not find the database still locked.
        let store = db.store().await;
        let (org, _, _) = first_start(&store).await;
        for i in 0..3000 {
            let s = store.clone();
            let task = tokio::spawn(async move { s.create_workspace(org, &format!("w{i}"), "W").await });
            for _ in 0..(i % 61) {
                tokio::task::yield_now().await;
            }
            task.abort();
            let _ = task.await;
            let next = tokio::time::timeout(
                std::time::Duration::from_secs(3),
                store.create_workspace(org, &format!("x{i}"), "X"),
            )
            .await;
            assert!(matches!(next, Ok(Ok(_))), "after cancelling write {i}: {next:?}");
        }
    }

    async fn the_database_survives_a_reopen(db) {
        let store = db.store().await;
        let key = ApiKeySecret::generate();
        store.bootstrap(&bootstrap(&key)).await.unwrap();
        store.close().await;
        let again = db.store().await;
        assert!(again.authenticate(key.expose()).await.unwrap().is_some());
    }

    async fn revoked_keys_no_longer_authenticate(db) {
        let store = db.store().await;
        let (org, _, _) = first_start(&store).await;
        let admin = store.list_api_keys(org).await.unwrap()[0].clone();
        let secret = ApiKeySecret::generate();
        let info = store
            .create_api_key(
                org,
                None,
                admin.user_id,
                "ci",
                &Scopes::parse_list("read").unwrap(),
                &secret,
            )
            .await
            .unwrap();
        assert!(store.authenticate(secret.expose()).await.unwrap().is_some());
        let revoked = store.revoke_api_key(org, info.id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        assert!(store.authenticate(secret.expose()).await.unwrap().is_none());
    }

    async fn projects_are_unique_per_workspace_and_get_one_runtime(db) {
        let store = db.store().await;
        let (org, _, _) = first_start(&store).await;
        let ws = store
            .workspace_by_key(org, "default")
            .await
            .unwrap()
            .unwrap();
        let p = store
            .create_project(ws.id, "research", "Research", None)
            .await
            .unwrap();
        assert!(!p.is_default);
        assert!(matches!(
            store.create_project(ws.id, "research", "Again", None).await,
            Err(StoreError::Conflict(_))
        ));
        let (a, b) = tokio::join!(store.ensure_runtime(p.id), store.ensure_runtime(p.id));
        assert_eq!(
            a.unwrap().id,
            b.unwrap().id,
            "concurrent bootstraps share one runtime"
        );
        assert_eq!(
            store
                .project(ws.id, "research")
                .await
                .unwrap()
                .unwrap()
                .runtime_count,
            1
        );
        assert_eq!(
            store
                .project(ws.id, &p.id.to_string())
                .await
                .unwrap()
                .unwrap()
                .key,
            "research"
        );
    }

    async fn publishing_is_idempotent_for_equal_content_and_conflicts_otherwise(db) {
        let store = db.store().await;
        let (org, _, _) = first_start(&store).await;
        let first = store
            .publish_capability(org, &capability("1.0.0", "Classify."), None)
            .await
            .unwrap();
        assert!(first.is_created());
        let again = store
            .publish_capability(org, &capability("1.0.0", "Classify."), None)
            .await
            .unwrap();
        assert!(matches!(again, Published::Existing(_)));
        assert_eq!(first.into_inner().id, again.into_inner().id);
        let err = store
            .publish_capability(org, &capability("1.0.0", "Other."), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict(m) if m.contains("already published with different content")),
            "{err}"
        );

        store
            .publish_capability(org, &capability("1.10.0", "Newer."), None)
            .await
            .unwrap();
        store
            .publish_capability(org, &capability("1.2.0", "Middle."), None)
            .await
            .unwrap();
        let versions = store
            .list_versions(org, ArtifactKind::Capability, "sentiment")
            .await
            .unwrap()
            .unwrap();
        let order: Vec<_> = versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(
            order,
            ["1.10.0", "1.2.0", "1.0.0"],
            "semver order, not text order"
        );
        let summary = store
            .artifact(org, ArtifactKind::Capability, "sentiment")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (summary.latest_version.as_str(), summary.version_count),
            ("1.10.0", 3)
        );

        let detail = store
            .capability_version(org, "sentiment", "1.0.0")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(detail.agents[0].instructions, "Classify.");
        let file = store
            .file_content(
                org,
                ArtifactKind::Capability,
                "sentiment",
                "1.0.0",
                "agents/classifier.md",
            )
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8(file).unwrap().contains("Classify."));
    }

    async fn dataset_rows_page_in_file_order(db) {
        let store = db.store().await;
        let (org, _, _) = first_start(&store).await;
        let published = store
            .publish_dataset(org, &dataset(1234), None)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(published.row_count, 1234);
        let page = store
            .dataset_rows(org, "rows", "1.0.0", 1000, 50)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(page.items.len(), 50);
        assert_eq!(page.items[0]["goal"], "row 1000");
        assert_eq!(page.total, 1234);
        let tail = store
            .dataset_rows(org, "rows", "1.0.0", 1230, 50)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tail.items.len(), 4);
    }

    async fn listings_page_and_search_by_name(db) {
        let store = db.store().await;
        let (org, _, _) = first_start(&store).await;
        for name in ["alpha", "beta", "alphabet", "gamma_x"] {
            let cap = Capability::parse(Bundle::from_files(vec![
                BundleFile::new(
                    "capability.yaml",
                    format!("name: {name}\nversion: 1.0.0\n").into_bytes(),
                ),
                BundleFile::new("agents/a.md", b"---\n---\nHi".to_vec()),
            ]))
            .unwrap();
            store.publish_capability(org, &cap, None).await.unwrap();
        }
        let page = store
            .list_artifacts(
                org,
                ArtifactKind::Capability,
                None,
                PageRequest::new(Some(2), Some(3)).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!((page.total, page.items.len()), (4, 1));
        let found = store
            .list_artifacts(
                org,
                ArtifactKind::Capability,
                Some("ALPHA"),
                PageRequest::new(None, None).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            found
                .items
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            ["alpha", "alphabet"]
        );
        let literal = store
            .list_artifacts(
                org,
                ArtifactKind::Capability,
                Some("_"),
                PageRequest::new(None, None).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(literal.total, 1, "`_` matches literally, not as a wildcard");
        let none = store
            .list_artifacts(
                org,
                ArtifactKind::Dataset,
                None,
                PageRequest::new(None, None).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(none.total, 0, "kinds are separate registries");
    }
}
