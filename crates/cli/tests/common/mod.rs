//! What the method tests (fv.rs, iti.rs) share: running the binary, its JSON and its one-line
//! errors, the fixtures, and whether the GPU engine runs here.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use tiller_core::golden::fixtures_dir;

/// A scratch folder of this test process (and the XDG runtime dir wgpu wants).
pub fn runtime_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("tiller-method-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

pub fn run(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tiller"))
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("tiller runs")
}

pub fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

pub fn json_of(args: &[String]) -> Value {
    let out = run(args);
    assert!(out.status.success(), "tiller {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The one-line error of a run that must fail.
pub fn error_of(args: &[String]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "tiller {args:?} should have failed: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1, "one error line, got: {err}");
    err
}

pub fn model_dir(name: &str) -> String {
    fixtures_dir().join(name).to_str().unwrap().to_string()
}

/// A file of the repository, by its path from the root.
pub fn repo_file(rel: &str) -> String {
    fixtures_dir().join("../..").join(rel).to_str().unwrap().to_string()
}

pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Whether the GPU engine runs here (CI insists it does).
pub fn gpu_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let out = run(&strings(&["logits", "--model", &model_dir("tiny-gpt2"), "--prompt", "a", "--device", "gpu", "--json"]));
        if out.status.success() {
            return true;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("use --device cpu"), "the GPU probe failed for another reason: {err}");
        assert!(std::env::var_os("CI").is_none(), "CI is set but no GPU adapter is available: {err}");
        eprintln!("SKIPPED (GPU part): no GPU adapter: {err}");
        false
    })
}
