//! The CPU reference against the golden values dumped from Hugging Face transformers, for
//! every family (GPT-2, Llama, Qwen2, GPT-NeoX).

use pollster::block_on;
use tiller_core::generate::{generate, Flow};
use tiller_core::golden::{check_close, check_top, load_fixture, Fixture, PositionGolden, SteeredGolden, MODELS};
use tiller_core::sample::top_k_indices;
use tiller_core::steer::{self, RowSpan};
use tiller_core::{Backend, Capture, CpuModel, LogitRows, Positions, Recipe, Sampling, SeqStep, Site, StepRequest, Term, Tokenizer};

const ATOL: f32 = 1e-4;

fn model(f: &Fixture) -> (CpuModel, Tokenizer) {
    f.cpu_model()
}

fn site(s: &SteeredGolden) -> Site {
    Site::parse(&s.site).expect("a known site")
}

fn check_positions(what: &str, logits: &[f32], v: usize, golden: &[PositionGolden], probe_ids: &[u32]) {
    assert_eq!(logits.len(), golden.len() * v, "{what}: rows");
    for (p, g) in golden.iter().enumerate() {
        let row = &logits[p * v..(p + 1) * v];
        let top: Vec<(u32, f32)> = top_k_indices(row, 20).into_iter().map(|i| (i as u32, row[i])).collect();
        check_top(&format!("{what} pos {p}"), &top, &g.top, ATOL).unwrap();
        let probe: Vec<f32> = probe_ids.iter().map(|&i| row[i as usize]).collect();
        check_close(&format!("{what} pos {p} probes"), &probe, &g.probe, ATOL, 0.0).unwrap();
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        assert!((lse - g.logsumexp).abs() < ATOL as f64, "{what} pos {p}: logsumexp {lse} vs {}", g.logsumexp);
    }
}

fn full_logits(m: &mut CpuModel, tokens: &[u32], injections: Vec<tiller_core::Injection>) -> Vec<f32> {
    m.reset(1, tokens.len()).unwrap();
    let req =
        StepRequest { seqs: vec![SeqStep { slot: 0, tokens: tokens.to_vec() }], injections, captures: vec![], logits: LogitRows::All };
    block_on(m.step(&req)).unwrap().logits
}

#[test]
fn tokenizer_matches_hugging_face() {
    for name in MODELS {
        let f = load_fixture(name);
        let (_, tok) = model(&f);
        for p in &f.golden.prompts {
            assert_eq!(steer::encode_with_bos(&tok, &p.prompt, p.bos).unwrap(), p.tokens, "{name}: {:?}", p.prompt);
        }
        for s in &f.golden.steered {
            for (t, want) in s.terms.iter().zip(&s.term_tokens) {
                assert_eq!(&steer::encode_with_bos(&tok, &t.text, s.bos).unwrap(), want);
            }
        }
    }
}

#[test]
fn logits_at_every_position_match_hugging_face() {
    for name in MODELS {
        let f = load_fixture(name);
        let (mut m, _) = model(&f);
        let v = m.config().vocab_size;
        for p in &f.golden.prompts {
            let logits = full_logits(&mut m, &p.tokens, vec![]);
            check_positions(&format!("{name} {:?} bos={}", p.prompt, p.bos), &logits, v, &p.positions, &f.golden.probe_ids);
        }
    }
}

#[test]
fn residual_stream_before_each_block_matches_hidden_states() {
    for name in MODELS {
        let f = load_fixture(name);
        let (mut m, _) = model(&f);
        let p = &f.golden.prompts[1];
        for (layer, want) in p.resid_pre.iter().enumerate() {
            m.reset(1, p.tokens.len()).unwrap();
            let req = StepRequest {
                seqs: vec![SeqStep { slot: 0, tokens: p.tokens.clone() }],
                injections: vec![],
                captures: vec![Capture::all(layer, Site::ResidPre)],
                logits: LogitRows::None,
            };
            let got = block_on(m.step(&req)).unwrap().captured.swap_remove(0);
            let want: Vec<f32> = want.iter().flatten().copied().collect();
            check_close(&format!("{name} hidden_states[{layer}]"), &got, &want, ATOL, 1e-5).unwrap();
        }
    }
}

/// Prompt then one token at a time through the KV cache equals the full pass (rotary
/// positions included).
#[test]
fn kv_cache_decode_matches_full_pass() {
    for name in MODELS {
        let f = load_fixture(name);
        let (mut m, _) = model(&f);
        let v = m.config().vocab_size;
        let tokens = &f.golden.prompts[3].tokens; // "I went up to my friend and said", BOS
        let full = full_logits(&mut m, tokens, vec![]);
        m.reset(1, tokens.len()).unwrap();
        let split = 3;
        let step = |m: &mut CpuModel, t: &[u32]| {
            let req = StepRequest {
                seqs: vec![SeqStep { slot: 0, tokens: t.to_vec() }],
                injections: vec![],
                captures: vec![],
                logits: LogitRows::Last,
            };
            block_on(m.step(&req)).unwrap().logits
        };
        step(&mut m, &tokens[..split]);
        for (i, &t) in tokens.iter().enumerate().skip(split) {
            let got = step(&mut m, &[t]);
            check_close(&format!("{name} decode pos {i}"), &got, &full[i * v..(i + 1) * v], 1e-4, 1e-5).unwrap();
        }
    }
}

#[test]
fn steering_vectors_match_hugging_face() {
    for name in MODELS {
        let f = load_fixture(name);
        let (mut m, tok) = model(&f);
        for s in &f.golden.steered {
            let terms: Vec<Term> =
                s.terms.iter().map(|t| Term { layer: t.layer, coeff: t.coeff, text: t.text.clone(), head: None }).collect();
            let got = block_on(steer::steering_vectors(&mut m, &tok, &terms, s.bos, site(s))).unwrap();
            assert_eq!(got.len(), s.vectors.len());
            for (g, w) in got.iter().zip(&s.vectors) {
                assert_eq!(g.layer, w.layer);
                let want: Vec<f32> = w.rows.iter().flatten().copied().collect();
                check_close(&format!("{name} {:?} {} layer {}", s.prompt, s.site, g.layer), &g.rows, &want, 1e-3, 1e-4).unwrap();
            }
        }
    }
}

#[test]
fn steered_logits_match_hugging_face() {
    for name in MODELS {
        let f = load_fixture(name);
        let (mut m, tok) = model(&f);
        let v = m.config().vocab_size;
        for s in &f.golden.steered {
            let terms: Vec<Term> =
                s.terms.iter().map(|t| Term { layer: t.layer, coeff: t.coeff, text: t.text.clone(), head: None }).collect();
            let vectors = block_on(steer::steering_vectors(&mut m, &tok, &terms, s.bos, site(s))).unwrap();
            let spans = [RowSpan { start: 0, len: s.tokens.len(), steered: true }];
            let inj = steer::injections(&vectors, site(s), Positions::Front, &spans);
            let logits = full_logits(&mut m, &s.tokens, inj);
            check_positions(&format!("{name} steered {:?} at {}", s.prompt, s.site), &logits, v, &s.positions, &f.golden.probe_ids);
        }
    }
}

fn greedy_recipe(prompt: &str, bos: bool, terms: Vec<Term>, max: usize) -> Recipe {
    Recipe {
        prompt: prompt.to_string(),
        terms,
        bos,
        site: Site::ResidPre,
        sampling: Sampling { greedy: true, freq_penalty: 0.0, ..Sampling::default() },
        n: 1,
        max_new_tokens: max,
        ..Recipe::default()
    }
}

#[test]
fn greedy_continuations_match_hugging_face() {
    for name in MODELS {
        let f = load_fixture(name);
        let (mut m, tok) = model(&f);
        for p in &f.golden.prompts {
            let r = greedy_recipe(&p.prompt, p.bos, vec![], p.greedy.len());
            let g = block_on(generate(&mut m, &tok, &r, |_| Flow::Continue)).unwrap();
            assert_eq!(g.unsteered[0].tokens, p.greedy, "{name} {:?}", p.prompt);
        }
        for s in &f.golden.steered {
            let terms = s.terms.iter().map(|t| Term { layer: t.layer, coeff: t.coeff, text: t.text.clone(), head: None }).collect();
            let r = Recipe { site: site(s), ..greedy_recipe(&s.prompt, s.bos, terms, s.greedy.len()) };
            let g = block_on(generate(&mut m, &tok, &r, |_| Flow::Continue)).unwrap();
            assert_eq!(g.steered[0].tokens, s.greedy, "{name} steered {:?}", s.prompt);
            assert_eq!(g.unsteered[0].tokens, s.greedy_unsteered, "{name} unsteered {:?}", s.prompt);
        }
    }
}

/// BOS and padding come from the tokenizer (Llama 3: `<|begin_of_text|>` 128000, padding 220).
#[test]
fn bos_and_padding_tokens_match_the_fixture() {
    for name in MODELS {
        let f = load_fixture(name);
        let (m, tok) = model(&f);
        if let Some(bos) = f.golden.bos_id {
            assert_eq!(tok.bos_id().unwrap(), bos, "{name}: BOS");
        }
        if let Some(pad) = f.golden.pad_id {
            assert_eq!(tok.pad_id(), pad, "{name}: padding");
        }
        let _ = m;
    }
}

/// The chat template renders as `apply_chat_template(..., add_generation_prompt=True)` does, and
/// greedy decoding from it matches.
#[test]
fn chat_template_matches_hugging_face() {
    for name in MODELS {
        let f = load_fixture(name);
        if f.golden.chat.is_empty() {
            continue;
        }
        let (mut m, tok) = model(&f);
        for c in &f.golden.chat {
            let recipe = Recipe {
                chat: true,
                system: c.system.clone().unwrap_or_default(),
                ..greedy_recipe(&c.prompt, false, vec![], c.greedy.len())
            };
            assert_eq!(steer::prompt_text(&tok, &recipe).unwrap(), c.text, "{name}: rendered {:?}", c.prompt);
            assert_eq!(steer::prompt_tokens(&tok, &recipe, 4096).unwrap(), c.tokens, "{name}: tokens of {:?}", c.prompt);
            let g = block_on(generate(&mut m, &tok, &recipe, |_| Flow::Continue)).unwrap();
            assert_eq!(g.unsteered[0].tokens, c.greedy, "{name}: greedy after {:?}", c.prompt);
        }
    }
}
