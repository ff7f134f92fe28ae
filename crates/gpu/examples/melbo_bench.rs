//! What a MELBO training step costs (issue 14): one step is f and ∂f/∂θ at θ (the tape's
//! forward over blocks source..target, then its backward) for `--prompts` prompts (one by
//! default, as one batch on the GPU engine) of `--tokens` tokens,
//! on the GPU engine and on the CPU reference, random weights of a released model's shapes;
//! and the time of a 32-vector, 300-step run it implies.
//!
//!     cargo run --release -p tiller-gpu --example melbo_bench -- [--model gpt2|gpt2-xl|llama-3.2-1b]
//!         [--tokens 32] [--prompts 1] [--steps 5] [--layers N] [--skip-cpu] [--profile]
//!
//! Source and target are MELBO's defaults (a quarter and three quarters of the depth). The
//! forward up to `source` (the same for every step) and the unsteered target are computed once,
//! as training does. `--layers` keeps the widths and vocabulary but loads fewer blocks.

mod common;

use std::time::Instant;

use common::{cpu_engine, gpu_engine, model_shapes, BoxResult};
use pollster::block_on;
use tiller_core::melbo::{self, CpuTape, Differentiable, Objective, PromptActs};
use tiller_gpu::GpuTape;

/// Seconds per step (mean of `steps` after one warm-up) and the gradient's norm.
fn time_steps<D: Differentiable>(tape: &mut D, acts: &[PromptActs], steps: usize) -> BoxResult<(f64, f64)> {
    let c = tape.width();
    let theta: Vec<f32> = (0..c).map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.5).collect();
    let obj = Objective::default();
    block_on(melbo::objective_grad(tape, acts, &obj, &theta))?; // warm-up: pipelines, allocations
    let t = Instant::now();
    let mut gn = 0.0;
    for _ in 0..steps {
        let (_, g) = block_on(melbo::objective_grad(tape, acts, &obj, &theta))?;
        gn = g.iter().map(|x| x * x).sum::<f64>().sqrt();
    }
    Ok((t.elapsed().as_secs_f64() / steps as f64, gn))
}

fn main() -> BoxResult<()> {
    let mut model = "gpt2".to_string();
    let (mut tokens, mut steps, mut layers, mut skip_cpu, mut profile, mut n_prompts) = (32usize, 5usize, None, false, false, 1usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = value()?,
            "--tokens" => tokens = value()?.parse()?,
            "--steps" => steps = value()?.parse()?,
            "--layers" => layers = Some(value()?.parse::<usize>()?),
            "--skip-cpu" => skip_cpu = true,
            "--profile" => profile = true,
            "--prompts" => n_prompts = value()?.parse::<usize>()?.max(1),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut cfg = model_shapes(&model)?;
    if let Some(l) = layers {
        cfg.n_layer = l.clamp(2, cfg.n_layer);
    }
    let (source, target) = melbo::default_layers(cfg.n_layer);
    let prompts: Vec<Vec<u32>> =
        (0..n_prompts as u32).map(|k| (0..tokens as u32).map(|i| (i * 101 + 7 + k * 13) % cfg.vocab_size as u32).collect()).collect();
    println!("{model} shapes, {} layers: θ at {source}, target {target}, {n_prompts} prompt(s) of {tokens} tokens", cfg.n_layer);

    let (mut gpu, adapter) = gpu_engine(&cfg)?;
    let acts = block_on(melbo::prepare(&mut gpu, &prompts, source, target))?;
    let (g_step, g_norm) = time_steps(&mut GpuTape::new(&mut gpu, prompts.clone(), source, target), &acts, steps)?;
    println!(
        "GPU ({adapter}): {:.1} ms per step (|∂f/∂θ| {g_norm:.4e}); 32 vectors × 300 steps: {:.1} min",
        g_step * 1e3,
        g_step * 9600.0 / 60.0
    );
    if profile {
        // each dispatch submitted and waited for on its own: the shares, not the total
        tiller_gpu::kernels::profile::take();
        tiller_gpu::kernels::profile::enable(true);
        time_steps(&mut GpuTape::new(&mut gpu, prompts.clone(), source, target), &acts, 1)?;
        tiller_gpu::kernels::profile::enable(false);
        let mut totals = tiller_gpu::kernels::profile::take();
        totals.sort_by(|a, b| b.2.total_cmp(&a.2));
        let all: f64 = totals.iter().map(|t| t.2).sum();
        for (name, n, secs) in totals {
            println!("  {name:<26} {n:>5} dispatches {:>8.1} ms {:>5.1}%", secs * 1e3, secs / all * 100.0);
        }
    }
    drop(gpu);
    if !skip_cpu {
        let mut cpu = cpu_engine(&cfg)?;
        let acts = block_on(melbo::prepare(&mut cpu, &prompts, source, target))?;
        let w = cpu.weights();
        let (c_step, c_norm) = time_steps(&mut CpuTape::new(w, &acts, source, target), &acts, steps)?;
        println!(
            "CPU reference: {:.1} ms per step (|∂f/∂θ| {c_norm:.4e}); 32 vectors × 300 steps: {:.1} min; GPU/CPU time {:.3}",
            c_step * 1e3,
            c_step * 9600.0 / 60.0,
            g_step / c_step
        );
    }
    Ok(())
}
