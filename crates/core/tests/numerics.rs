//! Values that are not finite during a run stop it with a sentence that says where they first
//! appeared, never a ranked NaN or a sweep row with KL 0 (issue 17). The model here is the tiny
//! GPT-2 with one weight of block 1's MLP output projection set to infinity after loading (the
//! loader refuses such a file; an overflow in a run looks the same from here).

use pollster::block_on;
use tiller_core::fv;
use tiller_core::generate::{generate, Flow};
use tiller_core::golden::load_fixture;
use tiller_core::sweep::{self, EvalSet, SweepSpec};
use tiller_core::weights::{Dtype, F32Sink, TensorSink, TensorView};
use tiller_core::{CpuModel, Recipe, Sampling, Site, Term, Tokenizer};

fn poisoned() -> (CpuModel, Tokenizer) {
    let f = load_fixture("tiny-gpt2");
    let w = f.cpu_weights();
    let spec = *w.spec();
    let mut sink = F32Sink::default();
    sink.begin(&spec).unwrap();
    let shapes: std::collections::HashMap<String, Vec<usize>> = tiller_core::arch::weights::engine_tensors(&spec).into_iter().collect();
    for (name, values) in w.tensors() {
        let mut values = values.clone();
        if name == "h.1.mlp.c_proj.weight" {
            values[0] = f32::INFINITY;
        }
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        sink.tensor(TensorView { name, shape: &shapes[name], dtype: Dtype::F32, bytes: &bytes }).unwrap();
    }
    let tok = f.tokenizer(&spec);
    (CpuModel::new(sink.into_weights().unwrap()), tok)
}

#[test]
fn a_run_with_an_overflow_stops_and_names_where_it_began() {
    let (mut m, tok) = poisoned();
    let recipe = Recipe {
        prompt: "I went up to my friend and said".into(),
        terms: vec![Term { layer: 2, coeff: 4.0, text: "Love".into(), head: None }],
        sampling: Sampling { greedy: true, freq_penalty: 0.0, ..Sampling::default() },
        max_new_tokens: 3,
        n: 1,
        ..Recipe::default()
    };
    let e = block_on(generate(&mut m, &tok, &recipe, |_| Flow::Continue)).unwrap_err().to_string();
    assert!(e.contains("NaN or infinity on the prompt, unsteered, first at layer 1's mlp_out"), "{e}");
    assert!(e.contains("lower the coefficients, or check the model file"), "{e}");
}

#[test]
fn a_sweep_over_an_overflow_is_an_error_not_a_kl_of_zero() {
    let (mut m, tok) = poisoned();
    let spec = SweepSpec {
        terms: vec![Term { layer: 0, coeff: 1.0, text: " weddings".into(), head: None }],
        layers: vec![0],
        coeffs: vec![0.0, 1.0],
        sets: vec![EvalSet { name: "a".into(), texts: vec!["I went to a wedding and danced all night".into()] }],
        site: Site::ResidPre,
        bos: false,
    };
    let e = block_on(sweep::sweep(&mut m, &tok, &spec, |_, _| Flow::Continue)).unwrap_err().to_string();
    assert!(e.contains("on an evaluation text, unsteered, first at layer 1's mlp_out"), "{e}");
}

#[test]
fn a_function_vector_over_an_overflow_is_an_error() {
    let (mut m, tok) = poisoned();
    let pairs: Vec<fv::IclPair> = (0..8).map(|i| fv::IclPair { input: format!("w{i}"), output: format!("o{i}") }).collect();
    let s = fv::FvSettings { shots: 2, prompts: 2, order: fv::Order::InOrder, eval_pairs: 0, ..fv::FvSettings::default() };
    let e = block_on(fv::run(&mut m, &tok, &pairs, &s, &mut |_, _, _| Flow::Continue)).unwrap_err().to_string();
    assert!(e.contains("NaN or infinity on a clean ICL prompt"), "{e}");
}
