//! The engine worker: everything slow happens here, off the page's thread. It downloads (or
//! reads from the cache or from local files) the model, streams `model.safetensors` through
//! [`StreamLoader`] into the engine, and runs generation and decoded vocabulary, posting
//! [`FromWorker`] messages back, and layer × coefficient sweeps. Between steps it yields to
//! its event loop so a Stop message can arrive.

mod discover;
pub mod engine;
mod heads;
mod inspect;
pub mod net;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::Reflect;
use tiller_core::generate::{self, Flow};
use tiller_core::steer::TextEncoding;
use tiller_core::sweep::SweepSpec;
use tiller_core::weights::{StreamLoader, TensorSink};
use tiller_core::{ModelSpec, Recipe, Site, Term, TillerError, Tokenizer};
use wasm_bindgen::prelude::*;
use web_sys::{AbortController, DedicatedWorkerGlobalScope, MessageEvent};

use crate::protocol::{
    envelope, EngineChoice, ErrorKind, FromWorker, GenerationView, LayerVocabView, LoadPhase, ModelSource, RunTiming, ToWorker, UserError,
    VectorReading, VocabEntryView, CONFIG_FILE, INDEX_FILE, MODEL_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE,
};
use engine::{cpu_sink, request_gpu, user_error, with_backend, Builder, Engine, Yielding};
use tiller_gpu::GpuEngine;

/// What to tell a user whose browser offers no WebGPU adapter.
pub const NO_WEBGPU: &str = "This browser offers no WebGPU adapter. Use Chrome or Edge 113+ (on Linux start it with --enable-unsafe-webgpu, or enable chrome://flags/#enable-unsafe-webgpu), Safari 26+, or Firefox 141+ on Windows (Nightly elsewhere, dom.webgpu.enabled).";

pub fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

pub fn post(msg: &FromWorker) {
    let _ = scope().post_message(&JsValue::from_str(&msg.to_json()));
}

/// A load in progress, so it can be cancelled.
struct LoadHandle {
    controller: Option<AbortController>,
    cancelled: Rc<Cell<bool>>,
}

#[derive(Default)]
struct State {
    /// Taken out while a run or a vocabulary request uses it.
    engine: RefCell<Option<Engine>>,
    tokenizer: RefCell<Option<Rc<Tokenizer>>>,
    /// Bumped by every load: a run that finishes after a new load must not put back its engine.
    epoch: Cell<u64>,
    /// Jobs holding an engine right now (taken, not yet put back).
    holders: Cell<usize>,
    stop: Cell<bool>,
    loading: RefCell<Option<LoadHandle>>,
}

thread_local! {
    static STATE: Rc<State> = Rc::new(State::default());
}

fn state() -> Rc<State> {
    STATE.with(Rc::clone)
}

/// Entry point of the worker binary.
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        post(&FromWorker::Fatal {
            error: UserError::new(
                ErrorKind::Internal,
                format!("the engine crashed ({info}); reload the model. Please report this with the steps that led to it."),
            ),
        });
        console_error_panic_hook::hook(info);
    }));
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|event: MessageEvent| {
        let data = event.data();
        let text = Reflect::get(&data, &envelope::MSG.into()).ok().and_then(|m| m.as_string()).or_else(|| data.as_string());
        let files: Vec<web_sys::File> = Reflect::get(&data, &envelope::FILES.into())
            .ok()
            .filter(js_sys::Array::is_array)
            .map(|f| js_sys::Array::from(&f).iter().filter_map(|f| f.dyn_into().ok()).collect())
            .unwrap_or_default();
        match text.as_deref().map(serde_json::from_str::<ToWorker>) {
            Some(Ok(msg)) => wasm_bindgen_futures::spawn_local(handle(msg, files)),
            Some(Err(e)) => post(&FromWorker::Fatal {
                error: UserError::new(ErrorKind::Internal, format!("the worker got a message it does not understand: {e}")),
            }),
            None => {}
        }
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    wasm_bindgen_futures::spawn_local(async {
        let webgpu = has_webgpu_adapter().await;
        post(&FromWorker::Started { webgpu });
    });
}

/// Whether `navigator.gpu` exists here and hands out an adapter (Chromium on Linux has the
/// object but no adapter unless WebGPU is enabled).
async fn has_webgpu_adapter() -> bool {
    let Ok(gpu) = Reflect::get(&scope().navigator(), &"gpu".into()) else { return false };
    if gpu.is_undefined() || gpu.is_null() {
        return false;
    }
    let Ok(request) = Reflect::get(&gpu, &"requestAdapter".into()).and_then(|f| f.dyn_into::<js_sys::Function>()) else {
        return false;
    };
    let Ok(promise) = request.call0(&gpu).and_then(|p| p.dyn_into::<js_sys::Promise>()) else {
        return false;
    };
    matches!(wasm_bindgen_futures::JsFuture::from(promise).await, Ok(a) if !a.is_null() && !a.is_undefined())
}

async fn handle(msg: ToWorker, files: Vec<web_sys::File>) {
    match msg {
        ToWorker::QuerySize { id, source, hub, token } => {
            net::set_token(&hub, token);
            query_size(id, source, hub).await
        }
        ToWorker::Load { source, hub, engine, token, allow_non_finite } => {
            net::set_token(&hub, token);
            let result = load(&source, &hub, engine, files, allow_non_finite).await;
            if let Err(error) = result {
                let kept = state().engine.borrow().is_some();
                post(&FromWorker::LoadFailed { error, kept });
            }
            *state().loading.borrow_mut() = None;
            cache_info().await;
        }
        ToWorker::CancelLoad => {
            if let Some(h) = state().loading.borrow().as_ref() {
                h.cancelled.set(true);
                if let Some(c) = &h.controller {
                    c.abort();
                }
            }
        }
        ToWorker::Analyze { id, prompt, terms, bos, chat, system, chat_terms } => {
            analyze(id, &prompt, &terms, bos, chat, &system, chat_terms)
        }
        ToWorker::Run { run_id, recipe } => run(run_id, recipe).await,
        ToWorker::Stop => state().stop.set(true),
        ToWorker::Sweep { run_id, spec } => sweep(run_id, spec).await,
        ToWorker::BuildVector { run_id, spec } => build_vector(run_id, spec).await,
        ToWorker::EvalAb { run_id, spec } => eval_ab(run_id, spec).await,
        ToWorker::ReadVector { id, layers, k, ln_f, prompt } => read_vector(id, &layers, k, ln_f, prompt).await,
        ToWorker::Vocab { id, terms, bos, site, k, ln_f, chat_system } => {
            vocab(id, &terms, TextEncoding { bos, chat: chat_system }, site, k, ln_f).await
        }
        ToWorker::Project { run_id, vector, layer, site, texts, bos } => inspect::project(run_id, vector, layer, site, texts, bos).await,
        ToWorker::Changes { id, recipe, completion, top } => inspect::changes(id, recipe, completion, top).await,
        ToWorker::Lens { id, recipe, k } => inspect::lens(id, recipe, k).await,
        ToWorker::Fv { run_id, spec } => heads::function_vector(run_id, spec).await,
        ToWorker::Iti { run_id, spec } => heads::probes(run_id, spec).await,
        ToWorker::Melbo { run_id, spec } => discover::melbo(run_id, spec).await,
        ToWorker::MelboSweep { run_id, spec, radii } => discover::sweep(run_id, spec, radii).await,
        ToWorker::MelboSteer { id, spec } => discover::steer(id, spec).await,
        ToWorker::CacheInfo => cache_info().await,
        ToWorker::CacheClear => {
            net::clear_cache().await;
            cache_info().await;
        }
    }
}

async fn cache_info() {
    let (bytes, files) = net::cache_usage().await;
    post(&FromWorker::CacheInfo { bytes, files });
}

async fn query_size(id: u64, source: ModelSource, hub: String) {
    let answer = |bytes, cached, error| post(&FromWorker::Size { id, bytes, cached, error });
    let base = match source.base_url(&hub) {
        Ok(b) => b,
        Err(e) => return answer(None, false, Some(e)),
    };
    let url = format!("{base}/{MODEL_FILE}");
    let cache = net::open_cache().await;
    if let Some(resp) = net::cached(cache.as_ref(), &url).await {
        return answer(net::content_length(&resp), true, None);
    }
    match net::remote_size(&url, MODEL_FILE).await {
        Ok(bytes) => answer(bytes, false, None),
        Err(e) => answer(None, false, Some(e.message)),
    }
}

/// Builds the engine from a source; on success posts [`FromWorker::Loaded`].
async fn load(
    source: &ModelSource,
    hub: &str,
    choice: EngineChoice,
    files: Vec<web_sys::File>,
    allow_non_finite: bool,
) -> Result<(), UserError> {
    let st = state();
    // The old engine stays until this load is past everything that can fail cheaply (missing
    // files, a bad tokenizer, no adapter, a local file's header); it is freed just before the
    // weights stream in, since two models may not fit together. A run in progress stops.
    st.stop.set(true);
    let cancelled = Rc::new(Cell::new(false));
    let controller = AbortController::new().ok();
    if let Some(old) = st.loading.borrow_mut().replace(LoadHandle { controller: controller.clone(), cancelled: cancelled.clone() }) {
        old.cancelled.set(true);
        if let Some(c) = old.controller {
            c.abort();
        }
    }
    let signal = controller.as_ref().map(|c| c.signal());
    let (config_json, tokenizer_json, tokenizer_config_json, models, from_cache_small) = match source {
        ModelSource::Local => {
            let pick = |names: &[&str]| files.iter().find(|f| names.iter().any(|n| f.name() == *n)).cloned();
            let model = pick(&[MODEL_FILE])
                .or_else(|| files.iter().find(|f| f.name().ends_with(".safetensors")).cloned())
                .or_else(|| pick(&[INDEX_FILE]))
                .ok_or_else(|| UserError::new(ErrorKind::BadFile, format!("no {MODEL_FILE} among the picked files: pick {MODEL_FILE}, {TOKENIZER_FILE} and (optionally) {CONFIG_FILE} together")))?;
            let tokenizer = pick(&[TOKENIZER_FILE]).ok_or_else(|| {
                UserError::new(
                    ErrorKind::BadFile,
                    format!("no {TOKENIZER_FILE} among the picked files: pick it together with {MODEL_FILE}"),
                )
            })?;
            let config = match pick(&[CONFIG_FILE]) {
                Some(f) => Some(read_file(&f).await?),
                None => None,
            };
            let tok = read_file(&tokenizer).await?;
            let tok_config = match pick(&[TOKENIZER_CONFIG_FILE]) {
                Some(f) => Some(read_file(&f).await?),
                None => None,
            };
            // Shards picked together with their index: streamed in the index's order.
            let models = match pick(&[INDEX_FILE]) {
                Some(index) => {
                    let index = read_file(&index).await?;
                    let names = tiller_core::weights::shard_files(&index).map_err(|e| user_error(&e))?;
                    let mut shards = Vec::new();
                    for n in names {
                        let f = files.iter().find(|f| f.name() == n).cloned().ok_or_else(|| {
                            UserError::new(
                                ErrorKind::BadFile,
                                format!("{INDEX_FILE} names {n}, which is not among the picked files: pick every shard"),
                            )
                        })?;
                        shards.push(ModelInput::File(f));
                    }
                    ModelInputs { index: Some(index), files: shards }
                }
                None => ModelInputs { index: None, files: vec![ModelInput::File(model)] },
            };
            (config, tok, tok_config, models, false)
        }
        _ => {
            post(&FromWorker::LoadPhase { phase: LoadPhase::Files, gpu: false });
            let base = source.base_url(hub).map_err(|e| UserError::new(ErrorKind::NotFound, e))?;
            let cache = net::open_cache().await;
            let config = net::small_file(cache.as_ref(), &format!("{base}/{CONFIG_FILE}"), CONFIG_FILE, true, signal.as_ref()).await?;
            let tok = net::small_file(cache.as_ref(), &format!("{base}/{TOKENIZER_FILE}"), TOKENIZER_FILE, false, signal.as_ref())
                .await?
                .ok_or_else(|| UserError::new(ErrorKind::NotFound, format!("{TOKENIZER_FILE} is missing at {base}")))?;
            let cached = config.as_ref().is_none_or(|c| c.1) && tok.1;
            // GPT-2 repos have no chat template and are never sharded: only other families are
            // asked for tokenizer_config.json and whether model.safetensors exists.
            let other_family = config
                .as_ref()
                .is_some_and(|c| tiller_core::arch::config::from_json(&c.0, None).is_ok_and(|s| s.family != tiller_core::Family::Gpt2));
            let tok_config = match other_family {
                true => {
                    net::small_file(
                        cache.as_ref(),
                        &format!("{base}/{TOKENIZER_CONFIG_FILE}"),
                        TOKENIZER_CONFIG_FILE,
                        true,
                        signal.as_ref(),
                    )
                    .await?
                }
                false => None,
            };
            // A model.safetensors in the cache needs no question to the server (offline visits).
            let model_url = format!("{base}/{MODEL_FILE}");
            let single = !other_family
                || net::cached(cache.as_ref(), &model_url).await.is_some()
                || net::exists(&model_url, MODEL_FILE, signal.as_ref()).await?;
            let models = match single {
                true => ModelInputs { index: None, files: vec![ModelInput::Url { url: format!("{base}/{MODEL_FILE}"), cache }] },
                false => {
                    let index = net::small_file(cache.as_ref(), &format!("{base}/{INDEX_FILE}"), INDEX_FILE, true, signal.as_ref())
                        .await?
                        .ok_or_else(|| UserError::new(ErrorKind::NotFound, format!("neither {MODEL_FILE} nor {INDEX_FILE} is at {base}")))?
                        .0;
                    let names = tiller_core::weights::shard_files(&index).map_err(|e| user_error(&e))?;
                    let files = names.iter().map(|n| ModelInput::Url { url: format!("{base}/{n}"), cache: cache.clone() }).collect();
                    ModelInputs { index: Some(index), files }
                }
            };
            (config.map(|c| c.0), tok.0, tok_config.map(|c| c.0), models, cached)
        }
    };
    // Read once, before the download, so a broken tokenizer fails fast. Its BOS/EOS ids come
    // from the spec config.json declares (a GPT-2 config that leaves shapes to the tensors
    // declares none; its tokenizer's <|endoftext|> is the same id).
    let declared = config_json.as_deref().and_then(|c| tiller_core::arch::config::from_json(c, None).ok());
    let tokenizer =
        Tokenizer::from_files(&tokenizer_json, tokenizer_config_json.as_deref(), declared.as_ref()).map_err(|e| user_error(&e))?;

    // The GPU sink must not be dropped unfinished (see `Builder::abandon`): make it only now,
    // after the last `?` before streaming.
    let adapter = match choice {
        EngineChoice::Cpu => None,
        EngineChoice::Gpu | EngineChoice::Auto => {
            post(&FromWorker::LoadPhase { phase: LoadPhase::Adapter, gpu: true });
            request_gpu().await?
        }
    };
    let (mut builder, note) = match choice {
        EngineChoice::Cpu => (Builder::Cpu(cpu_sink()), None),
        EngineChoice::Gpu | EngineChoice::Auto => match adapter {
            Some(gpu) => (Builder::Gpu { sink: GpuEngine::loader(&gpu.device), gpu }, None),
            None if choice == EngineChoice::Gpu => return Err(UserError::new(ErrorKind::NoWebGpu, NO_WEBGPU)),
            None => {
                (Builder::Cpu(cpu_sink()), Some(format!("{NO_WEBGPU} Running on the CPU engine instead: slow, and only for small models.")))
            }
        },
    };

    if let Some(ModelInput::File(f)) = models.files.first() {
        if let Err(e) = check_local_header(f).await {
            builder.abandon();
            return Err(e);
        }
    }
    // From here on the old model is gone, whatever happens.
    st.epoch.set(st.epoch.get() + 1);
    engine::set_live_device(0);
    *st.engine.borrow_mut() = None;
    *st.tokenizer.borrow_mut() = None;
    let gpu = matches!(builder, Builder::Gpu { .. });
    post(&FromWorker::LoadPhase { phase: LoadPhase::Weights, gpu });
    let streamed = match stream_model(models, config_json.as_deref(), builder.sink(), signal.as_ref(), &cancelled, allow_non_finite).await {
        Ok(s) => s,
        Err(e) => {
            builder.abandon();
            return Err(e);
        }
    };
    post(&FromWorker::LoadPhase { phase: LoadPhase::Setup, gpu });
    let device_id = builder.device_id();
    let engine = builder.build().await.map_err(|e| user_error(&e))?;
    let (bos_default, chat_template) = (tokenizer.bos_by_default(), tokenizer.has_chat_template());
    let describe = engine.describe();
    *st.engine.borrow_mut() = Some(engine);
    engine::set_live_device(device_id);
    *st.tokenizer.borrow_mut() = Some(Rc::new(tokenizer));
    post(&FromWorker::Loaded {
        config: streamed.config,
        engine: describe,
        from_cache: streamed.from_cache && (from_cache_small || matches!(source, ModelSource::Local)),
        bytes: streamed.bytes,
        note: note.into_iter().chain(streamed.notes).reduce(|a, b| format!("{a} {b}")),
        wasm_memory: wasm_memory_bytes(),
        bos_default,
        chat_template,
    });
    Ok(())
}

/// The size of this worker's wasm linear memory (it only grows: this is the peak so far).
fn wasm_memory_bytes() -> u64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .ok()
        .and_then(|m| m.buffer().dyn_into::<js_sys::ArrayBuffer>().ok())
        .map(|b| b.byte_length() as u64)
        .unwrap_or(0)
}

enum ModelInput {
    File(web_sys::File),
    Url { url: String, cache: Option<web_sys::Cache> },
}

/// The weights: one file, or the shards of `model.safetensors.index.json` in order.
struct ModelInputs {
    index: Option<Vec<u8>>,
    files: Vec<ModelInput>,
}

struct Streamed {
    config: ModelSpec,
    bytes: u64,
    from_cache: bool,
    /// What the user should know about how the files arrived.
    notes: Vec<String>,
}

async fn read_file(file: &web_sys::File) -> Result<Vec<u8>, UserError> {
    let buf = wasm_bindgen_futures::JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| UserError::new(ErrorKind::BadFile, format!("could not read {}: {}", file.name(), net::js_error_text(&e))))?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// Streams the weights (one file, or each shard in order) into `sink` through one loader,
/// reporting progress. A network download is teed into the cache; a corrupt or cancelled
/// download leaves nothing cached.
async fn stream_model(
    inputs: ModelInputs,
    config_json: Option<&[u8]>,
    sink: &mut dyn TensorSink,
    signal: Option<&web_sys::AbortSignal>,
    cancelled: &Cell<bool>,
    allow_non_finite: bool,
) -> Result<Streamed, UserError> {
    let mut loader = match &inputs.index {
        None => StreamLoader::new(config_json, None),
        Some(index) => {
            let config =
                config_json.ok_or_else(|| UserError::new(ErrorKind::BadFile, format!("a sharded checkpoint needs its {CONFIG_FILE}")))?;
            StreamLoader::sharded(config, index).map_err(|e| file_error(&e))?.0
        }
    };
    if allow_non_finite {
        loader = loader.allow_non_finite();
    }
    let mut loaded = 0u64;
    let mut all_cached = true;
    let mut notes = Vec::new();
    let shards = inputs.files.len();
    for (i, input) in inputs.files.into_iter().enumerate() {
        let file = stream_file(input, &mut loader, sink, signal, cancelled, &mut loaded, (i, shards)).await?;
        all_cached &= file.from_cache;
        notes.extend(file.note);
    }
    // Weights loaded in spite of NaN or infinities (as asked) say which, in the status.
    notes.extend(loader.warnings().iter().map(|w| format!("Warning: {w}.")));
    let config = loader.finish().map_err(|e| file_error(&e))?;
    Ok(Streamed { config, bytes: loaded, from_cache: all_cached, notes })
}

/// Reads a picked `model.safetensors`'s header (its first bytes only) and checks it, so a
/// file that is not safetensors fails before the loaded model is let go.
async fn check_local_header(f: &web_sys::File) -> Result<(), UserError> {
    let read = |start: u64, end: u64| async move {
        let blob = f.slice_with_f64_and_f64(start as f64, end as f64).map_err(|_| ())?;
        let buf = wasm_bindgen_futures::JsFuture::from(blob.array_buffer()).await.map_err(|_| ())?;
        Ok::<Vec<u8>, ()>(js_sys::Uint8Array::new(&buf).to_vec())
    };
    let size = f.size() as u64;
    let unreadable = || UserError::new(ErrorKind::BadFile, format!("{MODEL_FILE} could not be read from disk: pick it again"));
    let first = read(0, 8.min(size)).await.map_err(|_| unreadable())?;
    let len = tiller_core::weights::SafetensorsHeader::header_len(&first).map_err(|e| file_error(&e))?;
    if 8 + len > size {
        return Err(UserError::new(
            ErrorKind::BadFile,
            format!("{MODEL_FILE} is not a safetensors file: its header claims {len} bytes but the file has {size}"),
        ));
    }
    let json = read(8, 8 + len).await.map_err(|_| unreadable())?;
    tiller_core::weights::SafetensorsHeader::parse(&json, Some(size - 8 - len)).map_err(|e| file_error(&e))?;
    Ok(())
}

/// How one weights file arrived.
struct FileStreamed {
    from_cache: bool,
    /// What the user should know about the download (it broke off and was resumed).
    note: Option<String>,
}

/// Streams one weights file into the loader. A download whose connection drops is picked up
/// where it stopped with a Range request (up to [`net::MAX_RESUMES`] times, checked to be the
/// same bytes of the same file); a resumed file is not cached, since the cache's copy of the
/// first response broke with it. A cached copy that does not read back whole (the loader checks
/// the data section's size) is removed, and the message says so.
async fn stream_file(
    input: ModelInput,
    loader: &mut StreamLoader,
    sink: &mut dyn TensorSink,
    signal: Option<&web_sys::AbortSignal>,
    cancelled: &Cell<bool>,
    loaded: &mut u64,
    (shard, shards): (usize, usize),
) -> Result<FileStreamed, UserError> {
    let label = if shards > 1 { format!("{MODEL_FILE} (shard {} of {shards})", shard + 1) } else { MODEL_FILE.to_string() };
    let (stream, total, from_cache, put, url, cache, etag) = match input {
        ModelInput::File(f) => (f.stream(), Some(f.size() as u64), false, None, None, None, None),
        ModelInput::Url { url, cache } => {
            let (resp, from_cache) = match net::cached(cache.as_ref(), &url).await {
                Some(resp) => (resp, true),
                None => (net::fetch(&url, MODEL_FILE, "GET", signal, None).await?, false),
            };
            let total = net::content_length(&resp);
            // Tee the download into the cache: `put` finishes when the whole body has arrived.
            let put = match (&cache, from_cache) {
                (Some(cache), false) => resp.clone().ok().map(|copy| wasm_bindgen_futures::JsFuture::from(cache.put_with_str(&url, &copy))),
                _ => None,
            };
            let stream = resp.body().ok_or_else(|| UserError::new(ErrorKind::Download, format!("{url} answered with no body")))?;
            (stream, total, from_cache, put, Some(url), cache, net::etag(&resp))
        }
    };
    let mut reader = net::ChunkReader::new(&stream, MODEL_FILE);
    loader.start_file(total).map_err(|e| file_error(&e))?;
    let mut buf = Vec::new();
    let mut last_report = 0.0;
    let start = *loaded;
    let mut resumes = 0u32;
    let progress = |loaded: u64| post(&FromWorker::Progress { file: label.clone(), loaded, total, from_cache });
    progress(0);
    let result: Result<(), UserError> = async {
        loop {
            if cancelled.get() {
                reader.cancel();
                return Err(UserError::new(ErrorKind::Cancelled, "the download was cancelled"));
            }
            match reader.next(&mut buf).await {
                Ok(true) => {}
                Ok(false) => break,
                // A download that broke off: ask for the rest, when the size is known.
                Err(e) if e.kind == ErrorKind::Download && !from_cache && resumes < net::MAX_RESUMES && !cancelled.get() => {
                    let (Some(url), Some(total)) = (&url, total) else { return Err(e) };
                    let got = *loaded - start;
                    if got >= total {
                        return Err(e);
                    }
                    resumes += 1;
                    web_sys::console::warn_1(&format!("tiller: {} — resuming at byte {got} of {total}", e.message).into());
                    engine::sleep_ms(250 * resumes as i32).await;
                    let rest = net::resume(url, MODEL_FILE, signal, got, total, etag.as_deref()).await?;
                    let body = rest.body().ok_or_else(|| UserError::new(ErrorKind::Download, format!("{url} answered with no body")))?;
                    reader = net::ChunkReader::new(&body, MODEL_FILE);
                    continue;
                }
                Err(e) => return Err(e),
            }
            *loaded += buf.len() as u64;
            loader.feed(&buf, sink).map_err(|e| file_error(&e))?;
            let now = js_sys::Date::now();
            if now - last_report > 100.0 {
                last_report = now;
                progress(*loaded - start);
            }
        }
        progress(*loaded - start);
        loader.end_file().map_err(|e| file_error(&e))
    }
    .await;
    if let Err(mut e) = result {
        if cancelled.get() {
            return Err(UserError::new(ErrorKind::Cancelled, "the download was cancelled"));
        }
        // A cached copy is to blame only when it did not read back, or read back as another
        // file than the one that once loaded whole: not for what this GPU cannot hold, and not
        // for values the engine refuses (NaN loaded anyway before, f16 overflow on the GPU).
        let engine_side = e.message.contains("not finite") || e.message.contains("beyond f16's range");
        let damaged = from_cache && (e.kind == ErrorKind::Download || (e.kind == ErrorKind::BadFile && !engine_side));
        // Stop the cache copy and make sure no partial or corrupt file stays cached.
        if let Some(url) = url.as_ref().filter(|_| damaged || !from_cache) {
            if let Some(h) = state().loading.borrow().as_ref().and_then(|h| h.controller.clone()) {
                h.abort();
            }
            if let Some(put) = put {
                let _ = put.await;
            }
            net::forget(cache.as_ref(), url).await;
            if damaged {
                e = UserError::new(
                    ErrorKind::Download,
                    format!(
                        "the copy of {label} in this browser's cache does not read back whole ({}); it was removed from the cache: load the model again to download it",
                        e.message
                    ),
                );
            }
        }
        return Err(e);
    }
    let mut note = None;
    if resumes > 0 {
        // The cache's copy was of the first response, which broke: make sure none is kept.
        if let Some(put) = put {
            let _ = put.await;
        }
        if let Some(url) = &url {
            net::forget(cache.as_ref(), url).await;
        }
        let times = if resumes == 1 { "once".to_string() } else { format!("{resumes} times") };
        note = Some(format!(
            "The download of {label} broke off {times} and was resumed where it stopped (the same file, checked by its size and ETag). It was not cached, so the next load downloads it again."
        ));
    } else if let Some(put) = put {
        if let Err(e) = put.await {
            // Not fatal: the model loads, it just is not cached (storage full, private mode).
            if let Some(url) = &url {
                net::forget(cache.as_ref(), url).await;
            }
            let name = js_sys::Reflect::get(&e, &"name".into()).ok().and_then(|n| n.as_string()).unwrap_or_default();
            let why = if name == "QuotaExceededError" {
                "this browser's storage for the page is full".to_string()
            } else {
                format!("the browser refused to store it ({})", net::js_error_text(&e))
            };
            note = Some(format!(
                "{label} could not be kept in this browser's cache: {why}. The model runs, but the next load downloads it again; Clear cache (below) or free disk space to keep models."
            ));
        }
    }
    Ok(FileStreamed { from_cache, note })
}

fn file_error(e: &tiller_core::TillerError) -> UserError {
    let mut err = user_error(e);
    if err.kind == ErrorKind::Recipe {
        // Input errors raised by a sink while loading (too big for the CPU) are about the model.
        err.kind = ErrorKind::AdapterLimits;
    }
    err
}

fn analyze(id: u64, prompt: &str, terms: &[String], bos: bool, chat: bool, system: &str, chat_terms: bool) {
    let Some(tok) = state().tokenizer.borrow().clone() else { return };
    let count = |text: &str| tiller_core::steer::encode_with_bos(&tok, text, bos).map(|ids| ids.len()).unwrap_or(0);
    let terms_as = TextEncoding { bos, chat: (chat && chat_terms).then(|| system.to_string()) };
    let count_term = |text: &str| terms_as.encode(&tok, text).map(|ids| ids.len()).unwrap_or(0);
    let (prompt_tokens, prompt_text) = if chat {
        let recipe = tiller_core::Recipe { prompt: prompt.to_string(), chat, system: system.to_string(), ..Default::default() };
        match tiller_core::steer::prompt_text(&tok, &recipe) {
            Ok(text) => (tok.encode(&text).map(|ids| ids.len()).unwrap_or(0), Some(text)),
            Err(e) => (0, Some(e.to_string())),
        }
    } else {
        (count(prompt), None)
    };
    post(&FromWorker::Analysis { id, prompt_tokens, term_tokens: terms.iter().map(|t| count_term(t)).collect(), prompt_text });
}

/// The engine and tokenizer lent to one job. Dropping the lease puts the engine back (unless a
/// model was loaded meanwhile), so every way out of a job returns it.
struct Lease {
    engine: Option<Engine>,
    tok: Rc<Tokenizer>,
    epoch: u64,
}

impl Lease {
    /// Takes the engine for a job, or says why not. While another job holds it (a run, a
    /// sweep, or the vocabulary the page asks for when a run ends) this waits for it instead
    /// of refusing, so a Run pressed just after a run finished is not lost.
    async fn take() -> Result<Lease, UserError> {
        let st = state();
        while st.engine.borrow().is_none() && st.holders.get() > 0 {
            engine::sleep_ms(5).await;
        }
        let tok = st.tokenizer.borrow().clone();
        let engine = st.engine.borrow_mut().take();
        match (engine, tok) {
            (Some(e), Some(tok)) => {
                st.holders.set(st.holders.get() + 1);
                Ok(Lease { engine: Some(e), tok, epoch: st.epoch.get() })
            }
            (Some(e), None) => {
                *st.engine.borrow_mut() = Some(e);
                Err(UserError::new(ErrorKind::Internal, "the tokenizer is missing: load the model again"))
            }
            (None, _) => Err(UserError::new(
                ErrorKind::Recipe,
                "no model is ready (still loading, busy, or not loaded): load one, or wait for the current run",
            )),
        }
    }

    fn engine(&mut self) -> &mut Engine {
        self.engine.as_mut().expect("a lease holds its engine until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let st = state();
        st.holders.set(st.holders.get().saturating_sub(1));
        if let Some(engine) = self.engine.take() {
            if st.epoch.get() == self.epoch {
                *st.engine.borrow_mut() = Some(engine);
            }
        }
    }
}

async fn run(run_id: u64, recipe: Recipe) {
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return post(&FromWorker::RunFailed { run_id, error }),
    };
    let tok = lease.tok.clone();
    let st = state();
    st.stop.set(false);
    let mut stopped = false;
    let start = js_sys::Date::now();
    let mut last = start;
    let mut timing = RunTiming::default();
    let result = with_backend!(lease.engine(), |b| {
        let mut yielding = Yielding(b);
        generate::generate(&mut yielding, &tok, &recipe, |g| {
            let now = js_sys::Date::now();
            if timing.steps == 0 {
                timing.first_ms = now - start;
            } else {
                timing.rest_ms += now - last;
            }
            last = now;
            timing.steps += 1;
            post(&FromWorker::RunStep { run_id, generation: GenerationView::from(g), timing });
            if st.stop.get() {
                stopped = true;
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
        .await
    });
    drop(lease);
    timing.wasm_memory = wasm_memory_bytes();
    match result {
        Ok(g) => post(&FromWorker::RunDone { run_id, generation: GenerationView::from(&g), stopped, timing }),
        Err(e) => post(&FromWorker::RunFailed { run_id, error: user_error(&e) }),
    }
}

async fn vocab(id: u64, terms: &[Term], encoding: TextEncoding, site: Site, k: usize, ln_f: bool) {
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return post(&FromWorker::VocabFailed { id, error }),
    };
    let tok = lease.tok.clone();
    let result = with_backend!(lease.engine(), |b| {
        tiller_core::vocab::decode_vocab(&mut Yielding(b), &tok, terms, encoding.clone(), site, k.clamp(1, 50), ln_f).await
    });
    drop(lease);
    match result {
        Ok(layers) => post(&FromWorker::Vocab { id, layers: layers.iter().map(LayerVocabView::from).collect() }),
        Err(e) => post(&FromWorker::VocabFailed { id, error: user_error(&e) }),
    }
}

/// Runs a sweep one layer at a time, so each layer's rows reach the page (and its chart) as
/// soon as they exist: `tiller_core::sweep::sweep` hands rows back only when it returns. The
/// price is the unsteered pass, repeated once per layer (one step in `1 + coefficients`).
async fn sweep(run_id: u64, spec: SweepSpec) {
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return post(&FromWorker::SweepFailed { run_id, error }),
    };
    let tok = lease.tok.clone();
    if let Err(error) = sweep_fits(&spec, &tok, engine_vocab(lease.engine())) {
        return post(&FromWorker::SweepFailed { run_id, error });
    }
    let st = state();
    st.stop.set(false);
    let mut stopped = false;
    let mut done_before = 0;
    let mut result = Ok(());
    for (i, &layer) in spec.layers.iter().enumerate() {
        let one = SweepSpec { layers: vec![layer], ..spec.clone() };
        let mut steps = 0;
        let rows = with_backend!(lease.engine(), |b| {
            tiller_core::sweep::sweep(&mut Yielding(b), &tok, &one, |done, total| {
                // Every layer takes the same number of steps.
                steps = total;
                post(&FromWorker::SweepProgress { run_id, done: done_before + done, total: total * spec.layers.len(), rows: Vec::new() });
                if st.stop.get() {
                    stopped = true;
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })
            .await
        });
        done_before += steps;
        match rows {
            Ok(rows) if stopped => {
                // A layer stopped midway returns nothing; one stopped after its last step is whole.
                if !rows.is_empty() {
                    post(&FromWorker::SweepProgress { run_id, done: done_before, total: steps * spec.layers.len(), rows });
                }
                break;
            }
            Ok(rows) => {
                post(&FromWorker::SweepProgress { run_id, done: done_before, total: steps * spec.layers.len(), rows });
                if st.stop.get() && i + 1 < spec.layers.len() {
                    stopped = true;
                    break;
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    drop(lease);
    match result {
        Ok(()) => post(&FromWorker::SweepDone { run_id, stopped }),
        Err(e) => post(&FromWorker::SweepFailed { run_id, error: user_error(&e) }),
    }
}

/// The pairs a form gave (or why it gave none) with the encoding `tiller vector` gives them:
/// choice items through the chat template when the tokenizer has one.
fn encode_pairs(
    tok: &Tokenizer,
    pairs: Result<Vec<tiller_core::pairs::Pair>, String>,
    bos: bool,
    chat: bool,
    system: &str,
) -> Result<(tiller_core::pairs::PairEncoding, Vec<tiller_core::pairs::Pair>), UserError> {
    let pairs = pairs.map_err(|m| UserError::new(ErrorKind::Recipe, m))?;
    let enc = tiller_core::pairs::PairEncoding::new(tok, bos, chat, true, system).map_err(|e| user_error(&e))?;
    Ok((enc, pairs))
}

/// Builds a vector from pairs (`tiller vector caa`'s computation): the pairs are tokenized as
/// the CLI tokenizes them, then run in capture-only steps, reporting texts done.
async fn build_vector(run_id: u64, spec: crate::vectors::BuildSpec) {
    let fail = |error: UserError| post(&FromWorker::BuildFailed { run_id, error });
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return fail(error),
    };
    let tok = lease.tok.clone();
    let prepared = encode_pairs(&tok, spec.training_pairs(), spec.bos, spec.chat, &spec.system)
        .and_then(|(enc, pairs)| enc.tokens(&tok, &pairs).map_err(|e| user_error(&e)));
    let seqs = match prepared {
        Ok(s) => s,
        Err(error) => return fail(error),
    };
    let st = state();
    st.stop.set(false);
    let (n_layers, n_texts) = (spec.layers.len(), 2 * seqs.len());
    let mut vectors = Vec::with_capacity(n_layers);
    for (i, &layer) in spec.layers.iter().enumerate() {
        let result = with_backend!(lease.engine(), |b| {
            tiller_core::contrast::contrast_vector(&mut Yielding(b), &seqs, layer, spec.site, spec.method, spec.token, &mut |done, _| {
                post(&FromWorker::BuildProgress { run_id, done: i * n_texts + done, total: n_layers * n_texts });
                if st.stop.get() {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })
            .await
        });
        match result {
            Ok(Some(v)) => vectors.push(v),
            Ok(None) => return post(&FromWorker::BuildDone { run_id, vectors: None, n_pairs: seqs.len() }),
            Err(e) => return fail(user_error(&e)),
        }
    }
    drop(lease);
    post(&FromWorker::BuildDone { run_id, vectors: Some(vectors), n_pairs: seqs.len() });
}

/// CAA's behavioural measure (`tiller vector eval-ab`'s computation): the multiple-choice
/// items tokenized as the build tokenizes them, cut at the answer letter, then the
/// probability of the matching letter with each vector × each coefficient.
async fn eval_ab(run_id: u64, spec: crate::vectors::EvalSpec) {
    let fail = |error: UserError| post(&FromWorker::EvalFailed { run_id, error });
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return fail(error),
    };
    let tok = lease.tok.clone();
    let prepared = encode_pairs(&tok, spec.eval_pairs(), spec.bos, spec.chat, &spec.system)
        .and_then(|(enc, pairs)| tiller_core::contrast::ab_items(&tok, &enc.choices, &pairs).map_err(|e| user_error(&e)));
    let items = match prepared {
        Ok(items) => items,
        Err(error) => return fail(error),
    };
    let st = state();
    st.stop.set(false);
    let result = with_backend!(lease.engine(), |b| {
        tiller_core::contrast::eval_ab(&mut Yielding(b), &items, &spec.vectors, spec.site, &spec.coeffs, &mut |done, total| {
            post(&FromWorker::EvalProgress { run_id, done, total });
            if st.stop.get() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
        .await
    });
    drop(lease);
    match result {
        Ok(rows) => post(&FromWorker::EvalDone { run_id, stopped: rows.is_none(), rows: rows.unwrap_or_default(), items: items.len() }),
        Err(e) => fail(user_error(&e)),
    }
}

/// Reads a library vector (`tiller vector vocab --prompt`'s computation): each layer's
/// decoded vocabulary, and the prompt's residual norm there. A prompt that cannot be measured
/// (empty, too long) leaves the norms out and says why; the vocabulary still comes.
async fn read_vector(id: u64, layers: &[(usize, Vec<f32>)], k: usize, ln_f: bool, prompt: Option<Recipe>) {
    let fail = |error: UserError| post(&FromWorker::VectorReadFailed { id, error });
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return fail(error),
    };
    let tok = lease.tok.clone();
    let result =
        with_backend!(lease.engine(), |b| read_layers(&mut Yielding(b), &tok, layers, k.clamp(1, 50), ln_f, prompt.as_ref()).await);
    drop(lease);
    match result {
        Ok((layers, prompt_tokens, prompt_problem)) => post(&FromWorker::VectorRead { id, layers, prompt_tokens, prompt_problem }),
        Err(e) => fail(user_error(&e)),
    }
}

/// [`read_vector`]'s work on one engine: (readings, the prompt's tokens, why it could not be
/// measured).
async fn read_layers<B: tiller_core::Backend>(
    b: &mut B,
    tok: &Tokenizer,
    layers: &[(usize, Vec<f32>)],
    k: usize,
    ln_f: bool,
    prompt: Option<&Recipe>,
) -> Result<(Vec<VectorReading>, Option<usize>, Option<String>), TillerError> {
    let mut readings = Vec::new();
    for (layer, v) in layers {
        let (top, bottom) = tiller_core::vocab::decode_vector(b, tok, v, k, ln_f).await?;
        readings.push(VectorReading {
            layer: *layer,
            norm: tiller_core::library::norm(v),
            top: top.iter().map(VocabEntryView::from).collect(),
            bottom: bottom.iter().map(VocabEntryView::from).collect(),
            residual_norm: None,
        });
    }
    let Some(recipe) = prompt else { return Ok((readings, None, None)) };
    let n_positions = b.config().n_positions;
    let measured = match tiller_core::steer::prompt_tokens(tok, &Recipe { max_new_tokens: 0, ..recipe.clone() }, n_positions) {
        Ok(ids) => {
            let wanted: Vec<usize> = layers.iter().map(|(l, _)| *l).collect();
            tiller_core::contrast::residual_norms(b, &ids, &wanted).await.map(|n| (ids.len(), n))
        }
        Err(e) => Err(e),
    };
    match measured {
        Ok((n, norms)) => {
            readings.iter_mut().zip(norms).for_each(|(r, x)| r.residual_norm = Some(x));
            Ok((readings, Some(n), None))
        }
        // The prompt's own problem (empty, too long) leaves the norms out; the engine's is the job's.
        Err(e @ (TillerError::Input(_) | TillerError::Recipe(_) | TillerError::Tokenizer(_))) => Ok((readings, None, Some(e.to_string()))),
        Err(e) => Err(e),
    }
}

fn engine_vocab(engine: &Engine) -> usize {
    with_backend!(engine, |b| tiller_core::Backend::config(b).vocab_size)
}

/// The most wasm memory a sweep's unsteered predictions may take.
const SWEEP_MEMORY_BUDGET: usize = 768 << 20;

/// `tiller_core::sweep` keeps the unsteered model's log-probabilities for every counted
/// prediction (V floats each, 200 kB for GPT-2) while it scores a layer: refuse, with a
/// sentence, sets that would not fit in this tab's memory instead of letting wasm run out.
fn sweep_fits(spec: &SweepSpec, tok: &Tokenizer, vocab: usize) -> Result<(), UserError> {
    let mut predictions = 0usize;
    for set in &spec.sets {
        for text in &set.texts {
            let n = tiller_core::steer::encode_with_bos(tok, text, spec.bos).map(|t| t.len()).unwrap_or(0);
            predictions += n.saturating_sub(1);
        }
    }
    let bytes = predictions * vocab * 4;
    if bytes > SWEEP_MEMORY_BUDGET {
        return Err(UserError::new(
            ErrorKind::Recipe,
            format!(
                "the evaluation texts hold about {predictions} tokens to score; the sweep keeps the unsteered model's prediction for each ({} in all), more than this tab can hold ({}): use fewer or shorter texts",
                crate::fmt::bytes(bytes as u64),
                crate::fmt::bytes(SWEEP_MEMORY_BUDGET as u64)
            ),
        ));
    }
    Ok(())
}
