//! Record validation against a corpus of malformed examples (`tests/fixtures/bad_records/`):
//! each is rejected, with an error naming the offending field; nothing panics.

use syncoder::data::{Record, Role};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(crate::common::fixtures().join("bad_records").join(name)).unwrap()
}

#[test]
fn every_malformed_record_is_rejected_naming_its_field() {
    let records = fixture("records.jsonl");
    let fields = fixture("expected_fields.txt");
    let (records, fields): (Vec<&str>, Vec<&str>) = (records.lines().collect(), fields.lines().collect());
    assert_eq!(records.len(), fields.len());
    assert!(records.len() >= 20);
    for (line, field) in records.iter().zip(&fields) {
        let err = Record::parse(line).expect_err(line);
        assert_eq!(err.field, *field, "{line}: {err}");
        assert!(!err.reason.is_empty());
    }
}

#[test]
fn both_shapes_parse() {
    let a =
        Record::parse(r#"{"id": 7, "language": "rust", "system": "s", "instruction": "i", "response": "r"}"#).unwrap();
    assert_eq!(a.id.as_deref(), Some("7"));
    assert_eq!(a.language.as_deref(), Some("rust"));
    assert_eq!(
        a.messages.iter().map(|m| m.role).collect::<Vec<_>>(),
        [Role::System, Role::User, Role::Assistant]
    );
    let b = Record::parse(
        r#"{"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2", "name": "extra keys are fine"}]}"#,
    )
    .unwrap();
    assert_eq!(b.messages.len(), 4);
    assert_eq!(b.messages[3].content, "a2");
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap stand-in for the fuzz target: mutate valid records byte by byte.
    let seed = r#"{"messages": [{"role": "user", "content": "é"}, {"role": "assistant", "content": "ok"}]}"#;
    for i in 0..seed.len() {
        for b in [b'"', b'{', b']', b'\\', b'x', 0u8] {
            let mut bytes = seed.as_bytes().to_vec();
            bytes[i] = b;
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = Record::parse(s);
            }
            if let Some(prefix) = seed.get(..i) {
                let _ = Record::parse(prefix);
            }
        }
    }
}

#[test]
fn data_validate_reports_file_and_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"instruction": "a", "response": "b"}"#;
    std::fs::write(
        dir.path().join("s.jsonl"),
        format!("{good}\n{{\"instruction\": 1}}\n\n{good}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["data", "validate"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("s.jsonl:2: field `instruction`"), "{stdout}");
    assert!(stdout.contains("3 records in 1 files, 1 bad"), "{stdout}");

    std::fs::write(dir.path().join("s.jsonl"), format!("{good}\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["data", "validate"])
        .arg(dir.path().join("s.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
