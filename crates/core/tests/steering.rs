//! ActAdd on the CPU reference: what a zero or cancelling steer does, how terms are padded and
//! BOS-prefixed, the prompt-length check, and seeded sampling.

use pollster::block_on;
/// GPT-2 tokenizer facts: `<|endoftext|>` (its BOS) and the single token of " " (ActAdd's padding).
const EOT_TOKEN: u32 = 50256;
const SPACE_TOKEN: u32 = 220;
use tiller_core::generate::{generate, Flow, Generation};
use tiller_core::golden::{load_fixture, GPT2_MODELS};
use tiller_core::steer::{self, LayerVector, RowSpan};
use tiller_core::{
    Backend, Capture, CpuModel, CpuWeights, LogitRows, Positions, Recipe, Sampling, SeqStep, Site, StepRequest, Term, TillerError,
    Tokenizer,
};

fn model(name: &str) -> (CpuModel, Tokenizer) {
    let f = load_fixture(name);
    let w = CpuWeights::from_bytes(&f.safetensors, f.config_json.as_deref()).expect("fixture loads");
    (CpuModel::new(w), Tokenizer::from_bytes(&f.tokenizer_json).expect("tokenizer loads"))
}

fn term(layer: usize, coeff: f32, text: &str) -> Term {
    Term { layer, coeff, text: text.to_string(), head: None }
}

fn vectors(m: &mut CpuModel, tok: &Tokenizer, terms: &[Term], bos: bool) -> Vec<LayerVector> {
    block_on(steer::steering_vectors(m, tok, terms, bos, Site::ResidPre)).unwrap()
}

/// Logits at every position of `tokens`, with `vectors` added ActAdd-style.
fn steered_logits(m: &mut CpuModel, tokens: &[u32], vectors: &[LayerVector]) -> Vec<f32> {
    m.reset(1, tokens.len()).unwrap();
    let spans = [RowSpan { start: 0, len: tokens.len(), steered: true }];
    let req = StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: tokens.to_vec() }],
        injections: steer::injections(vectors, Site::ResidPre, Positions::Front, &spans),
        captures: vec![],
        logits: LogitRows::All,
    };
    block_on(m.step(&req)).unwrap().logits
}

#[test]
fn coefficient_zero_is_the_unsteered_model_exactly() {
    for name in GPT2_MODELS {
        let (mut m, tok) = model(name);
        let prompt = steer::encode_with_bos(&tok, "I went up to my friend and said", true).unwrap();
        let plain = steered_logits(&mut m, &prompt, &[]);
        for layer in 0..m.config().n_layer {
            let v = vectors(&mut m, &tok, &[term(layer, 0.0, "Love"), term(layer, 0.0, "Hate")], true);
            assert!(v[0].rows.iter().all(|&x| x == 0.0), "{name}: zero coefficients give a zero tensor");
            let injected =
                steer::injections(&v, Site::ResidPre, Positions::Front, &[RowSpan { start: 0, len: prompt.len(), steered: true }]);
            assert_eq!(injected.len(), 1, "the zero tensor is still injected");
            let got = steered_logits(&mut m, &prompt, &v);
            assert!(got == plain, "{name} layer {layer}: coefficient 0 changed the logits");
        }
    }
}

#[test]
fn plus_and_minus_the_same_text_cancel() {
    for name in GPT2_MODELS {
        let (mut m, tok) = model(name);
        let prompt = steer::encode_with_bos(&tok, "Dragons are large and", false).unwrap();
        let plain = steered_logits(&mut m, &prompt, &[]);
        let v = vectors(&mut m, &tok, &[term(1, 7.5, "Anger"), term(1, -7.5, "Anger")], false);
        assert!(v[0].rows.iter().all(|x| x.abs() <= 1e-5), "{name}: the tensor is zero");
        let got = steered_logits(&mut m, &prompt, &v);
        for (i, (g, p)) in got.iter().zip(&plain).enumerate() {
            assert!((g - p).abs() <= 1e-5, "{name} logit {i}: {g} vs unsteered {p}");
        }
        // And a real steer does change them (the check above is not vacuous).
        let v = vectors(&mut m, &tok, &[term(1, 7.5, "Anger")], false);
        let got = steered_logits(&mut m, &prompt, &v);
        assert!(got.iter().zip(&plain).any(|(g, p)| (g - p).abs() > 1e-2), "{name}: +7.5 Anger changes the logits");
    }
}

#[test]
fn shorter_terms_are_padded_with_the_space_token() {
    let (mut m, tok) = model("tiny-gpt2");
    let long = "I talk about weddings constantly";
    let long_ids = tok.encode(long).unwrap();
    let short_ids = tok.encode("Love").unwrap();
    assert_eq!(long_ids.len(), 5);
    assert_eq!(short_ids.len(), 1);
    let terms = [term(2, 3.0, "Love"), term(2, -2.0, long), term(0, 1.0, "Hate")];
    let groups = steer::padded_terms(&tok, &terms, false).unwrap();
    assert_eq!(groups.iter().map(|g| g.0).collect::<Vec<_>>(), vec![0, 2], "layers ascending");
    let (_, g2) = &groups[1];
    assert_eq!(g2[0].1, [short_ids.clone(), vec![SPACE_TOKEN; 4]].concat());
    assert_eq!(g2[0].2, 1, "unpadded length");
    assert_eq!(g2[1].1, long_ids);
    assert_eq!(groups[0].1[0].1.len(), tok.encode("Hate").unwrap().len(), "padding is per layer");

    let v = vectors(&mut m, &tok, &terms, false);
    let v2 = v.iter().find(|v| v.layer == 2).unwrap();
    assert_eq!(v2.n, 5);
    assert_eq!(v2.term_tokens[0], [short_ids.clone(), vec![220; 4]].concat());
    assert_eq!(v2.unpadded_lens, vec![1, 5]);
    // The tensor is Σ coeff × activations of the padded texts, each run on its own.
    let c = m.config().n_embd;
    let capture = |m: &mut CpuModel, tokens: &[u32]| {
        m.reset(1, tokens.len()).unwrap();
        let req = StepRequest {
            seqs: vec![SeqStep { slot: 0, tokens: tokens.to_vec() }],
            injections: vec![],
            captures: vec![Capture::all(2, Site::ResidPre)],
            logits: LogitRows::None,
        };
        block_on(m.step(&req)).unwrap().captured.swap_remove(0)
    };
    let a = capture(&mut m, &v2.term_tokens[0]);
    let b = capture(&mut m, &long_ids);
    for i in 0..5 * c {
        let want = 3.0 * a[i] - 2.0 * b[i];
        assert!((v2.rows[i] - want).abs() <= 1e-4 * want.abs().max(1.0), "row element {i}: {} vs {want}", v2.rows[i]);
    }
    // `last` takes each term's own last real token: position 0 of "Love", 4 of the long one.
    for i in 0..c {
        let want = 3.0 * a[i] - 2.0 * b[4 * c + i];
        assert!((v2.last[i] - want).abs() <= 1e-4 * want.abs().max(1.0), "last {i}");
    }
    // An empty text is all padding.
    let g = steer::padded_terms(&tok, &[term(1, 1.0, " weddings"), term(1, -1.0, "")], false).unwrap();
    assert_eq!(g[0].1[1].1, vec![SPACE_TOKEN; g[0].1[0].1.len()]);
    assert_eq!(g[0].1[1].2, 0);
    // Only empty texts without BOS is an error that says what to do.
    let e = steer::padded_terms(&tok, &[term(1, 1.0, "")], false).unwrap_err();
    assert!(e.to_string().contains("all empty"), "{e}");
    assert_eq!(steer::padded_terms(&tok, &[term(1, 1.0, "")], true).unwrap()[0].1[0].1, vec![EOT_TOKEN]);
}

#[test]
fn bos_prepends_the_end_of_text_token() {
    let (mut m, tok) = model("tiny-gpt2");
    for text in ["Love", "I went up to my friend and said", " weddings"] {
        let plain = steer::encode_with_bos(&tok, text, false).unwrap();
        let with = steer::encode_with_bos(&tok, text, true).unwrap();
        assert_eq!(with[0], 50256);
        assert_eq!(&with[1..], plain.as_slice(), "{text:?}");
        assert_eq!(plain, tok.encode(text).unwrap());
    }
    let recipe = Recipe { prompt: "Dragons are".into(), bos: true, ..Recipe::default() };
    assert_eq!(steer::prompt_tokens(&tok, &recipe, 128).unwrap(), vec![50256, 6187, 34765, 389]);
    let v = vectors(&mut m, &tok, &[term(0, 1.0, "Anger"), term(0, -1.0, "Calm")], true);
    assert!(v[0].term_tokens.iter().all(|t| t[0] == 50256), "{:?}", v[0].term_tokens);
    // A BOS-only prompt is allowed; an empty one without BOS is not.
    let recipe = Recipe { prompt: String::new(), bos: true, ..Recipe::default() };
    assert_eq!(steer::prompt_tokens(&tok, &recipe, 128).unwrap(), vec![50256]);
    let recipe = Recipe { prompt: String::new(), bos: false, ..Recipe::default() };
    assert!(steer::prompt_tokens(&tok, &recipe, 128).unwrap_err().to_string().contains("the prompt is empty"));
}

fn sampled(m: &mut CpuModel, tok: &Tokenizer, prompt: &str, terms: Vec<Term>, seed: u64) -> Generation {
    let recipe = Recipe {
        prompt: prompt.into(),
        terms,
        sampling: Sampling { temperature: 1.0, top_p: 1.0, ..Sampling::default() },
        seed,
        n: 2,
        max_new_tokens: 12,
        ..Recipe::default()
    };
    block_on(generate(m, tok, &recipe, |_| Flow::Continue)).unwrap()
}

#[test]
fn a_steering_text_longer_than_the_prompt_is_an_error() {
    let (mut m, tok) = model("tiny-gpt2");
    let recipe = Recipe {
        prompt: "Hi there".into(),
        terms: vec![term(1, 4.0, "I talk about weddings constantly")],
        max_new_tokens: 3,
        n: 1,
        ..Recipe::default()
    };
    let e = block_on(generate(&mut m, &tok, &recipe, |_| Flow::Continue)).unwrap_err();
    assert!(matches!(e, TillerError::Recipe(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("the steering text at layer 1 is 5 tokens but the prompt is only 2"), "{msg}");
    assert!(msg.contains("shorten the steering text or lengthen the prompt"), "{msg}");
    // Exactly as long as the prompt is fine.
    let recipe = Recipe { prompt: "I talk about weddings often".into(), ..recipe };
    block_on(generate(&mut m, &tok, &recipe, |_| Flow::Continue)).unwrap();
    // Modes that add one vector per position do not need the prompt to be long enough.
    let v = vectors(&mut m, &tok, &[term(1, 4.0, "I talk about weddings constantly")], false);
    steer::check_fits(&v, 2, Positions::All).unwrap();
    steer::check_fits(&v, 2, Positions::Last).unwrap();
    assert!(steer::check_fits(&v, 4, Positions::Front).is_err());
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let (mut m, tok) = model("tiny-gpt2");
    let terms = || vec![term(1, 5.0, "Love"), term(1, -5.0, "Hate")];
    let a = sampled(&mut m, &tok, "I hate you because", terms(), 11);
    let b = sampled(&mut m, &tok, "I hate you because", terms(), 11);
    assert_eq!(a, b, "same seed, same completions");
    assert!(a.steered.iter().chain(&a.unsteered).all(|c| c.tokens.len() == 12));
    let c = sampled(&mut m, &tok, "I hate you because", terms(), 12);
    assert_ne!(a.unsteered[0].tokens, c.unsteered[0].tokens, "another seed draws other tokens");
    assert_ne!(a.steered[0].tokens, c.steered[0].tokens, "another seed draws other tokens");
    // Comparisons within a run draw from different streams.
    assert_ne!(a.unsteered[0].tokens, a.unsteered[1].tokens);
    // The unsteered side does not depend on the steering terms.
    let none = sampled(&mut m, &tok, "I hate you because", vec![], 11);
    assert_eq!(none.unsteered, a.unsteered);
    // Without steering, both sides are the same model with the same streams.
    assert_eq!(none.steered, none.unsteered);
}

/// With chat_terms, each steering text goes through the chat template as the prompt does: its
/// tokens are the rendered text's, and a pair's shared template tokens at the front give
/// exactly zero steering there (the same activations, +c and −c), so only the texts' own
/// tokens and what follows them steer. Without chat_terms the texts stay raw.
#[test]
fn templated_steering_texts_share_the_prompt_template_and_cancel_on_it() {
    let f = load_fixture("tiny-llama");
    let (mut m, tok) = f.cpu_model();
    assert!(tok.has_chat_template(), "tiny-llama ships a chat template");
    let recipe = Recipe {
        prompt: "Tell me about cats".into(),
        chat: true,
        system: "Be brief.".into(),
        chat_terms: true,
        terms: vec![term(1, 4.0, "Love"), term(1, -4.0, "Hate")],
        ..Recipe::default()
    };
    let enc = steer::TextEncoding::of_terms(&recipe);
    let love = enc.encode(&tok, "Love").unwrap();
    assert_eq!(love, tok.encode(&tok.render_chat(Some("Be brief."), "Love").unwrap()).unwrap());
    let hate = enc.encode(&tok, "Hate").unwrap();
    // The prompt, rendered the same way, starts with the same template tokens.
    let prompt = steer::prompt_tokens(&tok, &recipe, 1 << 20).unwrap();
    let shared = love.iter().zip(&hate).take_while(|(a, b)| a == b).count();
    assert!(shared > 3 && prompt[..shared] == love[..shared], "template prefix of {shared} tokens shared with the prompt");

    let v = block_on(steer::steering_vectors(&mut m, &tok, &recipe.terms, enc, Site::ResidPre)).unwrap();
    let c = m.config().n_embd;
    assert_eq!(v[0].term_tokens[0][..love.len()], love[..]);
    assert!(v[0].rows[..shared * c].iter().all(|&x| x == 0.0), "the shared template cancels exactly");
    assert!(v[0].rows[shared * c..].iter().any(|&x| x != 0.0), "the texts themselves steer");

    // Off (or chat off), the texts are raw: "Love" alone, BOS as the recipe says.
    let raw = steer::TextEncoding::of_terms(&Recipe { chat_terms: false, ..recipe.clone() });
    assert_eq!(raw.encode(&tok, "Love").unwrap(), steer::encode_with_bos(&tok, "Love", recipe.bos).unwrap());
    let no_chat = steer::TextEncoding::of_terms(&Recipe { chat: false, ..recipe.clone() });
    assert_eq!(no_chat.chat, None);

    // generate() builds its vectors the same way: its steered side is the one these vectors give.
    let r = Recipe { n: 1, max_new_tokens: 4, sampling: Sampling { greedy: true, ..Sampling::default() }, ..recipe.clone() };
    let whole = block_on(generate(&mut f.cpu_model().0, &tok, &r, |_| Flow::Continue)).unwrap();
    let mut m2 = f.cpu_model().0;
    let by_hand = block_on(tiller_core::generate::generate_with_vectors(&mut m2, &tok, &r, &prompt, &v, &mut |_| Flow::Continue)).unwrap();
    assert_eq!(whole.prompt_tokens, prompt);
    assert_eq!(whole.steered[0].tokens, by_hand.steered[0].tokens);
    assert_eq!(whole.unsteered[0].tokens, by_hand.unsteered[0].tokens);
}
