//! Parquet rows files, as pyarrow (pandas, Hugging Face datasets) writes them, read into the
//! same rows as their JSON-lines twins. The fixtures and the script that wrote them are in
//! `tests/fixtures/parquet/`.

use std::path::PathBuf;

use gepard_agent::bundle::{rows_of_file, Bundle, BundleError, BundleFile, Dataset, RowFormat};
use serde_json::{Map, Value};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parquet")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rows(name: &str) -> Vec<Map<String, Value>> {
    rows_of_file(name, fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn parquet_rows_read_as_their_jsonl_twin_with_every_codec_pyarrow_writes() {
    let twin = rows("plain.jsonl");
    assert_eq!(twin.len(), 3);
    for codec in ["none", "snappy", "gzip", "zstd", "lz4", "brotli"] {
        assert_eq!(rows(&format!("plain.{codec}.parquet")), twin, "{codec}");
    }
}

#[test]
fn a_null_cell_reads_as_an_absent_field() {
    let rows = rows("plain.snappy.parquet");
    assert_eq!(rows[0]["reward"], serde_json::json!(1.0));
    assert!(!rows[2].contains_key("reward"), "{:?}", rows[2]);
}

#[test]
fn a_dataset_bundle_reads_its_only_parquet_file_in_order_across_row_groups() {
    let ds = Dataset::parse(Bundle::from_files(vec![
        BundleFile::new("dataset.yaml", b"name: reviews\nversion: 1.0.0\n".to_vec()),
        BundleFile::new("data/train.parquet", fixture("groups.parquet")),
    ]))
    .unwrap();
    assert_eq!(ds.format, RowFormat::Parquet);
    assert_eq!(ds.rows_file, "data/train.parquet");
    assert_eq!(ds.rows.len(), 9);
    assert_eq!(ds.rows, rows("groups.jsonl"));
    assert_eq!(ds.schema["goal"]["types"], serde_json::json!(["string"]));
}

#[test]
fn nested_tool_columns_read_back_without_the_null_keys_of_other_rows() {
    // pyarrow gives every row's `parameters.properties` the properties of every tool in the
    // file; the twin holds the rows as they were before the round trip.
    assert_eq!(rows("tools.nested.parquet"), rows("tools.jsonl"));
}

#[test]
fn json_text_in_the_structured_columns_is_read_as_json() {
    let rows = rows("tools.text.parquet");
    assert_eq!(rows, self::rows("tools.jsonl"));
    assert!(rows[0]["tools"].is_array());
    assert!(rows[0]["metadata"].is_object());
}

#[test]
fn a_file_that_is_not_parquet_is_refused_naming_the_file() {
    let err = rows_of_file("rows.parquet", b"goal,expected_output\nhi,x\n".to_vec()).unwrap_err();
    assert!(
        matches!(&err, BundleError::Invalid { file, .. } if file == "rows.parquet"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("not a readable Parquet file"),
        "{err}"
    );
}

#[test]
fn a_truncated_parquet_file_is_refused_not_misread() {
    let whole = fixture("groups.parquet");
    for cut in [whole.len() / 2, whole.len() - 1, 8] {
        let err = rows_of_file("rows.parquet", whole[..cut].to_vec()).unwrap_err();
        assert!(
            err.to_string().starts_with("`rows.parquet`"),
            "{cut}: {err}"
        );
    }
}

#[test]
fn a_nul_character_in_a_parquet_text_is_refused_naming_the_row() {
    let err = rows_of_file("rows.parquet", fixture("nul.parquet")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("row 1") && text.contains("U+0000"), "{text}");
}

#[test]
fn a_corrupted_byte_anywhere_gives_rows_or_an_error_never_a_crash() {
    let whole = fixture("plain.snappy.parquet");
    for at in 0..whole.len() {
        let mut bytes = whole.clone();
        bytes[at] ^= 0xA5;
        // A flipped byte in a text value still reads; anything else must be a clean error.
        if let Err(e) = rows_of_file("rows.parquet", bytes) {
            assert!(e.to_string().contains("`rows.parquet`"), "byte {at}: {e}");
        }
    }
}

/// A text cell that is not UTF-8 is refused naming the file and row, in a short message: the
/// decoder's own error quotes every byte of the value, which made a 200 KB file's 422 over
/// 3 MB long.
#[test]
fn a_broken_text_cell_is_refused_in_a_message_that_does_not_quote_it() {
    let whole = fixture("plain.none.parquet");
    let text = b"The food was great.";
    let at = whole
        .windows(text.len())
        .position(|w| w == text)
        .expect("an uncompressed text cell");
    let mut bytes = whole.clone();
    bytes[at] = 0xFF;
    let e = rows_of_file("rows.parquet", bytes).unwrap_err().to_string();
    assert!(e.contains("`rows.parquet`") && e.contains("row 1"), "{e}");
    assert!(!e.contains("Bytes: ["), "{e}");
    assert!(e.len() < 400, "{} bytes: {e}", e.len());
}
