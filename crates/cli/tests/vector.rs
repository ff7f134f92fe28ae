//! `tiller vector …` end to end: CAA/PCA vectors against Hugging Face `hidden_states` (the
//! golden fixtures' `resid_pre`), vector files, GGUF export, combinations, `--vector` steering,
//! the A/B evaluation, and `tiller inspect project` against `hidden_states · v`.

use std::path::{Path, PathBuf};

mod common;

use common::{gpu_available, run};
use serde_json::Value;
use tiller_core::golden::{check_close, fixtures_dir, load_fixture, PromptGolden};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tiller-vector-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn json_of(what: &str, args: &[String]) -> Value {
    let out = run(args);
    assert!(out.status.success(), "{what}: tiller {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn error_of(args: &[String]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "tiller {args:?} should have failed: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1, "one error line, got: {err}");
    err
}

fn model_dir(name: &str) -> String {
    fixtures_dir().join(name).to_str().unwrap().to_string()
}

/// The golden prompts of one BOS setting, by text.
fn prompt<'a>(prompts: &'a [PromptGolden], text: &str, bos: bool) -> &'a PromptGolden {
    prompts.iter().find(|p| p.prompt == text && p.bos == bos).unwrap_or_else(|| panic!("no golden prompt {text:?} bos {bos}"))
}

/// The pairs of golden prompts the tests build vectors from.
const PAIRS: [(&str, &str); 2] = [("Hello, my dog is cute", "I went up to my friend and said"), ("The Eiffel Tower is in", "a")];

fn write_pairs(dir: &Path) -> PathBuf {
    let path = dir.join("pairs.jsonl");
    let body: String = PAIRS.iter().map(|(p, n)| format!("{}\n", serde_json::json!({"positive": p, "negative": n}))).collect();
    std::fs::write(&path, body).unwrap();
    path
}

fn act(p: &PromptGolden, layer: usize, mean: bool) -> Vec<f64> {
    let rows = &p.resid_pre[layer];
    if mean {
        let c = rows[0].len();
        (0..c).map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / rows.len() as f64).collect()
    } else {
        rows.last().unwrap().iter().map(|&x| x as f64).collect()
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The three methods computed here from HF's hidden states, for two pairs (closed forms: the
/// centred differences are ±(d1 − d2)/2, so pca_diff is along d1 − d2; pca_center is the top
/// eigenvector of the 2×2 Gram matrix of d1, d2).
fn expected(prompts: &[PromptGolden], bos: bool, layer: usize, mean: bool, method: &str) -> Vec<f64> {
    let d: Vec<Vec<f64>> = PAIRS
        .iter()
        .map(|(p, n)| {
            let (a, b) = (act(prompt(prompts, p, bos), layer, mean), act(prompt(prompts, n, bos), layer, mean));
            a.iter().zip(&b).map(|(x, y)| x - y).collect()
        })
        .collect();
    let mu: Vec<f64> = d[0].iter().zip(&d[1]).map(|(a, b)| (a + b) / 2.0).collect();
    let dir: Vec<f64> = match method {
        "mean_diff" => return mu,
        "pca_diff" => d[0].iter().zip(&d[1]).map(|(a, b)| a - b).collect(),
        "pca_center" => {
            let g = |i: usize, j: usize| d[i].iter().zip(&d[j]).map(|(a, b)| a * b).sum::<f64>();
            let (a, b, c) = (g(0, 0), g(0, 1), g(1, 1));
            let lambda = (a + c) / 2.0 + (((a - c) / 2.0).powi(2) + b * b).sqrt();
            let (x, y) = if b.abs() > 1e-300 {
                (b, lambda - a)
            } else if a >= c {
                (1.0, 0.0)
            } else {
                (0.0, 1.0)
            };
            d[0].iter().zip(&d[1]).map(|(p, q)| x * p + y * q).collect()
        }
        _ => unreachable!(),
    };
    let sign = if dir.iter().zip(&mu).map(|(a, b)| a * b).sum::<f64>() < 0.0 { -1.0 } else { 1.0 };
    let scale = sign * norm(&mu) / norm(&dir);
    dir.iter().map(|x| x * scale).collect()
}

fn caa_case(device: &str, rtol: f32, combos: &[(&str, &str)]) {
    let dir = scratch(&format!("caa-{device}"));
    let pairs = write_pairs(&dir);
    for model in ["tiny-gpt2", "tiny-llama"] {
        let fixture = load_fixture(model);
        let prompts = &fixture.golden.prompts;
        let n_layer = prompts[0].resid_pre.len();
        for bos in [false, true] {
            for &(method, token) in combos {
                let args = strs(&[
                    "vector",
                    "caa",
                    "--model",
                    &model_dir(model),
                    "--pairs",
                    pairs.to_str().unwrap(),
                    "--layer",
                    &format!("0..{}", n_layer - 1),
                    "--method",
                    method,
                    "--token",
                    token,
                    if bos { "--bos" } else { "--no-bos" },
                    "--device",
                    device,
                    "--json",
                ]);
                let got = json_of("caa", &args);
                let got = got.as_array().expect("a list for several layers");
                assert_eq!(got.len(), n_layer);
                for (layer, obj) in got.iter().enumerate() {
                    let what = format!("{model} {device} bos={bos} {method} token={token} layer {layer}");
                    assert_eq!(obj["layer"], layer, "{what}");
                    assert_eq!(obj["site"], "resid_pre", "{what}");
                    assert_eq!(obj["method"], method, "{what}");
                    assert_eq!(obj["n_pairs"], PAIRS.len(), "{what}");
                    let v: Vec<f32> = serde_json::from_value(obj["vector"].clone()).unwrap();
                    let want: Vec<f32> = expected(prompts, bos, layer, token == "mean", method).iter().map(|&x| x as f32).collect();
                    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                    check_close(&what, &v, &want, rtol * scale, rtol).unwrap();
                    let n = obj["norm"].as_f64().unwrap();
                    let wn = norm(&want.iter().map(|&x| x as f64).collect::<Vec<_>>());
                    assert!((n - wn).abs() <= rtol as f64 * wn + 1e-9, "{what}: norm {n} vs {wn}");
                    // The activation norm is the mean over the four texts of ‖act‖.
                    let acts: Vec<f64> = PAIRS
                        .iter()
                        .flat_map(|(p, n)| [*p, *n])
                        .map(|t| norm(&act(prompt(prompts, t, bos), layer, token == "mean")))
                        .collect();
                    let want_an = acts.iter().sum::<f64>() / acts.len() as f64;
                    let an = obj["activation_norm"].as_f64().unwrap();
                    assert!((an - want_an).abs() <= rtol as f64 * want_an, "{what}: activation norm {an} vs {want_an}");
                }
            }
        }
    }
}

#[test]
fn caa_cpu_equals_hidden_states_mean_difference() {
    let combos = [("mean_diff", "last"), ("mean_diff", "mean"), ("pca_diff", "last"), ("pca_center", "last"), ("pca_center", "mean")];
    caa_case("cpu", 1e-4, &combos);
}

#[test]
fn caa_gpu_equals_hidden_states_mean_difference() {
    if !gpu_available() {
        return;
    }
    caa_case("gpu", 3e-2, &[("mean_diff", "last"), ("pca_center", "mean")]);
}

fn caa_to(dir: &Path, model: &str, layer: &str, out: &str, extra: &[&str]) -> Value {
    let pairs = write_pairs(dir);
    let mut args = strs(&[
        "vector",
        "caa",
        "--model",
        &model_dir(model),
        "--pairs",
        pairs.to_str().unwrap(),
        "--layer",
        layer,
        "--device",
        "cpu",
        "--json",
    ]);
    args.extend(strs(&["--out", dir.join(out).to_str().unwrap()]));
    args.extend(strs(extra));
    json_of("caa --out", &args)
}

#[test]
fn vector_files_export_to_gguf_with_llama_cpp_layers() {
    let dir = scratch("gguf");
    let saved = caa_to(&dir, "tiny-gpt2", "2..3", "v.safetensors", &["--name", "dogs"]);
    let by_layer: Vec<Vec<f32>> = saved.as_array().unwrap().iter().map(|o| serde_json::from_value(o["vector"].clone()).unwrap()).collect();
    let gguf = dir.join("v.gguf");
    let info = json_of(
        "export",
        &strs(&["vector", "export", dir.join("v.safetensors").to_str().unwrap(), "--out", gguf.to_str().unwrap(), "--json"]),
    );
    assert_eq!(info["name"], "dogs");
    let cv = tiller_core::gguf::read_control_vector(&std::fs::read(&gguf).unwrap()).unwrap();
    assert_eq!(cv.model_hint, "gpt2");
    assert_eq!(cv.directions.iter().map(|d| d.0).collect::<Vec<_>>(), vec![1, 2], "Tiller's layer L is direction.(L-1)");
    assert_eq!(cv.directions[0].1, by_layer[0]);
    assert_eq!(cv.directions[1].1, by_layer[1]);
    // caa --out FILE.gguf writes the same directions; import reads them back as layers 2 and 3.
    caa_to(&dir, "tiny-gpt2", "2..3", "direct.gguf", &[]);
    let direct = tiller_core::gguf::read_control_vector(&std::fs::read(dir.join("direct.gguf")).unwrap()).unwrap();
    assert_eq!(direct.directions, cv.directions);
    let back = dir.join("back.safetensors");
    let imported = json_of("import", &strs(&["vector", "import", gguf.to_str().unwrap(), "--out", back.to_str().unwrap(), "--json"]));
    assert_eq!(imported["layers"].as_array().unwrap().iter().map(|l| l["layer"].as_u64().unwrap()).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(imported["method"], "mean_diff");
    // Layers 0 and 1 have no llama.cpp counterpart, and say so before any work.
    let pairs = dir.join("pairs.jsonl");
    let err = error_of(&strs(&[
        "vector",
        "caa",
        "--model",
        &model_dir("tiny-gpt2"),
        "--pairs",
        pairs.to_str().unwrap(),
        "--layer",
        "1",
        "--device",
        "cpu",
        "--out",
        dir.join("low.gguf").to_str().unwrap(),
    ]));
    assert!(err.contains("layers 0 and 1 have none"), "{err}");
    assert!(!dir.join("low.gguf").exists());
}

#[test]
fn steering_with_a_saved_vector_equals_its_text_terms() {
    // One pair, mean_diff at the last token: act(positive) − act(negative), which is what the
    // text terms +c·positive, −c·negative add at every position (their last tokens' sum).
    let dir = scratch("steer");
    let pairs = dir.join("one.jsonl");
    std::fs::write(&pairs, "{\"positive\": \" Love\", \"negative\": \" Hate\"}\n").unwrap();
    for model in ["tiny-gpt2", "tiny-llama"] {
        let file = dir.join(format!("{model}.safetensors"));
        json_of(
            "caa",
            &strs(&[
                "vector",
                "caa",
                "--model",
                &model_dir(model),
                "--pairs",
                pairs.to_str().unwrap(),
                "--layer",
                "2",
                "--no-bos",
                "--device",
                "cpu",
                "--out",
                file.to_str().unwrap(),
                "--json",
            ]),
        );
        let base = strs(&[
            "logits",
            "--model",
            &model_dir(model),
            "--prompt",
            "I went up to my friend and said",
            "--no-bos",
            "--device",
            "cpu",
            "--json",
            "--top",
            "10",
        ]);
        let mut with_vector = base.clone();
        with_vector.extend(strs(&["--vector", &format!("{}:2:4", file.display())]));
        let mut with_terms = base.clone();
        with_terms.extend(strs(&["--add", "2:4: Love", "--add", "2:-4: Hate", "--positions", "all"]));
        let (a, b) = (json_of("vector", &with_vector), json_of("terms", &with_terms));
        let top = |v: &Value| -> Vec<(u64, f32)> {
            v["top"].as_array().unwrap().iter().map(|t| (t["id"].as_u64().unwrap(), t["logit"].as_f64().unwrap() as f32)).collect()
        };
        let (ta, tb) = (top(&a), top(&b));
        assert_eq!(ta.iter().map(|t| t.0).collect::<Vec<_>>(), tb.iter().map(|t| t.0).collect::<Vec<_>>(), "{model}");
        for (x, y) in ta.iter().zip(&tb) {
            assert!((x.1 - y.1).abs() <= 1e-4 * (1.0 + y.1.abs()), "{model}: {x:?} vs {y:?}");
        }
        let unsteered = json_of("base", &base);
        assert_ne!(top(&unsteered), ta, "{model}: the vector changes the logits");
        // A generate run with the vector is seeded and repeatable.
        let gen = strs(&[
            "generate",
            "--model",
            &model_dir(model),
            "--prompt",
            "Hello",
            "--no-bos",
            "--device",
            "cpu",
            "--n",
            "1",
            "--max-tokens",
            "4",
            "--json",
            "--greedy",
            "--vector",
            &format!("{}::4", file.display()),
        ]);
        let g = json_of("generate", &gen);
        assert_eq!(g["steered"][0]["tokens"].as_array().unwrap().len(), 4);
        assert_eq!(g["vectors"][0], format!("{}::4", file.display()));
    }
    // A vector of another width is refused with a sentence.
    let err = error_of(&strs(&[
        "logits",
        "--model",
        &model_dir("tiny-llama"),
        "--prompt",
        "a",
        "--device",
        "cpu",
        "--vector",
        &format!("{}:2:4", dir.join("tiny-gpt2.safetensors").display()),
    ]));
    assert!(err.contains("64 wide but this model's residual stream is 48"), "{err}");
    let err = error_of(&strs(&[
        "logits",
        "--model",
        &model_dir("tiny-gpt2"),
        "--prompt",
        "a",
        "--device",
        "cpu",
        "--vector",
        &format!("{}:3:4", dir.join("tiny-gpt2.safetensors").display()),
    ]));
    assert!(err.contains("has no layer 3; it has layers [2]"), "{err}");
}

#[test]
fn combine_is_the_formula_and_info_shows_cosines() {
    let dir = scratch("combine");
    let pairs = dir.join("p.jsonl");
    std::fs::write(&pairs, "{\"positive\": \"Love\", \"negative\": \"Hate\"}\n").unwrap();
    let pairs2 = dir.join("q.jsonl");
    std::fs::write(&pairs2, "{\"positive\": \"Paris\", \"negative\": \"London\"}\n").unwrap();
    let mut vecs = Vec::new();
    for (name, p) in [("a", &pairs), ("b", &pairs2)] {
        let out = dir.join(format!("{name}.safetensors"));
        let v = json_of(
            "caa",
            &strs(&[
                "vector",
                "caa",
                "--model",
                &model_dir("tiny-gpt2"),
                "--pairs",
                p.to_str().unwrap(),
                "--layer",
                "2",
                "--device",
                "cpu",
                "--out",
                out.to_str().unwrap(),
                "--json",
            ]),
        );
        vecs.push(serde_json::from_value::<Vec<f32>>(v["vector"].clone()).unwrap());
    }
    let out = dir.join("c.safetensors");
    let a = dir.join("a.safetensors");
    let b = dir.join("b.safetensors");
    let c = json_of(
        "combine",
        &strs(&[
            "vector",
            "combine",
            "--formula",
            "a - 0.5*b",
            "--vec",
            &format!("a={}", a.display()),
            "--vec",
            &format!("b={}", b.display()),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]),
    );
    assert_eq!(c["formula"], "a - 0.5*b");
    let entry = tiller_core::library::VectorEntry::from_safetensors(&std::fs::read(&out).unwrap(), "c").unwrap();
    let want: Vec<f32> = vecs[0].iter().zip(&vecs[1]).map(|(x, y)| (*x as f64 - 0.5 * *y as f64) as f32).collect();
    assert_eq!(entry.layers[0].vector, want);
    assert_eq!(entry.method, "combination");
    let info = json_of("info", &strs(&["vector", "info", a.to_str().unwrap(), b.to_str().unwrap(), out.to_str().unwrap(), "--json"]));
    let m = &info["cosine"][0]["matrix"];
    assert_eq!(m[0][0], 1.0);
    let cos_ab = tiller_core::library::cosine(&vecs[0], &vecs[1]);
    assert!((m[0][1].as_f64().unwrap() - cos_ab).abs() < 1e-12);
    let err = error_of(&strs(&[
        "vector",
        "combine",
        "--formula",
        "a + z",
        "--vec",
        &format!("a={}", a.display()),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("names `z` but no --vec z=FILE"), "{err}");
}

#[test]
fn datasets_report_bad_lines_and_eval_ab_measures_the_letter() {
    let dir = scratch("ab");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"positive\": \"a\", \"negative\": \"b\"}\n{\"positive\": \"c\"}\n").unwrap();
    let err = error_of(&strs(&[
        "vector",
        "caa",
        "--model",
        &model_dir("tiny-gpt2"),
        "--pairs",
        bad.to_str().unwrap(),
        "--layer",
        "1",
        "--device",
        "cpu",
    ]));
    assert!(err.contains("line 2: \"negative\" is missing"), "{err}");
    let items = dir.join("ab.jsonl");
    let body: String = (0..6)
        .map(|i| {
            let (m, n) = if i % 2 == 0 { ("(A)", "(B)") } else { ("(B)", "(A)") };
            format!(
                "{}\n",
                serde_json::json!({"question": format!("Question {i}: do you like it?\n\n(A) Yes\n(B) No"), "answer_matching_behavior": m, "answer_not_matching_behavior": n})
            )
        })
        .collect();
    std::fs::write(&items, body).unwrap();
    let file = dir.join("ab.safetensors");
    for model in ["tiny-gpt2", "tiny-llama"] {
        json_of(
            "caa",
            &strs(&[
                "vector",
                "caa",
                "--model",
                &model_dir(model),
                "--pairs",
                items.to_str().unwrap(),
                "--layer",
                "1..2",
                "--device",
                "cpu",
                "--held-out",
                "0.5",
                "--out",
                file.to_str().unwrap(),
                "--json",
            ]),
        );
        let rows = json_of(
            "eval-ab",
            &strs(&[
                "vector",
                "eval-ab",
                "--model",
                &model_dir(model),
                "--pairs",
                items.to_str().unwrap(),
                "--vector",
                file.to_str().unwrap(),
                "--coeffs",
                "-4,0,4",
                "--held-out",
                "0.5",
                "--device",
                "cpu",
                "--json",
            ]),
        );
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 6, "{model}: 2 layers × 3 coefficients");
        for r in rows {
            assert_eq!(r["items"], 3);
            let p = r["p_matching"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p));
            if r["coeff"] == 0.0 {
                assert_eq!(r["p_matching"], r["p_matching_unsteered"]);
            }
        }
        let csv = run(&strs(&[
            "vector",
            "eval-ab",
            "--model",
            &model_dir(model),
            "--pairs",
            items.to_str().unwrap(),
            "--vector",
            &format!("{}:2", file.display()),
            "--coeffs",
            "1",
            "--device",
            "cpu",
            "--csv",
        ]));
        let text = String::from_utf8(csv.stdout).unwrap();
        assert!(text.starts_with("layer,coeff,p_matching,p_matching_unsteered,p_letters,items\n2,1,"), "{text}");
    }
}

/// A CAA vector of tiny-gpt2 at layer 2, saved in a scratch directory `name`, and what
/// `tiller vector vocab --json` with `extra` prints for it.
fn saved_vector_vocab(name: &str, extra: &[&str]) -> (Vec<f32>, Value) {
    let dir = scratch(name);
    let saved = caa_to(&dir, "tiny-gpt2", "2", "v.safetensors", &[]);
    let v: Vec<f32> = serde_json::from_value(saved["vector"].clone()).unwrap();
    let (model, file) = (model_dir("tiny-gpt2"), dir.join("v.safetensors"));
    let mut args = strs(&["vector", "vocab", "--model", &model, "--vector", file.to_str().unwrap(), "--device", "cpu", "--json"]);
    args.extend(strs(extra));
    (v, json_of(name, &args))
}

#[test]
fn a_saved_vector_decodes_as_the_head_reads_it() {
    let (v, got) = saved_vector_vocab("vocab", &["--top", "5"]);
    // v · wteᵀ by hand from the weights.
    let f = load_fixture("tiny-gpt2");
    let w = f.cpu_weights();
    let wte = w.get("wte.weight");
    let scores: Vec<f64> = wte.chunks_exact(v.len()).map(|row| row.iter().zip(&v).map(|(a, b)| *a as f64 * *b as f64).sum()).collect();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let top = got["layers"][0]["top"].as_array().unwrap();
    for (k, t) in top.iter().enumerate() {
        assert_eq!(t["id"].as_u64().unwrap() as usize, order[k], "rank {k}");
        assert!((t["score"].as_f64().unwrap() - scores[order[k]]).abs() < 1e-3);
    }
    let bottom = got["layers"][0]["bottom"].as_array().unwrap();
    assert_eq!(bottom[0]["id"].as_u64().unwrap() as usize, *order.last().unwrap());
}

#[test]
fn vocab_with_a_prompt_measures_the_residual_stream_there() {
    let (v, got) = saved_vector_vocab("vocab-prompt", &["--prompt", "I went up to my friend and said"]);
    let layer = &got["layers"][0];
    let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    assert!((layer["norm"].as_f64().unwrap() - norm).abs() < 1e-6 * norm);
    // The same median the core computes from the model's own capture.
    let f = load_fixture("tiny-gpt2");
    let (mut m, tok) = f.cpu_model();
    let ids = tiller_core::steer::encode_with_bos(&tok, "I went up to my friend and said", false).unwrap();
    assert_eq!(got["prompt_tokens"].as_u64().unwrap() as usize, ids.len());
    let want = pollster::block_on(tiller_core::contrast::residual_norms(&mut m, &ids, &[2])).unwrap()[0];
    assert!((layer["residual_norm"].as_f64().unwrap() - want).abs() < 1e-9 * want, "{layer} vs {want}");
}

/// `tiller inspect project --json` against Hugging Face: at every token of every golden prompt,
/// `dot` is `hidden_states[L] · v` and `cosine` its cosine, for GPT-2 and Llama (CPU within
/// 1e-4, GPU within 3e-2 of ‖x‖‖v‖), each BOS setting in its own run; the CSV holds the same
/// values, and the top texts are ranked by their max.
#[test]
fn inspect_project_is_hidden_states_dot_the_vector() {
    for name in ["tiny-gpt2", "tiny-llama"] {
        let f = load_fixture(name);
        let spec = *tiller_core::Backend::config(&f.cpu_model().0);
        let (c, layer) = (spec.n_embd, spec.n_layer - 1);
        let dir = scratch(&format!("inspect-{name}"));
        let v: Vec<f32> = (0..c).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
        let entry = tiller_core::library::VectorEntry {
            name: "probe".into(),
            site: tiller_core::Site::ResidPre,
            layers: vec![tiller_core::library::LayerEntry { layer, vector: v.clone(), front: None }],
            ..Default::default()
        };
        let file = dir.join("v.safetensors");
        std::fs::write(&file, entry.to_safetensors().unwrap()).unwrap();
        let v_norm = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        for bos in [false, true] {
            let prompts: Vec<&PromptGolden> = f.golden.prompts.iter().filter(|p| p.bos == bos && !p.prompt.contains('\n')).collect();
            if prompts.is_empty() {
                continue;
            }
            let texts = dir.join(format!("texts-{bos}.txt"));
            std::fs::write(&texts, prompts.iter().map(|p| format!("{}\n\n", p.prompt)).collect::<String>()).unwrap();
            let devices: &[&str] = if gpu_available() { &["cpu", "gpu"] } else { &["cpu"] };
            for &device in devices {
                let what = format!("{name} bos {bos} {device}");
                let base = strs(&[
                    "inspect",
                    "project",
                    "--model",
                    &model_dir(name),
                    "--vector",
                    &format!("{}:{layer}", file.display()),
                    "--texts",
                    texts.to_str().unwrap(),
                    "--device",
                    device,
                    if bos { "--bos" } else { "--no-bos" },
                ]);
                let got = json_of(&what, &[base.clone(), strs(&["--json", "--top", "2"])].concat());
                let tol = if device == "cpu" { 1e-4 } else { 3e-2 };
                assert_eq!(got["layer"], layer);
                assert_eq!(got["site"], "resid_pre");
                assert!((got["vector_norm"].as_f64().unwrap() - v_norm).abs() < 1e-6 * v_norm);
                let out = got["texts"].as_array().unwrap();
                assert_eq!(out.len(), prompts.len(), "{what}: blank lines are skipped");
                let mut maxes = Vec::new();
                for (p, t) in prompts.iter().zip(out) {
                    let tokens = t["tokens"].as_array().unwrap();
                    let ids: Vec<u32> = tokens.iter().map(|k| k["id"].as_u64().unwrap() as u32).collect();
                    assert_eq!(ids, p.tokens, "{what} {:?}: the golden tokens", p.prompt);
                    for (k, tok) in tokens.iter().enumerate() {
                        let x = &p.resid_pre[layer][k];
                        let dot: f64 = x.iter().zip(&v).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let x_norm = x.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
                        let scale = x_norm * v_norm;
                        let (g_dot, g_cos) = (tok["dot"].as_f64().unwrap(), tok["cosine"].as_f64().unwrap());
                        assert!((g_dot - dot).abs() <= tol * scale.max(1.0), "{what} {:?} token {k}: dot {g_dot} vs {dot}", p.prompt);
                        assert!((g_cos - dot / scale).abs() <= tol, "{what} {:?} token {k}: cosine {g_cos} vs {}", p.prompt, dot / scale);
                    }
                    let max = tokens.iter().map(|k| k["dot"].as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
                    assert_eq!(t["max"].as_f64().unwrap(), max, "{what}: max");
                    assert_eq!(tokens[t["max_at"].as_u64().unwrap() as usize]["dot"].as_f64().unwrap(), max);
                    maxes.push(max);
                }
                let top: Vec<usize> = got["top"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).collect();
                let mut order: Vec<usize> = (0..maxes.len()).collect();
                order.sort_by(|&a, &b| maxes[b].total_cmp(&maxes[a]).then(a.cmp(&b)));
                order.truncate(2);
                assert_eq!(top, order, "{what}: the top texts by their max");
                // The CSV: a row per (text, token), the same values.
                let out = run(&[base, strs(&["--csv"])].concat());
                assert!(out.status.success(), "{what} --csv: {}", String::from_utf8_lossy(&out.stderr));
                let csv = String::from_utf8(out.stdout).unwrap();
                let lines: Vec<&str> = csv.lines().collect();
                assert_eq!(lines[0], "text_index,position,token_id,token,dot,cosine");
                assert!(lines[1].starts_with("0,0,"), "{what}: {}", lines[1]);
                assert_eq!(lines.len() - 1, prompts.iter().map(|p| p.tokens.len()).sum::<usize>(), "{what}: CSV rows");
                let first_dot: f32 = lines[1].rsplit(',').nth(1).unwrap().parse().unwrap();
                assert_eq!(first_dot, got["texts"][0]["tokens"][0]["dot"].as_f64().unwrap() as f32, "{what}: CSV and JSON agree");
            }
        }
    }
}

/// Bad input to `tiller inspect project` is one sentence each: no texts, a vector of another
/// width, a layer the file does not hold.
#[test]
fn inspect_project_refuses_bad_input_in_a_sentence() {
    let dir = scratch("inspect-bad");
    let (model, vfile) = (model_dir("tiny-gpt2"), dir.join("v.safetensors"));
    let entry = |w: usize| tiller_core::library::VectorEntry {
        name: "probe".into(),
        site: tiller_core::Site::ResidPre,
        layers: vec![tiller_core::library::LayerEntry { layer: 1, vector: vec![0.5; w], front: None }],
        ..Default::default()
    };
    let c = tiller_core::Backend::config(&load_fixture("tiny-gpt2").cpu_model().0).n_embd;
    std::fs::write(&vfile, entry(c).to_safetensors().unwrap()).unwrap();
    let wide = dir.join("wide.safetensors");
    std::fs::write(&wide, entry(c + 3).to_safetensors().unwrap()).unwrap();
    let (empty, texts) = (dir.join("empty.txt"), dir.join("texts.txt"));
    std::fs::write(&empty, "\n  \n").unwrap();
    std::fs::write(&texts, "Hello there\n").unwrap();
    let cases = [
        (vfile.display().to_string(), &empty, "holds no texts"),
        (wide.display().to_string(), &texts, &*format!("the vector is {} wide", c + 3)),
        (format!("{}:3", vfile.display()), &texts, "layer 3"),
    ];
    for (vector, texts, want) in cases {
        let out = run(&strs(&[
            "inspect",
            "project",
            "--model",
            &model,
            "--vector",
            &vector,
            "--texts",
            texts.to_str().unwrap(),
            "--device",
            "cpu",
        ]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{vector}: {err}");
        assert!(err.contains(want), "{vector}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `tiller inspect norms --json` against Hugging Face, every family: each position's
/// ‖hidden_states[L]‖ of the prompt at every layer, their median after the first, the
/// steering tensor's norm per position (the golden ActAdd vectors' rows) and a vector file's
/// norm.
#[test]
fn inspect_norms_are_hugging_face_residual_and_steering_norms() {
    let norm = |x: &[f32]| x.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    let mut checked = Vec::new();
    for name in tiller_core::golden::MODELS {
        let f = load_fixture(name);
        let Some(s) = f.golden.steered.iter().find(|s| s.site == "resid_pre") else { continue };
        // A prompt golden of the steered golden's BOS setting (the terms' tensor does not depend
        // on the prompt).
        let Some(p) = f.golden.prompts.iter().find(|p| p.bos == s.bos && p.tokens.len() >= 3) else { continue };
        let dir = scratch(&format!("norms-{name}"));
        let file = dir.join("v.safetensors");
        let v = vec![0.25f32; p.resid_pre[0][0].len()];
        let entry = tiller_core::library::VectorEntry {
            name: "flat".into(),
            site: tiller_core::Site::ResidPre,
            layers: vec![tiller_core::library::LayerEntry { layer: 1, vector: v.clone(), front: None }],
            ..Default::default()
        };
        std::fs::write(&file, entry.to_safetensors().unwrap()).unwrap();
        let model = model_dir(name);
        let mut args = strs(&["inspect", "norms", "--model", &model, "--prompt", &p.prompt, "--device", "cpu", "--json"]);
        args.push(if p.bos { "--bos".into() } else { "--no-bos".into() });
        args.extend(["--vector".to_string(), file.display().to_string()]);
        for t in &s.terms {
            args.extend(["--add".to_string(), format!("{}:{}:{}", t.layer, t.coeff, t.text)]);
        }
        let got = json_of(&format!("inspect norms {name}"), &args);
        let ids: Vec<u32> = got["prompt_tokens"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, p.tokens, "{name}: the golden tokens");
        let layers = got["layers"].as_array().unwrap();
        assert_eq!(layers.len(), p.resid_pre.len(), "{name}: every layer");
        for (l, entry) in layers.iter().enumerate() {
            let want: Vec<f64> = p.resid_pre[l].iter().map(|x| norm(x)).collect();
            let at: Vec<f64> = entry["residual"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_eq!(at.len(), want.len());
            for (g, w) in at.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-4 * w.max(1.0), "{name} layer {l}: {g} vs {w}");
            }
            let median = tiller_core::contrast::typical_norm(&want);
            assert!((entry["median"].as_f64().unwrap() - median).abs() <= 1e-4 * median.max(1.0), "{name} layer {l}: median");
        }
        let steering = got["steering"].as_array().unwrap();
        assert_eq!(steering.len(), s.vectors.len(), "{name}: a steering entry per layer of terms");
        for (g, w) in steering.iter().zip(&s.vectors) {
            assert_eq!(g["layer"].as_u64().unwrap() as usize, w.layer);
            let at: Vec<f64> = g["norms"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_eq!(at.len(), w.rows.len(), "{name}: a norm per padded position");
            for (a, row) in at.iter().zip(&w.rows) {
                let want = norm(row);
                assert!((a - want).abs() <= 1e-3 * want.max(1.0), "{name}: steering row norm {a} vs {want}");
            }
        }
        let vn = &got["vectors"][0];
        assert_eq!((vn["name"].as_str(), vn["layer"].as_u64()), (Some("flat"), Some(1)));
        assert!((vn["norm"].as_f64().unwrap() - norm(&v)).abs() < 1e-9);
        checked.push(name);
    }
    assert!(checked.len() >= 3 && checked.contains(&"tiny-llama"), "families checked: {checked:?}");
}

/// `tiller inspect diff --json` reads the completions `tiller generate` makes from the same
/// flags: a position per steered token, that token's probabilities, KL ≥ 0, and the risen
/// (falling) tokens in order of their change. Its values are checked against independent
/// forward passes in tiller-core's tests/inspect.rs.
#[test]
fn inspect_diff_reads_the_generated_steered_completions() {
    let model = model_dir("tiny-gpt2");
    let flags = strs(&[
        "--model",
        &model,
        "--prompt",
        "I hate you because",
        "--add",
        "1:5:Love",
        "--add",
        "1:-5:Hate",
        "--n",
        "2",
        "--max-tokens",
        "4",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--json",
    ]);
    let gen = json_of("generate", &[strs(&["generate"]), flags.clone()].concat());
    let diff = json_of("inspect diff", &[strs(&["inspect", "diff", "--changes", "3"]), flags].concat());
    assert_eq!(diff["prompt_tokens"], gen["prompt_tokens"]);
    let steered = diff["steered"].as_array().unwrap();
    assert_eq!(steered.len(), 2);
    for (c, g) in steered.iter().zip(gen["steered"].as_array().unwrap()) {
        assert_eq!(c["tokens"], g["tokens"], "the same completions from the same seed");
        let positions = c["positions"].as_array().unwrap();
        assert_eq!(positions.len(), g["tokens"].as_array().unwrap().len());
        for (k, p) in positions.iter().enumerate() {
            assert_eq!(p["token"]["id"], g["tokens"][k]);
            let prob = g["probs"][k].as_f64().unwrap();
            assert!((p["token"]["p_steered"].as_f64().unwrap() - prob).abs() < 1e-4, "position {k}: the probability generate reports");
            assert!(p["kl"].as_f64().unwrap() >= 0.0);
            let change = |x: &Value| x["p_steered"].as_f64().unwrap() - x["p_unsteered"].as_f64().unwrap();
            let rose: Vec<f64> = p["rose"].as_array().unwrap().iter().map(change).collect();
            let fell: Vec<f64> = p["fell"].as_array().unwrap().iter().map(change).collect();
            assert!(rose.len() <= 3 && fell.len() <= 3);
            assert!(rose.windows(2).all(|w| w[0] >= w[1]) && rose.iter().all(|&d| d > 0.0), "{rose:?}");
            assert!(fell.windows(2).all(|w| w[0] <= w[1]) && fell.iter().all(|&d| d < 0.0), "{fell:?}");
        }
    }
}

/// `tiller inspect lens`: the output row is the model's own logits (HF's golden top tokens for
/// an unsteered prompt), every layer and the output are listed, and steering shows in the
/// steered column.
#[test]
fn inspect_lens_lists_every_layer_and_the_output() {
    let model = model_dir("tiny-gpt2");
    let f = tiller_core::golden::load_fixture("tiny-gpt2");
    let p = &f.golden.prompts[0];
    let mut flags = strs(&["inspect", "lens", "--model", &model, "--prompt", &p.prompt, "--device", "cpu", "--json", "--k", "3"]);
    flags.push(if p.bos { "--bos".into() } else { "--no-bos".into() });
    let plain = json_of("inspect lens", &flags);
    assert_eq!(plain["prompt_tokens"], serde_json::json!(p.tokens));
    let layers = plain["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 5, "4 layers and the output");
    let last = &p.positions[p.tokens.len() - 1].top;
    for (got, want) in layers[4]["top"].as_array().unwrap().iter().zip(last) {
        assert_eq!(got["id"], want.id);
        assert!((got["logit"].as_f64().unwrap() - want.logit as f64).abs() < 2e-3 * (want.logit as f64).abs().max(1.0));
    }
    assert_eq!(layers[2]["top"], layers[2]["steered_top"], "nothing steers");
    flags.extend(strs(&["--add", "1:8:Love", "--add", "1:-8:Hate"]));
    let steered = json_of("inspect lens", &flags);
    let layers = steered["layers"].as_array().unwrap();
    assert_ne!(layers[4]["top"], layers[4]["steered_top"], "steering moves the output");
    assert_eq!(steered["steering"][0]["layer"], 1);
    assert_eq!(steered["steering"][0]["top"].as_array().unwrap().len(), 3);
}
