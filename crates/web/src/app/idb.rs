//! The vector library's storage: one IndexedDB object store of `{id, bytes}` records, where
//! `bytes` is the entry as a `tiller vector` safetensors file (the same file a download gives).

use wasm_bindgen::prelude::*;

#[wasm_bindgen(inline_js = r#"
const DB = 'tiller-library', STORE = 'vectors';
let opening = null;
function db() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      if (typeof indexedDB === 'undefined') { reject(new Error('this browser gives the page no IndexedDB')); return; }
      const r = indexedDB.open(DB, 1);
      r.onupgradeneeded = () => r.result.createObjectStore(STORE, { keyPath: 'id' });
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error || new Error('IndexedDB would not open'));
      r.onblocked = () => reject(new Error('another tab holds an older library open: close it and reload'));
    }).catch((e) => { opening = null; throw e; });
  }
  return opening;
}
function run(mode, f) {
  return db().then((d) => new Promise((resolve, reject) => {
    const tx = d.transaction(STORE, mode);
    const req = f(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(req.result);
    tx.onerror = () => reject(tx.error || new Error('the library transaction failed'));
    tx.onabort = () => reject(tx.error || new Error('the library transaction was aborted'));
  }));
}
export function idb_put(id, bytes) { return run('readwrite', (s) => s.put({ id, bytes: bytes.slice() })); }
export function idb_all() { return run('readonly', (s) => s.getAll()); }
export function idb_delete(id) { return run('readwrite', (s) => s.delete(id)); }
"#)]
extern "C" {
    #[wasm_bindgen(catch)]
    async fn idb_put(id: &str, bytes: &[u8]) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch)]
    async fn idb_all() -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch)]
    async fn idb_delete(id: &str) -> Result<JsValue, JsValue>;
}

/// A JS error as a sentence (its `name: message`, e.g. QuotaExceededError).
fn said(e: JsValue) -> String {
    let get = |k: &str| js_sys::Reflect::get(&e, &JsValue::from_str(k)).ok().and_then(|v| v.as_string());
    match (get("name"), get("message")) {
        (Some(n), Some(m)) if !m.is_empty() => format!("{n}: {m}"),
        (_, Some(m)) if !m.is_empty() => m,
        _ => e.as_string().unwrap_or_else(|| format!("{e:?}")),
    }
}

pub async fn put(id: &str, bytes: &[u8]) -> Result<(), String> {
    idb_put(id, bytes).await.map(|_| ()).map_err(said)
}

pub async fn delete(id: &str) -> Result<(), String> {
    idb_delete(id).await.map(|_| ()).map_err(said)
}

/// Every stored record as (id, bytes).
pub async fn all() -> Result<Vec<(String, Vec<u8>)>, String> {
    let records = idb_all().await.map_err(said)?;
    let mut out = Vec::new();
    for r in js_sys::Array::from(&records).iter() {
        let id = js_sys::Reflect::get(&r, &JsValue::from_str("id")).ok().and_then(|v| v.as_string());
        let bytes = js_sys::Reflect::get(&r, &JsValue::from_str("bytes")).ok().filter(|b| b.is_instance_of::<js_sys::Uint8Array>());
        if let (Some(id), Some(bytes)) = (id, bytes) {
            out.push((id, js_sys::Uint8Array::from(bytes).to_vec()));
        }
    }
    Ok(out)
}
