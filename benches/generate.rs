//! Benchmark (not a test): greedy generation on CPU with a random Qwen2 of a given config.json:
//! `batch` prompts of `prompt` tokens, `new` tokens each (no stop token), median of `runs`.
//! Prints one table row: prefill seconds, decode tokens/s, end-to-end generated tokens/s.
//! Run: `cargo bench --bench generate -- CONFIG.json [batch] [prompt] [new] [runs]`
//! (transformers side: `scripts/bench_generate_torch.py`; both: `scripts/bench_generate.sh`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{DType, Device};
use std::time::Instant;
use syncoder::infer::{generate, GenerationSettings, Sampling};
use syncoder::model::{KvCache, Qwen2, Qwen2Config};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let path = args.first().map_or("configs/models/smoke-tiny.json", |s| s.as_str());
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (batch, prompt, new, runs) = (num(1, 1), num(2, 64), num(3, 64), num(4, 3));
    let cfg = Qwen2Config::from_file(std::path::Path::new(path))?;
    let model = Qwen2::random(cfg.clone(), 0, DType::F32, &Device::Cpu, false)?;
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..prompt)
                .map(|i| ((i * 7919 + b * 131) % cfg.vocab_size) as u32)
                .collect()
        })
        .collect();
    let settings = GenerationSettings {
        max_new_tokens: new,
        sampling: Sampling::greedy(),
        stop_ids: vec![],
    };
    let (mut prefill, mut total) = (vec![], vec![]);
    for _ in 0..runs + 1 {
        let row = cfg.num_kv_heads() * cfg.head_dim();
        let mut caches: Vec<KvCache> = (0..batch)
            .map(|_| KvCache::new(cfg.num_hidden_layers, row, prompt))
            .collect();
        let inputs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        let t = Instant::now();
        model.forward_cached(&inputs, &mut caches)?;
        prefill.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let out = generate(&model, &prompts, &settings)?;
        total.push(t.elapsed().as_secs_f64());
        assert!(out.iter().all(|o| o.token_ids.len() == new));
    }
    // The first run warms up.
    let med = |v: &mut Vec<f64>| {
        v.remove(0);
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (p, t) = (med(&mut prefill), med(&mut total));
    let generated = (batch * new) as f64;
    let decode = (batch * (new - 1)) as f64 / (t - p).max(1e-9);
    println!("| impl | batch | prompt | new | prefill s | decode tok/s | generated tok/s (incl. prefill) |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| syncoder | {batch} | {prompt} | {new} | {p:.3} | {decode:.1} | {:.1} |",
        generated / t
    );
    Ok(())
}
