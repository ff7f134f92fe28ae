//! What the page keeps in the browser's local storage, under one key each: the editor as typed
//! and the finished runs (so a reload loses nothing), whether the first-visit tour was closed
//! and, only when the user asks, their Hugging Face token.

use crate::form::Form;

const EDITOR: &str = "tiller.editor.v1";
const TOKEN: &str = "tiller.hf_token";
const HISTORY: &str = "tiller.history.v1";

fn local() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

fn get(key: &str) -> Option<String> {
    local()?.get_item(key).ok()?
}

/// Stores `value` under `key`, or removes the key when `None`. Storage may be off (private
/// windows, quota): then nothing is kept, silently.
fn put(key: &str, value: Option<&str>) {
    if let Some(s) = local() {
        let _ = match value {
            Some(v) => s.set_item(key, v),
            None => s.remove_item(key),
        };
    }
}

pub fn load_editor() -> Option<Form> {
    serde_json::from_str(&get(EDITOR)?).ok()
}

pub fn save_editor(form: &Form) {
    if let Ok(json) = serde_json::to_string(form) {
        put(EDITOR, Some(&json));
    }
}

pub fn load_token() -> Option<String> {
    get(TOKEN).filter(|t| !t.is_empty())
}

/// Keeps `token`, or forgets it when `None` or empty.
pub fn save_token(token: Option<&str>) {
    put(TOKEN, token.filter(|t| !t.is_empty()));
}

pub fn load_history() -> Vec<crate::history::SavedRun> {
    get(HISTORY).map(|j| crate::history::from_json(&j)).unwrap_or_default()
}

pub fn save_history(runs: &[crate::history::SavedRun]) {
    put(HISTORY, Some(&crate::history::to_json(runs)));
}

const TOUR: &str = "tiller.tour";

/// Whether the first-visit tour was closed (then it stays closed).
pub fn tour_done() -> bool {
    get(TOUR).is_some()
}

pub fn save_tour_done() {
    put(TOUR, Some("done"));
}
