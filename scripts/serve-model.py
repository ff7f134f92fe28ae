#!/usr/bin/env python3
"""Serve a model folder to the Tiller page the way the Hugging Face Hub serves it.

    python3 scripts/serve-model.py DIR [--port 8081] [--host 127.0.0.1]

Files in DIR (config.json, model.safetensors, tokenizer.json, ...) are served at both

    /<repo>/resolve/<revision>/<file>   e.g. /openai-community/gpt2/resolve/main/config.json
    /<file>                             e.g. /config.json

so the page can use http://127.0.0.1:8081 as its model base URL in place of
https://huggingface.co (any repo name and revision map onto DIR; if DIR holds one
sub-folder per repo, /<repo>/resolve/main/<file> is looked up in DIR/<repo>/<file> first).

Unlike `python3 -m http.server`, every answer carries CORS headers
(Access-Control-Allow-Origin: *, Access-Control-Expose-Headers: Content-Length,
Content-Range, ETag), and GET/HEAD honour single byte ranges (206 + Content-Range), which
the page uses to stream safetensors. Python standard library only.
"""

import argparse
import email.utils
import os
import posixpath
import re
import sys
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 1 << 20
RESOLVE_RE = re.compile(r"^/(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
CONTENT_TYPES = {
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".safetensors": "application/octet-stream",
    ".bin": "application/octet-stream",
}


def safe_join(root, rel):
    """Join a URL path onto root, refusing anything that escapes it."""
    rel = posixpath.normpath("/" + rel).lstrip("/")
    if not rel or rel == ".":
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    path = os.path.join(root, *parts)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root + os.sep):
        return None
    return path


def parse_range(header, size):
    """Returns (start, end) inclusive, None for 'serve it whole', or 'bad' for a 416."""
    if not header:
        return None
    m = RANGE_RE.match(header.strip())
    if not m:
        return None  # multiple ranges or other units: ignore, send the whole file
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            return "bad"
        return (max(0, size - n), size - 1) if size else "bad"
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        return "bad"
    return (start, min(end, size - 1))


class Handler(BaseHTTPRequestHandler):
    server_version = "tiller-serve-model/1"
    protocol_version = "HTTP/1.1"
    root = "."

    def cors(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header(
            "Access-Control-Expose-Headers", "Content-Length, Content-Range, ETag"
        )

    def resolve(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        candidates = []
        m = RESOLVE_RE.match(path)
        if m:
            candidates.append(m.group("repo") + "/" + m.group("file"))
            candidates.append(m.group("file"))
        candidates.append(path.lstrip("/"))
        for rel in candidates:
            full = safe_join(self.root, rel)
            if full and os.path.isfile(full):
                return full
        return None

    def send_error_plain(self, code, text, extra=()):
        body = (text + "\n").encode()
        self.send_response(code)
        self.cors()
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_OPTIONS(self):
        self.send_response(HTTPStatus.NO_CONTENT)
        self.cors()
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header(
            "Access-Control-Allow-Headers",
            self.headers.get("Access-Control-Request-Headers", "Range"),
        )
        self.send_header("Access-Control-Max-Age", "86400")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self.serve(send_body=False)

    def do_GET(self):
        self.serve(send_body=True)

    def serve(self, send_body):
        full = self.resolve()
        if full is None:
            self.send_error_plain(HTTPStatus.NOT_FOUND, "Entry not found")
            return
        st = os.stat(full)
        size = st.st_size
        etag = '"%x-%x"' % (size, int(st.st_mtime))
        ctype = CONTENT_TYPES.get(
            os.path.splitext(full)[1].lower(), "application/octet-stream"
        )

        if self.headers.get("If-None-Match") == etag and not self.headers.get("Range"):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.cors()
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return

        rng = parse_range(self.headers.get("Range"), size)
        if rng == "bad":
            self.send_error_plain(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                "Range not satisfiable",
                extra=[("Content-Range", "bytes */%d" % size)],
            )
            return
        if rng is None:
            start, end, code = 0, size - 1, HTTPStatus.OK
        else:
            (start, end), code = rng, HTTPStatus.PARTIAL_CONTENT
        length = end - start + 1 if size else 0

        self.send_response(code)
        self.cors()
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.send_header("Cache-Control", "no-cache")
        if code == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        if not send_body or length == 0:
            return
        with open(full, "rb") as f:
            f.seek(start)
            left = length
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def log_message(self, fmt, *args):
        sys.stderr.write("serve-model: %s %s\n" % (self.address_string(), fmt % args))


def main():
    ap = argparse.ArgumentParser(
        description="Serve a model folder like the Hugging Face Hub, with CORS and byte ranges."
    )
    ap.add_argument("dir", help="folder with config.json, model.safetensors, tokenizer files")
    ap.add_argument("--port", type=int, default=8081, help="port (default 8081)")
    ap.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    args = ap.parse_args()

    root = os.path.abspath(args.dir)
    if not os.path.isdir(root):
        ap.error("not a folder: %s" % args.dir)
    Handler.root = root

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def handle_error(self, request, client_address):
            exc = sys.exc_info()[1]
            if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                return  # the browser dropped a request (e.g. an aborted range read)
            super().handle_error(request, client_address)

    httpd = Server((args.host, args.port), Handler)
    base = "http://%s:%d" % (args.host, httpd.server_address[1])
    files = sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, fs in os.walk(root)
        for f in fs
    )
    print("serve-model: serving %s" % root, flush=True)
    for f in files[:20]:
        print("  %s/<repo>/resolve/main/%s" % (base, f), flush=True)
    if len(files) > 20:
        print("  ... and %d more" % (len(files) - 20), flush=True)
    print("serve-model: model base URL for the page: %s  (Ctrl-C stops)" % base, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
