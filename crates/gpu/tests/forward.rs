//! GpuEngine against CpuModel on random small GPT-2s: prompts, batches of different lengths,
//! decode steps through the KV cache, injections at every site, captures, the hook API (row
//! selectors, heads, set and scale, several captures a step), fork_slot, unembed, errors.
//!
//! The models are written as F16 safetensors, so both engines hold the same weights and only
//! f32 summation order differs: logits agree within atol 2e-4 + rtol 1e-4 (observed ~1e-5).

mod common;

use common::{assert_close, gpu, random_model, Gpu, Rng};
use pollster::block_on;
use tiller_core::weights::Dtype;
use tiller_core::{Backend, Capture, CpuModel, CpuWeights, Injection, LogitRows, Mode, ModelSpec, RowSelect, SeqStep, Site, StepRequest};
use tiller_gpu::GpuEngine;

const ATOL: f32 = 2e-4;
const RTOL: f32 = 1e-4;

fn config(n_layer: usize, n_embd: usize, n_head: usize, vocab_size: usize) -> ModelSpec {
    ModelSpec::gpt2(n_layer, n_embd, n_head, 96, vocab_size)
}

fn config_json(cfg: &ModelSpec) -> Vec<u8> {
    format!(
        r#"{{"model_type":"gpt2","n_layer":{},"n_embd":{},"n_head":{},"n_positions":{},"vocab_size":{},"n_inner":{}}}"#,
        cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions, cfg.vocab_size, cfg.n_inner
    )
    .into_bytes()
}

/// The same random model on both engines.
fn pair(gpu: Gpu, cfg: &ModelSpec, seed: u64, dtype: Dtype) -> (GpuEngine, CpuModel) {
    let bytes = random_model(cfg, seed, dtype);
    let json = config_json(cfg);
    let cpu = CpuModel::new(CpuWeights::from_bytes(&bytes, Some(&json)).expect("cpu loads"));
    let engine = block_on(GpuEngine::from_bytes(gpu.device, gpu.queue, gpu.info, &bytes, Some(&json))).expect("gpu loads");
    (engine, cpu)
}

fn tokens(rng: &mut Rng, n: usize, v: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(v as u32)).collect()
}

fn both(g: &mut GpuEngine, c: &mut CpuModel, req: &StepRequest, what: &str) {
    let got = block_on(g.step(req)).expect("gpu step");
    let want = block_on(c.step(req)).expect("cpu step");
    assert_close(&format!("{what} logits"), &got.logits, &want.logits, ATOL, RTOL);
    assert_eq!(got.captured.len(), want.captured.len(), "{what}: captures");
    for (i, (g, c)) in got.captured.iter().zip(&want.captured).enumerate() {
        assert_close(&format!("{what} capture {i}"), g, c, ATOL, RTOL);
    }
}

fn request(seqs: Vec<SeqStep>, logits: LogitRows) -> StepRequest {
    StepRequest { seqs, injections: vec![], captures: vec![], logits }
}

#[test]
fn prompt_logits_at_every_position_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(2, 64, 4, 300); // head size 16
    let (mut g, mut c) = pair(gpu, &cfg, 11, Dtype::F16);
    let mut rng = Rng::new(1);
    for t in [1, 7, 65] {
        g.reset(1, 80).unwrap();
        c.reset(1, 80).unwrap();
        let req = request(vec![SeqStep { slot: 0, tokens: tokens(&mut rng, t, cfg.vocab_size) }], LogitRows::All);
        both(&mut g, &mut c, &req, &format!("T={t}"));
        assert_eq!(g.slot_len(0), t);
    }
}

#[test]
fn batched_sequences_of_different_lengths_then_decode_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(3, 80, 4, 500); // head size 20, C not a multiple of 64
    let (mut g, mut c) = pair(gpu, &cfg, 12, Dtype::F16);
    let mut rng = Rng::new(2);
    g.reset(3, 90).unwrap();
    c.reset(3, 90).unwrap();
    // Slots filled out of order, lengths 5, 1 and 12.
    let prompt = vec![
        SeqStep { slot: 2, tokens: tokens(&mut rng, 5, cfg.vocab_size) },
        SeqStep { slot: 0, tokens: tokens(&mut rng, 1, cfg.vocab_size) },
        SeqStep { slot: 1, tokens: tokens(&mut rng, 12, cfg.vocab_size) },
    ];
    both(&mut g, &mut c, &request(prompt, LogitRows::Last), "batched prompt");
    for step in 0..6 {
        // Decode one token per sequence; slot 0 sits out every other step.
        let seqs: Vec<SeqStep> = [0usize, 1, 2]
            .into_iter()
            .filter(|&s| s != 0 || step % 2 == 0)
            .map(|slot| SeqStep { slot, tokens: tokens(&mut rng, 1, cfg.vocab_size) })
            .collect();
        both(&mut g, &mut c, &request(seqs, LogitRows::Last), &format!("decode step {step}"));
    }
    for s in 0..3 {
        assert_eq!(g.slot_len(s), c.slot_len(s), "slot {s}");
    }
    // A multi-token continuation after decoding.
    let more = vec![SeqStep { slot: 1, tokens: tokens(&mut rng, 4, cfg.vocab_size) }];
    both(&mut g, &mut c, &request(more, LogitRows::All), "continuation");
}

#[test]
fn injections_at_every_site_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(2, 64, 4, 300);
    let (mut g, mut c) = pair(gpu, &cfg, 13, Dtype::F16);
    let mut rng = Rng::new(3);
    let seqs = vec![
        SeqStep { slot: 0, tokens: tokens(&mut rng, 6, cfg.vocab_size) },
        SeqStep { slot: 1, tokens: tokens(&mut rng, 3, cfg.vocab_size) },
    ];
    let r = 9;
    let mut table = |k: usize, scale: f32| rng.vec(k * cfg.n_embd, scale);
    // Front positions of sequence 0 get rows 0..3; sequence 1 gets row 1 on its last token.
    let map_a: Vec<u32> = vec![0, 1, 2, u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX, 1];
    let map_b: Vec<u32> = (0..r as u32).map(|i| if i % 2 == 0 { 0 } else { u32::MAX }).collect();
    let injections = [
        Injection { layer: 0, site: Site::ResidPre, head: None, mode: Mode::Add, table: table(3, 4.0), row_map: map_a.clone() },
        // Two at the same place add up.
        Injection { layer: 0, site: Site::ResidPre, head: None, mode: Mode::Add, table: table(1, 2.0), row_map: map_b.clone() },
        Injection { layer: 1, site: Site::AttnOut, head: None, mode: Mode::Add, table: table(3, 1.0), row_map: map_a.clone() },
        Injection { layer: 1, site: Site::MlpOut, head: None, mode: Mode::Add, table: table(1, 1.0), row_map: map_b },
        Injection { layer: 1, site: Site::ResidPre, head: None, mode: Mode::Add, table: table(3, 3.0), row_map: map_a },
    ];
    for site_filter in [None, Some(Site::ResidPre), Some(Site::AttnOut), Some(Site::MlpOut)] {
        g.reset(2, 16).unwrap();
        c.reset(2, 16).unwrap();
        let req = StepRequest {
            seqs: seqs.clone(),
            injections: injections.iter().filter(|i| site_filter.is_none_or(|s| i.site == s)).cloned().collect(),
            captures: vec![],
            logits: LogitRows::All,
        };
        both(&mut g, &mut c, &req, &format!("injections at {site_filter:?}"));
    }
}

#[test]
fn captures_at_every_site_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(2, 64, 4, 300);
    let (mut g, mut c) = pair(gpu, &cfg, 14, Dtype::F16);
    let mut rng = Rng::new(4);
    let seqs = vec![SeqStep { slot: 0, tokens: tokens(&mut rng, 7, cfg.vocab_size) }];
    let inj = Injection {
        layer: 1,
        site: Site::ResidPre,
        head: None,
        mode: Mode::Add,
        table: rng.vec(2 * cfg.n_embd, 3.0),
        row_map: vec![0, 1, 0, 1, 0, 1, 0],
    };
    for layer in 0..cfg.n_layer {
        for site in Site::ALL {
            for logits in [LogitRows::None, LogitRows::Last] {
                g.reset(1, 16).unwrap();
                c.reset(1, 16).unwrap();
                let req =
                    StepRequest { seqs: seqs.clone(), injections: vec![inj.clone()], captures: vec![Capture::all(layer, site)], logits };
                both(&mut g, &mut c, &req, &format!("capture {layer} {} {logits:?}", site.as_str()));
            }
        }
    }
}

#[test]
fn unembed_with_and_without_ln_f_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(1, 64, 4, 300);
    let (mut g, mut c) = pair(gpu, &cfg, 15, Dtype::F16);
    let rows = Rng::new(5).vec(3 * cfg.n_embd, 2.0);
    for ln_f in [false, true] {
        let got = block_on(g.unembed(&rows, ln_f)).unwrap();
        let want = block_on(c.unembed(&rows, ln_f)).unwrap();
        assert_close(&format!("unembed ln_f={ln_f}"), &got, &want, ATOL, RTOL);
    }
    assert!(block_on(g.unembed(&rows[..10], true)).is_err(), "a partial row is an error");
}

#[test]
fn invalid_steps_are_errors_like_cpu() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(1, 64, 4, 300);
    let (mut g, mut c) = pair(gpu, &cfg, 16, Dtype::F16);
    let one = |slot, tokens: Vec<u32>| request(vec![SeqStep { slot, tokens }], LogitRows::Last);
    // Before reset no slot exists.
    let e_g = block_on(g.step(&one(0, vec![1]))).unwrap_err();
    let e_c = block_on(c.step(&one(0, vec![1]))).unwrap_err();
    assert_eq!(e_g, e_c);
    g.reset(1, 4).unwrap();
    c.reset(1, 4).unwrap();
    for req in [one(1, vec![1]), one(0, vec![1; 5]), one(0, vec![300]), one(0, vec![])] {
        let (e_g, e_c) = (block_on(g.step(&req)).unwrap_err(), block_on(c.step(&req)).unwrap_err());
        assert_eq!(e_g, e_c, "{req:?}");
    }
    let bad = StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: vec![1, 2] }],
        injections: vec![Injection {
            layer: 0,
            site: Site::ResidPre,
            head: None,
            mode: Mode::Add,
            table: vec![0.0; 64],
            row_map: vec![0, 1],
        }],
        captures: vec![],
        logits: LogitRows::Last,
    };
    assert_eq!(block_on(g.step(&bad)).unwrap_err(), block_on(c.step(&bad)).unwrap_err());
    // Still usable after errors.
    both(&mut g, &mut c, &one(0, vec![5, 6, 7]), "after errors");
}

/// Several captures with every row selector and per-head slices, beside interventions in each
/// mode (a head of z set on some rows, attn_out scaled, a head added to), with and without logits.
#[test]
fn hooks_with_selectors_heads_and_modes_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(3, 80, 4, 300); // head size 20
    let (mut g, mut c) = pair(gpu, &cfg, 21, Dtype::F16);
    let mut rng = Rng::new(21);
    let seqs = vec![
        SeqStep { slot: 2, tokens: tokens(&mut rng, 5, cfg.vocab_size) },
        SeqStep { slot: 0, tokens: tokens(&mut rng, 1, cfg.vocab_size) },
        SeqStep { slot: 1, tokens: tokens(&mut rng, 3, cfg.vocab_size) },
    ];
    let hd = cfg.head_dim;
    let no = u32::MAX;
    let injections = vec![
        Injection {
            head: Some(1),
            mode: Mode::Set,
            ..Injection::add(0, Site::Z, rng.vec(2 * hd, 1.0), vec![0, no, no, no, 1, 1, no, no, 0])
        },
        Injection { mode: Mode::Scale, ..Injection::add(1, Site::AttnOut, rng.vec(cfg.n_embd, 2.0), vec![0; 9]) },
        Injection { head: Some(3), ..Injection::add(1, Site::Z, rng.vec(hd, 1.0), vec![no, 0, 0, 0, 0, 0, 0, 0, no]) },
        Injection::add(2, Site::ResidPre, rng.vec(cfg.n_embd, 3.0), vec![0; 9]),
    ];
    let cap = |layer, site, head, rows| Capture::rows(layer, site, head, rows);
    let captures = vec![
        Capture::all(0, Site::Z),
        cap(0, Site::Z, Some(1), RowSelect::Last),
        cap(1, Site::Z, Some(3), RowSelect::Positions(vec![(1, 2), (2, 0), (0, 0)])),
        cap(1, Site::AttnOut, None, RowSelect::Last),
        Capture::all(1, Site::MlpOut),
        cap(2, Site::ResidPre, None, RowSelect::Positions(vec![(2, 4)])),
        // Projections: every row onto a vector, and one head's slice at a few rows.
        Capture::project(1, Site::ResidPre, rng.vec(cfg.n_embd, 1.0)),
        Capture { project: Some(rng.vec(hd, 1.0)), ..cap(2, Site::Z, Some(2), RowSelect::Positions(vec![(1, 2), (2, 1), (0, 0)])) },
    ];
    for logits in [LogitRows::None, LogitRows::Last, LogitRows::All] {
        g.reset(3, 12).unwrap();
        c.reset(3, 12).unwrap();
        let req = StepRequest { seqs: seqs.clone(), injections: injections.clone(), captures: captures.clone(), logits };
        both(&mut g, &mut c, &req, &format!("hooks {logits:?}"));
    }
}

/// The prompt once, copied to other slots (one of which held a longer text), then decoded.
#[test]
fn fork_slot_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(2, 64, 4, 300);
    let (mut g, mut c) = pair(gpu, &cfg, 22, Dtype::F16);
    let mut rng = Rng::new(22);
    g.reset(3, 20).unwrap();
    c.reset(3, 20).unwrap();
    let fill = vec![
        SeqStep { slot: 0, tokens: tokens(&mut rng, 6, cfg.vocab_size) },
        SeqStep { slot: 2, tokens: tokens(&mut rng, 11, cfg.vocab_size) },
    ];
    both(&mut g, &mut c, &request(fill, LogitRows::Last), "fill");
    for (src, dst) in [(0, 2), (0, 1)] {
        g.fork_slot(src, dst).unwrap();
        c.fork_slot(src, dst).unwrap();
    }
    assert_eq!((g.slot_len(1), g.slot_len(2)), (6, 6));
    for step in 0..3 {
        let seqs: Vec<SeqStep> = (0..3).map(|slot| SeqStep { slot, tokens: tokens(&mut rng, 1, cfg.vocab_size) }).collect();
        both(&mut g, &mut c, &request(seqs, LogitRows::Last), &format!("after fork, step {step}"));
    }
    assert_eq!(g.fork_slot(3, 0).unwrap_err(), c.fork_slot(3, 0).unwrap_err());
}

/// A capture past the depth, an empty sequence beside a full one and a slot named twice are
/// refused by both engines with the same sentence, and both caches stay as they were.
#[test]
fn refused_steps_leave_both_caches_unchanged() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(2, 64, 4, 300);
    let (mut g, mut c) = pair(gpu, &cfg, 17, Dtype::F16);
    g.reset(2, 16).unwrap();
    c.reset(2, 16).unwrap();
    let seqs = |v: Vec<(usize, Vec<u32>)>| v.into_iter().map(|(slot, tokens)| SeqStep { slot, tokens }).collect::<Vec<_>>();
    both(&mut g, &mut c, &request(seqs(vec![(0, vec![1, 2, 3]), (1, vec![4, 5])]), LogitRows::Last), "prompt");
    let capture_past = StepRequest {
        seqs: seqs(vec![(0, vec![7])]),
        injections: vec![],
        captures: vec![Capture::all(2, Site::MlpOut)],
        logits: LogitRows::None,
    };
    let refused = [
        capture_past,
        request(seqs(vec![(0, vec![7]), (1, vec![])]), LogitRows::Last),
        request(seqs(vec![(0, vec![7]), (0, vec![8])]), LogitRows::Last),
    ];
    for req in &refused {
        let (e_g, e_c) = (block_on(g.step(req)).unwrap_err(), block_on(c.step(req)).unwrap_err());
        assert_eq!(e_g, e_c, "{req:?}");
        for slot in 0..2 {
            assert_eq!((g.slot_len(slot), c.slot_len(slot)), ([3, 2][slot], [3, 2][slot]), "{req:?}: slot {slot} moved");
        }
    }
    both(&mut g, &mut c, &request(seqs(vec![(0, vec![9]), (1, vec![9])]), LogitRows::Last), "after refusals");
}

/// F32 files are rounded to f16 on upload; the CPU keeps f32. The difference is the honest
/// cost of f16 weights: |Δ logit| ≲ 1e-2 on this model.
#[test]
fn f32_weights_are_rounded_to_f16_within_tolerance() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(2, 64, 4, 300);
    let (mut g, mut c) = pair(gpu, &cfg, 17, Dtype::F32);
    let mut rng = Rng::new(6);
    g.reset(1, 16).unwrap();
    c.reset(1, 16).unwrap();
    let req = request(vec![SeqStep { slot: 0, tokens: tokens(&mut rng, 9, cfg.vocab_size) }], LogitRows::All);
    let got = block_on(g.step(&req)).unwrap();
    let want = block_on(c.step(&req)).unwrap();
    assert_close("f32 file, f16 GPU weights", &got.logits, &want.logits, 2e-2, 1e-2);
}

/// An F32 weight past f16's range (±65504) would become an infinity on the GPU while the CPU
/// stays finite: the GPU load refuses it, naming the tensor (issue 17), in a matrix and in
/// the vocabulary table; the CPU engine loads the same file.
#[test]
fn f32_weights_beyond_f16_range_are_refused_on_the_gpu() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(1, 64, 4, 300);
    let json = config_json(&cfg);
    for name in ["h.0.mlp.c_fc.weight", "wte.weight"] {
        let mut bytes = random_model(&cfg, 5, Dtype::F32);
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = tiller_core::weights::SafetensorsHeader::parse(&bytes[8..8 + n], Some((bytes.len() - 8 - n) as u64)).unwrap();
        let at = 8 + n + header.get(name).unwrap().start as usize + 4 * 5;
        bytes[at..at + 4].copy_from_slice(&1.0e5f32.to_le_bytes());
        CpuWeights::from_bytes(&bytes, Some(&json)).expect("the CPU keeps f32: it loads");
        let e = block_on(GpuEngine::from_bytes(gpu.device.clone(), gpu.queue.clone(), gpu.info.clone(), &bytes, Some(&json)))
            .err()
            .expect("the GPU refuses it");
        let msg = e.to_string();
        assert!(msg.contains(&format!("tensor `{name}")) && msg.contains("1 value beyond f16's range"), "{msg}");
    }
}

/// A device whose storage bindings hold 64 KiB forces wte (1000 × 64 f16 = 128 KB) into two
/// chunks (rows 0..512 and 512..1000): embedding and logits must read the right one. Logits
/// for 20 rows (80 KB) also no longer fit one binding and come back in groups of 16 rows.
#[test]
fn wte_split_across_bindings_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    drop(gpu);
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).expect("adapter");
    let limits = wgpu::Limits { max_storage_buffer_binding_size: 64 << 10, ..adapter.limits() };
    let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: None,
        required_features: wgpu::Features::empty(),
        required_limits: limits,
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::default(),
        trace: wgpu::Trace::Off,
    }))
    .expect("device with small bindings");
    let cfg = config(1, 64, 4, 1000);
    let (mut g, mut c) = pair(Gpu { device, queue, info: adapter.get_info() }, &cfg, 18, Dtype::F16);
    g.reset(1, 40).unwrap();
    c.reset(1, 40).unwrap();
    // Tokens from both chunks and their edges.
    let mut toks: Vec<u32> = vec![0, 511, 512, 999, 700, 3, 998];
    toks.extend(tokens(&mut Rng::new(7), 13, cfg.vocab_size));
    let req = request(vec![SeqStep { slot: 0, tokens: toks }], LogitRows::All);
    both(&mut g, &mut c, &req, "wte in 64 KiB chunks");
}

/// C = 68 (head size 17): no Conv1D width is a multiple of 8, so every matmul weight row is
/// padded on upload and the last word of each row is partly zeros.
#[test]
fn widths_not_multiple_of_8_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(2, 68, 4, 300);
    let (mut g, mut c) = pair(gpu, &cfg, 19, Dtype::F16);
    g.reset(2, 20).unwrap();
    c.reset(2, 20).unwrap();
    let mut rng = Rng::new(8);
    let seqs = vec![
        SeqStep { slot: 0, tokens: tokens(&mut rng, 9, cfg.vocab_size) },
        SeqStep { slot: 1, tokens: tokens(&mut rng, 2, cfg.vocab_size) },
    ];
    both(&mut g, &mut c, &request(seqs, LogitRows::All), "C=68");
    let seqs = vec![SeqStep { slot: 1, tokens: tokens(&mut rng, 1, cfg.vocab_size) }];
    both(&mut g, &mut c, &request(seqs, LogitRows::Last), "C=68 decode");
}

#[test]
fn unembed_after_a_capture_step_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let cfg = config(2, 64, 4, 300);
    let (mut g, mut c) = pair(gpu, &cfg, 17, Dtype::F16);
    let mut rng = Rng::new(6);
    for (slots, len) in [(1, 4), (2, 16)] {
        g.reset(slots, len).unwrap();
        c.reset(slots, len).unwrap();
        let seqs = vec![SeqStep { slot: 0, tokens: tokens(&mut rng, 3, cfg.vocab_size) }];
        let req = StepRequest { seqs, injections: vec![], captures: vec![Capture::all(1, Site::ResidPre)], logits: LogitRows::None };
        both(&mut g, &mut c, &req, "capture before unembed");
        let rows = rng.vec(3 * cfg.n_embd, 2.0);
        for ln_f in [false, true] {
            let got = block_on(g.unembed(&rows, ln_f)).unwrap();
            let want = block_on(c.unembed(&rows, ln_f)).unwrap();
            assert_close(&format!("unembed after capture, ln_f={ln_f}"), &got, &want, ATOL, RTOL);
        }
    }
}

/// MELBO's tape on the GPU against the CPU reference's, for a batch of prompts of different
/// lengths: the first forward keeps the residual before block `source`, the next ones start
/// there from it (skipping blocks 0..source); an ordinary step between two tape forwards is
/// neither kept nor shortened.
#[test]
fn tape_forwards_of_a_batch_from_the_kept_prefix_match_cpu() {
    use tiller_core::melbo::{self, CpuTape, Differentiable};
    let Some(gpu) = gpu() else { return };
    let cfg = config(4, 48, 4, 61);
    let (mut g, mut c) = pair(gpu, &cfg, 41, Dtype::F16);
    let mut rng = Rng::new(42);
    let prompts = vec![tokens(&mut rng, 5, 61), tokens(&mut rng, 11, 61), tokens(&mut rng, 1, 61)];
    let (source, target) = (2, 3);
    let acts = block_on(melbo::prepare(&mut c, &prompts, source, target)).expect("cpu prepare");
    let thetas: Vec<Vec<f32>> = (0..3).map(|k| rng.vec(48, 0.5 + k as f32)).collect();
    let ordinary = request(vec![SeqStep { slot: 0, tokens: tokens(&mut rng, 8, 61) }], LogitRows::All);
    let mut c2 = CpuModel::new(c.weights().clone());
    let mut cpu = CpuTape::new(c.weights(), &acts, source, target);
    for (k, theta) in thetas.iter().enumerate() {
        let want = block_on(cpu.forward(theta)).expect("cpu forward");
        let got = block_on(g.tape_forward(&prompts, theta, source, target)).expect("gpu forward");
        assert_eq!(got.len(), prompts.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_close(&format!("forward {k}, prompt {i}: h_target"), a, b, ATOL, RTOL);
        }
        let dh: Vec<Vec<f32>> = want.iter().map(|h| h.iter().map(|x| x.sin()).collect()).collect();
        let want = block_on(cpu.backward(&dh)).expect("cpu backward");
        let got = block_on(g.tape_backward(&dh)).expect("gpu backward");
        assert_close(&format!("backward {k}: the gradient before block {source}"), &got, &want, 1e-3, 1e-3);
        if k == 0 {
            // between two tape steps: the whole model, nothing kept or skipped
            g.reset(1, 8).unwrap();
            c2.reset(1, 8).unwrap();
            both(&mut g, &mut c2, &ordinary, "a step between MELBO's tape steps");
        }
    }
}
