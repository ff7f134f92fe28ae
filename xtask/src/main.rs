//! Repository tasks. `cargo xtask bench [ARGS]` runs the GPU benchmark in release mode
//! (crates/gpu/examples/bench.rs) and appends its results to BENCHMARKS.md; ARGS pass through
//! (`--model gpt2-xl --layers 12`, `--prompt 64`, `--decode 16`). `--no-write` only prints.

use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("bench") => bench(args.collect()),
        Some(other) => bail!("unknown task `{other}`; tasks: bench"),
        None => bail!("usage: cargo xtask bench [--model gpt2] [--layers N] [--prompt 64] [--decode 16] [--no-write]"),
    }
}

fn bench(mut args: Vec<String>) -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().context("finding the workspace root")?;
    let write = !args.iter().any(|a| a == "--no-write");
    args.retain(|a| a != "--no-write");
    if write {
        args.extend(["--markdown".to_string(), root.join("BENCHMARKS.md").display().to_string()]);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["run", "--release", "-p", "tiller-gpu", "--example", "bench", "--"])
        .args(&args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the benchmark failed ({status})");
    }
    Ok(())
}
