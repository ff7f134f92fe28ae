//! What reading a vector over the page's built-in corpus costs (issue 15): `inspect::project`
//! over every passage of `crates/web/assets/corpus.txt` at one layer, on the GPU engine and on
//! the CPU engine, random weights of a released model's shapes.
//!
//!     cargo run --release -p tiller-gpu --example inspect_bench -- [--model gpt2|llama-3.2-1b]
//!         [--layers N] [--layer L] [--skip-cpu]
//!
//! The corpus is tokenized with GPT-2's tokenizer (the tiny fixture ships the real one); for
//! Llama shapes the same ids are used (Llama 3's tokenizer gives a similar count on English).
//! The projection's capture steps stop at the layer read, so the cost grows with L + 1 blocks;
//! `--layers` keeps the true widths but loads fewer blocks (default: L + 1).

mod common;

use std::time::Instant;

use common::{cpu_engine, gpu_engine, model_shapes, BoxResult, Rng};
use pollster::block_on;
use tiller_core::generate::Flow;
use tiller_core::{inspect, Backend, Site, Tokenizer};

fn time_project<B: Backend>(b: &mut B, texts: &[Vec<u32>], layer: usize, v: &[f32]) -> BoxResult<f64> {
    // A warm-up on a few texts (pipelines, first allocations), then the whole corpus.
    block_on(inspect::project(b, &texts[..4], layer, Site::ResidPre, v, &mut |_, _| Flow::Continue))?;
    let t = Instant::now();
    let out = block_on(inspect::project(b, texts, layer, Site::ResidPre, v, &mut |_, _| Flow::Continue))?;
    let s = t.elapsed().as_secs_f64();
    assert_eq!(out.map(|o| o.len()), Some(texts.len()));
    Ok(s)
}

fn main() -> BoxResult<()> {
    let mut model = "gpt2".to_string();
    let (mut layers, mut layer, mut skip_cpu) = (None, None, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = value()?,
            "--layers" => layers = Some(value()?.parse::<usize>()?),
            "--layer" => layer = Some(value()?.parse::<usize>()?),
            "--skip-cpu" => skip_cpu = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut cfg = model_shapes(&model)?;
    let full = cfg.n_layer;
    let layer = layer.unwrap_or(full / 2);
    cfg.n_layer = layers.unwrap_or(layer + 1).clamp(layer + 1, full);
    cfg.n_positions = cfg.n_positions.min(1024);

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let tok = Tokenizer::from_bytes(&std::fs::read(format!("{root}/tests/fixtures/tiny-gpt2/tokenizer.json"))?)?;
    let corpus = std::fs::read_to_string(format!("{root}/crates/web/assets/corpus.txt"))?;
    let texts: Vec<Vec<u32>> = corpus.lines().filter(|l| !l.trim().is_empty()).map(|l| tok.encode(l)).collect::<Result<_, _>>()?;
    let n_tokens: usize = texts.iter().map(Vec::len).sum();
    let mut rng = Rng(7);
    let v: Vec<f32> = (0..cfg.n_embd).map(|_| rng.uniform(1.0)).collect();
    println!("model: {model} shapes, {} of {full} blocks loaded, reading layer {layer}", cfg.n_layer);
    println!("corpus: {} passages, {n_tokens} tokens (GPT-2 tokenizer)", texts.len());

    let (mut gpu, adapter) = gpu_engine(&cfg)?;
    let t_gpu = time_project(&mut gpu, &texts, layer, &v)?;
    println!("GPU engine ({adapter}): {t_gpu:.2} s = {:.0} tokens/s", n_tokens as f64 / t_gpu);
    drop(gpu);
    if !skip_cpu {
        let mut cpu = cpu_engine(&cfg)?;
        let t_cpu = time_project(&mut cpu, &texts, layer, &v)?;
        println!("CPU engine: {t_cpu:.2} s = {:.0} tokens/s; GPU ÷ CPU time {:.2}", n_tokens as f64 / t_cpu, t_gpu / t_cpu);
    }
    Ok(())
}
