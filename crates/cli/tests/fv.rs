//! `tiller fv` against an independent Hugging Face implementation of function vectors
//! (tests/fixtures/make_fv_golden.py): every head's average indirect effect, the clean and
//! corrupted P(answer), and the vector of a given head list, on the CPU and the GPU engine.

mod common;

use common::{error_of, floats, gpu_available, json_of, model_dir, repo_file, runtime_dir};
use serde_json::Value;
use tiller_core::golden::fixtures_dir;

fn task() -> String {
    repo_file("datasets/icl/antonyms.jsonl")
}

fn golden() -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join("fv-golden.json")).expect("fv-golden.json");
    serde_json::from_str(&text).unwrap()
}

fn fv_args(case: &Value, device: &str) -> Vec<String> {
    let s = |k: &str| case[k].to_string().trim_matches('"').to_string();
    vec![
        "fv".into(),
        "--model".into(),
        model_dir(&s("model")),
        "--task".into(),
        task(),
        "--in-order".into(),
        "--shots".into(),
        s("shots"),
        "--prompts".into(),
        s("prompts"),
        "--heads".into(),
        s("heads_given"),
        if case["bos"].as_bool().unwrap() { "--bos" } else { "--no-bos" }.into(),
        "--device".into(),
        device.into(),
        "--eval-pairs".into(),
        "3".into(),
        "--completions".into(),
        "1".into(),
        "--max-new-tokens".into(),
        "2".into(),
        "--json".into(),
    ]
}

/// Compares one run with its golden case: AIE within `aie_tol` of the largest |AIE|, the
/// vector within `vec_tol` relative (of its largest entry), the probabilities within `p_tol`
/// relative.
fn check(case: &Value, got: &Value, aie_tol: f64, vec_tol: f64, p_tol: f64) {
    let name = format!("{} {}", case["model"], got["bos"]);
    assert_eq!(got["prompt_tokens"]["clean"][0], case["prompt_tokens"][0], "{name}: clean prompt tokens");
    assert_eq!(got["prompt_tokens"]["corrupted"][0], case["prompt_tokens"][1], "{name}: corrupted prompt tokens");
    assert_eq!(got["answers"], case["answers"], "{name}: answer tokens");
    let want_aie: Vec<f64> = case["aie"].as_array().unwrap().iter().flat_map(floats).collect();
    let heads = got["heads"].as_array().unwrap();
    assert_eq!(heads.len(), want_aie.len(), "{name}: every head is reported");
    let n_head = case["aie"][0].as_array().unwrap().len();
    let scale = want_aie.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "{name}: the golden AIE are not all zero");
    for (i, h) in heads.iter().enumerate() {
        assert_eq!((h["layer"].as_u64().unwrap() as usize, h["head"].as_u64().unwrap() as usize), (i / n_head, i % n_head));
        let err = (h["aie"].as_f64().unwrap() - want_aie[i]).abs();
        assert!(
            err <= aie_tol * scale,
            "{name}: head {}.{}: AIE {} vs {} (largest |AIE| {scale})",
            i / n_head,
            i % n_head,
            h["aie"],
            want_aie[i]
        );
    }
    for key in ["clean_prob", "corrupted_prob"] {
        let (g, w) = (got[key].as_f64().unwrap(), case[key].as_f64().unwrap());
        assert!((g - w).abs() <= p_tol * w.abs(), "{name}: {key} {g} vs {w}");
    }
    let (v, want) = (floats(&got["vector"]), floats(&case["vector"]));
    assert_eq!(v.len(), want.len(), "{name}: vector width");
    let vmax = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (i, (a, b)) in v.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= vec_tol * vmax, "{name}: vector[{i}] {a} vs {b} (largest {vmax})");
    }
    let norm = want.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((got["norm"].as_f64().unwrap() - norm).abs() <= vec_tol * norm, "{name}: norm");
    // The given heads made the vector; top_heads ranks by AIE.
    let given: Vec<String> = got["vector_heads"].as_array().unwrap().iter().map(|h| format!("{}.{}", h["layer"], h["head"])).collect();
    assert_eq!(given.join(","), case["heads_given"].as_str().unwrap(), "{name}: vector_heads");
    assert_eq!(got["top_heads"].as_array().unwrap().len(), 10.min(want_aie.len()), "{name}: ten top heads by default");
}

#[test]
fn fv_in_order_matches_hugging_face_on_the_cpu() {
    for case in golden()["cases"].as_array().unwrap() {
        let got = json_of(&fv_args(case, "cpu"));
        check(case, &got, 1e-3, 1e-4, 1e-3);
    }
}

#[test]
fn fv_in_order_matches_hugging_face_on_the_gpu() {
    if !gpu_available() {
        return;
    }
    for case in golden()["cases"].as_array().unwrap() {
        let got = json_of(&fv_args(case, "gpu"));
        check(case, &got, 5e-2, 3e-2, 5e-2);
    }
}

#[test]
fn fv_top_heads_rank_by_aie_and_the_saved_vector_steers_as_evaluated() {
    let dir = runtime_dir().join("fv-out");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("antonyms-fv.safetensors");
    let model = model_dir("tiny-qwen2");
    let mut args: Vec<String> = ["fv", "--model", &model, "--task", &task(), "--shots", "3", "--prompts", "3", "--seed", "5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(
        ["--top-heads", "4", "--layer", "1", "--device", "cpu", "--eval-pairs", "4", "--completions", "2", "--json"].map(String::from),
    );
    args.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
    let got = json_of(&args);
    // The top heads are the four of largest AIE, largest first, and make the vector.
    let mut heads: Vec<(f64, String)> =
        got["heads"].as_array().unwrap().iter().map(|h| (h["aie"].as_f64().unwrap(), format!("{}.{}", h["layer"], h["head"]))).collect();
    heads.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top: Vec<String> = got["top_heads"].as_array().unwrap().iter().map(|h| format!("{}.{}", h["layer"], h["head"])).collect();
    assert_eq!(top, heads.iter().take(4).map(|h| h.1.clone()).collect::<Vec<_>>());
    assert_eq!(got["vector_heads"], got["top_heads"]);
    // The same seed gives the same run.
    let again = json_of(&args);
    assert_eq!(again["vector"], got["vector"]);
    assert_eq!(again["heads"], got["heads"]);
    // The evaluation reports every layer; the steered completion's first token is the argmax of
    // `tiller logits` with the saved vector at layer 1, last position.
    let eval = &got["eval"];
    assert_eq!(eval["layers"].as_array().unwrap().len(), 3);
    assert_eq!(eval["pairs"], 4);
    assert_eq!(eval["layer"], 1);
    let c = &eval["completions"][0];
    let prompt = format!("Q: {}\nA:", c["input"].as_str().unwrap());
    let vector = format!("{}:1:1", out.to_str().unwrap());
    let logits = json_of(
        &[
            "logits",
            "--model",
            &model,
            "--prompt",
            &prompt,
            "--vector",
            &vector,
            "--positions",
            "last",
            "--device",
            "cpu",
            "--top",
            "1",
            "--json",
        ]
        .map(String::from),
    );
    let first = logits["top"][0]["token"].as_str();
    assert!(first.is_some_and(|t| c["steered"].as_str().unwrap().starts_with(t)), "steered completion {} vs logits {logits}", c["steered"]);
}

#[test]
fn fv_refuses_what_it_cannot_run() {
    let model = model_dir("tiny-gpt2");
    let base = |extra: &[&str]| {
        let mut a: Vec<String> = ["fv", "--model", &model, "--task", &task(), "--device", "cpu"].map(String::from).to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    assert!(error_of(&base(&["--in-order", "--shots", "10", "--prompts", "25"])).contains("take 275 pairs"));
    assert!(error_of(&base(&["--heads", "9.0"])).contains("layers 0..3"));
    assert!(error_of(&base(&["--shots", "1"])).contains("at least 2"));
    assert!(error_of(&base(&["--layer", "4"])).contains("out of range"));
    let bad = runtime_dir().join("bad-task.jsonl");
    std::fs::write(&bad, "{\"input\": \"a\", \"output\": \"b\"}\n{\"input\": \"c\"}\n").unwrap();
    let mut a = base(&[]);
    a[4] = bad.to_str().unwrap().to_string();
    assert!(error_of(&a).contains("line 2"));
}
