//! `tiller iti` against scikit-learn (tests/fixtures/make_iti_golden.py): every head's probe
//! accuracy on the validation split, and the top heads' mass-mean directions and σ, on HF's
//! captured activations; the shifts as per-head steering with completions side by side.

mod common;

use common::{floats, gpu_available, json_of, model_dir, repo_file, run, runtime_dir};
use serde_json::Value;
use tiller_core::golden::fixtures_dir;

fn data() -> String {
    repo_file("datasets/icl/statements.jsonl")
}

fn check_against_scikit_learn(device: &str) {
    let text = std::fs::read_to_string(fixtures_dir().join("iti-golden.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let k = golden["top_heads"].as_u64().unwrap().to_string();
    for case in golden["cases"].as_array().unwrap() {
        let name = case["model"].as_str().unwrap();
        let bos = if case["bos"].as_bool().unwrap() { "--bos" } else { "--no-bos" };
        let args: Vec<String> =
            ["iti", "--model", &model_dir(name), "--data", &data(), "--in-order", "--val", &case["val"].to_string(), bos]
                .iter()
                .map(|s| s.to_string())
                .chain(["--top-heads", &k, "--device", device, "--json"].map(String::from))
                .collect();
        let got = json_of(&args);
        let want: Vec<f64> = case["accuracy"].as_array().unwrap().iter().flat_map(floats).collect();
        let heads = got["heads"].as_array().unwrap();
        assert_eq!(heads.len(), want.len(), "{name}: every head");
        for (h, w) in heads.iter().zip(&want) {
            let a = h["accuracy"].as_f64().unwrap();
            assert!((a - w).abs() <= 1e-2, "{name}: head {}.{}: accuracy {a} vs scikit-learn's {w}", h["layer"], h["head"]);
        }
        for (g, w) in got["top_heads"].as_array().unwrap().iter().zip(case["top"].as_array().unwrap()) {
            assert_eq!((&g["layer"], &g["head"]), (&w["layer"], &w["head"]), "{name}: the top heads, in order");
            let (d, wd) = (floats(&g["direction"]), floats(&w["direction"]));
            let err = d.iter().zip(&wd).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-4, "{name}: direction off by {err}");
            let (s, ws) = (g["sigma"].as_f64().unwrap(), w["sigma"].as_f64().unwrap());
            assert!((s - ws).abs() <= 1e-4 * ws, "{name}: sigma {s} vs {ws}");
        }
        // The split is the file's last fraction.
        let val = got["split"]["val"].as_array().unwrap();
        assert_eq!(val.first().and_then(Value::as_u64), Some((120 - val.len()) as u64), "{name}: in order, the last statements");
    }
}

#[test]
fn iti_probes_match_scikit_learn_on_the_same_activations() {
    check_against_scikit_learn("cpu");
}

/// The GPU's activations (f16 weights, f32 arithmetic) give the same probes on these models.
#[test]
fn iti_probes_on_the_gpu_match_scikit_learn() {
    if gpu_available() {
        check_against_scikit_learn("gpu");
    }
}

#[test]
fn iti_shifts_steer_the_completions_and_the_activations_are_written() {
    let acts = runtime_dir().join("acts.safetensors");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["iti", "--model", &model_dir("tiny-llama"), "--data", &data(), "--top-heads", "3", "--device", "cpu"]
            .map(String::from)
            .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let got = json_of(&base(&[
        "--prompt",
        "The capital of France is",
        "--greedy",
        "--max-tokens",
        "6",
        "--alpha",
        "40",
        "--json",
        "--activations",
        acts.to_str().unwrap(),
    ]));
    let vectors = got["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v["head"].is_u64() && v["site"] == "z" && v["positions"] == "all" && v["coeff"] == 40.0));
    let g = &got["generation"];
    assert_ne!(g["steered"][0]["tokens"], g["unsteered"][0]["tokens"], "a shift of 40 σ on three heads changes the greedy completion");
    // α = 0 changes nothing.
    let zero = json_of(&base(&["--prompt", "The capital of France is", "--greedy", "--max-tokens", "6", "--alpha", "0", "--json"]));
    assert_eq!(zero["generation"]["steered"][0]["tokens"], zero["generation"]["unsteered"][0]["tokens"]);
    // The activations file: z [120, 4, 3, 16] and the labels.
    let bytes = std::fs::read(&acts).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["z"]["shape"], serde_json::json!([120, 4, 3, 16]));
    assert_eq!(header["label"]["shape"], serde_json::json!([120]));
    // Bad data is one line.
    let bad = runtime_dir().join("one-label.jsonl");
    std::fs::write(&bad, "{\"text\": \"a\", \"label\": true}\n{\"text\": \"b\", \"label\": true}\n").unwrap();
    let mut a = base(&[]);
    a[4] = bad.to_str().unwrap().to_string();
    let out = run(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("both labels") && err.trim_end().lines().count() == 1, "{err}");
}
