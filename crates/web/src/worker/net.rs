//! Fetching model files in the worker: plain downloads for the small files, a streaming body
//! reader for `model.safetensors`, the browser's Cache Storage in front of both, and the
//! size query the picker shows before anything is downloaded.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, Cache, ReadableStreamDefaultReader, Request, RequestInit, Response};

use super::scope;
use crate::protocol::{ErrorKind, UserError};

/// The Cache Storage bucket holding model files, keyed by URL.
pub const CACHE_NAME: &str = "tiller-models-v1";

/// Text of a JS error value.
pub fn js_error_text(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

fn is_abort(e: &JsValue) -> bool {
    Reflect::get(e, &"name".into()).ok().and_then(|n| n.as_string()).is_some_and(|n| n == "AbortError")
}

/// The model cache, or `None` where the browser offers none (then nothing is cached).
pub async fn open_cache() -> Option<Cache> {
    let caches = scope().caches().ok()?;
    let cache = JsFuture::from(caches.open(CACHE_NAME)).await.ok()?;
    cache.dyn_into::<Cache>().ok()
}

/// A cached response for `url`, if any.
pub async fn cached(cache: Option<&Cache>, url: &str) -> Option<Response> {
    let cache = cache?;
    let hit = JsFuture::from(cache.match_with_str(url)).await.ok()?;
    hit.dyn_into::<Response>().ok()
}

thread_local! {
    /// (Hub endpoint, token): the Hugging Face token goes with requests under the endpoint only.
    static TOKEN: std::cell::RefCell<Option<(String, String)>> = const { std::cell::RefCell::new(None) };
}

/// The token for requests to `hub` (the page's Hub endpoint), or none.
pub fn set_token(hub: &str, token: Option<String>) {
    let prefix = format!("{}/", hub.trim_end_matches('/'));
    TOKEN.with(|t| *t.borrow_mut() = token.filter(|t| !t.is_empty()).map(|t| (prefix, t)));
}

/// The `Authorization` header value for `url`, when a token is set and `url` is on its Hub.
fn authorization(url: &str) -> Option<String> {
    TOKEN.with(|t| t.borrow().as_ref().filter(|(prefix, _)| url.starts_with(prefix.as_str())).map(|(_, token)| format!("Bearer {token}")))
}

fn has_token() -> bool {
    TOKEN.with(|t| t.borrow().is_some())
}

/// `fetch(url)` with an optional abort signal and method, turning failures into sentences
/// that name the file. HTTP errors are errors.
pub async fn fetch(url: &str, file: &str, method: &str, signal: Option<&AbortSignal>, range: Option<&str>) -> Result<Response, UserError> {
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(signal) = signal {
        init.set_signal(Some(signal));
    }
    let request = Request::new_with_str_and_init(url, &init)
        .map_err(|e| UserError::new(ErrorKind::NotFound, format!("`{url}` is not a URL the browser accepts ({})", js_error_text(&e))))?;
    if let Some(range) = range {
        let _ = request.headers().set("Range", range);
    }
    if let Some(auth) = authorization(url) {
        let _ = request.headers().set("Authorization", &auth);
    }
    let resp = JsFuture::from(scope().fetch_with_request(&request)).await.map_err(|e| {
        if is_abort(&e) {
            UserError::new(ErrorKind::Cancelled, "the download was cancelled")
        } else {
            UserError::new(
                ErrorKind::Download,
                format!(
                    "could not download {file} from {url}: {} (the server is unreachable, or it does not allow cross-origin requests). Check the address and retry.",
                    js_error_text(&e)
                ),
            )
        }
    })?;
    let resp: Response = resp.unchecked_into();
    if !resp.ok() {
        let status = resp.status();
        let hint = match status {
            401 | 403 if has_token() => {
                "your Hugging Face token was refused for this repo: check that it can read it (a \"read\" token) and that you accepted the repo's license on huggingface.co"
            }
            401 | 403 => {
                "the repo is gated or private: accept its license on huggingface.co, then paste a Hugging Face access token (huggingface.co/settings/tokens, \"read\") in the token field of the model box"
            }
            404 => "no such file: check the repo id or URL",
            416 => "the server refused the byte range",
            500..=599 => "the server had a problem: retry later",
            _ => "retry, or check the address",
        };
        let kind = if matches!(status, 401 | 403 | 404 | 410) { ErrorKind::NotFound } else { ErrorKind::Download };
        return Err(UserError::new(kind, format!("downloading {file} from {url} failed: HTTP {status} {} ({hint})", resp.status_text())));
    }
    Ok(resp)
}

/// The `Content-Length` of a response, if announced.
pub fn content_length(resp: &Response) -> Option<u64> {
    resp.headers().get("content-length").ok().flatten().and_then(|v| v.trim().parse().ok())
}

/// The total of a `Content-Range: bytes a-b/TOTAL` header.
fn range_total(resp: &Response) -> Option<u64> {
    let v = resp.headers().get("content-range").ok().flatten()?;
    v.rsplit('/').next()?.trim().parse().ok()
}

/// The first byte of a `Content-Range: bytes a-b/TOTAL` header.
fn range_start(resp: &Response) -> Option<u64> {
    let v = resp.headers().get("content-range").ok().flatten()?;
    v.trim().strip_prefix("bytes")?.trim().split('-').next()?.trim().parse().ok()
}

/// A response's `ETag`, when the server shows it.
pub fn etag(resp: &Response) -> Option<String> {
    resp.headers().get("etag").ok().flatten().map(|e| e.trim().to_string()).filter(|e| !e.is_empty())
}

/// How many times one file's download is picked up again after the connection drops.
pub const MAX_RESUMES: u32 = 3;

/// The rest of a download that broke off after `from` of its `total` bytes: a Range request,
/// accepted only when the server answers with exactly those bytes of the same file (206, the
/// same start and total, the same ETag where both show one). Anything else is an error that
/// says why, so a download is never spliced from two versions of a file.
pub async fn resume(
    url: &str,
    file: &str,
    signal: Option<&AbortSignal>,
    from: u64,
    total: u64,
    etag_was: Option<&str>,
) -> Result<Response, UserError> {
    let resp = fetch(url, file, "GET", signal, Some(&format!("bytes={from}-"))).await?;
    let broke = |why: String| {
        UserError::new(ErrorKind::Download, format!("the download of {file} broke off after {from} of {total} bytes and could not be resumed: {why}. Load the model again to start over"))
    };
    if resp.status() != 206 {
        return Err(broke(format!("the server answered HTTP {} instead of the rest of the file", resp.status())));
    }
    if range_start(&resp) != Some(from) || range_total(&resp) != Some(total) {
        let range = resp.headers().get("content-range").ok().flatten().unwrap_or_default();
        return Err(broke(format!("the server sent another part (Content-Range `{range}`)")));
    }
    if let (Some(was), Some(now)) = (etag_was, etag(&resp)) {
        if was != now {
            return Err(broke(format!("the file changed on the server meanwhile (ETag {was} became {now})")));
        }
    }
    Ok(resp)
}

/// The size of the file at `url`: HEAD first, then a one-byte Range request.
pub async fn remote_size(url: &str, file: &str) -> Result<Option<u64>, UserError> {
    if let Ok(resp) = fetch(url, file, "HEAD", None, None).await {
        if let Some(n) = content_length(&resp) {
            return Ok(Some(n));
        }
    }
    let controller = web_sys::AbortController::new().ok();
    let signal = controller.as_ref().map(|c| c.signal());
    let resp = fetch(url, file, "GET", signal.as_ref(), Some("bytes=0-0")).await?;
    let total = if resp.status() == 206 { range_total(&resp) } else { content_length(&resp) };
    if let Some(c) = controller {
        c.abort();
    }
    Ok(total)
}

/// Downloads a small file whole, from the cache when it is there (and into it when not).
/// `Ok(None)` when the server says 404 and `optional`.
/// Whether `url` exists (a HEAD request; 404 is `false`, other failures are errors).
pub async fn exists(url: &str, file: &str, signal: Option<&AbortSignal>) -> Result<bool, UserError> {
    match fetch(url, file, "HEAD", signal, None).await {
        Ok(_) => Ok(true),
        Err(e) if e.message.contains("HTTP 404") => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn small_file(
    cache: Option<&Cache>,
    url: &str,
    file: &str,
    optional: bool,
    signal: Option<&AbortSignal>,
) -> Result<Option<(Vec<u8>, bool)>, UserError> {
    if let Some(resp) = cached(cache, url).await {
        if let Ok(bytes) = response_bytes(&resp, file).await {
            return Ok(Some((bytes, true)));
        }
    }
    let resp = match fetch(url, file, "GET", signal, None).await {
        Ok(r) => r,
        Err(e) if optional && e.message.contains("HTTP 404") => return Ok(None),
        Err(e) => return Err(e),
    };
    if let (Some(cache), Ok(copy)) = (cache, resp.clone()) {
        let _ = JsFuture::from(cache.put_with_str(url, &copy)).await;
    }
    Ok(Some((response_bytes(&resp, file).await?, false)))
}

async fn response_bytes(resp: &Response, file: &str) -> Result<Vec<u8>, UserError> {
    let promise =
        resp.array_buffer().map_err(|e| UserError::new(ErrorKind::Download, format!("could not read {file}: {}", js_error_text(&e))))?;
    let buf = JsFuture::from(promise).await.map_err(|e| {
        if is_abort(&e) {
            UserError::new(ErrorKind::Cancelled, "the download was cancelled")
        } else {
            UserError::new(ErrorKind::Download, format!("the download of {file} broke off: {} (retry)", js_error_text(&e)))
        }
    })?;
    Ok(Uint8Array::new(&buf).to_vec())
}

/// Reads a byte stream chunk by chunk.
pub struct ChunkReader {
    reader: ReadableStreamDefaultReader,
    file: String,
}

impl ChunkReader {
    pub fn new(stream: &web_sys::ReadableStream, file: &str) -> Self {
        Self { reader: stream.get_reader().unchecked_into(), file: file.to_string() }
    }

    /// The next chunk copied into `buf` (cleared first); `false` at the end of the stream.
    pub async fn next(&self, buf: &mut Vec<u8>) -> Result<bool, UserError> {
        let result = JsFuture::from(self.reader.read()).await.map_err(|e| {
            if is_abort(&e) {
                UserError::new(ErrorKind::Cancelled, "the download was cancelled")
            } else {
                UserError::new(ErrorKind::Download, format!("the download of {} broke off: {} (retry)", self.file, js_error_text(&e)))
            }
        })?;
        let done = Reflect::get(&result, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true);
        if done {
            return Ok(false);
        }
        let value = Reflect::get(&result, &"value".into()).unwrap_or(JsValue::UNDEFINED);
        let chunk: Uint8Array = value
            .dyn_into()
            .map_err(|_| UserError::new(ErrorKind::Download, format!("the stream of {} gave something other than bytes", self.file)))?;
        buf.clear();
        buf.resize(chunk.length() as usize, 0);
        chunk.copy_to(buf);
        Ok(true)
    }

    pub fn cancel(&self) {
        let _ = self.reader.cancel();
    }
}

/// Bytes and file count of everything in the model cache (from each entry's Content-Length).
pub async fn cache_usage() -> (u64, usize) {
    let Some(cache) = open_cache().await else { return (0, 0) };
    let Ok(keys) = JsFuture::from(cache.keys()).await else { return (0, 0) };
    let keys: js_sys::Array = keys.unchecked_into();
    let mut bytes = 0;
    let mut files = 0;
    for key in keys.iter() {
        let Ok(req) = key.dyn_into::<Request>() else { continue };
        if let Ok(hit) = JsFuture::from(cache.match_with_request(&req)).await {
            if let Ok(resp) = hit.dyn_into::<Response>() {
                bytes += content_length(&resp).unwrap_or(0);
                files += 1;
            }
        }
    }
    (bytes, files)
}

pub async fn clear_cache() {
    if let Ok(caches) = scope().caches() {
        let _ = JsFuture::from(caches.delete(CACHE_NAME)).await;
    }
}

/// Removes one URL from the cache (a corrupt or partial entry).
pub async fn forget(cache: Option<&Cache>, url: &str) {
    if let Some(cache) = cache {
        let _ = JsFuture::from(cache.delete_with_str(url)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{authorization, set_token};

    #[test]
    fn the_token_goes_to_the_hub_endpoint_only() {
        set_token("https://huggingface.co/", Some("hf_abc".into()));
        assert_eq!(authorization("https://huggingface.co/meta-llama/x/resolve/main/config.json").as_deref(), Some("Bearer hf_abc"));
        assert_eq!(authorization("https://huggingface.co.evil.example/x"), None, "a look-alike host");
        assert_eq!(authorization("https://example.org/model/config.json"), None, "a base URL elsewhere");
        set_token("https://huggingface.co", Some(String::new()));
        assert_eq!(authorization("https://huggingface.co/a/resolve/main/config.json"), None, "an empty token is none");
        set_token("https://huggingface.co", None);
        assert_eq!(authorization("https://huggingface.co/a/resolve/main/config.json"), None);
    }
}
