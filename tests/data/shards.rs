//! Shard reading: JSONL, zstd and gzip streams with line numbers; truncated or corrupt files,
//! invalid UTF-8 and empty files give errors naming the file and line.

use std::io::Write;
use std::path::Path;
use syncoder::data::shard::{resolve_sources, ShardLines};

const LINES: [&str; 3] = [
    r#"{"instruction": "a", "response": "b"}"#,
    "",
    r#"{"instruction": "c", "response": "d"}"#,
];

fn body() -> String {
    LINES.join("\n") + "\n"
}

fn write_zst(path: &Path, data: &[u8]) {
    std::fs::write(path, zstd::encode_all(data, 3).unwrap()).unwrap();
}

fn write_gz(path: &Path, data: &[u8]) {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    std::fs::write(path, e.finish().unwrap()).unwrap();
}

fn read_all(path: &Path) -> anyhow::Result<Vec<(usize, String)>> {
    ShardLines::open(path)?.map(|l| l.map(|l| (l.line, l.text))).collect()
}

#[test]
fn all_formats_stream_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("a.jsonl");
    std::fs::write(&plain, body()).unwrap();
    write_zst(&dir.path().join("b.jsonl.zst"), body().as_bytes());
    write_gz(&dir.path().join("c.jsonl.gz"), body().as_bytes());
    let want = vec![(1, LINES[0].to_string()), (3, LINES[2].to_string())];
    for f in ["a.jsonl", "b.jsonl.zst", "c.jsonl.gz"] {
        assert_eq!(read_all(&dir.path().join(f)).unwrap(), want, "{f}");
    }
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let files = resolve_sources(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(files.len(), 3);
    let globbed = resolve_sources(&[dir.path().join("*.jsonl*")]).unwrap();
    assert_eq!(globbed, files);
    let one = resolve_sources(&[dir.path().join("[b].jsonl.zst")]).unwrap();
    assert_eq!(one, vec![dir.path().join("b.jsonl.zst")]);
    assert!(resolve_sources(&[dir.path().join("*.parquet")]).is_err());
}

#[test]
fn truncated_compressed_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let big: String = (0..2000)
        .map(|i| format!("{{\"instruction\": \"q{i}\", \"response\": \"a{i}\"}}\n"))
        .collect();
    for (name, writer) in [("t.jsonl.zst", write_zst as fn(&Path, &[u8])), ("t.jsonl.gz", write_gz)] {
        let p = dir.path().join(name);
        writer(&p, big.as_bytes());
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_all(&p).expect_err(name);
        let msg = format!("{err:#}");
        assert!(msg.contains(name) && msg.contains("truncated"), "{msg}");
    }
}

#[test]
fn bad_utf8_empty_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(
        &p,
        b"{\"instruction\": \"a\", \"response\": \"b\"}\n{\"instruction\": \"\xff\"}\n",
    )
    .unwrap();
    let lines: Vec<_> = ShardLines::open(&p).unwrap().collect();
    assert!(lines[0].is_ok());
    let msg = format!("{:#}", lines[1].as_ref().unwrap_err());
    assert!(msg.contains("bad.jsonl:2") && msg.contains("UTF-8"), "{msg}");

    let e = dir.path().join("empty.jsonl");
    std::fs::write(&e, "\n\n").unwrap();
    let msg = format!("{:#}", read_all(&e).unwrap_err());
    assert!(msg.contains("empty.jsonl") && msg.contains("empty"), "{msg}");

    let msg = format!("{:#}", ShardLines::open(&dir.path().join("nope.jsonl")).err().unwrap());
    assert!(msg.contains("nope.jsonl"), "{msg}");
    let msg = format!("{:#}", ShardLines::open(&dir.path().join("data.csv")).err().unwrap());
    assert!(msg.contains("unsupported"), "{msg}");
    assert!(resolve_sources(&[dir.path().join("missing-dir")]).is_err());
}

fn parquet(name: &str) -> std::path::PathBuf {
    crate::common::fixtures().join("parquet").join(name)
}

#[test]
fn parquet_rows_become_records() {
    use syncoder::data::{Record, Role};
    let rows = read_all(&parquet("messages.parquet")).unwrap();
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
    let first = Record::parse(&rows[0].1).unwrap();
    assert_eq!(first.id.as_deref(), Some("1"));
    assert_eq!(first.language.as_deref(), Some("python"));
    assert_eq!(first.messages[1].content, "`xs[::-1]`");
    let second = Record::parse(&rows[1].1).unwrap();
    assert_eq!(second.messages[0].role, Role::System);
    // The third row (a lone user turn) is invalid, and the error names the field.
    assert_eq!(Record::parse(&rows[2].1).unwrap_err().field, "messages");

    let rows = read_all(&parquet("instruction.parquet")).unwrap();
    let a = Record::parse(&rows[0].1).unwrap();
    assert_eq!(a.messages.len(), 2, "a null system column adds no turn");
    let b = Record::parse(&rows[1].1).unwrap();
    assert_eq!(b.messages[0].content, "You write Go.");

    // Resuming mid-file skips rows.
    let mut lines = ShardLines::open(&parquet("messages.parquet")).unwrap();
    lines.skip_to(2).unwrap();
    assert_eq!(lines.next().unwrap().unwrap().line, 3);
}

#[test]
fn parquet_without_record_columns_or_truncated_is_an_error() {
    let msg = format!(
        "{:#}",
        ShardLines::open(&parquet("wrong_columns.parquet")).err().unwrap()
    );
    assert!(
        msg.contains("wrong_columns.parquet") && msg.contains("prompt, completion"),
        "{msg}"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.parquet");
    let bytes = std::fs::read(parquet("messages.parquet")).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 20]).unwrap();
    let msg = format!("{:#}", ShardLines::open(&p).err().unwrap());
    assert!(msg.contains("cut.parquet"), "{msg}");
}
