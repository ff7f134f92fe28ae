//! The Vectors area: build a CAA / PCA vector from many contrast pairs (a shipped set, pasted
//! pairs, two lists or a file), keep every vector in a library that survives reloads
//! (IndexedDB, [`super::idb`]), read each one's norm beside the activations it came from,
//! combine vectors by a formula, compare them in a cosine matrix, download them (safetensors,
//! llama.cpp GGUF) and put one in the recipe. The logic is plain Rust in [`crate::vectors`].

use leptos::prelude::*;
use tiller_core::contrast::{Method, TokenChoice};
use tiller_core::library::VectorEntry;
use tiller_core::Site;

use super::charts::ChartView;
use super::client::{self, send};
use super::fields::{ChoiceSelect, ErrorList, NumInput, Pressed};
use super::{files, idb, Ctx, ModelState, RunState};
use crate::numbers::NumKind;
use crate::protocol::ToWorker;
use crate::vectors::{describe, norms_line, Library, Stored, DATASETS};

/// The current time as RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    tiller_core::library::rfc3339_utc((js_sys::Date::now() / 1000.0) as u64)
}

/// A fresh storage key; keys sort in the order entries were made.
fn fresh_key(ctx: Ctx) -> String {
    format!("{:013}-{:06}", js_sys::Date::now() as u64, ctx.fresh_id())
}

/// Adds an entry to the library (a unique name) and stores it; returns the name it got. A
/// storage failure keeps the entry for this tab and says so.
pub fn save_entry(ctx: Ctx, entry: VectorEntry) -> Result<String, String> {
    let (stored, bytes) = ctx.library.with_untracked(|l| l.admit(entry, fresh_key(ctx)))?;
    let name = stored.entry.name.clone();
    persist(ctx, &stored, bytes);
    ctx.library.update(|l| l.entries.push(stored));
    Ok(name)
}

/// Writes an entry's safetensors `bytes` to IndexedDB in the background.
fn persist(ctx: Ctx, stored: &Stored, bytes: Vec<u8>) {
    let (id, name) = (stored.id.clone(), stored.entry.name.clone());
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = idb::put(&id, &bytes).await {
            ctx.library_note.set(Some((
                false,
                format!("“{name}” could not be saved in this browser ({e}): it stays until this tab closes; download it to keep it."),
            )));
        }
    });
}

/// Reads the stored library (once, when the page starts).
pub fn load_library(ctx: Ctx) {
    wasm_bindgen_futures::spawn_local(async move {
        match idb::all().await {
            Ok(mut records) => {
                records.sort_by(|a, b| a.0.cmp(&b.0));
                let mut lib = Library::default();
                let mut unreadable = 0;
                for (id, bytes) in records {
                    match VectorEntry::from_safetensors(&bytes, "vector") {
                        Ok(entry) => lib.entries.push(Stored { id, entry, bytes: bytes.len() }),
                        Err(_) => unreadable += 1,
                    }
                }
                // Entries made before the stored ones arrived stay, after them.
                ctx.library.update(|l| {
                    let made_now = std::mem::take(&mut l.entries);
                    lib.entries.extend(made_now);
                    *l = lib;
                });
                if unreadable > 0 {
                    ctx.library_note.set(Some((false, format!("{unreadable} stored vector(s) could not be read and are not listed."))));
                }
            }
            Err(e) => ctx.library_note.set(Some((
                false,
                format!("The vector library could not be opened ({e}): vectors made now last until this tab closes; download them to keep them."),
            ))),
        }
    });
}

/// A file name from an entry's name.
fn file_stem(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '-' }).collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "vector".into()
    } else {
        s
    }
}

/// The area.
#[component]
pub fn VectorsPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <details class="card vectors" id="area-vectors" data-testid="vectors-panel" prop:open=move || ctx.vectors_open.get()
            on:toggle=move |ev| ctx.vectors_open.set(event_target::<web_sys::HtmlDetailsElement>(&ev).open())>
            <summary><h2>"5 · Vectors: build one from many pairs, keep, combine, export"</h2></summary>
            <p class="note">
                "ActAdd takes one pair of texts. CAA (Rimsky et al.) averages the activation difference over many pairs, at the last token of each text; "
                "PCA (as repeng does) takes the main direction of those differences instead. Build one here; it goes into your library, which this browser keeps. "
                "“Use in recipe” adds it to the editor as a vector term at every position, as CAA steers."
            </p>
            <BuildForm/>
            <EvalPanel/>
            <LibraryView/>
        </details>
    }
}

/// Dataset, settings, Build / Stop, progress.
#[component]
fn BuildForm() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let depth = move || ctx.depth();
    let seen_depth = StoredValue::new(super::DEFAULT_DEPTH);
    Effect::new(move |_| {
        let new = depth();
        let old = seen_depth.get_value();
        if old != new {
            seen_depth.set_value(new);
            ctx.vec_form.update(|f| f.follow_depth(old, new));
        }
    });
    let pressed = Pressed::new(move || {
        ctx.vec_form.track();
        ctx.model_state.track();
    });
    let summary = move || ctx.vec_form.with(|f| f.summary());
    let live = Memo::new(move |_| {
        let (bos, chat, system) = ctx.form.with(|f| (f.bos, f.chat && f.chat_terms, f.system.clone()));
        ctx.vec_form.with(|f| f.to_spec(depth(), bos, chat, &system).err()).unwrap_or_default()
    });
    // The pairs' problem shows on the line under them, not again here.
    let errors = Signal::derive(move || {
        let live = live.get().into_iter().filter(|m| !m.starts_with("the pairs: ")).collect();
        let failed = ctx.vec_build.with(|b| b.as_ref().and_then(|b| b.error.clone())).map(|f| format!("The build failed: {f}"));
        pressed.with_live(live, failed)
    });
    let can_build = move || ctx.model_state.get() == ModelState::Ready && !ctx.busy() && live.with(Vec::is_empty);
    let on_build = move |_| pressed.press(|| client::build_vector(ctx));
    let on_file = move |ev: web_sys::Event| {
        let Some(file) = files::picked_file(&ev) else { return };
        wasm_bindgen_futures::spawn_local(async move {
            let name = file.name();
            match files::read_bytes(&file, tiller_core::pairs::MAX_DATASET_BYTES, "a pair dataset").await {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => ctx.vec_form.update(|f| f.set_text(text, Some(name))),
                    Err(e) => {
                        let line = e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
                        pressed.set(vec![format!("{name} is not UTF-8 text (line {line} holds bytes that are not): save it as UTF-8. The pairs above are unchanged.")]);
                    }
                },
                Err(e) => pressed.set(vec![format!("{e}. The pairs above are unchanged.")]),
            }
        });
    };
    let sites = [
        (Site::ResidPre, "resid_pre: the residual stream before the block"),
        (Site::AttnOut, "attn_out: the attention's output"),
        (Site::MlpOut, "mlp_out: the MLP's output"),
    ];
    let methods = [
        (Method::MeanDiff, "mean_diff: the mean difference (CAA)"),
        (Method::PcaDiff, "pca_diff: first principal component of the differences (repeng)"),
        (Method::PcaCenter, "pca_center: repeng's centred variant"),
    ];
    let tokens = [(TokenChoice::Last, "the last token of each text"), (TokenChoice::Mean, "the mean over each text's tokens")];
    let lists = move || ctx.vec_form.with(|f| f.lists);
    view! {
        <fieldset class="vec-build">
            <legend>"Build a vector from contrast pairs"</legend>
            <div class="row">
                <label for="vec-preset">"Pairs"</label>
                <select id="vec-preset" data-testid="vec-preset" on:change=move |ev| {
                    let v = event_target_value(&ev);
                    ctx.vec_form.update(|f| if v.is_empty() { f.preset.clear() } else { f.pick_preset(&v) });
                }>
                    {DATASETS.iter().map(|d| view! {
                        <option value=d.id prop:selected=move || ctx.vec_form.with(|f| f.preset == d.id)>{d.label}</option>
                    }).collect_view()}
                    <option value="" prop:selected=move || ctx.vec_form.with(|f| f.preset.is_empty())>"My own pairs (edit below, or pick a file)"</option>
                </select>
            </div>
            <label class="check">
                <input type="checkbox" data-testid="vec-lists" prop:checked=lists
                    on:change=move |ev| ctx.vec_form.update(|f| f.lists = event_target_checked(&ev))/>
                "Two lists instead: one text per line, the i-th positive against the i-th negative"
            </label>
            {move || if lists() {
                view! {
                    <div class="vec-lists">
                        <label><span class="cap">"Positive texts (carry the concept)"</span>
                            <textarea rows="5" data-testid="vec-positive" prop:value=move || ctx.vec_form.with(|f| f.positive.clone())
                                on:input=move |ev| ctx.vec_form.update(|f| f.positive = event_target_value(&ev))></textarea></label>
                        <label><span class="cap">"Negative texts (lack it)"</span>
                            <textarea rows="5" data-testid="vec-negative" prop:value=move || ctx.vec_form.with(|f| f.negative.clone())
                                on:input=move |ev| ctx.vec_form.update(|f| f.negative = event_target_value(&ev))></textarea></label>
                    </div>
                }.into_any()
            } else {
                view! {
                    <label class="vec-pairs"><span class="cap">"One JSON object per line: "<code>"{\"positive\": \"…\", \"negative\": \"…\"}"</code>", or CAA's "<code>"{\"question\", \"answer_matching_behavior\", \"answer_not_matching_behavior\"}"</code></span>
                        <textarea rows="6" spellcheck="false" data-testid="vec-pairs" prop:value=move || ctx.vec_form.with(|f| f.jsonl.clone())
                            on:input=move |ev| ctx.vec_form.update(|f| f.set_text(event_target_value(&ev), None))></textarea></label>
                }.into_any()
            }}
            <label class="vec-file"><span class="cap">"…or read a .jsonl / .json file"</span>
                <input type="file" accept=".jsonl,.json,.txt" data-testid="vec-pairs-file" on:change=on_file/></label>
            {move || match summary() {
                Ok(s) => view! { <p class="note" data-testid="vec-pairs-summary" data-ok="true">{s}</p> }.into_any(),
                Err(e) => view! { <p class="invalid" data-testid="vec-pairs-summary" data-ok="false" role="status">{e}</p> }.into_any(),
            }}
            <div class="vec-settings">
                <span class="term-cell">
                    <span class="cap">"layer"</span>
                    <NumInput testid="vec-layer" label="the vector's layer"
                        value=Signal::derive(move || ctx.vec_form.with(|f| f.layer.clone()))
                        set=move |t: String| ctx.vec_form.update(|f| f.layer = t)
                        kind=Signal::derive(move || NumKind::whole(0, depth().saturating_sub(1) as u64))
                        slider=Signal::derive(move || (0.0, depth().saturating_sub(1) as f64, 1.0))/>
                </span>
                <span class="term-cell">
                    <span class="cap">"through layer (optional)"</span>
                    <NumInput testid="vec-layer-to" label="the last layer of a range"
                        value=Signal::derive(move || ctx.vec_form.with(|f| f.layer_to.clone()))
                        set=move |t: String| ctx.vec_form.update(|f| f.layer_to = t)
                        kind=Signal::derive(move || NumKind::whole(0, depth().saturating_sub(1) as u64))
                        empty_ok=true placeholder="none"/>
                </span>
                <label><span class="cap">"site"</span>
                    <ChoiceSelect testid="vec-site" options=sites.to_vec()
                        value=Signal::derive(move || ctx.vec_form.with(|f| f.site))
                        set=move |v: Site| ctx.vec_form.update(|f| f.site = v)/></label>
                <label><span class="cap">"method"</span>
                    <ChoiceSelect testid="vec-method" options=methods.to_vec()
                        value=Signal::derive(move || ctx.vec_form.with(|f| f.method))
                        set=move |v: Method| ctx.vec_form.update(|f| f.method = v)/></label>
                <label><span class="cap">"activation of"</span>
                    <ChoiceSelect testid="vec-token" options=tokens.to_vec()
                        value=Signal::derive(move || ctx.vec_form.with(|f| f.token))
                        set=move |v: TokenChoice| ctx.vec_form.update(|f| f.token = v)/></label>
                <span class="term-cell">
                    <span class="cap">"held out (fraction)"</span>
                    <NumInput testid="vec-held-out" label="the fraction of pairs held out"
                        value=Signal::derive(move || ctx.vec_form.with(|f| f.held_out.clone()))
                        set=move |t: String| ctx.vec_form.update(|f| f.held_out = t)
                        kind=NumKind::real(0.0, 0.9)/>
                </span>
                <label><span class="cap">"name in the library"</span>
                    <input type="text" data-testid="vec-name"
                        placeholder=move || {
                            let (bos, chat, system) = ctx.form.with(|f| (f.bos, f.chat && f.chat_terms, f.system.clone()));
                            ctx.vec_form.with(|f| f.to_spec(depth(), bos, chat, &system).map(|s| s.name).unwrap_or_else(|_| f.entry_name(&[])))
                        }
                        prop:value=move || ctx.vec_form.with(|f| f.name.clone())
                        on:input=move |ev| ctx.vec_form.update(|f| f.name = event_target_value(&ev))/></label>
            </div>
            <p class="note">"Texts are tokenized as the editor tokenizes steering texts: its BOS box, and the chat template when “chat” and “terms through the template” are both on."</p>
            <ErrorList testid="vec-error" errors=errors/>
            <div class="buttons">
                <button class="primary" data-testid="vec-build" disabled=move || !can_build() on:click=on_build>"Build vector"</button>
                <button data-testid="vec-stop" disabled=move || !ctx.building() on:click=move |_| send(ctx, &ToWorker::Stop, &[])>"Stop"</button>
                <span class="run-status" data-testid="vec-status"
                    data-state=move || ctx.vec_build.with(|b| b.as_ref().map_or("idle", |b| b.state.as_str()))>{move || build_status(ctx)}</span>
            </div>
            {move || ctx.vec_build.with(|b| b.as_ref().filter(|b| b.state == RunState::Running && b.total > 0).map(|b| view! {
                <progress data-testid="vec-progress" max=b.total value=b.done></progress>
            }))}
        </fieldset>
    }
}

fn build_status(ctx: Ctx) -> String {
    let ready = ctx.model_state.get() == ModelState::Ready;
    ctx.vec_build.with(|b| match b {
        None if !ready => "Load a model to build a vector.".into(),
        None => "Ready to build.".into(),
        Some(b) => match b.state {
            RunState::Running if b.total == 0 => "Building…".into(),
            RunState::Running if b.spec.layers.len() > 1 => format!("Building… {} of {} texts × layers.", b.done, b.total),
            RunState::Running => format!("Building… {} of {} texts.", b.done, b.total),
            RunState::Done if b.stopped => "Stopped; nothing was saved.".into(),
            RunState::Done => format!("Saved to the library as “{}”.", b.saved_as.clone().unwrap_or_default()),
            RunState::Error => "Failed (see above).".into(),
            RunState::Idle => String::new(),
        },
    })
}

/// CAA's behavioural measure: ticked library vectors against the build form's A/B items,
/// the chart of p(matching) by coefficient (one line per vector and layer), CSV.
#[component]
fn EvalPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let pressed = Pressed::new(move || {
        ctx.eval_form.track();
        ctx.vec_form.track();
        ctx.model_state.track();
    });
    let live = Memo::new(move |_| {
        let Some(cfg) = ctx.config() else { return Vec::new() };
        let (bos, chat, system) = ctx.form.with(|f| (f.bos, f.chat && f.chat_terms, f.system.clone()));
        ctx.eval_form
            .with(|e| ctx.vec_form.with(|f| ctx.library.with(|l| e.to_spec(f, l, cfg.n_layer, cfg.n_embd, bos, chat, &system).err())))
            .unwrap_or_default()
    });
    // The pairs' own problem shows under them already.
    let errors = Signal::derive(move || {
        let live = live.get().into_iter().filter(|m| !m.starts_with("the pairs: ")).collect();
        let failed = ctx.vec_eval.with(|e| e.as_ref().and_then(|e| e.error.clone())).map(|f| format!("The evaluation failed: {f}"));
        pressed.with_live(live, failed)
    });
    let ready = move || ctx.model_state.get() == ModelState::Ready;
    let can_eval = move || ready() && !ctx.busy() && live.with(Vec::is_empty);
    let on_eval = move |_| pressed.press(|| client::eval_ab(ctx));
    let entries = move || {
        ctx.library.with(|l| l.entries.iter().map(|s| (s.id.clone(), s.entry.name.clone(), s.entry.layer_numbers())).collect::<Vec<_>>())
    };
    let picks = move || {
        entries()
            .into_iter()
            .map(|(id, name, layers)| {
                let checked = {
                    let id = id.clone();
                    move || ctx.eval_form.with(|e| e.picked.contains(&id))
                };
                let layers = layers.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ");
                view! {
                    <label class="check">
                        <input type="checkbox" data-testid="vec-eval-pick" data-name=name.clone() prop:checked=checked
                            on:change=move |ev| ctx.eval_form.update(|e| e.toggle(&id, event_target_checked(&ev)))/>
                        {format!("{name} (layer {layers})")}
                    </label>
                }
            })
            .collect_view()
    };
    let items_line = move || {
        ctx.vec_form.with(|f| {
            let pairs = f.dataset().parse().ok()?;
            let choices = pairs.iter().filter(|p| matches!(p, tiller_core::pairs::Pair::Choice { .. })).count();
            (choices == pairs.len() && choices > 0).then(|| {
                let held = f.held_out_fraction().unwrap_or(0.0);
                let n = if held > 0.0 { tiller_core::pairs::split_held_out(&pairs, held).1.len() } else { pairs.len() };
                if held > 0.0 {
                    format!("Evaluates the {n} held-out items of the set above (the vector did not see them).")
                } else {
                    format!("Evaluates all {n} items of the set above; hold some out (above) to test on items the vector did not see.")
                }
            })
        })
    };
    let status = move || {
        ctx.vec_eval.with(|e| match e {
            None if !ready() => "Load a model to evaluate.".to_string(),
            None => "Ready to evaluate.".into(),
            Some(e) => match e.state {
                RunState::Running if e.total == 0 => "Evaluating…".into(),
                RunState::Running => format!("Evaluating… batch {} of {}.", e.done, e.total),
                RunState::Done if e.stopped => "Stopped; nothing to chart.".into(),
                RunState::Done => format!("Done: {} items, {} lines.", e.items, e.labels.len()),
                RunState::Error => "Failed (see above).".into(),
                RunState::Idle => String::new(),
            },
        })
    };
    let chart = move || {
        ctx.vec_eval.with(|e| {
            let e = e.as_ref().filter(|e| e.state == RunState::Done && !e.rows.is_empty())?;
            let chart = crate::chart::ab_chart(&e.rows, &e.labels, &e.coeffs);
            let rows = e.rows.clone();
            let save = move |_| {
                if let Err(err) = files::download(tiller_core::contrast::ab_csv(&rows).as_bytes(), "text/csv", "tiller-ab-eval.csv") {
                    ctx.library_note.set(Some((false, err)));
                }
            };
            Some(view! {
                <ChartView chart=chart testid="vec-eval"/>
                <p class="note">
                    "Each line is a vector added at every position of the question with the coefficient on the x axis; y is the mean over items of "
                    "p(matching letter) / (p(matching) + p(other letter)) at the answer letter. Lines rising to the right: the vector pushes the model "
                    "towards the behaviour. Hover a point for the share of probability the two letters hold: a low share means the model is not answering with a letter at all."
                </p>
                <div class="buttons"><button class="small" data-testid="vec-eval-csv" on:click=save>"Download CSV"</button></div>
            })
        })
    };
    view! {
        <fieldset class="vec-eval">
            <legend>"Evaluate: does the vector change the model's A/B answers? (CAA's measure)"</legend>
            <p class="note" data-testid="vec-eval-items">
                {move || items_line().unwrap_or_else(|| "Needs multiple-choice items above, such as the Optimism A/B set: each question ends at its answer letter.".into())}
            </p>
            <div class="vec-eval-picks" role="group" aria-label="library vectors to evaluate">
                {move || if entries().is_empty() {
                    view! { <p class="note">"Build a vector (above) or import one (below) to evaluate it."</p> }.into_any()
                } else {
                    picks().into_any()
                }}
            </div>
            <label class="num coeffs" title="Coefficients, comma-separated: 0 is the unsteered model">
                <span>"coefficients"</span>
                <input type="text" data-testid="vec-eval-coeffs" placeholder="-2, -1, 0, 1, 2"
                    prop:value=move || ctx.eval_form.with(|e| e.coeffs.clone())
                    on:input=move |ev| ctx.eval_form.update(|e| e.coeffs = event_target_value(&ev))/>
            </label>
            <ErrorList testid="vec-eval-error" errors=errors/>
            <div class="buttons">
                <button class="primary" data-testid="vec-eval-run" disabled=move || !can_eval() on:click=on_eval>"Evaluate"</button>
                <button data-testid="vec-eval-stop" disabled=move || !ctx.evaluating() on:click=move |_| send(ctx, &ToWorker::Stop, &[])>"Stop"</button>
                <span class="run-status" data-testid="vec-eval-status" role="status" aria-live="polite"
                    data-state=move || ctx.vec_eval.with(|e| e.as_ref().map_or("idle", |e| e.state.as_str()))>{status}</span>
            </div>
            {move || ctx.vec_eval.with(|e| e.as_ref().filter(|e| e.state == RunState::Running && e.total > 0).map(|e| view! {
                <progress data-testid="vec-eval-progress" max=e.total value=e.done></progress>
            }))}
            {chart}
        </fieldset>
    }
}

/// The library: entries, combination, cosine matrix, import.
#[component]
fn LibraryView() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let total = move || ctx.library.with(|l| (l.entries.len(), l.entries.iter().map(|s| s.bytes as u64).sum::<u64>()));
    let ids = move || ctx.library.with(|l| l.entries.iter().map(|s| s.id.clone()).collect::<Vec<_>>());
    let on_import = move |ev: web_sys::Event| {
        let Some(file) = files::picked_file(&ev) else { return };
        wasm_bindgen_futures::spawn_local(async move {
            let name = file.name();
            let result = match files::read_bytes(&file, tiller_core::library::MAX_FILE_BYTES, "a vector file").await {
                Ok(bytes) => {
                    let stem = name.rsplit_once('.').map_or(name.as_str(), |(s, _)| s);
                    VectorEntry::from_bytes(&bytes, stem).map_err(|e| format!("{name}: {e}")).and_then(|mut e| {
                        if e.created.is_empty() {
                            e.created = now_rfc3339();
                        }
                        save_entry(ctx, e)
                    })
                }
                Err(e) => Err(e),
            };
            ctx.library_note.set(Some(match result {
                Ok(saved) => (true, format!("Imported {name} as “{saved}”.")),
                Err(e) => (false, format!("{e}. The library is unchanged.")),
            }));
        });
    };
    view! {
        <fieldset class="vec-library">
            <legend>"Library (kept in this browser)"</legend>
            <p class="note" data-testid="vec-library-count">{move || {
                let (n, bytes) = total();
                if n == 0 {
                    "No vectors yet: build one above, or import a file.".to_string()
                } else {
                    format!("{n} vector{}, {} in all.", if n == 1 { "" } else { "s" }, crate::fmt::bytes(bytes))
                }
            }}</p>
            <For each=ids key=|id| id.clone() children=move |id| view! { <EntryRow id=id/> }/>
            <label class="vec-file"><span class="cap">"Import a "<code>".safetensors"</code>" from "<code>"tiller vector"</code>" or a llama.cpp GGUF control vector"</span>
                <input type="file" accept=".safetensors,.gguf" data-testid="vec-library-import" on:change=on_import/></label>
            {move || ctx.library_note.get().map(|(ok, text)| view! {
                <p class=if ok { "note" } else { "invalid" } data-testid="vec-library-note" role="status">{text}</p>
            })}
            <Combine/>
            <Cosines/>
        </fieldset>
    }
}

/// One entry: its name (editable), what it is, its norms, and its actions.
#[component]
fn EntryRow(id: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let id = StoredValue::new(id);
    let entry = move || ctx.library.with(|l| l.get(&id.get_value()).cloned());
    let name = move || entry().map(|s| s.entry.name).unwrap_or_default();
    let note = move |ok: bool, text: String| ctx.library_note.set(Some((ok, text)));
    let rename = move |ev: web_sys::Event| {
        let typed = event_target_value(&ev);
        let Some(mut stored) = entry() else { return };
        let new = ctx.library.with_untracked(|l| l.unique_name(&typed, Some(&stored.id)));
        if new == stored.entry.name {
            return;
        }
        let old = std::mem::replace(&mut stored.entry.name, new.clone());
        let Ok(bytes) = stored.entry.to_safetensors() else { return };
        stored.bytes = bytes.len();
        persist(ctx, &stored, bytes);
        ctx.library.update(|l| {
            if let Some(s) = l.entries.iter_mut().find(|s| s.id == stored.id) {
                *s = stored;
            }
        });
        note(true, format!("Renamed “{old}” to “{new}”."));
    };
    let use_it = move |_| {
        let Some(s) = entry() else { return };
        let mut form = ctx.form.get_untracked();
        if let Some(cfg) = ctx.config() {
            if s.entry.width() != cfg.n_embd {
                return note(
                    false,
                    format!(
                        "“{}” is {} wide, but the loaded model's residual stream is {}: it was made on another model.",
                        s.entry.name,
                        s.entry.width(),
                        cfg.n_embd
                    ),
                );
            }
        }
        match form.add_vector_entry(&s.entry) {
            Ok(said) => {
                ctx.form.set(form);
                note(true, format!("In the recipe: {said} (editor, left)."));
            }
            Err(e) => note(false, format!("“{}” {e}.", s.entry.name)),
        }
    };
    let download = move |gguf: bool| {
        let Some(s) = entry() else { return };
        let stem = file_stem(&s.entry.name);
        let result = if gguf {
            s.entry.to_gguf(&s.entry.gguf_model_hint()).map_err(|e| e.to_string()).and_then(|(bytes, notes)| {
                files::download(&bytes, "application/octet-stream", &format!("{stem}.gguf"))?;
                Ok(notes)
            })
        } else {
            s.entry.to_safetensors().map_err(|e| e.to_string()).and_then(|bytes| {
                files::download(&bytes, "application/octet-stream", &format!("{stem}.safetensors"))?;
                Ok(Vec::new())
            })
        };
        match result {
            Ok(notes) if !notes.is_empty() => note(true, notes.join(" ")),
            Ok(_) => {}
            Err(e) => note(false, format!("“{}” cannot be exported that way: {e}", s.entry.name)),
        }
    };
    let delete = move |_| {
        let Some(s) = entry() else { return };
        ctx.library.update(|l| l.entries.retain(|x| x.id != s.id));
        let id = s.id.clone();
        let name = s.entry.name.clone();
        wasm_bindgen_futures::spawn_local(async move {
            match idb::delete(&id).await {
                Ok(()) => note(true, format!("Deleted “{name}”.")),
                Err(e) => note(false, format!("“{name}” is gone from this tab, but the browser's copy could not be deleted ({e}).")),
            }
        });
    };
    let gguf_ok = move || entry().is_some_and(|s| s.entry.site == Site::ResidPre && s.entry.layers.iter().all(|l| l.layer >= 2));
    let reading_here = move || ctx.vec_reading.with(|r| r.as_ref().is_some_and(|r| r.entry == id.get_value()));
    let read = move |_| {
        if reading_here() {
            return ctx.vec_reading.set(None);
        }
        if let Err(e) = client::read_vector(ctx, &id.get_value(), false) {
            note(false, format!("“{}” cannot be read now: {e}.", name()));
        }
    };
    view! {
        <div class="vec-entry" data-testid="vec-entry" data-name=name>
            <input type="text" class="vec-entry-name" data-testid="vec-entry-name" aria-label="the vector's name"
                prop:value=name on:change=rename/>
            <span class="vec-entry-what" data-testid="vec-entry-what">{move || entry().map(|s| describe(&s.entry)).unwrap_or_default()}</span>
            <span class="vec-entry-norms" data-testid="vec-entry-norms">{move || entry().map(|s| norms_line(&s.entry)).unwrap_or_default()}</span>
            <span class="vec-entry-size">{move || entry().map(|s| crate::fmt::bytes(s.bytes as u64)).unwrap_or_default()}</span>
            <div class="buttons">
                <button class="small" data-testid="vec-use" on:click=use_it>"Use in recipe"</button>
                <button class="small" data-testid="vec-download" on:click=move |_| download(false)>"Download .safetensors"</button>
                <button class="small" data-testid="vec-download-gguf" disabled=move || !gguf_ok()
                    title="A llama.cpp control vector (--control-vector): resid_pre at layers 2 and above"
                    on:click=move |_| download(true)>"Download .gguf"</button>
                <button class="small" data-testid="vec-read" aria-expanded=move || reading_here().to_string()
                    title="Its closest tokens in the unembedding, and its size against the residual stream for the editor's prompt"
                    disabled=move || ctx.model_state.get() != ModelState::Ready on:click=read>
                    {move || if reading_here() { "Hide reading" } else { "Read it" }}</button>
                <button class="small" data-testid="vec-inspect" title="Its max-activating text over the built-in corpus or your texts (the Inspect area)"
                    on:click=move |_| super::inspect::inspect_entry(ctx, &id.get_value())>"Inspect"</button>
                <button class="small" data-testid="vec-delete" aria-label=move || format!("delete the vector {}", name()) on:click=delete>"Delete"</button>
            </div>
            {move || reading_here().then(|| view! { <ReadingView/> })}
        </div>
    }
}

/// The reading of the entry being read: per layer, its norm against the prompt's residual
/// stream and the tokens it points towards and away from.
#[component]
fn ReadingView() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let reading = move || ctx.vec_reading.get();
    let ln_f = move || reading().is_some_and(|r| r.ln_f);
    let relook = move |ev: web_sys::Event| {
        let Some(r) = ctx.vec_reading.get_untracked() else { return };
        if let Err(e) = client::read_vector(ctx, &r.entry, event_target_checked(&ev)) {
            ctx.library_note.set(Some((false, format!("The vector cannot be read now: {e}."))));
        }
    };
    let tokens = |entries: Vec<crate::protocol::VocabEntryView>, testid: &'static str| {
        view! {
            <ol class="vec-read-tokens" data-testid=testid>
                {entries.into_iter().map(|e| view! {
                    <li data-id=e.id.to_string() data-score=format!("{}", e.score) title=format!("token id {}, score {:+.3}", e.id, e.score)>
                        <code>{e.token.replace(' ', "␣").replace('\n', "⏎")}</code>
                    </li>
                }).collect_view()}
            </ol>
        }
    };
    let body = move || {
        let r = reading()?;
        Some(match r.state {
            RunState::Running | RunState::Idle => view! { <p class="note">"Reading…"</p> }.into_any(),
            RunState::Error => view! { <p class="invalid">{format!("The reading failed: {}", r.error.unwrap_or_default())}</p> }.into_any(),
            RunState::Done => {
                let prompt_line = match (&r.prompt_tokens, &r.prompt_problem) {
                    (Some(n), _) => format!("Against the editor's prompt ({n} token{}): the residual stream's size is the median of ‖x‖ over its tokens after the first.", if *n == 1 { "" } else { "s" }),
                    (None, Some(p)) => format!("The editor's prompt could not be measured ({p}); the vocabulary is below."),
                    (None, None) => String::new(),
                };
                let layers = r
                    .layers
                    .into_iter()
                    .map(|l| {
                        let size = match l.residual_norm {
                            Some(x) if x > 0.0 => format!(
                                "Layer {}: norm {:.3}; the prompt's residual stream there: {:.3}, so coefficient 1 adds {:.0}% of it and coefficient 8 adds {:.0}%.",
                                l.layer, l.norm, x, 100.0 * l.norm / x, 800.0 * l.norm / x
                            ),
                            _ => format!("Layer {}: norm {:.3}.", l.layer, l.norm),
                        };
                        view! {
                            <div class="vec-reading-layer" data-testid="vec-reading-layer" data-layer=l.layer.to_string()
                                data-norm=format!("{}", l.norm) data-residual=l.residual_norm.map(|x| format!("{x}")).unwrap_or_default()>
                                <p class="vec-read-size">{size}</p>
                                <div class="vec-read-lists">
                                    <span class="cap">"towards"</span>{tokens(l.top, "vec-read-top")}
                                    <span class="cap">"away from"</span>{tokens(l.bottom, "vec-read-bottom")}
                                </div>
                            </div>
                        }
                    })
                    .collect_view();
                view! { <p class="note">{prompt_line}</p> {layers} }.into_any()
            }
        })
    };
    view! {
        <div class="vec-reading" data-testid="vec-reading" data-state=move || reading().map_or("idle", |r| r.state.as_str())>
            <label class="check">
                <input type="checkbox" data-testid="vec-read-lnf" prop:checked=ln_f on:change=relook/>
                "after the final norm (the logit lens)"
            </label>
            <p class="note">"The tokens whose unembedding rows have the largest (and smallest) dot product with the vector: a heuristic for what it points at, not a decoding."</p>
            {body}
        </div>
    }
}

/// A new entry from a formula over the library's names.
#[component]
fn Combine() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let formula = RwSignal::new(String::new());
    let name = RwSignal::new(String::new());
    let example = move || {
        ctx.library.with(|l| match l.entries.as_slice() {
            [a, b, ..] => format!("\"{}\" - 0.5*\"{}\"", a.entry.name, b.entry.name),
            [a] => format!("2*\"{}\"", a.entry.name),
            [] => "a - b + 0.5*c".into(),
        })
    };
    let on_combine = move |_| {
        let result = ctx.library.with_untracked(|l| l.combine(&formula.get_untracked(), &name.get_untracked())).and_then(|mut e| {
            e.created = now_rfc3339();
            let norms = norms_line(&e);
            save_entry(ctx, e).map(|saved| (saved, norms))
        });
        ctx.library_note.set(Some(match result {
            Ok((saved, norms)) => (true, format!("Saved “{saved}” ({norms}).")),
            Err(e) => (false, e),
        }));
    };
    view! {
        <div class="vec-combine">
            <label><span class="cap">"Combine: a formula over the names above (quote names with spaces)"</span>
                <input type="text" data-testid="vec-formula" spellcheck="false" placeholder=example
                    prop:value=move || formula.get() on:input=move |ev| formula.set(event_target_value(&ev))/></label>
            <label><span class="cap">"name"</span>
                <input type="text" data-testid="vec-combine-name" placeholder="the formula"
                    prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev))/></label>
            <button class="small" data-testid="vec-combine" disabled=move || formula.with(|f| f.trim().is_empty()) on:click=on_combine>"Combine"</button>
        </div>
    }
}

/// The cosine similarity of the entries at one layer, as a heatmap.
#[component]
fn Cosines() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let layers = move || ctx.library.with(Library::shared_layers);
    let picked = RwSignal::new(None::<usize>);
    let layer = move || {
        let ls = layers();
        picked.get().filter(|l| ls.contains(l)).or_else(|| ls.first().copied())
    };
    move || {
        let l = layer()?;
        let (names, m) = ctx.library.with(|lib| lib.cosines_at(l));
        let n = names.len();
        let labels: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        let legend = names.iter().map(|name| view! { <li>{name.clone()}</li> }).collect_view();
        let options = layers()
            .into_iter()
            .map(|x| view! { <option value=x.to_string() prop:selected=move || layer() == Some(x)>{format!("layer {x}")}</option> })
            .collect_view();
        Some(view! {
            <div class="vec-cosines">
                <label><span class="cap">"Cosine similarity of the vectors at"</span>
                    <select data-testid="vec-cos-layer" on:change=move |ev| picked.set(event_target_value(&ev).parse().ok())>{options}</select></label>
                {cosine_svg(&names, &labels, &m, "vec-cosine", "vec-cosine-cell", format!("cosine similarity matrix of {n} vectors at layer {l}"))}
                <ol class="vec-cos-legend">{legend}</ol>
            </div>
        })
    }
}

/// A cosine-similarity matrix (`m`, row-major n×n) as an SVG heatmap: red for alike, blue for
/// opposite, white for unrelated; `labels` along the axes, `names` in each cell's tooltip.
pub(super) fn cosine_svg(
    names: &[String],
    labels: &[String],
    m: &[f64],
    testid: &'static str,
    cell_testid: &'static str,
    aria: String,
) -> impl IntoView {
    const CELL: usize = 34;
    const LEFT: usize = 28;
    let n = names.len();
    let size = LEFT + n * CELL;
    let cells = (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            let v = m[k];
            let t = v.clamp(-1.0, 1.0);
            let (r, g, b) = if t >= 0.0 {
                (255.0, 255.0 * (1.0 - t * 0.75), 255.0 * (1.0 - t * 0.75))
            } else {
                (255.0 * (1.0 + t * 0.75), 255.0 * (1.0 + t * 0.75), 255.0)
            };
            let (x, y) = (LEFT + j * CELL, LEFT + i * CELL);
            view! {
                <g data-testid=cell_testid data-value=format!("{v:.4}")>
                    <title>{format!("cos(“{}”, “{}”) = {v:.3}", names[i], names[j])}</title>
                    <rect x=x y=y width=CELL height=CELL fill=format!("rgb({r:.0},{g:.0},{b:.0})") stroke="#fff"/>
                    <text x=x + CELL / 2 y=y + CELL / 2 + 4 text-anchor="middle" font-size="11">{format!("{v:.2}")}</text>
                </g>
            }
        })
        .collect_view();
    let heads = labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            view! {
                <text x=LEFT + i * CELL + CELL / 2 y=LEFT - 8 text-anchor="middle" font-size="11">{label.clone()}</text>
                <text x=LEFT - 8 y=LEFT + i * CELL + CELL / 2 + 4 text-anchor="end" font-size="11">{label.clone()}</text>
            }
        })
        .collect_view();
    view! {
        <svg data-testid=testid role="img" aria-label=aria width=size height=size viewBox=format!("0 0 {size} {size}")>{heads}{cells}</svg>
    }
}
