//! The R sweep's readings (`melbo::sweep`) against other routes through the golden models: the
//! perplexity against token-by-token decoding with the KV cache, the last-layer embedding of a
//! one-token completion through the head against the full pass's logits, and `judge` on
//! vectors whose answers are known.

use pollster::block_on;
use tiller_core::golden::load_fixture;
use tiller_core::melbo::sweep::{judge, read_completion};
use tiller_core::melbo::{Completions, MelboVector};
use tiller_core::{Backend, LogitRows, SeqStep, StepRequest};

const FAMILIES: [&str; 3] = ["tiny-gpt2", "tiny-llama", "tiny-neox"];

fn logsumexp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln()
}

fn step_last(m: &mut tiller_core::CpuModel, tokens: &[u32]) -> Vec<f32> {
    let req = StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: tokens.to_vec() }],
        injections: vec![],
        captures: vec![],
        logits: LogitRows::Last,
    };
    block_on(m.step(&req)).unwrap().logits
}

#[test]
fn perplexity_equals_token_by_token_decoding() {
    for name in FAMILIES {
        let f = load_fixture(name);
        let (mut m, tok) = f.cpu_model();
        let all = &f.golden.prompts[0].tokens;
        assert!(all.len() >= 5, "{name}: a golden prompt of 5 tokens or more");
        let (prompt, completion) = all.split_at(2);
        let r = block_on(read_completion(&mut m, &tok, prompt, completion)).unwrap();

        m.reset(1, all.len()).unwrap();
        let mut logits = step_last(&mut m, prompt);
        let mut nll = 0.0;
        for &t in completion {
            nll += logsumexp(&logits) - logits[t as usize] as f64;
            logits = step_last(&mut m, &[t]);
        }
        let want = (nll / completion.len() as f64).exp();
        let got = r.perplexity.unwrap();
        assert!((got - want).abs() <= 1e-4 * want, "{name}: perplexity {got} vs {want}");
        assert_eq!(r.text, tok.decode(completion).unwrap());
        assert_eq!(r.embedding.len(), m.config().n_embd);
    }
}

#[test]
fn the_embedding_is_the_last_blocks_output() {
    // For a one-token completion the embedding is that row's residual stream after the last
    // block: through the final norm and the head it gives the full pass's logits there.
    for name in FAMILIES {
        let f = load_fixture(name);
        let (mut m, tok) = f.cpu_model();
        let all = &f.golden.prompts[0].tokens[..4];
        let r = block_on(read_completion(&mut m, &tok, &all[..3], &all[3..])).unwrap();
        let row: Vec<f32> = r.embedding.iter().map(|&x| x as f32).collect();
        let through_head = block_on(m.unembed(&row, true)).unwrap();
        m.reset(1, all.len()).unwrap();
        let full = step_last(&mut m, all);
        let scale = full.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let worst = through_head.iter().zip(&full).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(worst <= 1e-4 * scale.max(1.0), "{name}: logits through the head differ by {worst} (scale {scale})");
    }
}

#[test]
fn judge_reads_identical_vectors_as_no_diversity_and_keeps_the_layout() {
    let f = load_fixture("tiny-gpt2");
    let (mut m, tok) = f.cpu_model();
    let c = m.config().n_embd;
    let prompts: Vec<Vec<u32>> = f.golden.prompts.iter().take(2).map(|p| p.tokens[..3].to_vec()).collect();
    let v = |seed: u32, r: f32| {
        let raw: Vec<f32> = (0..c).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect();
        let n = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
        MelboVector { vector: raw.iter().map(|x| x * r / n).collect(), objective: 1.0, grad: vec![], losses: vec![] }
    };
    let same = [v(1, 20.0), v(1, 20.0)];
    let p = block_on(judge(&mut m, &tok, &prompts, 20.0, &same, 1, 5)).unwrap();
    assert_eq!((p.completions.len(), p.completions[0].len(), p.unsteered.len()), (2, 2, 2));
    assert!(p.diversity.unwrap().abs() < 1e-9, "two identical vectors gave diversity {:?}", p.diversity);
    assert!(p.perplexity.unwrap() >= 1.0 && p.unsteered_perplexity.unwrap() >= 1.0);

    // Opposite vectors at a large R write different texts: diversity above 0, and the
    // unsteered completion is the one greedy decoding gives without a vector.
    let mut neg = v(1, 60.0);
    neg.vector.iter_mut().for_each(|x| *x = -*x);
    let p = block_on(judge(&mut m, &tok, &prompts, 60.0, &[v(1, 60.0), neg], 1, 5)).unwrap();
    assert!(p.completions[0][0].text != p.completions[1][0].text, "±θ at R 60 wrote the same text");
    assert!(p.diversity.is_some_and(|d| d > 0.0 && d <= 2.0), "diversity {:?}", p.diversity);
    assert_eq!(p.objectives, vec![1.0, 1.0]);
    assert!(block_on(judge(&mut m, &tok, &prompts, 1.0, &[], 1, 5)).is_err(), "judging no vectors");
}

/// The completions behind "Redo at c": greedy ignores the seed, a sampled row is reproducible
/// from its seed and changes with it, and at c = 0 the steered columns are the unsteered one
/// (the three share the seed, so a difference is the vector's).
#[test]
fn completions_share_their_seed_and_say_how_they_were_decoded() {
    use tiller_core::melbo::completions;
    use tiller_core::recipe::Sampling;
    let f = load_fixture("tiny-gpt2");
    let (mut m, tok) = f.cpu_model();
    let prompt = &f.golden.prompts[0].tokens[..3];
    let c = m.config().n_embd;
    let theta: Vec<f32> = (0..c).map(|i| ((i * 7919 % 13) as f32 - 6.0) * 0.5).collect();
    let sampled = Sampling { temperature: 1.0, top_p: 1.0, freq_penalty: 0.0, ..Sampling::default() };
    let run = |m: &mut tiller_core::CpuModel, coeff: f32, s: Sampling, seed: u64| {
        block_on(completions(m, &tok, prompt, &theta, 1, coeff, 8, s, seed)).unwrap()
    };

    let g0 = run(&mut m, 2.0, Sampling::greedy(), 0);
    let g1 = run(&mut m, 2.0, Sampling::greedy(), 77);
    assert_eq!(g0, Completions { decoding: "greedy".into(), ..g1.clone() }, "greedy does not depend on the seed");
    assert_eq!(g0.decoding, "greedy");
    assert_eq!(g0.coeff, 2.0);

    let a = run(&mut m, 2.0, sampled, 5);
    assert_eq!(a, run(&mut m, 2.0, sampled, 5), "the same seed draws the same tokens");
    assert_eq!(a.decoding, "sampled: temperature 1, top-p 1, top-k off, frequency penalty 0, seed 5");
    let texts: std::collections::BTreeSet<String> = (0..6).map(|seed| run(&mut m, 2.0, sampled, seed).unsteered).collect();
    assert!(texts.len() >= 2, "six seeds draw more than one unsteered completion: {texts:?}");

    let zero = run(&mut m, 0.0, sampled, 3);
    assert_eq!(zero.plus, zero.unsteered, "c = 0 steers nothing: the same seed gives the same text");
    assert_eq!(zero.minus, zero.unsteered);

    let bad = block_on(completions(&mut m, &tok, prompt, &theta, 1, 1.0, 8, Sampling { temperature: 0.0, ..sampled }, 0));
    assert!(bad.unwrap_err().to_string().contains("temperature 0 must be between 0 (exclusive) and 100"));
    let bad = block_on(completions(&mut m, &tok, prompt, &theta, 1, f32::NAN, 8, sampled, 0));
    assert!(bad.unwrap_err().to_string().contains("not a finite number"));
}
