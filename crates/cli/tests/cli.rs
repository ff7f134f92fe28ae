//! The `tiller` binary end to end on the golden fixtures: logits, generate, vocab, sweep and
//! the one-line errors, on the CPU reference and (when an adapter exists) the GPU engine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use pollster::block_on;
use serde_json::Value;
use tiller_core::golden::{check_close, check_top, fixtures_dir, load_fixture, Fixture, SteeredGolden, TopEntry, MODELS};
use tiller_core::sample::top_k_indices;
use tiller_core::steer::{self, RowSpan};
use tiller_core::{Backend, CpuModel, LogitRows, Positions, Recipe, SeqStep, Site, StepRequest, Term, Tokenizer};

/// A scratch folder unique to this test process and `name`.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tiller-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn runtime_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch("xdg-runtime"))
}

fn command(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tiller"));
    c.args(args).env("XDG_RUNTIME_DIR", runtime_dir()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run(args: &[String]) -> Output {
    command(args).output().expect("tiller runs")
}

/// Runs several commands at once; GPU ones one after another (on lavapipe each already uses
/// every core, and running them together is slower than in turn).
fn run_all(all: &[Vec<String>]) -> Vec<Output> {
    if all.iter().any(|a| a.iter().any(|s| s == "gpu")) {
        static GPU: Mutex<()> = Mutex::new(());
        let _one_at_a_time = GPU.lock().unwrap_or_else(|e| e.into_inner());
        return all.iter().map(|a| run(a)).collect();
    }
    let children: Vec<_> = all.iter().map(|a| command(a).spawn().expect("tiller starts")).collect();
    children.into_iter().map(|c| c.wait_with_output().expect("tiller finishes")).collect()
}

fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn stdout_json(what: &str, args: &[String], out: &Output) -> Value {
    assert!(out.status.success(), "{what}: tiller {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The GPU probe: tiny-gpt2's logits of the golden prompt "a" (no BOS), which
/// `logits_gpu_match_golden_and_library` also checks.
fn probe_args() -> Vec<String> {
    logits_args(&model_dir("tiny-gpt2"), "a", false, &[], "gpu")
}

fn probe() -> &'static Output {
    static OUT: OnceLock<Output> = OnceLock::new();
    OUT.get_or_init(|| run(&probe_args()))
}

/// Whether the GPU engine can run here; prints why not when it cannot.
fn gpu_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let out = probe();
        if out.status.success() {
            return true;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("use --device cpu"), "the GPU probe failed for another reason than a missing adapter: {err}");
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but no GPU adapter is available: {err}");
        }
        eprintln!("SKIPPED (GPU part): no GPU adapter: {err}");
        false
    })
}

fn model_dir(name: &str) -> String {
    fixtures_dir().join(name).to_str().unwrap().to_string()
}

fn term_args(terms: &[Term]) -> Vec<String> {
    terms.iter().flat_map(|t| ["--add".to_string(), format!("{}:{}:{}", t.layer, t.coeff, t.text)]).collect()
}

fn terms_of(s: &SteeredGolden) -> Vec<Term> {
    s.terms.iter().map(|t| Term { layer: t.layer, coeff: t.coeff, text: t.text.clone(), head: None }).collect()
}

fn cpu_model(f: &Fixture) -> (CpuModel, Tokenizer) {
    f.cpu_model()
}

/// The fixtures a device runs: every family on both.
fn models_for(_device: &str) -> &'static [&'static str] {
    &MODELS
}

/// `--bos` or `--no-bos`: the goldens say which, whatever the tokenizer's default.
fn bos_arg(bos: bool) -> String {
    if bos { "--bos" } else { "--no-bos" }.to_string()
}

/// The (id, logit) list of a `logits --json` answer, after checking its prompt tokens.
fn top_of(what: &str, v: &Value, tokens: &[u32]) -> Vec<(u32, f32)> {
    let got_tokens: Vec<u32> = v["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    assert_eq!(got_tokens, tokens, "{what}: prompt tokens");
    let top = v["top"].as_array().unwrap();
    for e in top {
        assert!(e["token"].is_string(), "{what}: entry without token text: {e}");
    }
    top.iter().map(|e| (e["id"].as_u64().unwrap() as u32, e["logit"].as_f64().unwrap() as f32)).collect()
}

/// The steered last-position top-20 from the CPU reference library, after checking that its
/// steering vectors are the golden ones.
fn library_steered_top(m: &mut CpuModel, tok: &Tokenizer, s: &SteeredGolden, what: &str) -> Vec<TopEntry> {
    let terms = terms_of(s);
    let vectors = block_on(steer::steering_vectors(m, tok, &terms, s.bos, Site::ResidPre)).unwrap();
    assert_eq!(vectors.len(), s.vectors.len(), "{what}: layers with vectors");
    for (g, w) in vectors.iter().zip(&s.vectors) {
        assert_eq!(g.layer, w.layer, "{what}: vector layer");
        let want: Vec<f32> = w.rows.iter().flatten().copied().collect();
        check_close(&format!("{what}: vector at layer {}", g.layer), &g.rows, &want, 1e-3, 1e-4).unwrap();
    }
    m.reset(1, s.tokens.len()).unwrap();
    let spans = [RowSpan { start: 0, len: s.tokens.len(), steered: true }];
    let req = StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: s.tokens.clone() }],
        injections: steer::injections(&vectors, Site::ResidPre, Positions::Front, &spans),
        captures: vec![],
        logits: LogitRows::Last,
    };
    let logits = block_on(m.step(&req)).unwrap().logits;
    top_k_indices(&logits, 20).into_iter().map(|i| TopEntry { id: i as u32, logit: logits[i] }).collect()
}

/// A steered case whose terms sit at two different layers.
fn two_layers(s: &SteeredGolden) -> bool {
    s.terms.iter().any(|t| t.layer != s.terms[0].layer)
}

fn check_cpu_top(what: &str, got: &[(u32, f32)], want: &[TopEntry]) {
    assert_eq!(got.len(), 20, "{what}: --top 20 entries");
    // Exact ids in order, except near-ties (within the golden's own precision) may swap.
    check_top(what, got, want, 1e-3).unwrap();
    let gl: Vec<f32> = got.iter().map(|g| g.1).collect();
    let wl: Vec<f32> = want.iter().map(|w| w.logit).collect();
    check_close(what, &gl, &wl, 1e-3, 0.0).unwrap();
}

fn logits_args(model: &str, prompt: &str, bos: bool, terms: &[Term], device: &str) -> Vec<String> {
    let mut a = strs(&["logits", "--model", model, "--prompt", prompt, "--json", "--top", "20", "--device", device]);
    a.push(bos_arg(bos));
    a.extend(term_args(terms));
    a
}

/// What, arguments, prompt tokens, and the top-20 lists the answer must match.
type LogitsCase = (String, Vec<String>, Vec<u32>, Vec<Vec<TopEntry>>);

fn logits_case(device: &str) {
    let tol = if device == "cpu" { 1e-3 } else { 3e-2 };
    for &name in models_for(device) {
        let f = load_fixture(name);
        let model = model_dir(name);
        let (mut m, tok) = cpu_model(&f);
        let mut cases: Vec<LogitsCase> = Vec::new();
        // Each GPU start costs seconds on lavapipe: there, only the steered cases with terms at two layers (one with BOS, one without).
        let gpu = device == "gpu";
        for p in f.golden.prompts.iter().filter(|_| !gpu) {
            let want = p.positions.last().unwrap().top.clone();
            cases.push((
                format!("{name} {device} {:?} bos={}", p.prompt, p.bos),
                logits_args(&model, &p.prompt, p.bos, &[], device),
                p.tokens.clone(),
                vec![want],
            ));
        }
        for s in f.golden.steered.iter().filter(|s| s.site == "resid_pre" && (!gpu || two_layers(s))) {
            let what = format!("{name} {device} steered {:?} bos={}", s.prompt, s.bos);
            let lib = library_steered_top(&mut m, &tok, s, &what);
            let golden = s.positions.last().unwrap().top.clone();
            cases.push((what, logits_args(&model, &s.prompt, s.bos, &terms_of(s), device), s.tokens.clone(), vec![golden, lib]));
        }
        let args: Vec<Vec<String>> = cases.iter().map(|c| c.1.clone()).collect();
        let outs = run_all(&args);
        for ((what, args, tokens, wants), out) in cases.iter().zip(&outs) {
            let v = stdout_json(what, args, out);
            let got = top_of(what, &v, tokens);
            for want in wants {
                if device == "cpu" {
                    check_cpu_top(what, &got, want);
                } else {
                    assert_eq!(got.len(), 20, "{what}");
                    check_top(what, &got, want, tol).unwrap();
                }
            }
        }
    }
}

#[test]
fn logits_cpu_match_golden_and_library() {
    logits_case("cpu");
}

#[test]
fn logits_gpu_match_golden_and_library() {
    if !gpu_available() {
        return;
    }
    let f = load_fixture("tiny-gpt2");
    let p = f.golden.prompts.iter().find(|p| p.prompt == "a" && !p.bos).expect("golden prompt \"a\"");
    let v = stdout_json("gpu probe", &probe_args(), probe());
    check_top("tiny-gpt2 gpu \"a\"", &top_of("gpu probe", &v, &p.tokens), &p.positions.last().unwrap().top, 3e-2).unwrap();
    logits_case("gpu");
}

fn generate_args(model: &str, s: &SteeredGolden, device: &str, json: bool) -> Vec<String> {
    let mut a =
        strs(&["generate", "--model", model, "--prompt", &s.prompt, "--greedy", "--freq-penalty", "0", "--n", "1", "--device", device]);
    a.extend(["--max-tokens".to_string(), s.greedy.len().to_string()]);
    if json {
        a.push("--json".into());
    }
    a.push(bos_arg(s.bos));
    a.extend(["--site".to_string(), s.site.clone()]);
    a.extend(term_args(&terms_of(s)));
    a
}

fn generate_case(device: &str) {
    for &name in models_for(device) {
        let f = load_fixture(name);
        let model = model_dir(name);
        let cases: Vec<&SteeredGolden> = f.golden.steered.iter().filter(|s| device == "cpu" || (two_layers(s) && s.bos)).collect();
        let args: Vec<Vec<String>> = cases.iter().map(|s| generate_args(&model, s, device, true)).collect();
        let outs = run_all(&args);
        for ((s, a), out) in cases.iter().zip(&args).zip(&outs) {
            let what = format!("{name} {device} generate {:?} bos={}", s.prompt, s.bos);
            let v = stdout_json(&what, a, out);
            let toks = |side: &str| -> Vec<u32> {
                let list = v[side].as_array().unwrap();
                assert_eq!(list.len(), 1, "{what}: --n 1 gives one {side} completion");
                list[0]["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
            };
            let pt: Vec<u32> = v["prompt_tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
            assert_eq!(pt, s.tokens, "{what}: prompt tokens");
            assert_eq!(toks("steered"), s.greedy, "{what}: steered greedy tokens");
            assert_eq!(toks("unsteered"), s.greedy_unsteered, "{what}: unsteered greedy tokens");
            // Each token's probability under the model: one per token, a probability.
            for side in ["steered", "unsteered"] {
                let probs: Vec<f64> = v[side][0]["probs"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
                assert_eq!(probs.len(), toks(side).len(), "{what}: a probability per {side} token");
                assert!(probs.iter().all(|&p| p > 0.0 && p <= 1.0), "{what}: {side} probabilities {probs:?}");
            }
        }
    }
}

#[test]
fn generate_greedy_cpu_matches_golden() {
    generate_case("cpu");
}

#[test]
fn generate_greedy_gpu_matches_golden() {
    if !gpu_available() {
        return;
    }
    generate_case("gpu");
}

#[test]
fn generate_text_output_is_side_by_side() {
    let f = load_fixture("tiny-gpt2");
    let s = &f.golden.steered[0];
    let a = generate_args(&model_dir("tiny-gpt2"), s, "cpu", false);
    let out = run(&a);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let header = text.lines().find(|l| l.contains("UNSTEERED")).unwrap_or_else(|| panic!("no UNSTEERED header in:\n{text}"));
    let (u, st) = (header.find("UNSTEERED").unwrap(), header.find(" STEERED").expect("STEERED column"));
    assert!(u < st, "UNSTEERED comes before STEERED: {header}");
    assert!(header.contains('│'), "columns are separated: {header}");
    assert!(text.contains("prompt: \"I hate you because\""), "{text}");
    assert!(text.contains("greedy"), "{text}");
    // The continuation texts appear in the body.
    let tok = Tokenizer::from_bytes(&f.tokenizer_json).unwrap();
    let first_word = tok.decode(&s.greedy_unsteered[..1]).unwrap();
    assert!(text.contains(first_word.trim()), "unsteered text {first_word:?} missing:\n{text}");
}

#[test]
fn vocab_json_is_v_dot_wte() {
    for name in MODELS {
        let f = load_fixture(name);
        let (m, _) = cpu_model(&f);
        let cfg = *m.config();
        let (c, vsz) = (cfg.n_embd, cfg.vocab_size);
        let wte = m.weights().get(if cfg.tied_head { "wte.weight" } else { "lm_head.weight" });
        let scores = |v: &[f32]| -> Vec<f32> { (0..vsz).map(|t| (0..c).map(|i| v[i] * wte[t * c + i]).sum()).collect() };
        for s in &f.golden.steered {
            let what = format!("{name} vocab {:?}", s.terms);
            let mut a = strs(&["vocab", "--model", &model_dir(name), "--json", "--top", "10", "--device", "cpu"]);
            a.push(bos_arg(s.bos));
            a.extend(["--site".to_string(), s.site.clone()]);
            a.extend(term_args(&terms_of(s)));
            let v = stdout_json(&what, &a, &run(&a));
            let layers = v.as_array().unwrap();
            assert_eq!(layers.len(), s.vectors.len(), "{what}: one entry per layer with terms");
            for (lv, gv) in layers.iter().zip(&s.vectors) {
                assert_eq!(lv["layer"].as_u64().unwrap() as usize, gv.layer, "{what}");
                let mut sum = vec![0.0f32; c];
                for r in &gv.rows {
                    for i in 0..c {
                        sum[i] += r[i];
                    }
                }
                let positions = lv["positions"].as_array().unwrap();
                assert_eq!(positions.len(), gv.rows.len(), "{what}: positions");
                let mut checks: Vec<(String, &Value, Vec<f32>, bool)> = Vec::new();
                for (p, row) in gv.rows.iter().enumerate() {
                    checks.push((format!("{what} layer {} pos {p}", gv.layer), &positions[p], scores(row), false));
                    checks.push((format!("{what} layer {} pos {p} bottom", gv.layer), &lv["positions_bottom"][p], scores(row), true));
                }
                checks.push((format!("{what} layer {} sum", gv.layer), &lv["sum"], scores(&sum), false));
                checks.push((format!("{what} layer {} sum bottom", gv.layer), &lv["bottom"], scores(&sum), true));
                for (what, got, expect, bottom) in checks {
                    let got: Vec<(u32, f32)> = got
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| (e["id"].as_u64().unwrap() as u32, e["score"].as_f64().unwrap() as f32))
                        .collect();
                    assert_eq!(got.len(), 10, "{what}");
                    let signed: Vec<f32> = expect.iter().map(|&x| if bottom { -x } else { x }).collect();
                    let scale = signed.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
                    let tol = 1e-3 * scale.max(1.0);
                    let want: Vec<TopEntry> =
                        top_k_indices(&signed, 10).into_iter().map(|i| TopEntry { id: i as u32, logit: signed[i] }).collect();
                    let got_signed: Vec<(u32, f32)> = got.iter().map(|&(i, s)| (i, if bottom { -s } else { s })).collect();
                    check_top(&what, &got_signed, &want, tol).unwrap();
                }
            }
        }
    }
}

fn write_texts(dir: &Path, name: &str, lines: &[&str]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n")).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn sweep_csv_and_json() {
    let dir = scratch("sweep");
    let a_file = write_texts(&dir, "a.txt", &["I went up to my friend and said hello to him", "", "The Eiffel Tower is in Paris, France"]);
    let b_file = write_texts(&dir, "b.txt", &["Dragons are large and breathe fire at night"]);
    let base = |fmt: &str| {
        strs(&[
            "sweep",
            "--model",
            &model_dir("tiny-gpt2"),
            "--device",
            "cpu",
            "--add",
            "0:1:Love",
            "--add",
            "0:-1:Hate",
            "--texts",
            &format!("wed={a_file}"),
            "--texts",
            &format!("dragons={b_file}"),
            "--layers",
            "0..3",
            "--coeffs",
            "0,1",
            fmt,
        ])
    };
    let a = base("--csv");
    let out = run(&a);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "set,layer,coeff,ppl_ratio,kl,loss_steered,loss_unsteered,tokens,texts");
    assert_eq!(lines.len(), 1 + 2 * 4 * 2, "header + sets × layers × coeffs:\n{text}");
    let mut seen = Vec::new();
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 9, "{l}");
        let (set, layer, coeff, ratio, kl) = (
            f[0],
            f[1].parse::<usize>().unwrap(),
            f[2].parse::<f32>().unwrap(),
            f[3].parse::<f64>().unwrap(),
            f[4].parse::<f64>().unwrap(),
        );
        assert!(layer <= 3);
        let texts: usize = f[8].parse().unwrap();
        assert_eq!(texts, if set == "wed" { 2 } else { 1 }, "{l}: blank lines are not texts");
        if coeff == 0.0 {
            assert_eq!(ratio, 1.0, "{l}: ratio at coefficient 0");
            assert_eq!(kl, 0.0, "{l}: KL at coefficient 0");
            assert_eq!(f[5], f[6], "{l}: losses equal at coefficient 0");
        } else {
            assert_eq!(coeff, 1.0);
            assert!(ratio.is_finite() && ratio > 0.0 && kl > 0.0, "{l}");
        }
        seen.push((set.to_string(), layer, coeff.to_bits()));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 16, "every (set, layer, coeff) once");

    let a = base("--json");
    let v = stdout_json("sweep --json", &a, &run(&a));
    if gpu_available() {
        // The GPU engine gives the same table.
        let g: Vec<String> = a.iter().map(|s| if s == "cpu" { "gpu".to_string() } else { s.clone() }).collect();
        let gv = stdout_json("sweep --json on gpu", &g, &run_all(std::slice::from_ref(&g))[0]);
        for (c, g) in v.as_array().unwrap().iter().zip(gv.as_array().unwrap()) {
            assert_eq!((&c["set"], &c["layer"], &c["coeff"], &c["tokens"]), (&g["set"], &g["layer"], &g["coeff"], &g["tokens"]));
            for k in ["ppl_ratio", "kl", "loss_steered", "loss_unsteered"] {
                let (x, y) = (c[k].as_f64().unwrap(), g[k].as_f64().unwrap());
                assert!((x - y).abs() <= 2e-3 * x.abs().max(0.1), "sweep {k} cpu {x} vs gpu {y}: {c}");
            }
        }
    }
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 16);
    for r in rows {
        for k in ["set", "layer", "coeff", "ppl_ratio", "kl", "loss_steered", "loss_unsteered", "tokens", "texts"] {
            assert!(!r[k].is_null(), "row without {k}: {r}");
        }
        if r["coeff"].as_f64().unwrap() == 0.0 {
            assert_eq!(r["ppl_ratio"].as_f64().unwrap(), 1.0);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A failure: non-zero exit, exactly one stderr line, no panic; returns that line.
fn one_line_error(what: &str, out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{what}: should fail; stdout {}", String::from_utf8_lossy(&out.stdout));
    assert!(!err.contains("panicked"), "{what}: panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: expected one stderr line, got:\n{err}");
    lines[0].to_string()
}

/// A FIFO or a folder where model.safetensors should be is named for what it is (not "missing",
/// and a FIFO is not opened, which would wait for a writer for ever).
#[test]
fn a_fifo_or_a_folder_named_model_safetensors_is_not_a_regular_file() {
    for kind in ["fifo", "folder"] {
        let dir = scratch(&format!("not-a-file-{kind}"));
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(Path::new(&model_dir("tiny-gpt2")).join(f), dir.join(f)).unwrap();
        }
        let weights = dir.join("model.safetensors");
        if kind == "folder" {
            std::fs::create_dir(&weights).unwrap();
        } else {
            assert!(Command::new("mkfifo").arg(&weights).status().expect("mkfifo runs").success());
        }
        let out = run(&strs(&["logits", "--model", dir.to_str().unwrap(), "--prompt", "hi", "--device", "cpu"]));
        let line = one_line_error(kind, &out);
        assert!(line.contains("model.safetensors is not a regular file"), "{kind}: {line}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn damaged_model_files_fail_with_one_line() {
    let src = fixtures_dir().join("tiny-gpt2");
    let good = std::fs::read(src.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated-body", good[..good.len() / 2].to_vec(), "truncated"),
        ("truncated-header", good[..8 + header_len / 2].to_vec(), "truncated"),
        ("truncated-4", good[..4].to_vec(), "truncated"),
        ("garbage", (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(), "not a safetensors file"),
        (
            "garbage-json",
            {
                let mut g = good[..8 + header_len].to_vec();
                for b in &mut g[8..8 + header_len] {
                    *b = b'x';
                }
                g
            },
            "not valid JSON",
        ),
    ];
    let mut devices = vec!["cpu"];
    if gpu_available() {
        devices.push("gpu");
    }
    for (case, bytes, problem) in &cases {
        let dir = scratch(case);
        std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
        std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
        for device in &devices {
            let what = format!("{case} on {device}");
            let out = run(&strs(&["logits", "--model", dir.to_str().unwrap(), "--prompt", "Hello", "--device", device]));
            let line = one_line_error(&what, &out);
            assert!(line.starts_with("error: "), "{what}: {line}");
            assert!(line.contains(dir.join("model.safetensors").to_str().unwrap()), "{what}: the line names the file: {line}");
            assert!(line.contains(problem), "{what}: the line says {problem:?}: {line}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A NaN in a weight is refused at load with the tensor named; `--allow-non-finite` loads it
/// with a warning, and the run then stops where its values first stop being finite (never a
/// ranked NaN), on both engines.
#[test]
fn non_finite_weights_are_refused_unless_allowed_and_then_stop_the_run() {
    let src = fixtures_dir().join("tiny-gpt2");
    let mut bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header["h.1.mlp.c_fc.weight"];
    assert_eq!(t["dtype"], "F16");
    let at = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[at..at + 2].copy_from_slice(&0x7e00u16.to_le_bytes()); // an f16 NaN
    let dir = scratch("nan-weight");
    for f in ["tokenizer.json", "config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    let mut devices = vec!["cpu"];
    if gpu_available() {
        devices.push("gpu");
    }
    let model = dir.to_str().unwrap();
    for device in devices {
        let args = [
            "generate",
            "--model",
            model,
            "--prompt",
            "Hello there",
            "--add",
            "1:4:Love",
            "--n",
            "1",
            "--max-tokens",
            "3",
            "--greedy",
            "--device",
            device,
        ];
        let line = one_line_error(device, &run(&strs(&args)));
        assert!(line.contains("tensor `h.1.mlp.c_fc.weight` holds 1 value that is not finite"), "{device}: {line}");
        assert!(line.contains("--allow-non-finite"), "{device}: {line}");

        let out = run(&strs(&[&args[..], &["--allow-non-finite"]].concat()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && !err.contains("panicked"), "{device}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 2, "{device}: a warning and the error:\n{err}");
        assert!(
            lines[0].starts_with("warning: tensor `h.1.mlp.c_fc.weight` holds 1 value that is not finite (NaN or infinity); loaded anyway"),
            "{device}: {err}"
        );
        assert!(lines[1].starts_with("error: ") && lines[1].contains("NaN or infinity") && lines[1].contains("layer 1"), "{device}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tokenizer.json that cannot be the model's is refused naming the file: a WordLevel one for
/// a GPT-2, and a BPE one with ids past the model's embedding (the tiny GPT-2's vocabulary with
/// a token added after it).
#[test]
fn a_tokenizer_that_is_not_the_models_is_refused() {
    let src = fixtures_dir().join("tiny-gpt2");
    let good: Value = serde_json::from_slice(&std::fs::read(src.join("tokenizer.json")).unwrap()).unwrap();
    let word_level = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"hello": 0, "there": 1, "[UNK]": 2}, "unk_token": "[UNK]"}
    });
    let mut past = good.clone();
    let added = past["added_tokens"].as_array_mut().unwrap();
    added.push(serde_json::json!({"id": 50257, "content": "<|far|>", "single_word": false, "lstrip": false, "rstrip": false,
        "normalized": false, "special": true}));
    for (case, tok, problem) in [
        ("tok-wordlevel", word_level, "it is a WordLevel tokenizer, and gpt2 models use a BPE tokenizer"),
        ("tok-past-vocab", past, "its token \"<|far|>\" has id 50257, past the model's 50257 embedding rows"),
    ] {
        let dir = scratch(case);
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&tok).unwrap()).unwrap();
        let out = run(&strs(&["logits", "--model", dir.to_str().unwrap(), "--prompt", "Hello", "--device", "cpu"]));
        let line = one_line_error(case, &out);
        assert!(line.starts_with(&format!("error: {}: ", dir.join("tokenizer.json").display())), "{case}: names the file: {line}");
        assert!(line.contains("tokenizer.json is not this model's") && line.contains(problem), "{case}: {line}");
        assert!(line.contains("use the tokenizer that came with the weights"), "{case}: says what to do: {line}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn bad_config_json_is_named() {
    let src = fixtures_dir().join("tiny-gpt2");
    for (case, body, problem) in [
        ("config-garbage", "not json", "config.json is invalid"),
        ("config-mamba", "{\"model_type\": \"mamba\"}", "model_type is `mamba`"),
        ("config-llama", "{\"model_type\": \"llama\"}", "`hidden_size` is missing"),
    ] {
        let dir = scratch(case);
        for f in ["tokenizer.json", "model.safetensors"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("config.json"), body).unwrap();
        let out = run(&strs(&["logits", "--model", dir.to_str().unwrap(), "--prompt", "Hello", "--device", "cpu"]));
        let line = one_line_error(case, &out);
        assert!(line.starts_with(&format!("error: {}: ", dir.join("config.json").display())), "{case}: names config.json: {line}");
        assert!(line.contains(problem), "{case}: {line}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn usage_errors_are_one_line() {
    let model = model_dir("tiny-gpt2");
    let missing = std::env::temp_dir().join(format!("tiller-no-such-model-{}", std::process::id()));
    let long_text = format!("0:1:{}", "word ".repeat(300));
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            strs(&["logits", "--model", &model, "--prompt", "Hi there", "--device", "cpu", "--add", "Love"]),
            vec!["`Love` is not LAYER:COEFF:TEXT"],
        ),
        (
            strs(&["logits", "--model", &model, "--prompt", "Hi there", "--device", "cpu", "--top", "-1"]),
            vec!["--top", "-1 is not a count"],
        ),
        (strs(&["vocab", "--model", &model, "--device", "cpu", "--top", "0", "--add", "0:1:Love"]), vec!["--top", "0 is not a count"]),
        (
            strs(&["logits", "--prompt", "Hi there", "--device", "cpu"]),
            vec!["required arguments were not provided: --model", "tiller logits --help"],
        ),
        (
            strs(&["generate", "--model", &model, "--prompt", "Hi there", "--device", "cpu", "--max-tokens", "2", "--add", &long_text]),
            vec!["the steering text `word word", "is 301 tokens, longer than the model's context of 128: use a shorter text"],
        ),
        (
            strs(&["logits", "--model", &model, "--prompt", "Hi there", "--device", "cpu", "--add", "x:1:Love"]),
            vec!["`x`", "not a layer number"],
        ),
        (
            strs(&["logits", "--model", &model, "--prompt", "Hi there", "--device", "cpu", "--add", "1:big:Love"]),
            vec!["`big`", "not a coefficient"],
        ),
        (
            strs(&["logits", "--model", &model, "--prompt", "Hi there", "--device", "cpu", "--add", "4:1:Love"]),
            vec!["layer 4 is out of range", "0..3"],
        ),
        (
            strs(&["generate", "--model", &model, "--prompt", "Hi there", "--device", "cpu", "--add", "9:1:Love"]),
            vec!["layer 9 is out of range"],
        ),
        (strs(&["vocab", "--model", &model, "--device", "cpu", "--add", "7:1:Love"]), vec!["layer 7 is out of range"]),
        (
            strs(&["logits", "--model", &model, "--prompt", "Hi", "--device", "cpu", "--add", "0:1:I talk about weddings constantly"]),
            vec!["shorten the steering text"],
        ),
        (
            strs(&["logits", "--model", missing.to_str().unwrap(), "--prompt", "Hi", "--device", "cpu"]),
            vec![missing.to_str().unwrap(), "is not a folder"],
        ),
    ];
    let args: Vec<Vec<String>> = cases.iter().map(|c| c.0.clone()).collect();
    for ((a, needles), out) in cases.iter().zip(run_all(&args)) {
        let line = one_line_error(&format!("{a:?}"), &out);
        assert!(line.starts_with("error: "), "{a:?}: {line}");
        for n in needles {
            assert!(line.contains(n), "{a:?}: {line:?} should contain {n:?}");
        }
    }
    // Sweep layers past the model's depth.
    let dir = scratch("sweep-errors");
    let file = write_texts(&dir, "t.txt", &["a fairly long text about weddings and friends"]);
    let out = run(&strs(&[
        "sweep",
        "--model",
        &model,
        "--device",
        "cpu",
        "--add",
        "0:1:Love",
        "--texts",
        &format!("t={file}"),
        "--layers",
        "0..4",
    ]));
    let line = one_line_error("sweep --layers 0..4", &out);
    assert!(line.contains("--layers 0..4") && line.contains("< 4"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sweep whose evaluation texts would need more unsteered log-probabilities than its memory
/// budget is refused before any pass, naming the size, the limit and what to do (it used to
/// grow until it was killed: rows × vocabulary × 4 bytes).
#[test]
fn a_sweep_past_its_memory_budget_is_refused_before_it_runs() {
    let dir = scratch("sweep-budget");
    let line = "the quick brown fox jumps over the lazy dog and then runs far away into the green hills";
    let lines = vec![line; 400]; // ~7,000 predictions × 50,257 tokens × 4 bytes ≈ 1.4 GB
    let file = write_texts(&dir, "many.txt", &lines);
    let args = ["sweep", "--model", &model_dir("tiny-gpt2"), "--device", "cpu", "--add", "0:1:Love", "--texts", &format!("t={file}")];
    let out = run(&strs(&args));
    let err = one_line_error("sweep over many texts", &out);
    assert!(err.contains("predictions") && err.contains("more than the 1024 MB a sweep may use"), "{err}");
    assert!(err.contains("use fewer or shorter texts"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tiller … | head` closes the pipe early: the program ends quietly, without a panic.
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    use std::io::Read;
    for fmt in ["--json", "--ln-f"] {
        let a = strs(&["vocab", "--model", &model_dir("tiny-gpt2"), "--device", "cpu", "--top", "50000", "--add", "0:1:Love", fmt]);
        let mut child = command(&a).spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        stdout.read_exact(&mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{fmt}: {err}");
        assert!(out.status.success(), "{fmt}: {:?} {err}", out.status);
    }
}

/// `--chat --chat-terms`: the steering texts are rendered through the chat template as the
/// prompt is, and the answer is the library's with the same encoding (the templated vectors
/// differ from raw ones); `--chat-terms` without `--chat` is refused.
#[test]
fn chat_terms_template_the_steering_texts() {
    let f = load_fixture("tiny-llama");
    let (mut m, tok) = cpu_model(&f);
    let terms = vec![
        Term { layer: 1, coeff: 4.0, text: "Love".into(), head: None },
        Term { layer: 1, coeff: -4.0, text: "Hate".into(), head: None },
    ];
    let base = |extra: &[&str]| {
        let mut a = strs(&["logits", "--model", &model_dir("tiny-llama"), "--prompt", "Tell me a story", "--json", "--top", "20"]);
        a.extend(strs(&["--device", "cpu", "--chat", "--system", "Be brief."]));
        a.extend(strs(extra));
        a.extend(term_args(&terms));
        a
    };
    let (templated, raw) = (base(&["--chat-terms"]), base(&[]));
    let outs = run_all(&[templated.clone(), raw.clone()]);
    let (vt, vr) = (stdout_json("--chat-terms", &templated, &outs[0]), stdout_json("--chat", &raw, &outs[1]));

    let recipe = Recipe {
        prompt: "Tell me a story".into(),
        chat: true,
        system: "Be brief.".into(),
        chat_terms: true,
        terms: terms.clone(),
        bos: tok.bos_by_default(),
        ..Recipe::default()
    };
    let prompt = steer::prompt_tokens(&tok, &recipe, 1 << 20).unwrap();
    let mut want = |chat_terms: bool| {
        let enc = steer::TextEncoding::of_terms(&Recipe { chat_terms, ..recipe.clone() });
        let vectors = block_on(steer::steering_vectors(&mut m, &tok, &terms, enc, Site::ResidPre)).unwrap();
        m.reset(1, prompt.len()).unwrap();
        let spans = [RowSpan { start: 0, len: prompt.len(), steered: true }];
        let req = StepRequest {
            seqs: vec![SeqStep { slot: 0, tokens: prompt.clone() }],
            injections: steer::injections(&vectors, Site::ResidPre, Positions::Front, &spans),
            captures: vec![],
            logits: LogitRows::Last,
        };
        let logits = block_on(m.step(&req)).unwrap().logits;
        top_k_indices(&logits, 20).into_iter().map(|i| TopEntry { id: i as u32, logit: logits[i] }).collect::<Vec<_>>()
    };
    let (want_t, want_r) = (want(true), want(false));
    check_cpu_top("--chat-terms", &top_of("--chat-terms", &vt, &prompt), &want_t);
    check_cpu_top("--chat", &top_of("--chat", &vr, &prompt), &want_r);
    assert_ne!(
        want_t.iter().map(|e| e.logit).collect::<Vec<_>>(),
        want_r.iter().map(|e| e.logit).collect::<Vec<_>>(),
        "templating the texts changes the vectors"
    );

    let lone = strs(&["logits", "--model", &model_dir("tiny-llama"), "--prompt", "x", "--chat-terms", "--add", "1:1:a", "--device", "cpu"]);
    let out = run(&lone);
    assert!(!out.status.success(), "--chat-terms without --chat must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--chat"), "{}", String::from_utf8_lossy(&out.stderr));
}
