//! Bad model inputs give clear errors naming the file, tensor or config key, never a panic.

use candle_core::{DType, Device};
use syncoder::model::{Qwen2, Qwen2Config};

fn base_config() -> serde_json::Value {
    let p = crate::common::fixtures().join("tied_gqa2/config.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn err_of(mut edit: impl FnMut(&mut serde_json::Value)) -> String {
    let mut v = base_config();
    edit(&mut v);
    Qwen2Config::from_json(&v.to_string())
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default()
}

#[test]
fn real_qwen_config_fields_parse() {
    // The shape of Qwen2.5-Coder-7B's config.json (transformers 4.x style).
    let text = r#"{"architectures":["Qwen2ForCausalLM"],"attention_dropout":0.0,"bos_token_id":151643,
      "eos_token_id":151643,"hidden_act":"silu","hidden_size":3584,"initializer_range":0.02,
      "intermediate_size":18944,"max_position_embeddings":32768,"max_window_layers":28,
      "model_type":"qwen2","num_attention_heads":28,"num_hidden_layers":28,"num_key_value_heads":4,
      "rms_norm_eps":1e-06,"rope_scaling":null,"rope_theta":1000000.0,"sliding_window":131072,
      "tie_word_embeddings":false,"torch_dtype":"bfloat16","transformers_version":"4.44.0",
      "use_cache":true,"use_sliding_window":false,"vocab_size":152064}"#;
    let c = Qwen2Config::from_json(text).unwrap();
    assert_eq!(c.head_dim(), 128);
    assert_eq!(c.num_kv_heads(), 4);
    assert_eq!(c.rope_theta(), 1e6);
    // 7.6B parameters, as published.
    assert!(
        (c.num_parameters() as f64 / 1e9 - 7.62).abs() < 0.01,
        "{}",
        c.num_parameters()
    );
    // Unknown fields survive a round trip.
    let saved = c.to_saved_json("float32").unwrap();
    assert!(saved.contains("\"sliding_window\": 131072"));
    assert!(saved.contains("\"bos_token_id\": 151643"));
}

#[test]
fn unsupported_settings_are_rejected_by_name() {
    let e = err_of(|v| v["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 4.0}));
    assert!(e.contains("rope_scaling"), "{e}");
    let e = err_of(|v| v["rope_scaling"] = serde_json::json!({"factor": 4.0}));
    assert!(e.contains("rope_scaling.factor"), "{e}");
    let e = err_of(|v| v["use_sliding_window"] = true.into());
    assert!(e.contains("use_sliding_window"), "{e}");
    let e = err_of(|v| v["layer_types"][1] = "sliding_attention".into());
    assert!(e.contains("layer_types[1]"), "{e}");
    let e = err_of(|v| v["num_key_value_heads"] = 3.into());
    assert!(e.contains("num_key_value_heads"), "{e}");
    let e = err_of(|v| v["hidden_act"] = "gelu".into());
    assert!(e.contains("hidden_act"), "{e}");
    let e = err_of(|v| v["model_type"] = "llama".into());
    assert!(e.contains("model_type"), "{e}");
    let e = err_of(|v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    assert!(e.contains("hidden_size"), "{e}");
    // A plain default rope section is fine.
    assert_eq!(
        err_of(|v| v["rope_scaling"] = serde_json::json!({"rope_type": "default"})),
        ""
    );
}

fn copy_fixture() -> tempfile::TempDir {
    let src = crate::common::fixtures().join("tied_gqa2");
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

#[test]
fn missing_and_corrupt_weights_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Qwen2::load(tmp.path(), DType::F32, &Device::Cpu, false).err().unwrap();
    assert!(format!("{e:#}").contains("config.json"), "{e:#}");

    let tmp = copy_fixture();
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let e = format!(
        "{:#}",
        Qwen2::load(tmp.path(), DType::F32, &Device::Cpu, false).err().unwrap()
    );
    assert!(e.contains("model.safetensors"), "{e}");

    let tmp = copy_fixture();
    let p = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = format!(
        "{:#}",
        Qwen2::load(tmp.path(), DType::F32, &Device::Cpu, false).err().unwrap()
    );
    assert!(e.contains("safetensors"), "{e}");
}

#[test]
fn shape_mismatch_names_the_tensor() {
    let tmp = copy_fixture();
    let p = tmp.path().join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["intermediate_size"] = 100.into();
    std::fs::write(&p, v.to_string()).unwrap();
    let e = format!(
        "{:#}",
        Qwen2::load(tmp.path(), DType::F32, &Device::Cpu, false).err().unwrap()
    );
    assert!(e.contains("gate_proj") && e.contains("shape"), "{e}");
}
