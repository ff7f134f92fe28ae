//! The page's side of the worker: starting it, sending [`ToWorker`] messages, and turning
//! every [`FromWorker`] answer into signal updates.

use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker};

use super::{
    Banner, BuildRun, Ctx, EvalRun, LoadedModel, ModelState, Progress, Reading, RunRecord, RunState, SizeInfo, SweepRun, VocabState,
};
use crate::form::TokenCounts;
use crate::protocol::{default_size, envelope, ErrorKind, FromWorker, GenerationView, ModelSource, RunTiming, ToWorker, UserError};

/// The worker script `cargo xtask page` writes next to the page (it `importScripts` the
/// worker's wasm-bindgen glue and starts its wasm).
const WORKER_URL: &str = "./tiller-worker_loader.js";

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Starts the worker and wires its messages to the page's state.
pub fn start(ctx: Ctx) {
    let worker = match Worker::new(WORKER_URL) {
        Ok(w) => w,
        Err(e) => {
            ctx.show_error(ErrorKind::Internal, format!("the engine worker could not start ({e:?}): reload the page"));
            return;
        }
    };
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let Some(text) = event.data().as_string() else { return };
        match serde_json::from_str::<FromWorker>(&text) {
            Ok(msg) => on_message(ctx, msg),
            Err(e) => ctx.show_error(ErrorKind::Internal, format!("the page got a worker message it does not understand: {e}")),
        }
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let this_worker = worker.clone();
    let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |event: web_sys::ErrorEvent| {
        event.prevent_default();
        // A worker already replaced (after its panic was reported) may still trap: ignore it.
        if !ctx.worker.with_value(|w| w.as_ref().is_some_and(|w| JsValue::from(w) == JsValue::from(&this_worker))) {
            return;
        }
        let message = event.message();
        ctx.model_state.set(ModelState::Error);
        ctx.loaded.set(None);
        if ctx.run_state.get_untracked() == RunState::Running {
            ctx.run_state.set(RunState::Error);
        }
        fail_sweep(ctx, "the engine worker stopped: load the model again and rerun the sweep");
        ctx.show_error(
            ErrorKind::Internal,
            format!(
                "the engine worker stopped ({message}). It was restarted: load the model again; if this happens again, reload the page."
            ),
        );
        restart(ctx);
    });
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    ctx.outbox.set_value(Some(Vec::new()));
    ctx.worker.set_value(Some(worker));
}

/// Replaces a broken worker with a fresh one; the page keeps its state.
pub fn restart(ctx: Ctx) {
    if let Some(old) = ctx.worker.try_update_value(|w| w.take()).flatten() {
        old.terminate();
    }
    start(ctx);
}

/// Posts a message; `files` travel with it (local model files). Until the worker has started
/// (its wasm listens) the message waits in `ctx.outbox`: posted earlier, it would be lost and a
/// Load clicked on a slow machine would say "loading" for ever.
pub fn send(ctx: Ctx, msg: &ToWorker, files: &[web_sys::File]) {
    let obj = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&obj, &envelope::MSG.into(), &msg.to_json().into());
    if !files.is_empty() {
        let arr: js_sys::Array = files.iter().map(JsValue::from).collect();
        let _ = js_sys::Reflect::set(&obj, &envelope::FILES.into(), &arr);
    }
    let queued = ctx.outbox.try_update_value(|q| q.as_mut().map(|q| q.push(obj.clone())).is_some()).unwrap_or(false);
    if !queued {
        post(ctx, &obj);
    }
}

fn post(ctx: Ctx, obj: &js_sys::Object) {
    ctx.worker.with_value(|w| {
        let Some(w) = w else { return };
        if let Err(e) = w.post_message(obj) {
            ctx.show_error(ErrorKind::Internal, format!("could not talk to the engine worker ({e:?}): reload the page"));
        }
    });
}

/// The worker has started: what waited for it goes now, in order.
fn flush_outbox(ctx: Ctx) {
    for obj in ctx.outbox.try_update_value(Option::take).flatten().unwrap_or_default() {
        post(ctx, &obj);
    }
}

/// The most runs the history holds in this tab (the oldest go first).
const MAX_RUNS: usize = 200;

/// Loads a model from a source (with the picked files for local sources).
pub fn load(ctx: Ctx, source: ModelSource) {
    load_with(ctx, source, false)
}

/// [`load`], with weights holding NaN or infinities loaded anyway when `allow_non_finite` (the
/// banner's "Load anyway" after the refusal).
pub fn load_with(ctx: Ctx, source: ModelSource, allow_non_finite: bool) {
    if let Err(e) = source.base_url(&ctx.hub.get_value()) {
        if source != ModelSource::Local {
            ctx.show_error(ErrorKind::NotFound, e);
            return;
        }
    }
    let files = ctx.local_files.get_value();
    if source == ModelSource::Local && files.is_empty() {
        ctx.show_error(
            ErrorKind::BadFile,
            "pick model.safetensors and tokenizer.json (and config.json if you have it) first, or drop them on the model box",
        );
        return;
    }
    if ctx.run_state.get_untracked() == RunState::Running {
        send(ctx, &ToWorker::Stop, &[]);
        ctx.run_state.set(RunState::Idle);
    }
    // A sweep stops by itself when the engine goes (its `sweep_done` says "stopped").
    // The loaded model (if any) stays in `ctx.loaded` until the new one is ready or the load
    // fails; the worker says then whether it is still there.
    ctx.error.set(None);
    ctx.model_state.set(ModelState::Loading);
    ctx.loading_source.set(Some(source.clone()));
    let t = now_ms();
    ctx.progress.set(Some(Progress { loaded: 0, total: None, from_cache: false, started_ms: t, now_ms: t }));
    let files = if source == ModelSource::Local { files } else { Vec::new() };
    let token = untrack(|| ctx.hub_token());
    send(
        ctx,
        &ToWorker::Load { source, hub: ctx.hub.get_value(), engine: ctx.engine_choice.get_untracked(), token, allow_non_finite },
        &files,
    );
}

/// Queries the size of the chosen model whenever the picker changes (debounced for typing).
pub fn watch_size(ctx: Ctx) {
    Effect::new(move |_| {
        let source = ctx.chosen_source();
        if ctx.pending_confirm.with(|p| p.is_some()) {
            // A share link's unknown source: not even a HEAD request before the user agrees.
            return ctx.size.set(SizeInfo::Unknown);
        }
        let id = ctx.fresh_id();
        ctx.last_size_id.set_value(id);
        match &source {
            ModelSource::Local => {
                let total: u64 = ctx.local_files.with_value(|fs| fs.iter().map(|f| f.size() as u64).sum());
                ctx.local_names.track();
                ctx.size.set(if total > 0 { SizeInfo::Known { bytes: Some(total), cached: false } } else { SizeInfo::Unknown });
                return;
            }
            ModelSource::Hub(r) if r.is_empty() => return ctx.size.set(SizeInfo::Unknown),
            ModelSource::Url(u) if u.is_empty() => return ctx.size.set(SizeInfo::Unknown),
            _ => {}
        }
        let known = match &source {
            ModelSource::Default(name) => default_size(name),
            _ => None,
        };
        ctx.size.set(SizeInfo::Querying(known));
        let delay = if source.is_default() { 0 } else { 600 };
        let hub = ctx.hub.get_value();
        let token = ctx.hub_token();
        set_timeout(
            move || {
                if ctx.last_size_id.get_value() == id {
                    send(ctx, &ToWorker::QuerySize { id, source, hub, token }, &[]);
                }
            },
            std::time::Duration::from_millis(delay),
        );
    });
}

/// Asks the worker for token counts whenever the prompt or terms change (for warnings).
pub fn watch_analysis(ctx: Ctx) {
    Effect::new(move |_| {
        if ctx.model_state.get() != ModelState::Ready {
            return;
        }
        let (prompt, terms, bos, chat, system, chat_terms) = ctx.form.with(|f| {
            (f.prompt.clone(), f.terms.iter().map(|t| t.text.clone()).collect::<Vec<_>>(), f.bos, f.chat, f.system.clone(), f.chat_terms)
        });
        let id = ctx.fresh_id();
        ctx.last_analysis_id.set_value(id);
        send(ctx, &ToWorker::Analyze { id, prompt, terms, bos, chat, system, chat_terms }, &[]);
    });
}

/// Starts a run of the editor's recipe; returns the problems instead when it cannot run.
pub fn run(ctx: Ctx) -> Result<(), Vec<String>> {
    let Some(loaded) = ctx.loaded.get_untracked() else {
        return Err(vec!["load a model first (left, top)".into()]);
    };
    if untrack(|| ctx.sweeping()) {
        return Err(vec!["a sweep is running: wait for it or stop it first".into()]);
    }
    if untrack(|| ctx.building()) {
        return Err(vec!["a vector is being built (Vectors): wait for it or stop it first".into()]);
    }
    let recipe = ctx.form.with_untracked(|f| f.to_recipe(Some(&loaded.config)))?;
    let run_id = ctx.fresh_id();
    ctx.error.set(None);
    ctx.runs.update(|runs| {
        // Numbered after the newest, not by count: once the oldest are let go (MAX_RUNS),
        // a count would give every new run the same number.
        let number = runs.iter().map(|r| r.number).max().unwrap_or(0) + 1;
        runs.push(RunRecord {
            id: run_id,
            number,
            source: loaded.source.clone(),
            recipe: recipe.clone(),
            generation: GenerationView::default(),
            state: RunState::Running,
            stopped: false,
            error: None,
            timing: RunTiming::default(),
        });
        // The page keeps the newest runs, not every one ever made in this tab.
        if runs.len() > MAX_RUNS {
            runs.drain(..runs.len() - MAX_RUNS);
        }
    });
    ctx.shown_run.set(Some(run_id));
    ctx.vocab_recipe.set_value(None);
    ctx.run_state.set(RunState::Running);
    ctx.vocab.set(VocabState::Empty);
    send(ctx, &ToWorker::Run { run_id, recipe }, &[]);
    show_results();
    Ok(())
}

/// Brings the completions into view when a run starts from where they are off screen (Run at
/// the foot of a long recipe, or on a phone, where they sit below it).
fn show_results() {
    let Some(window) = web_sys::window() else { return };
    let Some(el) = window.document().and_then(|d| d.query_selector(".results").ok().flatten()) else { return };
    let top = el.get_bounding_client_rect().top();
    let height = window.inner_height().ok().and_then(|h| h.as_f64()).unwrap_or(0.0);
    if top < 0.0 || top > height - 80.0 {
        el.scroll_into_view_with_bool(true);
    }
}

/// Asks for the decoded vocabulary of the shown run's steering terms.
pub fn request_vocab(ctx: Ctx) {
    let Some(recipe) = ctx.vocab_recipe.get_value().or_else(|| shown_recipe(ctx)) else { return };
    decode_vocab(ctx, &recipe);
}

/// Asks for the decoded vocabulary of a recipe's steering terms (the editor's, without a run).
pub fn decode_vocab(ctx: Ctx, recipe: &tiller_core::Recipe) {
    if ctx.model_state.get_untracked() != ModelState::Ready || untrack(|| ctx.busy()) {
        return;
    }
    ctx.vocab_recipe.set_value(Some(recipe.clone()));
    let id = ctx.fresh_id();
    ctx.last_vocab_id.set_value(id);
    ctx.vocab.set(VocabState::Loading);
    let msg = ToWorker::Vocab {
        id,
        terms: recipe.terms.clone(),
        bos: recipe.bos,
        site: recipe.site,
        k: 10,
        ln_f: ctx.vocab_ln_f.get_untracked(),
        chat_system: tiller_core::steer::TextEncoding::of_terms(recipe).chat,
    };
    send(ctx, &msg, &[]);
}

/// Starts a sweep of the editor's terms with the sweep panel's settings; returns the
/// problems instead when it cannot run.
pub fn run_sweep(ctx: Ctx) -> Result<(), Vec<String>> {
    let Some(loaded) = ctx.loaded.get_untracked() else {
        return Err(vec!["load a model first (left, top)".into()]);
    };
    if untrack(|| ctx.busy()) {
        return Err(vec!["the engine is busy with a run or a sweep: wait for it or stop it first".into()]);
    }
    let depth = loaded.config.n_layer;
    let spec = ctx.form.with_untracked(|editor| ctx.sweep_form.with_untracked(|f| f.to_spec(editor, depth)))?;
    let run_id = ctx.fresh_id();
    ctx.sweep.set(Some(SweepRun {
        id: run_id,
        source: loaded.source,
        spec: spec.clone(),
        state: RunState::Running,
        done: 0,
        total: 0,
        rows: Vec::new(),
        stopped: false,
        error: None,
    }));
    send(ctx, &ToWorker::Sweep { run_id, spec }, &[]);
    Ok(())
}

/// Starts building a vector from the Vectors area's pairs; returns the problems instead when
/// it cannot run.
pub fn build_vector(ctx: Ctx) -> Result<(), Vec<String>> {
    let Some(loaded) = ctx.loaded.get_untracked() else {
        return Err(vec!["load a model first (left, top)".into()]);
    };
    if untrack(|| ctx.busy()) {
        return Err(vec!["the engine is busy with a run, a sweep or a build: wait for it or stop it first".into()]);
    }
    // Texts are tokenized as the recipe tokenizes steering texts: its BOS box, and the chat
    // template when both "chat" and "terms through the template too" are on.
    let (bos, chat, system) = ctx.form.with_untracked(|f| (f.bos, f.chat && f.chat_terms, f.system.clone()));
    let spec = ctx.vec_form.with_untracked(|f| f.to_spec(loaded.config.n_layer, bos, chat, &system))?;
    let run_id = ctx.fresh_id();
    ctx.vec_build.set(Some(BuildRun {
        id: run_id,
        spec: spec.clone(),
        model: loaded.source.model_id(),
        state: RunState::Running,
        done: 0,
        total: 0,
        stopped: false,
        error: None,
        saved_as: None,
    }));
    send(ctx, &ToWorker::BuildVector { run_id, spec }, &[]);
    Ok(())
}

/// Starts an A/B evaluation of the ticked library vectors on the build form's items.
pub fn eval_ab(ctx: Ctx) -> Result<(), Vec<String>> {
    let Some(loaded) = ctx.loaded.get_untracked() else {
        return Err(vec!["load a model first (left, top)".into()]);
    };
    if untrack(|| ctx.busy()) {
        return Err(vec!["the engine is busy with a run, a sweep, a build or an evaluation: wait for it or stop it first".into()]);
    }
    // Items are tokenized as the build tokenizes them.
    let (bos, chat, system) = ctx.form.with_untracked(|f| (f.bos, f.chat && f.chat_terms, f.system.clone()));
    let (spec, labels) = ctx.eval_form.with_untracked(|e| {
        ctx.vec_form.with_untracked(|f| {
            ctx.library.with_untracked(|l| e.to_spec(f, l, loaded.config.n_layer, loaded.config.n_embd, bos, chat, &system))
        })
    })?;
    let run_id = ctx.fresh_id();
    ctx.vec_eval.set(Some(EvalRun {
        id: run_id,
        labels,
        coeffs: spec.coeffs.clone(),
        state: RunState::Running,
        done: 0,
        total: 0,
        rows: Vec::new(),
        items: 0,
        stopped: false,
        error: None,
    }));
    send(ctx, &ToWorker::EvalAb { run_id, spec }, &[]);
    Ok(())
}

/// Reads a library entry against the loaded model: each layer's decoded vocabulary and the
/// residual stream's size there for the editor's prompt.
pub fn read_vector(ctx: Ctx, entry: &str, ln_f: bool) -> Result<(), String> {
    if ctx.loaded.with_untracked(Option::is_none) {
        return Err("load a model first (left, top) to read a vector against it".into());
    }
    if untrack(|| ctx.busy()) {
        return Err("the engine is busy with a run, a sweep, a build or an evaluation: wait for it or stop it first".into());
    }
    let Some(stored) = ctx.library.with_untracked(|l| l.get(entry).cloned()) else {
        return Err("that vector is no longer in the library".into());
    };
    if stored.entry.site == tiller_core::Site::Z {
        return Err(format!("“{}” is at the attention heads (z), which the unembedding cannot read", stored.entry.name));
    }
    let layers: Vec<(usize, Vec<f32>)> = stored.entry.layers.iter().map(|l| (l.layer, l.vector.clone())).collect();
    let prompt = ctx.form.with_untracked(|f| tiller_core::Recipe {
        prompt: f.prompt.clone(),
        bos: f.bos,
        chat: f.chat,
        system: f.system.clone(),
        ..Default::default()
    });
    let id = ctx.fresh_id();
    ctx.vec_reading.set(Some(Reading {
        id,
        entry: entry.to_string(),
        ln_f,
        state: RunState::Running,
        layers: Vec::new(),
        prompt_tokens: None,
        prompt_problem: None,
        error: None,
    }));
    send(ctx, &ToWorker::ReadVector { id, layers, k: 10, ln_f, prompt: Some(prompt) }, &[]);
    Ok(())
}

fn update_eval(ctx: Ctx, run_id: Option<u64>, f: impl FnOnce(&mut EvalRun)) {
    ctx.vec_eval.update(|e| {
        if let Some(e) = e.as_mut().filter(|e| run_id.is_none_or(|id| e.id == id)) {
            f(e);
        }
    });
}

/// Updates the current build when it is `run_id`.
fn update_build(ctx: Ctx, run_id: u64, f: impl FnOnce(&mut BuildRun)) {
    ctx.vec_build.update(|b| {
        if let Some(b) = b.as_mut().filter(|b| b.id == run_id) {
            f(b);
        }
    });
}

/// Marks a running sweep as failed.
fn fail_sweep(ctx: Ctx, message: &str) {
    update_sweep(ctx, None, |s| {
        if s.state == RunState::Running {
            s.state = RunState::Error;
            s.error = Some(message.to_string());
        }
    });
}

/// Updates the current sweep (only if it is `run_id`, when given).
fn update_sweep(ctx: Ctx, run_id: Option<u64>, f: impl FnOnce(&mut SweepRun)) {
    ctx.sweep.update(|s| {
        if let Some(s) = s.as_mut().filter(|s| run_id.is_none_or(|id| s.id == id)) {
            f(s);
        }
    });
}

fn shown_recipe(ctx: Ctx) -> Option<tiller_core::Recipe> {
    let shown = ctx.shown_run.get_untracked()?;
    ctx.runs.with_untracked(|runs| runs.iter().find(|r| r.id == shown).map(|r| r.recipe.clone()))
}

fn update_run(ctx: Ctx, run_id: u64, f: impl FnOnce(&mut RunRecord)) {
    ctx.runs.update(|runs| {
        if let Some(r) = runs.iter_mut().find(|r| r.id == run_id) {
            f(r);
        }
    });
}

fn on_message(ctx: Ctx, msg: FromWorker) {
    if super::inspect::on_message(ctx, &msg) || super::heads::on_message(ctx, &msg) || super::discover::on_message(ctx, &msg) {
        return;
    }
    match msg {
        FromWorker::Started { webgpu } => {
            ctx.webgpu.set(Some(webgpu));
            flush_outbox(ctx);
            send(ctx, &ToWorker::CacheInfo, &[]);
            if let Some(source) = ctx.autoload.get_value() {
                ctx.autoload.set_value(None);
                load(ctx, source);
            }
        }
        FromWorker::Size { id, bytes, cached, error } => {
            if ctx.last_size_id.get_value() != id {
                return;
            }
            let built_in = match ctx.chosen_source() {
                ModelSource::Default(name) => default_size(&name),
                _ => None,
            };
            ctx.size.set(match (error, bytes.or(built_in)) {
                // A default model's size is known even when the server does not say it.
                (_, Some(b)) => SizeInfo::Known { bytes: Some(b), cached },
                (Some(e), None) => SizeInfo::Error(e),
                (None, None) => SizeInfo::Known { bytes: None, cached },
            });
        }
        FromWorker::Progress { loaded, total, from_cache, .. } => {
            ctx.progress.update(|p| {
                let started_ms = p.map(|p| p.started_ms).unwrap_or_else(now_ms);
                *p = Some(Progress { loaded, total, from_cache, started_ms, now_ms: now_ms() });
            });
        }
        FromWorker::LoadPhase { phase, gpu } => ctx.load_phase.set(Some((phase, gpu))),
        FromWorker::Loaded { config, engine, from_cache, bytes, note, wasm_memory, bos_default, chat_template } => {
            ctx.load_phase.set(None);
            let source = ctx.loading_source.get_untracked().unwrap_or_else(|| ctx.chosen_source());
            // Other families follow their tokenizer's BOS default (Llama 3 adds one) unless the
            // box was set by hand, a link or a history entry; a model without a chat template
            // cannot render one.
            if config.family != tiller_core::Family::Gpt2 && !ctx.bos_pinned.get_value() {
                ctx.form.update(|f| f.bos = bos_default);
            }
            if !chat_template {
                ctx.form.update(|f| f.chat = false);
            }
            ctx.counts.set(None);
            ctx.vocab.set(VocabState::Empty);
            ctx.loaded.set(Some(LoadedModel { source, config, engine, from_cache, bytes, note, wasm_memory, bos_default, chat_template }));
            ctx.model_state.set(ModelState::Ready);
            ctx.loading_source.set(None);
        }
        FromWorker::LoadFailed { mut error, kept } => {
            ctx.load_phase.set(None);
            let cancelled = error.kind == crate::protocol::ErrorKind::Cancelled;
            ctx.progress.set(None);
            ctx.loading_source.set(None);
            let previous = if kept { ctx.loaded.get_untracked() } else { None };
            match &previous {
                Some(l) => {
                    ctx.model_state.set(ModelState::Ready);
                    if !cancelled {
                        error.message = format!("{} {} is still loaded and ready to run.", error.message, l.source.label());
                    }
                }
                None => {
                    ctx.loaded.set(None);
                    ctx.counts.set(None);
                    ctx.vocab.set(VocabState::Empty);
                    ctx.model_state.set(if cancelled { ModelState::Idle } else { ModelState::Error });
                }
            }
            if !cancelled {
                ctx.error.set(Some(Banner::from(error)));
            }
        }
        FromWorker::Analysis { id, prompt_tokens, term_tokens, prompt_text } => {
            if ctx.last_analysis_id.get_value() == id {
                ctx.counts.set(Some(TokenCounts { prompt: prompt_tokens, terms: term_tokens, prompt_text }));
            }
        }
        FromWorker::RunStep { run_id, generation, timing } => update_run(ctx, run_id, |r| {
            r.generation = generation;
            r.timing = timing;
        }),
        FromWorker::RunDone { run_id, generation, stopped, timing } => {
            update_run(ctx, run_id, |r| {
                r.generation = generation;
                r.timing = timing;
                r.state = RunState::Done;
                r.stopped = stopped;
            });
            ctx.run_state.set(RunState::Done);
            request_vocab(ctx);
        }
        FromWorker::RunFailed { run_id, error } => {
            update_run(ctx, run_id, |r| {
                r.state = RunState::Error;
                r.error = Some(error.message.clone());
            });
            ctx.run_state.set(RunState::Error);
            if matches!(error.kind, ErrorKind::DeviceLost) {
                ctx.model_state.set(ModelState::Error);
                ctx.loaded.set(None);
            }
            ctx.error.set(Some(Banner::from(error)));
        }
        FromWorker::SweepProgress { run_id, done, total, rows } => update_sweep(ctx, Some(run_id), |s| {
            s.done = done;
            s.total = total;
            s.rows.extend(rows);
        }),
        FromWorker::SweepDone { run_id, stopped } => update_sweep(ctx, Some(run_id), |s| {
            s.state = RunState::Done;
            s.stopped = stopped;
        }),
        FromWorker::SweepFailed { run_id, error } => {
            update_sweep(ctx, Some(run_id), |s| {
                s.state = RunState::Error;
                s.error = Some(error.message.clone());
            });
            // The panel shows the message; a lost device also needs the banner's action.
            engine_trouble(ctx, &error);
        }
        FromWorker::Vocab { id, layers } => {
            if ctx.last_vocab_id.get_value() == id {
                ctx.vocab.set(VocabState::Ready(layers));
            }
        }
        FromWorker::VocabFailed { id, error } => {
            if ctx.last_vocab_id.get_value() == id {
                ctx.vocab.set(VocabState::Error(error.message));
            }
        }
        FromWorker::BuildProgress { run_id, done, total } => update_build(ctx, run_id, |b| {
            b.done = done;
            b.total = total;
        }),
        FromWorker::BuildDone { run_id, vectors, n_pairs } => {
            let Some(build) = ctx.vec_build.get_untracked().filter(|b| b.id == run_id) else { return };
            match vectors {
                None => update_build(ctx, run_id, |b| {
                    b.state = RunState::Done;
                    b.stopped = true;
                }),
                Some(v) => {
                    let entry = tiller_core::contrast::to_entry(
                        &v,
                        &build.spec.name,
                        &build.model,
                        &build.spec.dataset_name,
                        n_pairs,
                        &super::vectors::now_rfc3339(),
                    );
                    let saved = super::vectors::save_entry(ctx, entry);
                    // The new vector is ticked for the A/B evaluation.
                    if saved.is_ok() {
                        if let Some(id) = ctx.library.with_untracked(|l| l.entries.last().map(|s| s.id.clone())) {
                            ctx.eval_form.update(|e| e.toggle(&id, true));
                        }
                    }
                    update_build(ctx, run_id, |b| {
                        b.state = RunState::Done;
                        match saved {
                            Ok(name) => b.saved_as = Some(name),
                            Err(e) => {
                                b.state = RunState::Error;
                                b.error = Some(e);
                            }
                        }
                    });
                }
            }
        }
        FromWorker::VectorRead { id, layers, prompt_tokens, prompt_problem } => ctx.vec_reading.update(|r| {
            if let Some(r) = r.as_mut().filter(|r| r.id == id) {
                r.state = RunState::Done;
                r.layers = layers;
                r.prompt_tokens = prompt_tokens;
                r.prompt_problem = prompt_problem;
            }
        }),
        FromWorker::VectorReadFailed { id, error } => ctx.vec_reading.update(|r| {
            if let Some(r) = r.as_mut().filter(|r| r.id == id) {
                r.state = RunState::Error;
                r.error = Some(error.message.clone());
            }
        }),
        FromWorker::EvalProgress { run_id, done, total } => update_eval(ctx, Some(run_id), |e| {
            e.done = done;
            e.total = total;
        }),
        FromWorker::EvalDone { run_id, rows, items, stopped } => update_eval(ctx, Some(run_id), |e| {
            e.state = RunState::Done;
            e.rows = rows;
            e.items = items;
            e.stopped = stopped;
        }),
        FromWorker::EvalFailed { run_id, error } => {
            update_eval(ctx, Some(run_id), |e| {
                e.state = RunState::Error;
                e.error = Some(error.message.clone());
            });
            engine_trouble(ctx, &error);
        }
        FromWorker::BuildFailed { run_id, error } => {
            update_build(ctx, run_id, |b| {
                b.state = RunState::Error;
                b.error = Some(error.message.clone());
            });
            engine_trouble(ctx, &error);
        }
        FromWorker::CacheInfo { bytes, files } => ctx.cache.set(Some((bytes, files))),
        // The Inspect area's answers, taken by `inspect::on_message` above.
        FromWorker::ProjectProgress { .. }
        | FromWorker::ProjectDone { .. }
        | FromWorker::ProjectFailed { .. }
        | FromWorker::Changes { .. }
        | FromWorker::ChangesFailed { .. }
        | FromWorker::Lens { .. }
        | FromWorker::LensFailed { .. }
        | FromWorker::FvProgress { .. }
        | FromWorker::FvDone { .. }
        | FromWorker::FvFailed { .. }
        | FromWorker::ItiProgress { .. }
        | FromWorker::ItiDone { .. }
        | FromWorker::ItiFailed { .. }
        | FromWorker::MelboProgress { .. }
        | FromWorker::MelboSweepPoint { .. }
        | FromWorker::MelboVector { .. }
        | FromWorker::MelboDone { .. }
        | FromWorker::MelboFailed { .. }
        | FromWorker::MelboSteered { .. } => {}
        FromWorker::Fatal { error } => {
            ctx.model_state.set(ModelState::Error);
            ctx.loaded.set(None);
            if ctx.run_state.get_untracked() == RunState::Running {
                ctx.run_state.set(RunState::Error);
            }
            fail_sweep(ctx, &error.message);
            ctx.vec_build.update(|b| {
                if let Some(b) = b.as_mut().filter(|b| b.state == RunState::Running) {
                    b.state = RunState::Error;
                    b.error = Some(error.message.clone());
                }
            });
            update_eval(ctx, None, |e| {
                if e.state == RunState::Running {
                    e.state = RunState::Error;
                    e.error = Some(error.message.clone());
                }
            });
            super::inspect::fail_running(ctx, &error.message);
            ctx.error.set(Some(Banner::from(error)));
            // After a panic the worker's wasm instance cannot be trusted: start a fresh one.
            restart(ctx);
        }
    }
}

/// A job's failure that is the engine's, not the job's: a lost device (the model must be
/// loaded again) or an out-of-memory also raise the banner with its action; the job's own
/// panel shows the message either way.
pub fn engine_trouble(ctx: Ctx, error: &UserError) {
    if matches!(error.kind, ErrorKind::DeviceLost | ErrorKind::OutOfMemory) {
        if error.kind == ErrorKind::DeviceLost {
            ctx.model_state.set(ModelState::Error);
            ctx.loaded.set(None);
        }
        ctx.error.set(Some(Banner::from(error.clone())));
    }
}
