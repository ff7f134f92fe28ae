//! `cargo xtask page`: builds the playground into `dist/`.
//!
//! The page is two wasm binaries of `crates/web` (the Leptos page and the engine worker), one
//! stylesheet and `crates/web/index.html`. The steps are the ones a bundler would do, and no
//! more: one `cargo build` of both binaries for wasm32, `wasm-bindgen` on each (an ES module for
//! the page, a classic script for the worker, which `importScripts` loads), the stylesheet
//! copied, and the page's `<head>` filled in. The page's files are named by a hash of their
//! contents, so a browser never runs a stale page against a new worker; the worker's names are
//! fixed (the page starts `./tiller-worker_loader.js`) and served `no-cache`.
//!
//! The new build is written beside `dist/` and swapped in only when complete, so a failed
//! build leaves the last good page in place (the server keeps serving it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const TARGET: &str = "wasm32-unknown-unknown";
/// Where `crates/web/index.html` asks for the stylesheet and the page's module.
const HEAD_MARKER: &str = "<!-- tiller:head -->";

pub struct PageOptions {
    /// `--release` (the default) or the dev profile (faster to build, far slower to run).
    pub release: bool,
    /// The output folder; `dist/` at the workspace root by default.
    pub out: PathBuf,
}

/// Builds the page into `opts.out`, replacing it only once the whole build has succeeded.
pub fn build(root: &Path, opts: &PageOptions) -> Result<()> {
    let bindgen = check_wasm_bindgen(root)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root).args(["build", "-p", "tiller-web", "--bin", "tiller-web", "--bin", "tiller-worker", "--target", TARGET]);
    if opts.release {
        cmd.arg("--release");
    }
    eprintln!("page: cargo build -p tiller-web --target {TARGET}{}", if opts.release { " --release" } else { "" });
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("building the page's wasm failed ({status}); the previous page, if any, is unchanged");
    }
    let wasm_dir = target_dir(root).join(TARGET).join(if opts.release { "release" } else { "debug" });

    let staging = sibling(&opts.out, "new");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;

    bindgen_run(&bindgen, &wasm_dir.join("tiller-web.wasm"), &staging, "web", "tiller-web")?;
    bindgen_run(&bindgen, &wasm_dir.join("tiller-worker.wasm"), &staging, "no-modules", "tiller-worker")?;
    fs::write(staging.join("tiller-worker_loader.js"), "importScripts(\"./tiller-worker.js\");wasm_bindgen(\"./tiller-worker_bg.wasm\");")?;

    // The page's own files get content-hashed names.
    let js = hashed(&staging, "tiller-web.js", "tiller-web", ".js")?;
    let wasm = hashed(&staging, "tiller-web_bg.wasm", "tiller-web", "_bg.wasm")?;
    let web = root.join("crates/web");
    let css_src = fs::read(web.join("style.css")).context("reading crates/web/style.css")?;
    let css = format!("style-{:016x}.css", fnv1a(&css_src));
    fs::write(staging.join(&css), &css_src)?;
    // The page's module imports its glue by the plain name wasm-bindgen wrote into it.
    let glue = fs::read_to_string(staging.join(&js))?;
    if glue.contains("tiller-web_bg.wasm") {
        fs::write(staging.join(&js), glue.replace("tiller-web_bg.wasm", &wasm))?;
    }

    let template = fs::read_to_string(web.join("index.html")).context("reading crates/web/index.html")?;
    if !template.contains(HEAD_MARKER) {
        bail!("crates/web/index.html has no {HEAD_MARKER} line to put the page's scripts at");
    }
    // The start script is a file of its own: the page's Content-Security-Policy (in
    // index.html) allows no inline script.
    // Once the page runs, the service worker keeps a copy of it for offline visits (in a
    // secure context: https or localhost; elsewhere the page simply has no offline copy).
    let start_src = format!(
        "import init from './{js}';\nawait init({{ module_or_path: './{wasm}' }});\n\
         if ('serviceWorker' in navigator) navigator.serviceWorker.register('./sw.js').catch((e) => console.warn(`Tiller: no offline copy of the page (${{e.message}})`));\n"
    );
    let start = format!("tiller-start-{:016x}.js", fnv1a(start_src.as_bytes()));
    fs::write(staging.join(&start), &start_src)?;
    let head = format!(
        "<link rel=\"stylesheet\" href=\"./{css}\" />\n    \
         <link rel=\"modulepreload\" href=\"./{js}\" />\n    \
         <link rel=\"preload\" href=\"./{wasm}\" as=\"fetch\" type=\"application/wasm\" crossorigin=\"anonymous\" />\n    \
         <script type=\"module\" src=\"./{start}\"></script>"
    );
    fs::write(staging.join("index.html"), template.replace(HEAD_MARKER, &head))?;

    // The service worker, last: it lists every file above as the app shell.
    let sw = fs::read_to_string(web.join("sw.js")).context("reading crates/web/sw.js")?;
    fs::write(staging.join("sw.js"), service_worker(&sw, &staging)?)?;

    // Swap: out -> out.old, staging -> out, then drop the old one.
    let old = sibling(&opts.out, "old");
    let _ = fs::remove_dir_all(&old);
    if opts.out.exists() {
        fs::rename(&opts.out, &old).with_context(|| format!("moving {} aside", opts.out.display()))?;
    }
    fs::rename(&staging, &opts.out).with_context(|| format!("moving the new build to {}", opts.out.display()))?;
    let _ = fs::remove_dir_all(&old);
    let size: u64 = fs::read_dir(&opts.out)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    eprintln!("page: built {} ({:.1} MB)", opts.out.display(), size as f64 / 1e6);
    Ok(())
}

/// Where `crates/web/sw.js` takes the shell's file list and cache name.
const SHELL_MARKER: &str = "/* tiller:shell */";

/// The service worker for the build in `dir`: `template` with the list of every file in `dir`
/// (as `./path`) and a cache name hashed from their names and contents, so each build has its
/// own copy and the old one is dropped when the new worker takes over.
fn service_worker(template: &str, dir: &Path) -> Result<String> {
    if !template.contains(SHELL_MARKER) {
        bail!("crates/web/sw.js has no {SHELL_MARKER} line for the shell's file list");
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
                files.push((rel, fs::read(&path)?));
            }
        }
    }
    files.sort();
    let mut hash_input = Vec::new();
    for (name, bytes) in &files {
        hash_input.extend_from_slice(name.as_bytes());
        hash_input.extend_from_slice(&fnv1a(bytes).to_le_bytes());
    }
    let list: Vec<String> = files.iter().map(|(name, _)| format!("'./{name}'")).collect();
    let shell = format!("const SHELL = ['./', {}];\nconst CACHE = 'tiller-shell-{:016x}';", list.join(", "), fnv1a(&hash_input));
    Ok(template.replace(SHELL_MARKER, &shell))
}

/// `wasm-bindgen` from PATH, refused unless it is the version Cargo.lock pins (the CLI and the
/// crate must match exactly, or the glue it writes does not fit the module).
fn check_wasm_bindgen(root: &Path) -> Result<String> {
    let want = locked_version(root, "wasm-bindgen")?;
    let out = Command::new("wasm-bindgen").arg("--version").output();
    let have = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1).unwrap_or("").to_string(),
        _ => bail!("wasm-bindgen is not on PATH; `bash scripts/setup.sh` installs wasm-bindgen-cli {want}"),
    };
    if have != want {
        bail!("wasm-bindgen on PATH is {have}, but Cargo.lock pins wasm-bindgen {want}; `bash scripts/setup.sh` installs the matching wasm-bindgen-cli");
    }
    Ok("wasm-bindgen".into())
}

fn bindgen_run(bindgen: &str, wasm: &Path, out: &Path, target: &str, name: &str) -> Result<()> {
    let status = Command::new(bindgen)
        .arg("--target")
        .arg(target)
        .args(["--no-typescript", "--out-name", name, "--out-dir"])
        .arg(out)
        .arg(wasm)
        .status()
        .context("running wasm-bindgen")?;
    if !status.success() {
        bail!("wasm-bindgen failed on {} ({status})", wasm.display());
    }
    Ok(())
}

/// Renames `dir/file` to `<stem>-<hash><suffix>` and returns the new name.
fn hashed(dir: &Path, file: &str, stem: &str, suffix: &str) -> Result<String> {
    let bytes = fs::read(dir.join(file)).with_context(|| format!("reading {file}"))?;
    let name = format!("{stem}-{:016x}{suffix}", fnv1a(&bytes));
    fs::rename(dir.join(file), dir.join(&name))?;
    Ok(name)
}

/// 64-bit FNV-1a: a stable content hash for file names (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The version of `crate_name` that Cargo.lock records (exactly one).
fn locked_version(root: &Path, crate_name: &str) -> Result<String> {
    let lock = fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut found = Vec::new();
    let mut in_pkg = false;
    for line in lock.lines() {
        if line.starts_with("[[package]]") {
            in_pkg = false;
        } else if let Some(name) = line.strip_prefix("name = ") {
            in_pkg = name.trim_matches('"') == crate_name;
        } else if let Some(v) = line.strip_prefix("version = ") {
            if in_pkg {
                found.push(v.trim_matches('"').to_string());
            }
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("Cargo.lock has no {crate_name} package"),
        _ => bail!("Cargo.lock has several {crate_name} versions ({}); pin one with '=' in Cargo.toml", found.join(", ")),
    }
}

pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root.join(d),
        _ => root.join("target"),
    }
}

fn sibling(dir: &Path, tag: &str) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "dist".into());
    dir.with_file_name(format!(".{name}.{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_worker_lists_the_build_and_names_its_cache_by_it() {
        let dir = std::env::temp_dir().join(format!("tiller-sw-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("snippets/a")).unwrap();
        fs::write(dir.join("index.html"), "<html>").unwrap();
        fs::write(dir.join("snippets/a/inline0.js"), "x").unwrap();
        let template = "// head\n/* tiller:shell */\nrest";
        let one = service_worker(template, &dir).unwrap();
        assert!(
            one.starts_with("// head\nconst SHELL = ['./', './index.html', './snippets/a/inline0.js'];\nconst CACHE = 'tiller-shell-"),
            "{one}"
        );
        assert!(one.ends_with("';\nrest"), "{one}");
        assert_eq!(service_worker(template, &dir).unwrap(), one, "the same build, the same worker");
        fs::write(dir.join("snippets/a/inline0.js"), "y").unwrap();
        assert_ne!(service_worker(template, &dir).unwrap(), one, "a changed file is a new cache");
        assert!(service_worker("no marker", &dir).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn locked_version_reads_one_package() {
        let dir = std::env::temp_dir().join(format!("xtask-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("Cargo.lock"),
            "[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n\n[[package]]\nname = \"wasm-bindgen-macro\"\nversion = \"0.2.130\"\n",
        )
        .unwrap();
        assert_eq!(locked_version(&dir, "wasm-bindgen").unwrap(), "0.2.130");
        assert!(locked_version(&dir, "trunk").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
