//! `cargo xtask serve`: builds the page, serves `dist/` on loopback and rebuilds it when a
//! source file changes (polled once a second). A failed rebuild prints cargo's errors and
//! keeps serving the last good page.
//!
//! The server is std-only: GET and HEAD, one thread per connection, no keep-alive. Paths are
//! confined to `dist/`; an unknown path without an extension gets `index.html` (share links
//! carry their recipe in the fragment, so `/` is the only page, but a trailing path should
//! not 404). Everything is sent `Cache-Control: no-cache`, so a reload after a rebuild always
//! runs the new page and worker.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::page::{self, PageOptions};

/// What a change under these paths rebuilds (relative to the workspace root).
const WATCHED: &[&str] = &["crates/core", "crates/gpu", "crates/web", "Cargo.toml", "Cargo.lock"];

pub fn serve(root: &Path, address: &str, port: u16, opts: PageOptions) -> Result<()> {
    // The first build must succeed: there is nothing to serve otherwise.
    page::build(root, &opts)?;
    let listener = TcpListener::bind((address, port))
        .with_context(|| format!("listening on {address}:{port} (is another server using the port? set PORT)"))?;
    let dist = Arc::new(opts.out.clone());
    eprintln!("serve: serving {} at http://{address}:{port}/ (Ctrl+C stops)", dist.display());

    let watch_root = root.to_path_buf();
    thread::spawn(move || watch(&watch_root, &opts));

    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let dist = Arc::clone(&dist);
        thread::spawn(move || {
            let _ = handle(stream, &dist);
        });
    }
    Ok(())
}

fn watch(root: &Path, opts: &PageOptions) {
    let mut last = newest(root);
    loop {
        thread::sleep(Duration::from_secs(1));
        let now = newest(root);
        if now > last {
            // Let an editor finish writing a batch of files before building.
            thread::sleep(Duration::from_millis(300));
            last = newest(root);
            eprintln!("serve: a source file changed; rebuilding");
            match page::build(root, opts) {
                Ok(()) => eprintln!("serve: rebuilt; reload the page"),
                Err(e) => eprintln!("serve: the rebuild failed, still serving the last good page: {e:#}"),
            }
        }
    }
}

/// The newest modification time under the watched paths (skipping `target` folders).
fn newest(root: &Path) -> SystemTime {
    fn walk(p: &Path, best: &mut SystemTime) {
        let Ok(meta) = fs::metadata(p) else { return };
        if let Ok(m) = meta.modified() {
            *best = (*best).max(m);
        }
        if meta.is_dir() {
            let Ok(entries) = fs::read_dir(p) else { return };
            for e in entries.flatten() {
                if e.file_name() != "target" {
                    walk(&e.path(), best);
                }
            }
        }
    }
    let mut best = SystemTime::UNIX_EPOCH;
    for w in WATCHED {
        walk(&root.join(w), &mut best);
    }
    best
}

fn handle(stream: TcpStream, dist: &Path) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the headers; nothing in them changes the answer.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let mut out = stream;
    if method != "GET" && method != "HEAD" {
        return respond(&mut out, "405 Method Not Allowed", "text/plain", b"only GET and HEAD", method == "HEAD");
    }
    let Some(file) = resolve(dist, target) else {
        return respond(&mut out, "404 Not Found", "text/plain", b"not found", method == "HEAD");
    };
    match fs::read(&file) {
        Ok(body) => respond(&mut out, "200 OK", mime(&file), &body, method == "HEAD"),
        Err(_) => respond(&mut out, "404 Not Found", "text/plain", b"not found", method == "HEAD"),
    }
}

/// Maps a request target to a file under `dist`, or None (outside it, or missing with an
/// extension). Percent-escapes are decoded; `..` and absolute components are refused.
fn resolve(dist: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let decoded = percent_decode(path)?;
    let mut file = dist.to_path_buf();
    for c in Path::new(decoded.trim_start_matches('/')).components() {
        match c {
            Component::Normal(s) => file.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if file.is_dir() {
        file.push("index.html");
    }
    if file.is_file() {
        return Some(file);
    }
    if file.extension().is_none() {
        return Some(dist.join("index.html"));
    }
    None
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn mime(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn respond(out: &mut TcpStream, status: &str, mime: &str, body: &[u8], head: bool) -> Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {mime}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head {
        out.write_all(body)?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_dist() {
        let dist = std::env::temp_dir().join(format!("xtask-serve-{}", std::process::id()));
        fs::create_dir_all(&dist).unwrap();
        fs::write(dist.join("index.html"), "page").unwrap();
        fs::write(dist.join("a b.js"), "js").unwrap();
        assert_eq!(resolve(&dist, "/"), Some(dist.join("index.html")));
        assert_eq!(resolve(&dist, "/?x=1#frag"), Some(dist.join("index.html")));
        assert_eq!(resolve(&dist, "/a%20b.js"), Some(dist.join("a b.js")));
        assert_eq!(resolve(&dist, "/some/route"), Some(dist.join("index.html")));
        assert_eq!(resolve(&dist, "/missing.wasm"), None);
        assert_eq!(resolve(&dist, "/../etc/passwd"), None);
        assert_eq!(resolve(&dist, "/%2e%2e/secret"), None);
        assert_eq!(resolve(&dist, "/%zz"), None);
        fs::remove_dir_all(&dist).unwrap();
    }
}
