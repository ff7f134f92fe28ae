//! Layer × coefficient sweeps against an independent reimplementation from CpuModel logits.

use pollster::block_on;
use tiller_core::generate::Flow;
use tiller_core::golden::load_fixture;
use tiller_core::steer::{self, RowSpan};
use tiller_core::sweep::{sweep, to_csv, to_csv_with_terms, EvalSet, SweepRow, SweepSpec};
use tiller_core::{Backend, CpuModel, CpuWeights, LogitRows, Positions, SeqStep, Site, StepRequest, Term, TillerError, Tokenizer};

fn model(name: &str) -> (CpuModel, Tokenizer) {
    let f = load_fixture(name);
    let w = CpuWeights::from_bytes(&f.safetensors, f.config_json.as_deref()).expect("fixture loads");
    (CpuModel::new(w), Tokenizer::from_bytes(&f.tokenizer_json).expect("tokenizer loads"))
}

fn terms() -> Vec<Term> {
    vec![
        Term { layer: 0, coeff: 1.0, text: "I talk about weddings".into(), head: None },
        Term { layer: 0, coeff: -1.0, text: "I do not talk about weddings".into(), head: None },
    ]
}

fn sets() -> Vec<EvalSet> {
    vec![
        EvalSet {
            name: "weddings".into(),
            texts: vec![
                "I went to my friend's wedding last weekend and the bride was lovely".into(),
                "Short".into(), // not past the steering text: skipped
                "The ceremony was held in a small church near the sea, and we danced all night".into(),
            ],
        },
        EvalSet { name: "dragons".into(), texts: vec!["Dragons are large reptiles that breathe fire and hoard gold in caves".into()] },
    ]
}

fn spec(layers: Vec<usize>, coeffs: Vec<f32>, bos: bool) -> SweepSpec {
    SweepSpec { terms: terms(), bos, site: Site::ResidPre, layers, coeffs, sets: sets() }
}

fn run(m: &mut CpuModel, tok: &Tokenizer, s: &SweepSpec) -> Vec<SweepRow> {
    block_on(sweep(m, tok, s, |_, _| Flow::Continue)).unwrap()
}

/// Logits at every position of one text, run alone, with `terms` (coefficients × k) ActAdd'ed.
fn logits(m: &mut CpuModel, tok: &Tokenizer, tokens: &[u32], layer: usize, k: f32, bos: bool) -> Vec<f32> {
    let terms: Vec<Term> = terms().into_iter().map(|t| Term { layer, coeff: t.coeff * k, ..t }).collect();
    let vectors = block_on(steer::steering_vectors(m, tok, &terms, bos, Site::ResidPre)).unwrap();
    m.reset(1, tokens.len()).unwrap();
    let spans = [RowSpan { start: 0, len: tokens.len(), steered: true }];
    let req = StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: tokens.to_vec() }],
        injections: if k == 0.0 { vec![] } else { steer::injections(&vectors, Site::ResidPre, Positions::Front, &spans) },
        captures: vec![],
        logits: LogitRows::All,
    };
    block_on(m.step(&req)).unwrap().logits
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
    let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// (ppl ratio, KL, loss steered, loss unsteered, predictions, texts) of one set, from scratch.
fn reference(m: &mut CpuModel, tok: &Tokenizer, set: &EvalSet, layer: usize, k: f32, bos: bool) -> (f64, f64, f64, f64, usize, usize) {
    let v = m.config().vocab_size;
    let n = steer::encode_with_bos(tok, "I do not talk about weddings", bos).unwrap().len(); // the longest term
    let (mut ls, mut lu, mut kl, mut count, mut texts) = (0.0f64, 0.0f64, 0.0f64, 0usize, 0usize);
    for text in &set.texts {
        let tokens = steer::encode_with_bos(tok, text, bos).unwrap();
        if tokens.len() <= n {
            continue;
        }
        texts += 1;
        let steered = logits(m, tok, &tokens, layer, k, bos);
        let plain = logits(m, tok, &tokens, layer, 0.0, bos);
        // Row p predicts token p + 1; count the predictions of tokens at positions >= n.
        for (target_pos, &t) in tokens.iter().enumerate().skip(n) {
            let p = target_pos - 1;
            let s = log_softmax(&steered[p * v..(p + 1) * v]);
            let u = log_softmax(&plain[p * v..(p + 1) * v]);
            let t = t as usize;
            ls -= s[t];
            lu -= u[t];
            kl += s.iter().zip(&u).map(|(a, b)| a.exp() * (a - b)).sum::<f64>();
            count += 1;
        }
    }
    let (ls, lu) = (ls / count as f64, lu / count as f64);
    ((ls - lu).exp(), kl / count as f64, ls, lu, count, texts)
}

fn close(what: &str, got: f64, want: f64, rel: f64) {
    assert!((got - want).abs() <= rel * want.abs().max(1e-3), "{what}: {got} vs reference {want}");
}

#[test]
fn coefficient_zero_gives_ratio_one_and_no_kl() {
    let (mut m, tok) = model("tiny-gpt2");
    let rows = run(&mut m, &tok, &spec(vec![0, 1, 2, 3], vec![0.0, -0.0, 3.0], false));
    assert_eq!(rows.len(), 4 * 3 * 2, "layers × coefficients × sets");
    for r in rows.iter().filter(|r| r.coeff == 0.0) {
        assert_eq!(r.ppl_ratio, 1.0, "{r:?}");
        assert_eq!(r.kl, 0.0, "{r:?}");
        assert_eq!(r.loss_steered, r.loss_unsteered, "{r:?}");
    }
    for r in rows.iter().filter(|r| r.coeff == 3.0) {
        assert!(r.kl > 0.0 && r.ppl_ratio != 1.0, "{r:?}");
    }
    // Rows come layer by layer, coefficient by coefficient, set by set.
    let order: Vec<(usize, String)> = rows.iter().map(|r| (r.layer, r.set.clone())).collect();
    assert_eq!(order[0], (0, "weddings".into()));
    assert_eq!(order[1], (0, "dragons".into()));
    assert_eq!(order[6].0, 1);
    let csv = to_csv(&rows);
    assert_eq!(csv.lines().count(), 1 + rows.len());
    assert!(csv.lines().nth(1).unwrap().starts_with("weddings,0,0,1.000000,0.000000,"), "{csv}");
    // The page's CSV names the multiplier and says what each term was given.
    let page = to_csv_with_terms(&rows, &terms());
    let lines: Vec<&str> = page.lines().collect();
    assert_eq!(lines[0], "set,layer,multiplier,coefficients,ppl_ratio,kl,loss_steered,loss_unsteered,tokens,texts");
    assert!(
        lines[1].starts_with(r#"weddings,0,0,"+0 ""I talk about weddings""; +0 ""I do not talk about weddings""",1.000000,"#),
        "{page}"
    );
    let three = lines.iter().find(|l| l.starts_with("weddings,0,3,")).unwrap();
    assert!(three.contains(r#","+3 ""I talk about weddings""; -3 ""I do not talk about weddings""","#), "{three}");
    assert_eq!(
        &three[three.rfind("\",").unwrap() + 2..],
        &csv.lines().find(|l| l.starts_with("weddings,0,3,")).unwrap()["weddings,0,3,".len()..]
    );
}

#[test]
fn ratio_and_kl_match_an_independent_reimplementation() {
    for (name, bos, layers) in [("tiny-gpt2", false, vec![1, 3]), ("tiny-gpt2-f32", true, vec![0, 2])] {
        let (mut m, tok) = model(name);
        let coeffs = vec![0.5f32, -2.0, 4.0];
        let rows = run(&mut m, &tok, &spec(layers.clone(), coeffs.clone(), bos));
        assert_eq!(rows.len(), layers.len() * coeffs.len() * 2);
        for r in &rows {
            let set = sets().into_iter().find(|s| s.name == r.set).unwrap();
            let (ratio, kl, ls, lu, count, texts) = reference(&mut m, &tok, &set, r.layer, r.coeff, bos);
            let what = format!("{name} {} layer {} coeff {}", r.set, r.layer, r.coeff);
            assert_eq!((r.tokens, r.texts), (count, texts), "{what}: counted predictions and texts");
            close(&format!("{what} loss steered"), r.loss_steered, ls, 1e-6);
            close(&format!("{what} loss unsteered"), r.loss_unsteered, lu, 1e-6);
            close(&format!("{what} ppl ratio"), r.ppl_ratio, ratio, 1e-6);
            close(&format!("{what} KL"), r.kl, kl, 1e-6);
        }
        // The short text is skipped.
        assert!(rows.iter().filter(|r| r.set == "weddings").all(|r| r.texts == 2));
    }
}

#[test]
fn kl_grows_with_the_coefficient() {
    let (mut m, tok) = model("tiny-gpt2");
    for layer in [0, 2] {
        let coeffs = vec![0.0f32, 1.0, 2.0, 4.0, 8.0];
        let rows = run(&mut m, &tok, &spec(vec![layer], coeffs.clone(), false));
        for set in ["weddings", "dragons"] {
            let kls: Vec<f64> = rows.iter().filter(|r| r.set == set).map(|r| r.kl).collect();
            assert_eq!(kls.len(), coeffs.len());
            assert_eq!(kls[0], 0.0);
            assert!(kls.windows(2).all(|w| w[1] > w[0]), "layer {layer} {set}: KL over {coeffs:?} is {kls:?}");
        }
    }
}

#[test]
fn bad_sweeps_are_errors() {
    let (mut m, tok) = model("tiny-gpt2");
    let err = |m: &mut CpuModel, s: SweepSpec| block_on(sweep(m, &tok, &s, |_, _| Flow::Continue)).unwrap_err();
    let e = err(&mut m, spec(vec![4], vec![1.0], false));
    assert!(matches!(e, TillerError::Recipe(_)) && e.to_string().contains("layer 4 is out of range"), "{e}");
    let e = err(&mut m, spec(vec![0], vec![f32::NAN], false));
    assert!(e.to_string().contains("coefficient NaN"), "{e}");
    let e = err(&mut m, SweepSpec { terms: vec![], ..spec(vec![0], vec![1.0], false) });
    assert!(e.to_string().contains("at least one steering term"), "{e}");
    let e =
        err(&mut m, SweepSpec { sets: vec![EvalSet { name: "tiny".into(), texts: vec!["Hi".into()] }], ..spec(vec![0], vec![1.0], false) });
    assert!(e.to_string().contains("no text of set `tiny` is longer than the steering text"), "{e}");
}
