//! The model box: source picker, size, load/cancel, progress, status, cache.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use super::client::{self, send};
use super::{Ctx, ModelState, SizeInfo};
use crate::fmt;
use crate::protocol::{EngineChoice, ModelSource, ToWorker, DEFAULT_HUB, DEFAULT_MODELS, SUGGESTED_MODELS};

/// Takes the files of a file list (input or drop) into the state.
fn take_files(ctx: Ctx, list: Option<web_sys::FileList>) {
    let Some(list) = list else { return };
    let files: Vec<web_sys::File> = (0..list.length()).filter_map(|i| list.get(i)).collect();
    if files.is_empty() {
        return;
    }
    ctx.local_names.set(files.iter().map(|f| format!("{} ({})", f.name(), fmt::bytes(f.size() as u64))).collect());
    ctx.local_files.set_value(files);
    ctx.model_choice.set("local".into());
}

/// The model source picker and loader.
#[component]
pub fn ModelPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let choice = ctx.model_choice;
    let gpt2_options: Vec<(String, String)> =
        DEFAULT_MODELS.iter().map(|(name, bytes)| (name.to_string(), format!("{name} · {}", crate::fmt::bytes(*bytes)))).collect();
    let family_options: Vec<(String, String)> =
        SUGGESTED_MODELS.iter().map(|m| (m.repo.to_string(), format!("{} · {} · {}", m.repo, m.about, m.approx))).collect();
    let other_options = vec![
        ("hub".to_string(), "Other Hub repo (GPT-2, Llama, Qwen2, GPT-NeoX)…".to_string()),
        ("url".to_string(), "Base URL…".to_string()),
        ("local".to_string(), "Local files…".to_string()),
    ];
    let option = move |(value, label): (String, String)| {
        let v = value.clone();
        view! { <option value=value prop:selected=move || choice.get() == v>{label}</option> }
    };
    let hub_source = move || !matches!(choice.get().as_str(), "url" | "local");
    // The token is written to local storage only while "remember" is ticked.
    Effect::new(move |_| {
        let remember = ctx.hf_remember.get();
        let token = ctx.hf_token.get();
        super::storage::save_token(remember.then_some(token.as_str()));
    });
    let hub = ctx.hub.get_value();
    let hub_note =
        (hub != DEFAULT_HUB).then(|| view! { <p class="note" data-testid="hub-note">"Hub endpoint: " {hub.clone()} " (from ?hub=)"</p> });
    let loading = move || ctx.model_state.get() == ModelState::Loading;

    let on_drop = move |ev: web_sys::DragEvent| {
        ev.prevent_default();
        take_files(ctx, ev.data_transfer().and_then(|dt| dt.files()));
    };

    view! {
        <div class="card model" id="area-model" on:dragover=|ev: web_sys::DragEvent| ev.prevent_default() on:drop=on_drop>
            <h2>"1 · Model"</h2>
            {hub_note}
            <div class="row">
                <label for="model-select">"Source"</label>
                <select id="model-select" data-testid="model-select" on:change=move |ev| choice.set(event_target_value(&ev))>
                    <optgroup label="GPT-2 (OpenAI)">
                        {gpt2_options.into_iter().map(option).collect_view()}
                    </optgroup>
                    <optgroup label="Other families, from the Hub">
                        {family_options.into_iter().map(option).collect_view()}
                    </optgroup>
                    <optgroup label="Anything else">
                        {other_options.into_iter().map(option).collect_view()}
                    </optgroup>
                </select>
            </div>
            <Show when=move || choice.get() == "hub">
                <div class="row">
                    <label for="model-repo">"Repo id"</label>
                    <input id="model-repo" type="text" data-testid="model-repo" placeholder="owner/name, e.g. openai-community/gpt2"
                        prop:value=move || ctx.model_repo.get()
                        on:input=move |ev| ctx.model_repo.set(event_target_value(&ev))/>
                </div>
            </Show>
            <Show when=move || choice.get() == "url">
                <div class="row">
                    <label for="model-url">"Base URL"</label>
                    <input id="model-url" type="url" data-testid="model-url" placeholder="https://example.org/my-gpt2 (holding model.safetensors, tokenizer.json, config.json)"
                        prop:value=move || ctx.model_url.get()
                        on:input=move |ev| ctx.model_url.set(event_target_value(&ev))/>
                </div>
            </Show>
            <div class="row files" class:hidden=move || choice.get() != "local">
                <label for="model-files">"Files"</label>
                <input id="model-files" type="file" multiple accept=".safetensors,.json" data-testid="model-files"
                    on:change=move |ev| {
                        let input = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok());
                        take_files(ctx, input.and_then(|i| i.files()));
                    }/>
                <p class="note">"model.safetensors + tokenizer.json (+ config.json). You can also drop them anywhere on this box."</p>
                <ul class="file-list">{move || ctx.local_names.get().into_iter().map(|n| view! { <li>{n}</li> }).collect_view()}</ul>
            </div>
            <div class="row">
                <label for="engine-select">"Engine"</label>
                <select id="engine-select" data-testid="engine-select"
                    on:change=move |ev| ctx.engine_choice.set(EngineChoice::parse(&event_target_value(&ev)).unwrap_or_default())>
                    {[(EngineChoice::Auto, "auto (WebGPU if available)"), (EngineChoice::Gpu, "WebGPU"), (EngineChoice::Cpu, "CPU (small models only)")]
                        .into_iter()
                        .map(|(e, label)| view! { <option value=e.as_str() prop:selected=move || ctx.engine_choice.get() == e>{label}</option> })
                        .collect_view()}
                </select>
                <WebGpuNote/>
            </div>
            <details class="token" class:hidden=move || !hub_source() prop:open=untrack(move || !ctx.hf_token.get().is_empty())>
                <summary>"Hugging Face token (only for gated repos such as Llama 3.2)"</summary>
                <div class="row">
                <label for="hf-token">"Token"</label>
                <input id="hf-token" type="password" data-testid="hf-token" autocomplete="off" spellcheck="false"
                    placeholder="hf_…"
                    prop:value=move || ctx.hf_token.get() on:input=move |ev| ctx.hf_token.set(event_target_value(&ev))/>
                <label class="check">
                    <input type="checkbox" data-testid="hf-token-remember" prop:checked=move || ctx.hf_remember.get()
                        on:change=move |ev| ctx.hf_remember.set(event_target_checked(&ev))/>
                    "remember in this browser"
                </label>
                </div>
                <p class="note">"Sent only to the Hub, with this model's downloads; never put in share links. Get one at huggingface.co/settings/tokens (\"read\"), after accepting the repo's license."</p>
            </details>
            <p class="size" data-testid="model-size">{move || size_text(&ctx.size.get())}</p>
            <div class="buttons">
                <button class="primary" data-testid="model-load" disabled=loading
                    on:click=move |_| client::load(ctx, ctx.chosen_source())>"Load model"</button>
                <button data-testid="model-cancel" disabled=move || !loading()
                    on:click=move |_| send(ctx, &ToWorker::CancelLoad, &[])>"Cancel"</button>
            </div>
            <ProgressBar/>
            <ModelStatus/>
            <CacheLine/>
        </div>
    }
}

pub fn size_text(size: &SizeInfo) -> String {
    match size {
        SizeInfo::Unknown => "Size: choose a model to see its size.".into(),
        SizeInfo::Querying(Some(b)) => format!("Download size: about {} (asking the server…)", fmt::bytes(*b)),
        SizeInfo::Querying(None) => "Download size: asking the server…".into(),
        SizeInfo::Known { bytes: Some(b), cached: true } => {
            format!("Size: {} (already in this browser's cache: no download)", fmt::bytes(*b))
        }
        SizeInfo::Known { bytes: Some(b), cached: false } => format!("Download size: {}", fmt::bytes(*b)),
        SizeInfo::Known { bytes: None, .. } => "Download size: unknown (the server does not say)".into(),
        SizeInfo::Error(e) => format!("Download size: unknown ({e})"),
    }
}

/// What the worker found about WebGPU, with what to do when it is missing.
#[component]
fn WebGpuNote() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    move || match ctx.webgpu.get() {
        Some(false) => Some(view! {
            <p class="note warn" data-testid="warning">
                "This browser has no WebGPU, so only the slow CPU engine (tiny models, distilgpt2, gpt2) is available. "
                "For WebGPU use Chrome or Edge 113+ (Linux: start with --enable-unsafe-webgpu), Safari 26+, or Firefox 141+ (Windows) / Nightly with dom.webgpu.enabled."
            </p>
        }),
        _ => None,
    }
}

/// The download bar: bytes, percent, speed, time left.
#[component]
fn ProgressBar() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    move || {
        let p = ctx.progress.get()?;
        let loading = ctx.model_state.get() == ModelState::Loading;
        let pct = p.total.filter(|&t| t > 0).map(|t| (p.loaded as f64 / t as f64 * 100.0).min(100.0));
        let secs = ((p.now_ms - p.started_ms) / 1000.0).max(1e-3);
        let speed = p.loaded as f64 / secs;
        let mut text = format!(
            "{} {}{}",
            if p.from_cache { "Reading from cache:" } else { "Downloading:" },
            fmt::bytes(p.loaded),
            p.total.map(|t| format!(" of {}", fmt::bytes(t))).unwrap_or_default()
        );
        if let Some(pct) = pct {
            text.push_str(&format!(" ({pct:.0}%)"));
        }
        if p.loaded > 0 && secs > 0.2 {
            text.push_str(&format!(" · {}/s", fmt::bytes(speed as u64)));
            if let (Some(t), true) = (p.total, loading && speed > 0.0) {
                text.push_str(&format!(" · {} left", fmt::duration(t.saturating_sub(p.loaded) as f64 / speed)));
            }
        }
        if !loading && ctx.model_state.get() == ModelState::Ready {
            text = format!("Done: {} in {}", fmt::bytes(p.loaded), fmt::duration(secs));
        }
        let width = format!("width: {:.1}%", pct.unwrap_or(if loading { 0.0 } else { 100.0 }));
        Some(view! {
            <div class="progress" data-testid="progress" data-loaded=p.loaded.to_string()
                data-total=p.total.map(|t| t.to_string()).unwrap_or_default()>
                <div class="bar"><div class="fill" style=width></div></div>
                <span class="progress-text">{text}</span>
            </div>
        })
    }
}

/// The model's state in words.
#[component]
fn ModelStatus() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let text = move || match ctx.model_state.get() {
        ModelState::Idle => "No model loaded yet.".to_string(),
        ModelState::Loading => {
            let what = ctx.loading_source.get().map(|s| s.label()).unwrap_or_default();
            match ctx.load_phase.get() {
                Some((p, gpu)) => format!("Loading {what}: {}…", p.words(gpu)),
                None => format!("Loading {what}…"),
            }
        }
        ModelState::Ready => ctx
            .loaded
            .get()
            .map(|l| {
                let c = l.config;
                format!(
                    "Ready: {} ({} layers, {} channels, {} heads, context {}) on {}{}. Engine memory in this tab: {} of wasm.",
                    l.source.label(),
                    c.n_layer,
                    c.n_embd,
                    c.n_head,
                    c.n_positions,
                    l.engine,
                    if l.from_cache { ", loaded from this browser's cache" } else { "" },
                    fmt::bytes(l.wasm_memory)
                )
            })
            .unwrap_or_default(),
        ModelState::Error => "The model is not loaded (see the error above).".to_string(),
    };
    let source = move || {
        ctx.loaded.get().map(|l| match (l.source, l.from_cache) {
            (ModelSource::Local, _) => "local",
            (_, true) => "cache",
            _ => "network",
        })
    };
    view! {
        <p class="status" data-testid="model-status" data-state=move || ctx.model_state.get().as_str() data-source=source
            data-phase=move || ctx.load_phase.get().map(|(p, _)| p.as_str())
            data-engine=move || ctx.loaded.get().map(|l| if l.engine.starts_with("WebGPU") { "gpu" } else { "cpu" })
            data-wasm-memory=move || ctx.loaded.get().map(|l| l.wasm_memory)>{text}</p>
        {move || ctx.loaded.get().and_then(|l| l.note).map(|n| view! { <p class="note" data-testid="engine-note">{n}</p> })}
    }
}

/// The browser cache's size and a button to empty it.
#[component]
fn CacheLine() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <p class="cache">
            "Browser cache: "
            <span data-testid="cache-size">{move || match ctx.cache.get() {
                Some((bytes, files)) => format!("{} in {files} file{}", fmt::bytes(bytes), if files == 1 { "" } else { "s" }),
                None => "…".to_string(),
            }}</span>
            " "
            <button class="small" data-testid="cache-clear" on:click=move |_| send(ctx, &ToWorker::CacheClear, &[])>"Clear cache"</button>
        </p>
    }
}
