//! What the Heads area costs (issue 13): a function vector's average indirect effects (every
//! head patched at the last token of every corrupted prompt, `fv::indirect_effects`, after the
//! clean prompts' mean head outputs) and ITI's probes (the 120 shipped statements' head
//! activations and a probe per head), on the GPU engine and on the CPU engine, random weights
//! of a released model's shapes.
//!
//!     cargo run --release -p tiller-gpu --example heads_bench -- [--model gpt2|llama-3.2-1b]
//!         [--layers N] [--prompts 4] [--shots 10] [--skip-cpu]
//!
//! Prompts are the antonyms task in order, tokenized with GPT-2's tokenizer (the same ids for
//! Llama shapes). `--layers` keeps the true widths and vocabulary but loads fewer blocks (the
//! patched passes grow with layers × heads, each a whole forward of one token).

mod common;

use std::time::Instant;

use common::{cpu_engine, gpu_engine, model_shapes, BoxResult};
use pollster::block_on;
use tiller_core::fv::{self, Order};
use tiller_core::generate::Flow;
use tiller_core::{iti, Backend, Tokenizer};

struct Timing {
    means: f64,
    aie: f64,
    passes: usize,
    iti_acts: f64,
    iti_probes: f64,
}

fn time_heads<B: Backend>(
    b: &mut B,
    clean: &[Vec<u32>],
    corrupted: &[Vec<u32>],
    answers: &[u32],
    statements: &[Vec<u32>],
    labels: &[bool],
) -> BoxResult<Timing> {
    let go = &mut |_: usize, _: usize| Flow::Continue;
    // A warm-up (pipelines, first allocations) on one prompt.
    block_on(fv::mean_head_outputs(b, &clean[..1], &answers[..1], go))?.ok_or("stopped")?;
    let t = Instant::now();
    let (means, _) = block_on(fv::mean_head_outputs(b, clean, answers, go))?.ok_or("stopped")?;
    let t_means = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let effects = block_on(fv::indirect_effects(b, corrupted, answers, &means, go))?.ok_or("stopped")?;
    let t_aie = t.elapsed().as_secs_f64();
    let spec = *b.config();
    assert_eq!(effects.aie.len(), spec.n_layer * spec.n_head);
    let t = Instant::now();
    let acts = block_on(iti::head_activations(b, statements, go))?.ok_or("stopped")?;
    let t_acts = t.elapsed().as_secs_f64();
    let (train, val) = iti::split(statements.len(), 0.2, iti::SplitOrder::Seeded(0))?;
    let t = Instant::now();
    let r = iti::probe_heads(&spec, &acts, labels, &train, &val, 8, iti::Direction::MassMean);
    let t_probes = t.elapsed().as_secs_f64();
    assert_eq!(r.heads.len(), spec.n_layer * spec.n_head);
    Ok(Timing {
        means: t_means,
        aie: t_aie,
        passes: corrupted.len() * (spec.n_layer * spec.n_head + 1),
        iti_acts: t_acts,
        iti_probes: t_probes,
    })
}

fn report(what: &str, t: &Timing) {
    println!(
        "{what}: clean prompts {:.2} s; AIE {:.2} s for {} patched passes = {:.1} ms a pass; ITI activations {:.2} s, probes {:.2} s",
        t.means,
        t.aie,
        t.passes,
        1e3 * t.aie / t.passes as f64,
        t.iti_acts,
        t.iti_probes
    );
}

fn main() -> BoxResult<()> {
    let mut model = "gpt2".to_string();
    let (mut layers, mut prompts, mut shots, mut skip_cpu) = (None, 4usize, 10usize, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = value()?,
            "--layers" => layers = Some(value()?.parse::<usize>()?),
            "--prompts" => prompts = value()?.parse()?,
            "--shots" => shots = value()?.parse()?,
            "--skip-cpu" => skip_cpu = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut cfg = model_shapes(&model)?;
    let full = cfg.n_layer;
    cfg.n_layer = layers.unwrap_or(full).clamp(1, full);
    cfg.n_positions = cfg.n_positions.min(1024);

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let tok = Tokenizer::from_bytes(&std::fs::read(format!("{root}/tests/fixtures/tiny-gpt2/tokenizer.json"))?)?;
    let pairs = fv::parse_task(&std::fs::read(format!("{root}/datasets/icl/antonyms.jsonl"))?)?;
    let plan = fv::plan(pairs.len(), shots, prompts, Order::InOrder, 0.0)?;
    let enc = |t: &str| fv::prompt_tokens(&tok, t, false, cfg.n_positions);
    let clean: Vec<Vec<u32>> = plan.prompts.iter().map(|p| enc(&p.text(&pairs, false))).collect::<Result<_, _>>()?;
    let corrupted: Vec<Vec<u32>> = plan.prompts.iter().map(|p| enc(&p.text(&pairs, true))).collect::<Result<_, _>>()?;
    let answers: Vec<u32> = plan.prompts.iter().map(|p| fv::answer_token(&tok, &pairs[p.query].output)).collect::<Result<_, _>>()?;
    let stmts = iti::parse_statements(&std::fs::read(format!("{root}/datasets/icl/statements.jsonl"))?)?;
    let statements: Vec<Vec<u32>> = stmts.iter().map(|s| tok.encode(&s.text)).collect::<Result<_, _>>()?;
    let labels: Vec<bool> = stmts.iter().map(|s| s.label).collect();
    let mean_len = clean.iter().map(Vec::len).sum::<usize>() as f64 / clean.len() as f64;
    println!(
        "model: {model} shapes, {} of {full} blocks, {} heads each; {prompts} prompts of {shots} shots ({mean_len:.0} tokens on average); 120 statements",
        cfg.n_layer, cfg.n_head
    );

    let (mut gpu, adapter) = gpu_engine(&cfg)?;
    let g = time_heads(&mut gpu, &clean, &corrupted, &answers, &statements, &labels)?;
    report(&format!("GPU engine ({adapter})"), &g);
    drop(gpu);
    if !skip_cpu {
        let mut cpu = cpu_engine(&cfg)?;
        let c = time_heads(&mut cpu, &clean, &corrupted, &answers, &statements, &labels)?;
        report("CPU engine", &c);
        println!("GPU ÷ CPU time: AIE {:.2}, ITI activations {:.2}", g.aie / c.aie, g.iti_acts / c.iti_acts);
    }
    Ok(())
}
