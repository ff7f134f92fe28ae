//! CAA/PCA vectors and the A/B evaluation against one-sequence-at-a-time reimplementations
//! from CpuModel steps: the batching (many sequences per step, several steps, row maps) must
//! not change a number.

use pollster::block_on;
use tiller_core::contrast::{self, AbItem, Method, TokenChoice};
use tiller_core::generate::Flow;
use tiller_core::golden::load_fixture;
use tiller_core::pairs::{self, Pair};
use tiller_core::steer::TextEncoding;
use tiller_core::{Backend, Capture, CpuModel, Injection, LogitRows, SeqStep, Site, StepRequest, Tokenizer};

fn model(name: &str) -> (CpuModel, Tokenizer) {
    load_fixture(name).cpu_model()
}

/// The activation of one text at (layer, site), run alone.
fn alone(m: &mut CpuModel, tokens: &[u32], layer: usize, site: Site, token: TokenChoice) -> Vec<f64> {
    m.reset(1, tokens.len()).unwrap();
    let req = StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: tokens.to_vec() }],
        injections: Vec::new(),
        captures: vec![Capture::all(layer, site)],
        logits: LogitRows::None,
    };
    let act = block_on(m.step(&req)).unwrap().captured.swap_remove(0);
    let w = act.len() / tokens.len();
    let rows: Vec<&[f32]> = act.chunks_exact(w).collect();
    match token {
        TokenChoice::Last => rows.last().unwrap().iter().map(|&x| x as f64).collect(),
        TokenChoice::Mean => (0..w).map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / rows.len() as f64).collect(),
    }
}

fn many_pairs() -> Vec<Pair> {
    // 40 pairs of different lengths: 80 texts, more than one step holds.
    (0..40)
        .map(|i| Pair::Texts {
            positive: format!("I loved the film number {i}{}", " very much".repeat(i % 4)),
            negative: format!("I hated film {i}{}", ", truly".repeat(i % 3)),
        })
        .collect()
}

#[test]
fn batched_vectors_equal_texts_run_one_by_one() {
    for name in ["tiny-gpt2", "tiny-llama"] {
        let (mut m, tok) = model(name);
        let enc = TextEncoding { bos: true, chat: None };
        let seqs: Vec<(Vec<u32>, Vec<u32>)> = many_pairs().iter().map(|p| p.tokens(&tok, &enc).unwrap()).collect();
        for (site, token) in [(Site::ResidPre, TokenChoice::Last), (Site::MlpOut, TokenChoice::Mean)] {
            let diffs: Vec<Vec<f64>> = seqs
                .iter()
                .map(|(p, n)| {
                    let (a, b) = (alone(&mut m, p, 2, site, token), alone(&mut m, n, 2, site, token));
                    a.iter().zip(&b).map(|(x, y)| x - y).collect()
                })
                .collect();
            for method in Method::ALL {
                let mut calls = 0;
                let got = block_on(contrast::contrast_vector(&mut m, &seqs, 2, site, method, token, &mut |done, total| {
                    calls += 1;
                    assert!(done <= total);
                    Flow::Continue
                }))
                .unwrap()
                .unwrap();
                assert!(calls >= 3, "80 texts take several steps");
                let want = contrast::from_diffs(&diffs, method).unwrap().vector;
                let scale = want.iter().fold(0f64, |a, x| a.max(x.abs()));
                for (g, w) in got.vector.iter().zip(&want) {
                    assert!((*g as f64 - w).abs() <= 1e-5 * scale, "{name} {site:?} {method:?}: {g} vs {w}");
                }
                assert_eq!(got.n_pairs, 40);
            }
        }
        // Stop ends the run with nothing.
        let stopped =
            block_on(contrast::contrast_vector(&mut m, &seqs, 1, Site::ResidPre, Method::MeanDiff, TokenChoice::Last, &mut |_, _| {
                Flow::Stop
            }))
            .unwrap();
        assert!(stopped.is_none());
    }
}

#[test]
fn ab_evaluation_equals_items_run_one_by_one() {
    let (mut m, tok) = model("tiny-gpt2");
    let items: Vec<Pair> = (0..20)
        .map(|i| Pair::Choice {
            question: format!("Is {i} a nice number?\n(A) Yes\n(B) No"),
            matching: if i % 2 == 0 { "(A)".into() } else { "(B)".into() },
            not_matching: if i % 2 == 0 { "(B)".into() } else { "(A)".into() },
        })
        .collect();
    let ab = contrast::ab_items(&tok, &TextEncoding { bos: false, chat: None }, &items).unwrap();
    // The letter follows the shared " (" and the prompt is CAA's base form.
    let a = tok.encode(" (A)").unwrap();
    assert_eq!(ab[0].matching, a[a.len() - 2]);
    assert!(tok.decode(&ab[0].prompt).unwrap().starts_with("Input: Is 0 a nice number?"));
    let c = m.config().n_embd;
    let vectors: Vec<(usize, Vec<f32>)> =
        vec![(1, (0..c).map(|i| (i as f32 * 0.37).sin()).collect()), (3, (0..c).map(|i| (i as f32 * 0.11).cos()).collect())];
    let coeffs = [-3.0f32, 0.0, 2.5];
    let rows = block_on(contrast::eval_ab(&mut m, &ab, &vectors, Site::ResidPre, &coeffs, &mut |_, _| Flow::Continue)).unwrap().unwrap();
    assert_eq!(rows.len(), 6);
    let p_of = |m: &mut CpuModel, it: &AbItem, inj: Option<(usize, Vec<f32>)>| -> f64 {
        m.reset(1, it.prompt.len()).unwrap();
        let injections = inj.map(|(l, v)| vec![Injection::add(l, Site::ResidPre, v, vec![0; it.prompt.len()])]).unwrap_or_default();
        let req = StepRequest {
            seqs: vec![SeqStep { slot: 0, tokens: it.prompt.clone() }],
            injections,
            captures: Vec::new(),
            logits: LogitRows::Last,
        };
        let l = block_on(m.step(&req)).unwrap().logits;
        let (x, y) = (l[it.matching as usize] as f64, l[it.not_matching as usize] as f64);
        1.0 / (1.0 + (y - x).exp())
    };
    let unsteered: f64 = ab.iter().map(|it| p_of(&mut m, it, None)).sum::<f64>() / ab.len() as f64;
    for r in &rows {
        let v = &vectors.iter().find(|v| v.0 == r.layer).unwrap().1;
        let want: f64 = if r.coeff == 0.0 {
            unsteered
        } else {
            ab.iter().map(|it| p_of(&mut m, it, Some((r.layer, v.iter().map(|x| x * r.coeff).collect())))).sum::<f64>() / ab.len() as f64
        };
        assert!((r.p_matching - want).abs() < 1e-6, "layer {} coeff {}: {} vs {want}", r.layer, r.coeff, r.p_matching);
        assert!((r.p_matching_unsteered - unsteered).abs() < 1e-6);
    }
    // Text pairs are not A/B items.
    let err =
        contrast::ab_items(&tok, &TextEncoding::default(), &[Pair::Texts { positive: "a".into(), negative: "b".into() }]).unwrap_err();
    assert!(err.to_string().contains("needs multiple-choice items"));
}

#[test]
fn chat_items_go_through_the_template() {
    let (_, tok) = model("tiny-llama");
    let item = Pair::Choice { question: "Pick one\n(A) x\n(B) y".into(), matching: "(A)".into(), not_matching: "(B)".into() };
    let enc = TextEncoding { bos: true, chat: Some(String::new()) };
    let (pos, _) = item.tokens(&tok, &enc).unwrap();
    let rendered = tok.render_chat(None, "Pick one\n(A) x\n(B) y").unwrap();
    let mut want = tok.encode(&rendered).unwrap();
    want.extend(tok.encode("(A)").unwrap());
    assert_eq!(pos, want);
    assert_eq!(pairs::base_choice_prompt(" q "), "Input: q\nResponse:");
}

/// The residual norms a vector is read against: the median over positions (the first left out)
/// of ‖hidden_states[L]‖ as Hugging Face dumped them, for every family.
#[test]
fn residual_norms_are_medians_of_hugging_face_hidden_states() {
    for name in tiller_core::golden::MODELS {
        let f = load_fixture(name);
        let (mut m, _) = f.cpu_model();
        let p = &f.golden.prompts[1];
        assert!(p.tokens.len() >= 3, "{name}: a prompt of several tokens");
        let layers: Vec<usize> = (0..p.resid_pre.len()).rev().collect();
        let got = block_on(contrast::residual_norms(&mut m, &p.tokens, &layers)).unwrap();
        for (&layer, g) in layers.iter().zip(&got) {
            let mut norms: Vec<f64> =
                p.resid_pre[layer].iter().skip(1).map(|r| r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()).collect();
            norms.sort_by(f64::total_cmp);
            let n = norms.len();
            let want = if n % 2 == 1 { norms[n / 2] } else { (norms[n / 2 - 1] + norms[n / 2]) / 2.0 };
            assert!((g - want).abs() <= 1e-4 * want.max(1.0), "{name} layer {layer}: {g} vs {want}");
        }
        // One token: that token's norm; bad input is a sentence.
        let one = block_on(contrast::residual_norms(&mut m, &p.tokens[..1], &[0])).unwrap()[0];
        let want = p.resid_pre[0][0].iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((one - want).abs() <= 1e-4 * want.max(1.0), "{name}: one token {one} vs {want}");
        assert!(block_on(contrast::residual_norms(&mut m, &[], &[0])).unwrap_err().to_string().contains("no tokens"));
        let depth = m.config().n_layer;
        assert!(block_on(contrast::residual_norms(&mut m, &p.tokens, &[depth])).unwrap_err().to_string().contains("out of range"));
    }
}
