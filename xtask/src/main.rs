//! Repository tasks (`cargo xtask TASK`):
//!
//! - `page [--debug] [--out DIR]`: builds the playground into `dist/` (page.rs).
//! - `serve [--address A] [--port P] [--debug]`: builds it, serves it and rebuilds on changes
//!   (serve.rs). `scripts/serve.sh` runs this after `scripts/setup.sh`.
//! - `bench [ARGS]`: runs the GPU benchmark in release mode (crates/gpu/examples/bench.rs) and
//!   appends its results to BENCHMARKS.md; ARGS pass through (`--model gpt2-xl --layers 12`,
//!   `--prompt 64`, `--decode 16`). `--no-write` only prints.

mod page;
mod serve;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask page [--debug] [--out DIR]
       cargo xtask serve [--address 127.0.0.1] [--port 8080] [--debug]
       cargo xtask bench [--model gpt2] [--layers N] [--prompt 64] [--decode 16] [--no-write]";

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().context("finding the workspace root")?;
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("page") => {
            let (opts, rest) = page_options(&root, args.collect())?;
            if let Some(a) = rest.first() {
                bail!("unknown argument `{a}`\n{USAGE}");
            }
            page::build(&root, &opts)
        }
        Some("serve") => {
            let (opts, rest) = page_options(&root, args.collect())?;
            let (mut address, mut port) = ("127.0.0.1".to_string(), 8080u16);
            let mut it = rest.into_iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--address" => address = it.next().context("--address needs a value")?,
                    "--port" => {
                        let v = it.next().context("--port needs a value")?;
                        port = v.parse().with_context(|| format!("--port {v}: not a port number (1 to 65535)"))?;
                    }
                    _ => bail!("unknown argument `{a}`\n{USAGE}"),
                }
            }
            serve::serve(&root, &address, port, opts)
        }
        Some("bench") => bench(&root, args.collect()),
        Some(other) => bail!("unknown task `{other}`\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
}

/// Takes `--debug` and `--out DIR` out of `args`; returns the options and what is left.
fn page_options(root: &Path, args: Vec<String>) -> Result<(page::PageOptions, Vec<String>)> {
    let mut opts = page::PageOptions { release: true, out: root.join("dist") };
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--debug" => opts.release = false,
            "--release" => opts.release = true,
            "--out" => opts.out = PathBuf::from(it.next().context("--out needs a folder")?),
            _ => rest.push(a),
        }
    }
    if opts.out.is_relative() {
        opts.out = std::env::current_dir()?.join(&opts.out);
    }
    Ok((opts, rest))
}

fn bench(root: &Path, mut args: Vec<String>) -> Result<()> {
    let write = !args.iter().any(|a| a == "--no-write");
    args.retain(|a| a != "--no-write");
    if write {
        args.extend(["--markdown".to_string(), root.join("BENCHMARKS.md").display().to_string()]);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["run", "--release", "-p", "tiller-gpu", "--example", "bench", "--"])
        .args(&args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the benchmark failed ({status})");
    }
    Ok(())
}
