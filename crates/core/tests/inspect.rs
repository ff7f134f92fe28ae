//! `inspect::token_changes` (what steering changed, decoded token by token side by side)
//! against two independent whole-sequence forward passes of the golden models, steered and
//! unsteered, for the Hugging Face steered goldens' terms and greedy completions.

use pollster::block_on;
use tiller_core::golden::load_fixture;
use tiller_core::inspect::token_changes;
use tiller_core::steer::steering_vectors;
use tiller_core::{Backend, Injection, LogitRows, Positions, SeqStep, Site, StepRequest, Term};

fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|x| x / z).collect()
}

#[test]
fn token_changes_equal_two_independent_forward_passes() {
    for name in ["tiny-gpt2", "tiny-llama", "tiny-neox"] {
        let f = load_fixture(name);
        let (mut m, tok) = f.cpu_model();
        let s = f.golden.steered.iter().find(|s| s.site == "resid_pre").expect("a resid_pre steered golden");
        let terms: Vec<Term> = s.terms.iter().map(|t| Term { layer: t.layer, coeff: t.coeff, text: t.text.clone(), head: None }).collect();
        let vectors = block_on(steering_vectors(&mut m, &tok, &terms, s.bos, Site::ResidPre)).unwrap();
        let (prompt, completion) = (&s.tokens, &s.greedy);
        assert!(completion.len() >= 3, "{name}: a completion of several tokens");
        let top = 4;
        let changes = block_on(token_changes(&mut m, prompt, completion, &vectors, Site::ResidPre, Positions::Front, top)).unwrap();
        assert_eq!(changes.len(), completion.len());

        // The whole sequence in one pass each: unsteered, and with the vectors' rows added at
        // the first n positions (ActAdd), written out here by hand.
        let seq: Vec<u32> = prompt.iter().chain(&completion[..completion.len() - 1]).copied().collect();
        let pass = |m: &mut tiller_core::CpuModel, injections: Vec<Injection>| {
            m.reset(1, seq.len()).unwrap();
            let req =
                StepRequest { seqs: vec![SeqStep { slot: 0, tokens: seq.clone() }], injections, captures: vec![], logits: LogitRows::All };
            block_on(m.step(&req)).unwrap().logits
        };
        let plain = pass(&mut m, vec![]);
        let injections = vectors
            .iter()
            .map(|v| {
                let map = (0..seq.len()).map(|p| if p < v.n { p as u32 } else { u32::MAX }).collect();
                Injection::add(v.layer, Site::ResidPre, v.rows.clone(), map)
            })
            .collect();
        let steered = pass(&mut m, injections);
        let vocab = m.config().vocab_size;
        for (k, ch) in changes.iter().enumerate() {
            let row = prompt.len() - 1 + k;
            let (ps, pu) = (softmax(&steered[row * vocab..(row + 1) * vocab]), softmax(&plain[row * vocab..(row + 1) * vocab]));
            let t = completion[k] as usize;
            assert_eq!(ch.token.id as usize, t);
            assert!((ch.token.p_steered as f64 - ps[t]).abs() < 1e-4, "{name} {k}: p_steered {} vs {}", ch.token.p_steered, ps[t]);
            assert!((ch.token.p_unsteered as f64 - pu[t]).abs() < 1e-4, "{name} {k}: p_unsteered");
            let kl: f64 = ps.iter().zip(&pu).filter(|(s, _)| **s > 0.0).map(|(s, u)| s * (s / u).ln()).sum();
            assert!((ch.kl - kl).abs() < 1e-4 * kl.max(1.0), "{name} {k}: KL {} vs {kl}", ch.kl);
            let mut delta: Vec<f64> = ps.iter().zip(&pu).map(|(s, u)| s - u).collect();
            for c in ch.rose.iter().chain(&ch.fell) {
                let d = (c.p_steered - c.p_unsteered) as f64;
                assert!((d - delta[c.id as usize]).abs() < 1e-4, "{name} {k}: token {} changed by {d} vs {}", c.id, delta[c.id as usize]);
            }
            delta.sort_by(f64::total_cmp);
            let rose: Vec<f64> = ch.rose.iter().map(|c| (c.p_steered - c.p_unsteered) as f64).collect();
            let fell: Vec<f64> = ch.fell.iter().map(|c| (c.p_steered - c.p_unsteered) as f64).collect();
            let want_rose: Vec<f64> = delta.iter().rev().take(top).copied().filter(|&d| d > 0.0).collect();
            let want_fell: Vec<f64> = delta.iter().take(top).copied().filter(|&d| d < 0.0).collect();
            assert_eq!(rose.len(), want_rose.len(), "{name} {k}: risen tokens");
            assert_eq!(fell.len(), want_fell.len(), "{name} {k}: fallen tokens");
            for (g, w) in rose.iter().zip(&want_rose).chain(fell.iter().zip(&want_fell)) {
                assert!((g - w).abs() < 1e-4, "{name} {k}: ranked change {g} vs {w}");
            }
        }
        // Bad input is a sentence.
        let past = vec![0u32; m.config().n_positions];
        let e = block_on(token_changes(&mut m, prompt, &past, &vectors, Site::ResidPre, Positions::Front, top)).unwrap_err();
        assert!(e.to_string().contains("past the model's context"), "{e}");
        let e = block_on(token_changes(&mut m, &[], completion, &[], Site::ResidPre, Positions::Front, top)).unwrap_err();
        assert!(e.to_string().contains("no tokens"), "{e}");
    }
}

/// `inspect::prompt_lens` against Hugging Face: the unsteered norms are ‖hidden_states[L]‖ at
/// every position, each layer's lens is the unembedding of HF's own last-position row (after
/// the final norm), and the output row is HF's logits, unsteered and steered.
#[test]
fn prompt_lens_matches_hidden_states_and_logits() {
    for name in ["tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-neox"] {
        let f = load_fixture(name);
        let (mut m, tok) = f.cpu_model();
        let s = f.golden.steered.iter().find(|s| s.site == "resid_pre").expect("a resid_pre steered golden");
        let p = f.golden.prompts.iter().max_by_key(|p| p.tokens.len()).unwrap();
        let terms: Vec<Term> = s.terms.iter().map(|t| Term { layer: t.layer, coeff: t.coeff, text: t.text.clone(), head: None }).collect();
        let vectors = block_on(steering_vectors(&mut m, &tok, &terms, s.bos, Site::ResidPre)).unwrap();
        let k = 5;
        let lens = |m: &mut tiller_core::CpuModel, tokens: &[u32], vectors: &[tiller_core::steer::LayerVector]| {
            block_on(tiller_core::inspect::prompt_lens(m, &tok, tokens, vectors, Site::ResidPre, Positions::Front, k)).unwrap()
        };
        let (layers, _) = lens(&mut m, &p.tokens, &[]);
        let n = m.config().n_layer;
        assert_eq!(layers.len(), n + 1, "{name}: every layer and the output");
        let t = p.tokens.len();
        for (l, layer) in layers[..n].iter().enumerate() {
            assert_eq!(layer.norms.len(), t);
            assert_eq!(layer.steered_norms.len(), t);
            for (pos, row) in p.resid_pre[l].iter().enumerate() {
                let want = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                assert!(
                    (layer.norms[pos] - want).abs() < 1e-4 * want.max(1.0),
                    "{name} layer {l} pos {pos}: {} vs {want}",
                    layer.norms[pos]
                );
            }
            let scores = block_on(m.unembed(&p.resid_pre[l][t - 1], true)).unwrap();
            assert_eq!(layer.top.len(), k);
            let best = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert!((layer.top[0].score - best).abs() < 1e-3 * best.abs().max(1.0), "{name} layer {l}: top score");
            for e in &layer.top {
                let want = scores[e.id as usize];
                assert!((e.score - want).abs() < 1e-3 * want.abs().max(1.0), "{name} layer {l}: token {} {} vs {want}", e.id, e.score);
            }
        }
        assert_eq!(layers[n - 1].norms, layers[n - 1].steered_norms, "{name}: no vectors, both slots alike");
        let (steered_layers, steering) = lens(&mut m, &s.tokens, &vectors);
        // Layers before the first steered one see the same residual in both slots.
        let first = vectors.iter().map(|v| v.layer).min().unwrap();
        assert_eq!(steered_layers[first.saturating_sub(1)].norms, steered_layers[first.saturating_sub(1)].steered_norms);
        assert!(steered_layers[n].top != steered_layers[n].steered_top, "{name}: steering shows in the output");
        // The output row is the model's logits.
        let check = |got: &[tiller_core::vocab::VocabEntry], want: &[tiller_core::golden::TopEntry], what: &str| {
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (g.score - w.logit).abs() < 2e-3 * w.logit.abs().max(1.0),
                    "{name} {what}: {} {} vs {} {}",
                    g.id,
                    g.score,
                    w.id,
                    w.logit
                );
            }
        };
        check(&layers[n].top, &p.positions[t - 1].top, "unsteered output");
        check(&steered_layers[n].steered_top, &s.positions[s.tokens.len() - 1].top, "steered output");
        assert_eq!(steering.len(), vectors.len());
        for (st, v) in steering.iter().zip(&vectors) {
            assert_eq!(st.layer, v.layer);
            assert_eq!(st.norms.len(), v.n);
            let scores = block_on(m.unembed(&v.last, true)).unwrap();
            for e in st.top.iter().chain(&st.bottom) {
                assert!((e.score - scores[e.id as usize]).abs() < 1e-4 * e.score.abs().max(1.0));
            }
        }
        let e = block_on(tiller_core::inspect::prompt_lens(&mut m, &tok, &[], &[], Site::ResidPre, Positions::Front, k)).unwrap_err();
        assert!(e.to_string().contains("no tokens"), "{e}");
    }
}
