//! The model configs shipped in `configs/models/` parse, and their parameter counts are those
//! published for Qwen2.5-Coder.

use syncoder::model::Qwen2Config;

fn load(name: &str) -> Qwen2Config {
    let p = crate::common::repo().join("configs/models").join(name);
    Qwen2Config::from_file(&p).unwrap()
}

#[test]
fn shipped_configs_parse_with_published_sizes() {
    for (name, billions) in [
        ("qwen2.5-coder-0.5b.json", 0.494),
        ("qwen2.5-coder-1.5b.json", 1.544),
        ("qwen2.5-coder-7b.json", 7.616),
    ] {
        let n = load(name).num_parameters() as f64 / 1e9;
        assert!((n - billions).abs() < 0.005, "{name}: {n} B parameters");
    }
    assert!(load("smoke-tiny.json").num_parameters() < 1_000_000);
}
