//! Benchmark (not a test): one f32 CPU training step (forward + backward) of a small Qwen2,
//! hidden 256, 4 layers, 4 heads / 2 kv heads, intermediate 704, vocab 8192, batch 4 × 256.
//! Prints a table: median step time and the forward / backward split.
//! Run: `cargo bench --bench train_step` (PyTorch side: `scripts/bench_torch.py`; both at once:
//! `scripts/bench_cpu_step.sh`).

use candle_core::{DType, Device};
use std::time::Instant;
use syncoder::model::{PackedBatch, Qwen2, Qwen2Config};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let cfg = Qwen2Config::from_json(
        r#"{"vocab_size":8192,"hidden_size":256,"intermediate_size":704,"num_hidden_layers":4,
            "num_attention_heads":4,"num_key_value_heads":2,"tie_word_embeddings":true,
            "rope_theta":10000.0,"rms_norm_eps":1e-6,"max_position_embeddings":4096}"#,
    )?;
    let (rows, seq) = (4usize, 256usize);
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let model = Qwen2::random(cfg.clone(), 0, DType::F32, &Device::Cpu, true)?;
    let ids: Vec<u32> = (0..rows * seq).map(|i| ((i * 7919) % cfg.vocab_size) as u32).collect();
    let positions: Vec<u32> = (0..rows).flat_map(|_| 0..seq as u32).collect();
    let batch = PackedBatch::new(ids, positions, rows, &Device::Cpu)?;
    let targets = batch.next_token_targets(None)?;
    let (mut fwd, mut bwd, mut total) = (vec![], vec![], vec![]);
    for i in 0..iters + 2 {
        let t0 = Instant::now();
        let out = model.loss(&batch, &targets)?;
        let loss = (out.loss_sum / out.supervised as f64)?;
        let _ = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        drop(grads);
        let t2 = Instant::now();
        if i >= 2 {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            total.push((t2 - t0).as_secs_f64());
        }
    }
    let threads = rayon::current_num_threads();
    println!("| impl | threads | step s (median of {iters}) | forward s | backward s | tokens/s |");
    println!("|---|---|---|---|---|---|");
    let step = median(total);
    println!(
        "| syncoder (candle + fused ops) | {threads} | {step:.4} | {:.4} | {:.4} | {:.0} |",
        median(fwd),
        median(bwd),
        (rows * seq) as f64 / step
    );
    Ok(())
}
