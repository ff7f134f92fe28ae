//! GpuEngine benchmark on random weights of a released model's shapes (`cargo xtask bench`):
//! the five GPT-2s, or `llama-3.2-1b` (16 layers, C 2048, 32 query heads sharing 8 key/value
//! heads of 64, SwiGLU F 8192, V 128256, tied head).
//!
//!     cargo run --release -p tiller-gpu --example bench -- [--model gpt2] [--layers N]
//!         [--prompt 64] [--decode 16] [--profile] [--markdown BENCHMARKS.md]
//!
//! Measures the prompt pass (tokens/s), decode at batch 1 and 6 (ms per step), the matmul
//! kernel's GFLOP/s at prompt and decode shapes, and the adapter's peak FMA rate with a
//! micro-kernel in the same run, so the matmul can be reported as a fraction of it.
//! `--profile` adds where a prompt pass and a decode step spend their time, by kernel (each
//! dispatch submitted and waited for on its own, see `tiller_gpu::kernels::profile`).
//! `--layers` keeps the true widths and vocabulary but runs fewer blocks (gpt2-xl is 3.1 GB of
//! f16 weights); per-token figures then scale with the layer count.

mod common;

use std::time::Instant;

use common::BoxResult;
use pollster::block_on;
use tiller_core::{Backend, Capture, LogitRows, ModelSpec, SeqStep, StepRequest};
use tiller_gpu::kernels::{Kernels, MatmulBuffers, MatmulParams, ParamsArena, Recorder};
use tiller_gpu::{describe_adapter, GpuEngine};

struct Args {
    model: String,
    layers: Option<usize>,
    prompt: usize,
    decode: usize,
    profile: bool,
    markdown: Option<String>,
}

fn parse_args() -> BoxResult<Args> {
    let mut a = Args { model: "gpt2".into(), layers: None, prompt: 64, decode: 16, profile: false, markdown: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value()?,
            "--layers" => a.layers = Some(value()?.parse()?),
            "--prompt" => a.prompt = value()?.parse()?,
            "--decode" => a.decode = value()?.parse()?,
            "--markdown" => a.markdown = Some(value()?),
            "--profile" => a.profile = true,
            "-h" | "--help" => {
                println!("bench [--model gpt2|distilgpt2|gpt2-medium|gpt2-large|gpt2-xl|llama-3.2-1b] [--layers N] [--prompt 64] [--decode 16] [--profile] [--markdown FILE]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

/// Streams random F16 tensors of `cfg`'s shapes into the GPU, one tensor at a time.
fn random_engine(cfg: &ModelSpec, device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> BoxResult<GpuEngine> {
    common::gpu_engine_on(cfg, device, queue, info)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn seconds<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

struct Report {
    lines: Vec<String>,
}

impl Report {
    fn row(&mut self, what: &str, value: String) {
        println!("{what:<48} {value}");
        self.lines.push(format!("| {what} | {value} |"));
    }
}

/// Runs `reps` dispatches of one `[rows, k] · [k, n]` matmul in one submit; returns seconds per
/// dispatch.
fn time_matmul(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    kernels: &Kernels,
    arena: &mut ParamsArena,
    (rows, k, n): (u32, u32, u32),
    reps: usize,
) -> f64 {
    let buf = |bytes: u64| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes.max(16),
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let (out, inp, weight, bias) =
        (buf(rows as u64 * n as u64 * 4), buf(rows as u64 * k as u64 * 4), buf(k as u64 * n as u64 * 2), buf(n as u64 * 4));
    let group = kernels.bind_matmul(device, &MatmulBuffers { out: &out, inp: &inp, weight: &weight, bias: &bias });
    let p = MatmulParams { rows, k, n, flags: MatmulParams::BIAS };
    let run = |arena: &mut ParamsArena, reps: usize| {
        let mut rec = Recorder::new(kernels);
        for _ in 0..reps {
            kernels.matmul(&mut rec, &group, &p);
        }
        rec.submit(device, queue, kernels, arena);
        let _ = device.poll(wgpu::PollType::wait_indefinitely());
    };
    run(arena, 1); // warm-up (pipeline compilation, page faults)
    let ((), t) = seconds(|| run(arena, reps));
    t / reps as f64
}

/// Peak f32 FMA rate in GFLOP/s from shaders/peak_fma.wgsl.
fn peak_gflops(device: &wgpu::Device, queue: &wgpu::Queue) -> f64 {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("peak_fma"),
        source: wgpu::ShaderSource::Wgsl(include_str!("../../../shaders/peak_fma.wgsl").into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("peak_fma"),
        layout: None,
        module: &module,
        entry_point: Some("peak_fma"),
        compilation_options: Default::default(),
        cache: None,
    });
    let (workgroups, iters) = (256u32, 4096u32);
    let invocations = workgroups as u64 * 64;
    let params = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&params, 0, bytemuck::cast_slice(&[iters, 0, 0, 0]));
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: invocations * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let g0 = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() }],
    });
    let g1 = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(1),
        entries: &[wgpu::BindGroupEntry { binding: 0, resource: out.as_entire_binding() }],
    });
    let run = || {
        let mut enc = device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &g0, &[]);
            pass.set_bind_group(1, &g1, &[]);
            pass.dispatch_workgroups(workgroups, 1, 1);
        }
        queue.submit([enc.finish()]);
        let _ = device.poll(wgpu::PollType::wait_indefinitely());
    };
    run();
    let times: Vec<f64> = (0..3).map(|_| seconds(run).1).collect();
    let flops = invocations as f64 * iters as f64 * 64.0;
    flops / median(times) / 1e9
}

fn main() -> BoxResult<()> {
    let args = parse_args()?;
    let mut cfg = match args.model.as_str() {
        "llama-3.2-1b" => ModelSpec::llama32_1b(),
        name => ModelSpec::gpt2_preset(name).ok_or_else(|| format!("unknown model {name}"))?,
    };
    // A benchmark's caches and rotary tables need only the positions it runs.
    cfg.n_positions = cfg.n_positions.min(4096);
    let full_layers = cfg.n_layer;
    if let Some(l) = args.layers {
        cfg.n_layer = l.clamp(1, full_layers);
    }
    let (device, queue, info) = block_on(tiller_gpu::native_device())?;
    let adapter = describe_adapter(&info);
    println!("adapter: {adapter}\nmodel: {} shapes, {} of {full_layers} layers", args.model, cfg.n_layer);
    let mut report = Report { lines: Vec::new() };

    // Kernel-level numbers first, on the same device.
    let peak = peak_gflops(&device, &queue);
    let kernels = Kernels::new(&device)?;
    let mut arena = ParamsArena::new(&device, &kernels);
    let (c, f) = (cfg.n_embd as u32, cfg.n_inner as u32);
    let t_prompt_mm = time_matmul(&device, &queue, &kernels, &mut arena, (args.prompt as u32, c, f), 4);
    let mm_gflops = 2.0 * args.prompt as f64 * c as f64 * f as f64 / t_prompt_mm / 1e9;
    let t_decode_mm = time_matmul(&device, &queue, &kernels, &mut arena, (1, c, f), 16);
    let decode_gbs = c as f64 * f as f64 * 2.0 / t_decode_mm / 1e9;
    drop(kernels);

    let (engine, t_load) = seconds(|| random_engine(&cfg, device, queue, info));
    let mut engine = engine?;
    println!("weights: {:.0} MB uploaded in {t_load:.1} s", engine.weight_bytes() as f64 / 1e6);

    // Prompt pass: one sequence of `prompt` tokens, logits of the last row.
    let prompt: Vec<u32> = (0..args.prompt as u32).map(|i| (i * 7919) % 50257).collect();
    let max_len = args.prompt + args.decode + 2;
    let prompt_req = StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: prompt.clone() }],
        injections: vec![],
        captures: vec![],
        logits: LogitRows::Last,
    };
    let mut prompt_times = Vec::new();
    for rep in 0..4 {
        engine.reset(1, max_len)?;
        let (r, t) = seconds(|| block_on(engine.step(&prompt_req)));
        r?;
        if rep > 0 {
            prompt_times.push(t);
        }
    }
    let t_prompt = median(prompt_times);

    // Decode at batch 1, continuing the last prompt.
    let decode = |engine: &mut GpuEngine, slots: usize| -> BoxResult<f64> {
        let mut times = Vec::new();
        for i in 0..=args.decode {
            let seqs = (0..slots).map(|slot| SeqStep { slot, tokens: vec![(i as u32 * 31 + slot as u32) % 50257] }).collect();
            let req = StepRequest { seqs, injections: vec![], captures: vec![], logits: LogitRows::Last };
            let (r, t) = seconds(|| block_on(engine.step(&req)));
            r?;
            if i > 0 {
                times.push(t);
            }
        }
        Ok(median(times))
    };
    let t_decode1 = decode(&mut engine, 1)?;
    // Where a decode step's time goes: the same step stopped early (capture, no logits).
    let partial = |engine: &mut GpuEngine, capture: (usize, tiller_core::Site)| -> BoxResult<f64> {
        let mut times = Vec::new();
        for _ in 0..5 {
            engine.reset(1, 4)?;
            let req = StepRequest {
                seqs: vec![SeqStep { slot: 0, tokens: vec![1] }],
                injections: vec![],
                captures: vec![Capture::all(capture.0, capture.1)],
                logits: LogitRows::None,
            };
            let (r, t) = seconds(|| block_on(engine.step(&req)));
            r?;
            times.push(t);
        }
        Ok(median(times))
    };
    let t_embed_only = partial(&mut engine, (0, tiller_core::Site::ResidPre))?;
    let t_blocks = partial(&mut engine, (cfg.n_layer - 1, tiller_core::Site::MlpOut))?;
    engine.reset(1, max_len)?;
    block_on(engine.step(&prompt_req))?;
    // Batch 6: six slots with prompts of different lengths, then one token each per step.
    engine.reset(6, max_len)?;
    let seqs = (0..6).map(|s| SeqStep { slot: s, tokens: prompt[..args.prompt - 5 * s].to_vec() }).collect();
    block_on(engine.step(&StepRequest { seqs, injections: vec![], captures: vec![], logits: LogitRows::Last }))?;
    let t_decode6 = decode(&mut engine, 6)?;

    // Per-kernel shares of a prompt pass and of a batch-1 decode step.
    let mut profile_rows = Vec::new();
    if args.profile {
        use tiller_gpu::kernels::profile;
        engine.reset(1, max_len)?;
        profile::take();
        profile::enable(true);
        block_on(engine.step(&prompt_req))?;
        profile_rows.push((format!("profile: prompt pass, {} tokens", args.prompt), profile::take(), 1));
        let steps = 4;
        for i in 0..steps {
            let req = StepRequest {
                seqs: vec![SeqStep { slot: 0, tokens: vec![i as u32 + 1] }],
                injections: vec![],
                captures: vec![],
                logits: LogitRows::Last,
            };
            block_on(engine.step(&req))?;
        }
        profile_rows.push(("profile: decode step, batch 1".to_string(), profile::take(), steps));
        profile::enable(false);
    }

    let layers_note = if cfg.n_layer < full_layers { format!(" ({} of {full_layers} layers)", cfg.n_layer) } else { String::new() };
    report.row("model", format!("{} shapes{layers_note}, random f16 weights ({:.0} MB)", args.model, engine.weight_bytes() as f64 / 1e6));
    report.row(
        &format!("prompt pass, {} tokens", args.prompt),
        format!("{:.0} ms = {:.1} tokens/s", t_prompt * 1e3, args.prompt as f64 / t_prompt),
    );
    report.row("decode, batch 1", format!("{:.1} ms/token", t_decode1 * 1e3));
    report.row(
        "decode, batch 1: breakdown",
        format!(
            "{:.1} ms fixed (embed + submit + readback), {:.1} ms blocks, {:.1} ms ln_f + logits",
            t_embed_only * 1e3,
            (t_blocks - t_embed_only) * 1e3,
            (t_decode1 - t_blocks) * 1e3
        ),
    );
    report.row("decode, batch 6", format!("{:.1} ms/step = {:.1} ms/token", t_decode6 * 1e3, t_decode6 * 1e3 / 6.0));
    report.row("peak FMA (micro-kernel)", format!("{peak:.1} GFLOP/s"));
    report.row(
        &format!("matmul {}×{c}·{c}×{f} (prompt c_fc)", args.prompt),
        format!("{:.2} ms = {mm_gflops:.1} GFLOP/s = {:.0}% of peak", t_prompt_mm * 1e3, 100.0 * mm_gflops / peak),
    );
    report.row(
        &format!("matmul 1×{c}·{c}×{f} (decode c_fc)"),
        format!(
            "{:.2} ms = {decode_gbs:.1} GB/s of f16 weights, {:.1} GFLOP/s",
            t_decode_mm * 1e3,
            2.0 * c as f64 * f as f64 / t_decode_mm / 1e9
        ),
    );
    for (what, totals, steps) in profile_rows {
        let all: f64 = totals.iter().map(|t| t.2).sum();
        let parts: Vec<String> = totals
            .iter()
            .map(|(name, n, secs)| {
                format!("{name} {:.1} ms ({:.0}%, {} dispatches)", secs * 1e3 / steps as f64, 100.0 * secs / all, n / steps)
            })
            .collect();
        report.row(&what, format!("{:.1} ms in all: {}", all * 1e3 / steps as f64, parts.join(", ")));
    }
    if cfg.n_layer < full_layers {
        let scale = full_layers as f64 / cfg.n_layer as f64;
        let est = t_blocks + (t_blocks - t_embed_only) * (scale - 1.0) + (t_decode1 - t_blocks);
        report.row("decode, batch 1, blocks scaled to all layers (est.)", format!("≈ {:.0} ms/token", est * 1e3));
    }

    if let Some(path) = &args.markdown {
        let cmd = format!(
            "cargo xtask bench {}",
            std::env::args().skip(1).filter(|a| !a.starts_with("--markdown")).collect::<Vec<_>>().join(" ")
        );
        let cmd = cmd.replace(&format!(" {path}"), "");
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let section = format!(
            "\n## {} on {adapter}\n\nCommand: `{}`  \nMachine: {cpus}-core CPU, no GPU (Mesa lavapipe when the adapter is llvmpipe); release build.\n\n| measure | result |\n|---|---|\n{}\n",
            args.model,
            cmd.trim(),
            report.lines.join("\n")
        );
        let mut text = std::fs::read_to_string(path).unwrap_or_else(|_| BENCH_HEADER.to_string());
        text.push_str(&section);
        std::fs::write(path, text)?;
        println!("appended to {path}");
    }
    Ok(())
}

const BENCH_HEADER: &str = "# Benchmarks\n\nGpuEngine on random weights with the shapes of released GPT-2s, made by `cargo xtask bench`\n(crates/gpu/examples/bench.rs). Times are medians of wall-clock steps including the logits\nreadback. The peak FMA rate is measured by shaders/peak_fma.wgsl in the same run.\n";
