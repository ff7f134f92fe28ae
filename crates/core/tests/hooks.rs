//! The hook API on the CPU reference, for every family: several captures in one step with row
//! selectors and per-head slices, interventions that add, set or scale (whole sites or one
//! head of `z`), `fork_slot`, and the hook errors. The GPU engine is held to the same results
//! in `tiller-gpu`'s `forward.rs`.

use pollster::block_on;
use tiller_core::generate::{generate, Flow};
use tiller_core::golden::{load_fixture, MODELS};
use tiller_core::{
    Backend, Capture, CpuModel, Injection, LogitRows, Mode, Positions, Recipe, RowSelect, Sampling, SeqStep, Site, StepRequest, Term,
};

const NO: u32 = u32::MAX;

fn model(name: &str) -> CpuModel {
    load_fixture(name).cpu_model().0
}

/// Slot 1 gets 4 tokens, slot 0 gets 2: rows 0..4 are slot 1's, rows 4..6 slot 0's.
fn seqs() -> Vec<SeqStep> {
    vec![SeqStep { slot: 1, tokens: vec![5, 9, 2, 7] }, SeqStep { slot: 0, tokens: vec![3, 11] }]
}

fn run(m: &mut CpuModel, injections: Vec<Injection>, captures: Vec<Capture>, logits: LogitRows) -> (Vec<f32>, Vec<Vec<f32>>) {
    m.reset(2, 12).unwrap();
    let out = block_on(m.step(&StepRequest { seqs: seqs(), injections, captures, logits })).unwrap();
    (out.logits, out.captured)
}

fn rows(all: &[f32], picks: &[usize], width: usize) -> Vec<f32> {
    picks.iter().flat_map(|&r| &all[r * width..(r + 1) * width]).copied().collect()
}

fn cap(layer: usize, site: Site, head: Option<usize>, rows: RowSelect) -> Capture {
    Capture::rows(layer, site, head, rows)
}

#[test]
fn captures_select_rows_and_heads_of_the_full_activation() {
    for name in MODELS {
        let mut m = model(name);
        let s = *m.config();
        let (c, hd, z) = (s.n_embd, s.head_dim, s.q_width());
        let l = s.n_layer - 1;
        let h = s.n_head - 1;
        let captures = vec![
            Capture::all(1, Site::ResidPre),
            cap(1, Site::ResidPre, None, RowSelect::Last),
            cap(1, Site::ResidPre, None, RowSelect::Positions(vec![(0, 1), (1, 0), (0, 1)])),
            Capture::all(l, Site::Z),
            cap(l, Site::Z, Some(h), RowSelect::Last),
            Capture::all(0, Site::MlpOut),
        ];
        let (_, got) = run(&mut m, vec![], captures.clone(), LogitRows::Last);
        assert_eq!(got.len(), 6, "{name}: one output per capture");
        assert_eq!(got[0].len(), 6 * c);
        assert_eq!(got[1], rows(&got[0], &[3, 5], c), "{name}: Last is each sequence's last row, in sequence order");
        assert_eq!(got[2], rows(&got[0], &[5, 0, 5], c), "{name}: positions name (slot, position)");
        assert_eq!(got[3].len(), 6 * z);
        let head: Vec<f32> = [3, 5].iter().flat_map(|&r| &got[3][r * z + h * hd..r * z + (h + 1) * hd]).copied().collect();
        assert_eq!(got[4], head, "{name}: a head is its slice of z");
        // A capture-only step stops after its last capture and reads the same values.
        let (logits, early) = run(&mut m, vec![], captures, LogitRows::None);
        assert!(logits.is_empty());
        assert_eq!(early, got, "{name}: a capture-only step reads what a full one does");
    }
}

/// A projected capture is each selected row's (x · v, ‖x‖) of the plain capture, for whole
/// sites and one head's slice; a vector of the wrong width is refused with a sentence.
#[test]
fn projected_captures_are_dot_products_and_norms_of_the_rows() {
    for name in MODELS {
        let mut m = model(name);
        let s = *m.config();
        let (c, hd, z, h) = (s.n_embd, s.head_dim, s.q_width(), s.n_head - 1);
        let v: Vec<f32> = (0..c).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
        let vh: Vec<f32> = (0..hd).map(|i| 1.0 - i as f32 / hd as f32).collect();
        let picks = RowSelect::Positions(vec![(1, 3), (0, 1), (1, 0)]);
        let captures = vec![
            Capture::all(1, Site::ResidPre),
            Capture::project(1, Site::ResidPre, v.clone()),
            Capture::all(0, Site::Z),
            Capture { project: Some(vh.clone()), ..cap(0, Site::Z, Some(h), picks) },
        ];
        let (_, got) = run(&mut m, vec![], captures, LogitRows::None);
        let reduce = |x: &[f32], v: &[f32]| {
            let dot: f64 = x.iter().zip(v).map(|(&a, &b)| a as f64 * b as f64).sum();
            [dot as f32, x.iter().map(|&a| a as f64 * a as f64).sum::<f64>().sqrt() as f32]
        };
        let want: Vec<f32> = got[0].chunks_exact(c).flat_map(|x| reduce(x, &v)).collect();
        assert_eq!(got[1], want, "{name}: every row's (x · v, ‖x‖)");
        // (slot, position) (1, 3), (0, 1), (1, 0) are step rows 3, 5, 0.
        let want: Vec<f32> = [3usize, 5, 0].iter().flat_map(|&r| reduce(&got[2][r * z + h * hd..r * z + (h + 1) * hd], &vh)).collect();
        assert_eq!(got[3], want, "{name}: a head's slice, at chosen rows");
        let bad = block_on(m.step(&StepRequest {
            seqs: seqs(),
            injections: vec![],
            captures: vec![Capture::project(1, Site::ResidPre, vec![1.0; c + 1])],
            logits: LogitRows::None,
        }))
        .unwrap_err()
        .to_string();
        assert!(bad.contains(&format!("width {}", c + 1)) && bad.contains(&format!("whose width is {c}")), "{name}: {bad}");
    }
}

#[test]
fn set_and_scale_that_change_nothing_leave_the_logits_bit_identical() {
    for name in MODELS {
        let mut m = model(name);
        let s = *m.config();
        let (plain, acts) = run(&mut m, vec![], Site::ALL.iter().map(|&site| Capture::all(1, site)).collect(), LogitRows::All);
        let r = 6u32;
        for (i, site) in Site::ALL.into_iter().enumerate() {
            let w = site.width(&s);
            let ones = Injection { head: None, mode: Mode::Scale, ..Injection::add(1, site, vec![1.0; w], vec![0; r as usize]) };
            let same = Injection { mode: Mode::Set, ..Injection::add(1, site, acts[i].clone(), (0..r).collect()) };
            for inj in [ones, same] {
                let what = format!("{name} {:?} at {}", inj.mode, site.as_str());
                assert!(run(&mut m, vec![inj], vec![], LogitRows::All).0 == plain, "{what} changed the logits");
            }
        }
    }
}

#[test]
fn a_head_patch_changes_only_its_slice_and_only_mapped_rows() {
    for name in MODELS {
        let mut m = model(name);
        let s = *m.config();
        let (hd, z) = (s.head_dim, s.q_width());
        let (l, h) = (1, s.n_head - 1);
        let table: Vec<f32> = (0..2 * hd).map(|i| i as f32 * 0.25 - 1.0).collect();
        let row_map = vec![NO, 1, NO, NO, 0, NO];
        let (_, base) = run(&mut m, vec![], vec![Capture::all(l, Site::Z)], LogitRows::None);
        let set = Injection { head: Some(h), mode: Mode::Set, ..Injection::add(l, Site::Z, table.clone(), row_map.clone()) };
        let (_, got) = run(&mut m, vec![set.clone()], vec![Capture::all(l, Site::Z)], LogitRows::None);
        let (base, got) = (&base[0], &got[0]);
        for r in 0..6 {
            for j in 0..z {
                let want = match row_map[r] {
                    NO => base[r * z + j],
                    k if (h * hd..(h + 1) * hd).contains(&j) => table[k as usize * hd + j - h * hd],
                    _ => base[r * z + j],
                };
                assert_eq!(got[r * z + j], want, "{name}: row {r} channel {j}");
            }
        }
        // Interventions at one hook apply in order: set, then add on top; then scale by 0 is
        // the same as setting zeros.
        let add = Injection { head: Some(h), ..Injection::add(l, Site::Z, vec![0.5; hd], vec![0; 6]) };
        let (_, both) = run(&mut m, vec![set, add], vec![cap(l, Site::Z, Some(h), RowSelect::Positions(vec![(1, 1)]))], LogitRows::None);
        let want: Vec<f32> = table[hd..].iter().map(|v| v + 0.5).collect();
        assert_eq!(both[0], want, "{name}: set then add");
        let zero_set = Injection { head: Some(h), mode: Mode::Set, ..Injection::add(l, Site::Z, vec![0.0; hd], vec![0; 6]) };
        let zero_scale = Injection { head: Some(h), mode: Mode::Scale, ..Injection::add(l, Site::Z, vec![0.0; hd], vec![0; 6]) };
        let a = run(&mut m, vec![zero_set], vec![], LogitRows::All).0;
        let b = run(&mut m, vec![zero_scale], vec![], LogitRows::All).0;
        assert!(a == b, "{name}: scaling a head by 0 is ablating it");
        assert!(a != run(&mut m, vec![], vec![], LogitRows::All).0, "{name}: ablating a head changes the logits");
    }
}

#[test]
fn a_forked_slot_continues_like_its_source() {
    for name in MODELS {
        let mut m = model(name);
        let prompt = vec![4u32, 8, 15, 16, 23];
        // The whole text in one step...
        m.reset(1, 16).unwrap();
        let whole = StepRequest {
            seqs: vec![SeqStep { slot: 0, tokens: [prompt.clone(), vec![42]].concat() }],
            injections: vec![],
            captures: vec![],
            logits: LogitRows::Last,
        };
        let want = block_on(m.step(&whole)).unwrap().logits;
        // ...and the prompt once, forked over a slot that held something else, then one token each.
        m.reset(3, 16).unwrap();
        let fill = StepRequest {
            seqs: vec![SeqStep { slot: 0, tokens: prompt.clone() }, SeqStep { slot: 2, tokens: vec![1, 2, 3, 4, 5, 6, 7] }],
            injections: vec![],
            captures: vec![],
            logits: LogitRows::None,
        };
        block_on(m.step(&fill)).unwrap();
        m.fork_slot(0, 2).unwrap();
        m.fork_slot(0, 1).unwrap();
        assert_eq!((m.slot_len(1), m.slot_len(2)), (5, 5), "{name}: a fork copies the length");
        let next = StepRequest {
            seqs: (0..3).map(|slot| SeqStep { slot, tokens: vec![42] }).collect(),
            injections: vec![],
            captures: vec![],
            logits: LogitRows::Last,
        };
        let got = block_on(m.step(&next)).unwrap().logits;
        let v = want.len();
        for slot in 0..3 {
            let e = got[slot * v..(slot + 1) * v].iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(e < 1e-4, "{name}: slot {slot} after a fork is off by {e}");
        }
        assert!(m.fork_slot(0, 3).unwrap_err().to_string().contains("3 slots"), "{name}: a fork past the slots is refused");
    }
}

/// Side by side runs fork the prompt: comparison 0 of an n = 3 run is the run with n = 1.
#[test]
fn generation_with_forked_prompts_matches_a_single_comparison() {
    for name in ["tiny-gpt2", "tiny-llama"] {
        let f = load_fixture(name);
        let (mut m, tok) = f.cpu_model();
        let mut recipe = Recipe {
            prompt: "I think".into(),
            terms: vec![
                Term { layer: 1, coeff: 4.0, text: "Love".into(), head: None },
                Term { layer: 1, coeff: -4.0, text: "Hate".into(), head: None },
            ],
            sampling: Sampling { temperature: 1.0, top_p: 0.9, ..Sampling::default() },
            seed: 7,
            max_new_tokens: 6,
            positions: Positions::Front,
            n: 3,
            ..Recipe::default()
        };
        recipe.bos = true;
        let three = block_on(generate(&mut m, &tok, &recipe, |_| Flow::Continue)).unwrap();
        recipe.n = 1;
        let one = block_on(generate(&mut m, &tok, &recipe, |_| Flow::Continue)).unwrap();
        assert_eq!(three.unsteered[0], one.unsteered[0], "{name} unsteered");
        assert_eq!(three.steered[0], one.steered[0], "{name} steered");
        assert_ne!(three.unsteered[0].tokens, three.unsteered[1].tokens, "{name}: comparisons draw their own streams");
    }
}

#[test]
fn hooks_that_do_not_fit_the_step_are_refused_with_a_sentence() {
    let mut m = model("tiny-llama");
    let s = *m.config();
    m.reset(2, 12).unwrap();
    let req = |injections: Vec<Injection>, captures: Vec<Capture>| StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: vec![1, 2] }, SeqStep { slot: 1, tokens: vec![] }],
        injections,
        captures,
        logits: LogitRows::None,
    };
    let cases = [
        (req(vec![], vec![cap(0, Site::ResidPre, Some(0), RowSelect::All)]), "only addressed at site z"),
        (req(vec![], vec![cap(0, Site::Z, Some(s.n_head), RowSelect::All)]), "heads 0.."),
        (req(vec![], vec![cap(0, Site::Z, None, RowSelect::Positions(vec![(0, 2)]))]), "not a row of this step"),
        (req(vec![], vec![cap(0, Site::MlpOut, None, RowSelect::Last)]), "has no tokens"),
        (req(vec![], vec![Capture::all(s.n_layer, Site::Z)]), "layers 0.."),
        (req(vec![Injection { head: Some(0), ..Injection::add(0, Site::Z, vec![0.0; s.head_dim + 1], vec![0, 0]) }], vec![]), "row map"),
    ];
    for (r, says) in cases {
        let e = block_on(m.step(&r)).expect_err(says).to_string();
        assert!(e.contains(says), "{says}: {e}");
        assert_eq!(m.slot_len(0), 0, "{says}: the cache moved");
    }
}

/// Per-head steering: a term on every head of a layer, the same text and coefficient, adds
/// Δz · W_O to the attention's output, which is the attn_out term's Δ(z · W_O + b) where the
/// output projection has no bias (Llama, Qwen2): the completions and their probabilities agree.
#[test]
fn head_terms_on_every_head_are_the_attention_output_term_without_an_output_bias() {
    for name in ["tiny-llama", "tiny-qwen2"] {
        let f = load_fixture(name);
        let (mut m, tok) = f.cpu_model();
        let s = *m.config();
        let base = Recipe {
            prompt: "I went up to my friend and said".into(),
            sampling: Sampling { greedy: true, freq_penalty: 0.0, ..Sampling::default() },
            max_new_tokens: 5,
            positions: Positions::Front,
            n: 1,
            ..Recipe::default()
        };
        let pair = |head: Option<usize>| {
            [Term { layer: 1, coeff: 3.0, text: "Love".into(), head }, Term { layer: 1, coeff: -3.0, text: "Hate".into(), head }]
        };
        let per_head = Recipe { terms: (0..s.n_head).flat_map(|h| pair(Some(h))).collect(), ..base.clone() };
        let whole = Recipe { terms: pair(None).to_vec(), site: Site::AttnOut, ..base };
        let a = block_on(generate(&mut m, &tok, &per_head, |_| Flow::Continue)).unwrap();
        let b = block_on(generate(&mut m, &tok, &whole, |_| Flow::Continue)).unwrap();
        assert_eq!(a.steered[0].tokens, b.steered[0].tokens, "{name}: the same steered tokens");
        for (x, y) in a.steered[0].probs.iter().zip(&b.steered[0].probs) {
            assert!((x - y).abs() <= 1e-4, "{name}: probabilities {x} vs {y}");
        }
        assert_ne!(a.steered[0].tokens, a.unsteered[0].tokens, "{name}: the steering changes the completion");
        // One head alone changes less than all of them, and differently.
        let one = Recipe { terms: pair(Some(0)).to_vec(), ..per_head.clone() };
        let c = block_on(generate(&mut m, &tok, &one, |_| Flow::Continue)).unwrap();
        assert_ne!(c.steered[0].probs, a.steered[0].probs, "{name}: one head is not every head");
    }
}

/// A saved head-size vector on one head is the injection at that head, and the recipe's rules
/// name what is wrong with one that does not fit.
#[test]
fn head_vector_terms_add_at_their_head_and_are_checked() {
    use tiller_core::recipe::VectorTerm;
    let f = load_fixture("tiny-gpt2");
    let (mut m, tok) = f.cpu_model();
    let s = *m.config();
    let values: Vec<f32> = (0..s.head_dim).map(|i| ((i as f32) * 0.37).sin() * 2.0).collect();
    let term = VectorTerm::on_head("iti", 2, 1, 1.5, Positions::All, &values);
    assert_eq!(Term::parse("2.1:1.5:Love").unwrap(), Term { layer: 2, coeff: 1.5, text: "Love".into(), head: Some(1) });
    assert!(Term::parse("2.x:1:Love").is_err());
    let recipe = Recipe {
        prompt: "The cat".into(),
        vectors: vec![term.clone()],
        sampling: Sampling { greedy: true, freq_penalty: 0.0, ..Sampling::default() },
        max_new_tokens: 1,
        n: 1,
        ..Recipe::default()
    };
    let g = block_on(generate(&mut m, &tok, &recipe, |_| Flow::Continue)).unwrap();
    // By hand: the prompt with coeff × values added to head 1 of layer 2's z at every position.
    let prompt = g.prompt_tokens.clone();
    m.reset(1, prompt.len()).unwrap();
    let table: Vec<f32> = term.values.iter().map(|x| x * 1.5).collect();
    let inj = Injection { head: Some(1), ..Injection::add(2, Site::Z, table, vec![0; prompt.len()]) };
    let out = block_on(m.step(&StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: prompt }],
        injections: vec![inj],
        captures: vec![],
        logits: LogitRows::Last,
    }))
    .unwrap();
    let want = tiller_core::sample::argmax(&out.logits.iter().map(|&x| x as f64).collect::<Vec<_>>());
    assert_eq!(g.steered[0].tokens, vec![want]);
    let p = |x: f32| tiller_core::generate::token_probability(&out.logits, want) - x;
    assert!(p(g.steered[0].probs[0]).abs() < 1e-6);
    let bad = |v: VectorTerm| Recipe { vectors: vec![v], ..recipe.clone() }.validate(&s).unwrap_err().to_string();
    assert!(bad(VectorTerm { head: Some(s.n_head), ..term.clone() }).contains("out of range"));
    assert!(bad(VectorTerm { site: Site::ResidPre, ..term.clone() }).contains("its site is z"));
    assert!(bad(VectorTerm { values: vec![1.0; s.n_embd], ..term.clone() }).contains("a head's output is"));
    let json = serde_json::to_string(&recipe).unwrap();
    assert_eq!(serde_json::from_str::<Recipe>(&json).unwrap(), recipe, "a link carries the head");
}
