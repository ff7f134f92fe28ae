//! The steering editor: preset, prompt, terms, pair shortcut, options, sampling, Run/Stop,
//! with validation errors and inline warnings as text.

use leptos::prelude::*;
use tiller_core::recipe::{MAX_COEFF, MAX_COMPARISONS};
use tiller_core::{Positions, Site, Term};

use super::client::{self, send};
use super::fields::{form_errors, ChoiceSelect, ErrorList, NumInput};
use super::{Ctx, ModelState, RunState};
use crate::form::{warnings, Form};
use crate::numbers::{self, NumKind};
use crate::presets::{self, PRESETS};
use crate::protocol::ToWorker;

/// When a run started from a Run button ends, focus goes back to that button if it is still
/// on the run's Stop (or was dropped to the page).
fn keep_run_focus(ctx: Ctx) {
    Effect::new(move |was_running: Option<bool>| {
        let running = ctx.run_state.get() == RunState::Running;
        if was_running == Some(true) && !running {
            if let Some(run) = ctx.run_focus.get_value() {
                ctx.run_focus.set_value(None);
                let active = document().active_element();
                let on_stop_or_page = match &active {
                    None => true,
                    Some(el) => el.tag_name() == "BODY" || el.get_attribute("data-testid").is_some_and(|t| t.starts_with("stop")),
                };
                if on_stop_or_page {
                    super::focus_later(run);
                }
            }
        }
        running
    });
}

/// Fills the editor with a preset, its layer scaled to `depth`.
pub fn apply_preset(ctx: Ctx, id: &str, depth: usize) {
    let Some(p) = presets::find(id) else { return };
    let terms = p.terms(depth);
    ctx.form.update(|f| {
        f.prompt = p.prompt.to_string();
        f.set_terms(&terms);
    });
    ctx.preset.set(id.to_string());
    ctx.applied_preset.set(Some((id.to_string(), depth, terms)));
}

/// The form's terms, when they all parse.
fn parsed_terms(f: &Form) -> Option<Vec<Term>> {
    f.terms
        .iter()
        .map(|t| Some(Term { layer: t.layer.trim().parse().ok()?, coeff: t.coeff.trim().parse().ok()?, text: t.text.clone(), head: None }))
        .collect()
}

/// Whether the editor still holds the preset exactly as applied.
fn preset_untouched(ctx: Ctx) -> Option<(String, usize)> {
    let (id, depth, terms) = ctx.applied_preset.get()?;
    let current = ctx.form.with(parsed_terms)?;
    (current == terms).then_some((id, depth))
}

/// The whole editor.
#[component]
pub fn RecipeEditor() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    // A preset applied for one depth is re-scaled when a model of another depth loads.
    Effect::new(move |_| {
        let Some(depth) = ctx.loaded.with(|l| l.as_ref().map(|l| l.config.n_layer)) else { return };
        if let Some((id, applied)) = untrack(|| preset_untouched(ctx)) {
            if applied != depth {
                apply_preset(ctx, &id, depth);
            }
        }
    });
    let validation = RwSignal::new(Vec::<String>::new());
    let live_errors = move || {
        let cfg = ctx.config();
        ctx.form.with(|f| f.to_recipe(cfg.as_ref()).err()).unwrap_or_default()
    };
    let shown_errors = Signal::derive(move || form_errors(validation.get(), live_errors(), None));
    let inline_warnings = move || {
        let cfg = ctx.config()?;
        let counts = ctx.counts.get()?;
        let recipe = ctx.form.with(|f| f.to_recipe(Some(&cfg)).ok())?;
        Some(warnings(&recipe, &counts, cfg.n_positions))
    };
    let running = move || ctx.run_state.get() == RunState::Running;
    // Why Run cannot start with this recipe: its first problem, or a prompt that (with the
    // new tokens) does not fit the context. None: it can.
    let blocked = move || -> Option<String> {
        if let Some(e) = live_errors().into_iter().next() {
            return Some(e);
        }
        let cfg = ctx.config()?;
        let prompt = ctx.counts.get()?.prompt;
        let max = ctx.form.with(|f| f.max_tokens.trim().parse::<usize>().ok())?;
        (prompt + max > cfg.n_positions).then(|| {
            format!(
                "the prompt is {prompt} tokens and {max} new tokens are asked for, past the model's context of {}: shorten the prompt or ask for fewer tokens",
                cfg.n_positions
            )
        })
    };
    let can_run = move || ctx.model_state.get() == ModelState::Ready && !ctx.busy() && blocked().is_none();
    let start = move |from_button: bool| {
        ctx.fields_checked.set(true);
        validation.set(Vec::new());
        let started = if from_button { super::run_from(ctx, "run", "stop") } else { client::run(ctx) };
        if let Err(errors) = started {
            validation.set(errors);
        }
    };
    let on_run = move |_| start(true);
    keep_run_focus(ctx);
    // Ctrl+Enter (Cmd+Enter on a Mac) runs from anywhere on the page, as the Run button would;
    // while Run is disabled it only shows what blocks it.
    let _shortcut = window_event_listener(leptos::ev::keydown, move |ev| {
        if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) {
            ev.prevent_default();
            if untrack(can_run) {
                start(false);
            } else {
                ctx.fields_checked.set(true);
            }
        }
    });
    view! {
        <div class="card recipe" id="area-recipe">
            <h2>"2 · Steering recipe"</h2>
            <PresetPicker/>
            <label for="prompt">"Prompt"</label>
            <textarea id="prompt" data-testid="prompt" rows="3"
                prop:value=move || ctx.form.with(|f| f.prompt.clone())
                on:input=move |ev| ctx.form.update(|f| f.prompt = event_target_value(&ev))></textarea>
            <Terms/>
            <TokenCounts/>
            <PairShortcut/>
            <Options/>
            <Sampling/>
            <div class="warnings">
                {move || inline_warnings().unwrap_or_default().into_iter().map(|w| view! { <p class="warning" data-testid="warning">"⚠ " {w}</p> }).collect_view()}
            </div>
            <ErrorList testid="validation" errors=shown_errors/>
            <div class="buttons run-buttons">
                <button class="primary big" data-testid="run" disabled=move || !can_run() on:click=on_run
                    aria-keyshortcuts="Control+Enter"
                    title=move || blocked().map_or_else(|| "Run (Ctrl+Enter)".to_string(), |b| format!("Fix the recipe to run: {b}"))>"Run"</button>
                <button class="big" data-testid="stop" disabled=move || !running() on:click=move |_| send(ctx, &ToWorker::Stop, &[])>"Stop"</button>
                <span class="run-status" data-testid="run-status" role="status" aria-live="polite" data-state=move || ctx.run_state.get().as_str()>
                    {move || match ctx.run_state.get() {
                        RunState::Idle if ctx.model_state.get() != ModelState::Ready => "Load a model to run.".to_string(),
                        _ if blocked().is_some() && !running() => "Fix the recipe above to run.".to_string(),
                        RunState::Idle => "Ready to run.".to_string(),
                        RunState::Running => "Generating…".to_string(),
                        RunState::Done if shown_stopped(ctx) => "Stopped.".to_string(),
                        RunState::Done => "Done.".to_string(),
                        RunState::Error => "The run failed (see the error above).".to_string(),
                    }}
                </span>
            </div>
        </div>
    }
}

fn shown_stopped(ctx: Ctx) -> bool {
    let Some(id) = ctx.shown_run.get() else { return false };
    ctx.runs.with(|runs| runs.iter().any(|r| r.id == id && r.stopped))
}

/// The published examples.
#[component]
fn PresetPicker() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let note = move || {
        let (id, depth) = preset_untouched(ctx)?;
        if ctx.preset.get() != id {
            return None;
        }
        presets::find(&id)?.scale_note(depth)
    };
    view! {
        <div class="row">
            <label for="preset-select">"Preset"</label>
            <select id="preset-select" data-testid="preset-select" on:change=move |ev| {
                let id = event_target_value(&ev);
                apply_preset(ctx, &id, ctx.depth());
            }>
                <option value="" prop:selected=move || ctx.preset.get().is_empty()>"(custom)"</option>
                {PRESETS
                    .iter()
                    .map(|p| {
                        let id = p.id;
                        view! { <option value=id prop:selected=move || ctx.preset.get() == id>{format!("{} (gpt2-xl layer {}, c = {})", p.label, p.layer, p.coeff)}</option> }
                    })
                    .collect_view()}
            </select>
        </div>
        <p class="note" data-testid="preset-note">
            {move || note().unwrap_or_else(|| "The ActAdd post's examples on GPT-2-XL, with the post's prompts.".to_string())}
        </p>
    }
}

/// The list of terms.
#[component]
fn Terms() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let ids = move || ctx.form.with(|f| f.terms.iter().map(|t| t.id).collect::<Vec<_>>());
    view! {
        <fieldset class="terms">
            <legend>"Steering terms: add coefficient × (activations of the text) before the layer"</legend>
            <For each=ids key=|id| *id children=move |id| view! { <TermRowView id=id/> }/>
            <VectorTermRows/>
            <button class="small" data-testid="term-add" on:click=move |_| {
                let layer = ctx.form.with(|f| f.terms.last().and_then(|t| t.layer.trim().parse().ok())).unwrap_or(0);
                ctx.form.update(|f| f.add_term("", layer, 1.0));
            }>"+ Add term"</button>
        </fieldset>
    }
}

/// The recipe's saved-vector terms (from a vector file or a share link): what each adds, its
/// coefficient, remove; and the file picker that imports one.
#[component]
fn VectorTermRows() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    // Rows are keyed by (removals so far, index, name, layer): typing a coefficient keeps its
    // row (and focus); a removal renumbers every row.
    let removals = RwSignal::new(0usize);
    let keys = move || {
        let gen = removals.get();
        ctx.form.with(|f| f.vectors.iter().enumerate().map(|(i, v)| (gen, i, v.name.clone(), v.layer)).collect::<Vec<_>>())
    };
    let note = RwSignal::new(None::<(bool, String)>);
    let import = move |ev: leptos::ev::Event| {
        let Some(file) = super::files::picked_file(&ev) else { return };
        let name = file.name();
        wasm_bindgen_futures::spawn_local(async move {
            let bytes = match super::files::read_bytes(&file, tiller_core::library::MAX_FILE_BYTES, "a vector file").await {
                Ok(b) => b,
                Err(e) => return note.set(Some((false, format!("{e}. The recipe is unchanged.")))),
            };
            let mut form = ctx.form.get_untracked();
            match form.import_vector_file(&bytes, &name) {
                Ok(said) => {
                    ctx.form.set(form);
                    note.set(Some((true, said)));
                }
                Err(e) => note.set(Some((false, format!("{e}. The recipe is unchanged.")))),
            }
        });
    };
    view! {
        <For each=keys key=|k| k.clone() children=move |(_, i, _, _)| view! { <VectorTermRow index=i removals=removals/> }/>
        <div class="vector-import">
            <label>
                <span class="cap">"Add a saved vector: a "<code>".safetensors"</code>" from "<code>"tiller vector"</code>", or a llama.cpp GGUF control vector"</span>
                <input type="file" accept=".safetensors,.gguf" data-testid="vector-import" on:change=import/>
            </label>
            {move || note.get().map(|(ok, text)| view! {
                <p class=if ok { "note" } else { "invalid" } data-testid="vector-import-note" role="status">{text}</p>
            })}
        </div>
    }
}

/// One vector term: what it adds (name, norm, width, layer, positions, site), its coefficient.
#[component]
fn VectorTermRow(index: usize, removals: RwSignal<usize>) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let get = move |f: &Form| f.vectors.get(index).cloned();
    let what = move || {
        ctx.form.with(|f| get(f)).map(|v| {
            format!(
                "vector “{}” (norm {:.2}, {} channels) at layer {}, {} positions, {}",
                v.name,
                tiller_core::library::norm(&v.values),
                v.values.len(),
                v.layer,
                v.positions.as_str(),
                match v.head {
                    Some(h) => format!("head {h}'s output (z)"),
                    None => v.site.as_str().to_string(),
                }
            )
        })
    };
    let coeff = move || ctx.form.with(|f| get(f).map_or(0.0, |v| v.coeff));
    let class = move || if coeff() < 0.0 { "term-row vector-row neg" } else { "term-row vector-row pos" };
    // The text as typed; the form holds its value once it is a number in range. A text that
    // parses to another value than the form's was overwritten (a link, history): show the form's.
    let typed = RwSignal::new(coeff().to_string());
    let value = Signal::derive(move || {
        let t = typed.get();
        match t.trim().parse::<f32>() {
            Ok(x) if x != coeff() => coeff().to_string(),
            _ => t,
        }
    });
    let set = move |t: String| {
        typed.set(t.clone());
        if let Ok(x) = t.trim().parse::<f32>() {
            if x.is_finite() && x.abs() <= MAX_COEFF {
                ctx.form.update(|f| {
                    if let Some(v) = f.vectors.get_mut(index) {
                        v.coeff = x;
                    }
                });
            }
        }
    };
    let name = move || ctx.form.with(|f| get(f).map(|v| v.name).unwrap_or_default());
    view! {
        <div class=class data-testid="vector-term-row">
            <span class="vector-what">{what}</span>
            <button class="small term-remove" data-testid="vector-term-remove" title="Remove this vector"
                aria-label=move || format!("remove the vector {}", name())
                on:click=move |_| {
                    ctx.form.update(|f| {
                        if index < f.vectors.len() {
                            f.vectors.remove(index);
                        }
                    });
                    removals.update(|n| *n += 1);
                }>"✕"</button>
            <span class="term-cell term-coeff-cell">
                <span class="cap" aria-hidden="true">"coefficient"</span>
                <NumInput testid="vector-term-coeff" label=Signal::derive(move || format!("the coefficient of the vector {}", name()))
                    value=value
                    set=set
                    kind=NumKind::real(-MAX_COEFF as f64, MAX_COEFF as f64)
                    slider=Signal::derive(|| (-20.0, 20.0, 0.5)) flip=true/>
            </span>
        </div>
    }
}

/// One term: text, layer (bounded by the model's depth), coefficient, remove.
#[component]
fn TermRowView(
    /// The row's id in [`Form::terms`].
    id: u32,
) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let field = move |get: fn(&crate::form::TermRow) -> String| {
        move || ctx.form.with(|f| f.terms.iter().find(|t| t.id == id).map(get).unwrap_or_default())
    };
    let set = move |apply: fn(&mut crate::form::TermRow, String), value: String| {
        ctx.preset.set(String::new());
        ctx.form.update(|f| {
            if let Some(t) = f.term_mut(id) {
                apply(t, value)
            }
        });
    };
    let last_layer = move || ctx.depth().saturating_sub(1);
    let text = field(|t| t.text.clone());
    let name = move || {
        let t = text();
        if t.is_empty() {
            "this term".to_string()
        } else {
            format!("`{t}`")
        }
    };
    let coeff = field(|t| t.coeff.clone());
    let sign_class = move || match numbers::sign(&coeff()) {
        1 => "term-row pos",
        -1 => "term-row neg",
        _ => "term-row",
    };
    view! {
        <div class=sign_class data-testid="term-row">
            <input type="text" data-testid="term-text" placeholder="text, e.g. Love" prop:value=text
                aria-label="steering text"
                on:input=move |ev| set(|t, v| t.text = v, event_target_value(&ev))/>
            <button class="small term-remove" data-testid="term-remove" title="Remove this term" aria-label=move || format!("remove {}", name())
                on:click=move |_| ctx.form.update(|f| f.terms.retain(|t| t.id != id))>"✕"</button>
            <span class="term-cell term-layer-cell">
                <span class="cap" aria-hidden="true">{move || match ctx.form.with(|f| f.terms.iter().find(|t| t.id == id).and_then(|t| t.head)) {
                    Some(h) => format!("layer (head {h})"),
                    None => "layer".to_string(),
                }}</span>
                <NumInput testid="term-layer" label=Signal::derive(move || format!("the layer of {}", name()))
                    value=Signal::derive(field(|t| t.layer.clone()))
                    set=move |v| set(|t, v| t.layer = v, v)
                    kind=Signal::derive(move || NumKind::whole(0, last_layer() as u64))
                    slider=Signal::derive(move || (0.0, last_layer() as f64, 1.0))/>
            </span>
            <span class="term-cell term-coeff-cell">
                <span class="cap" aria-hidden="true">"coefficient"</span>
                <NumInput testid="term-coeff" label=Signal::derive(move || format!("the coefficient of {}", name()))
                    value=Signal::derive(coeff)
                    set=move |v| set(|t, v| t.coeff = v, v)
                    kind=NumKind::real(-MAX_COEFF as f64, MAX_COEFF as f64)
                    slider=Signal::derive(|| (-20.0, 20.0, 0.5)) flip=true/>
            </span>
        </div>
    }
}

/// How many tokens the prompt and each term are (BOS included when on), from the worker.
#[component]
fn TokenCounts() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    move || {
        let counts = ctx.counts.get()?;
        let cfg = ctx.config()?;
        let texts = ctx.form.with(|f| f.terms.iter().map(|t| t.text.clone()).collect::<Vec<_>>());
        if texts.len() != counts.terms.len() {
            return None;
        }
        let terms = texts.iter().zip(&counts.terms).map(|(t, n)| format!("\"{t}\" {n}")).collect::<Vec<_>>().join(" · ");
        let rendered = counts.prompt_text.clone().filter(|_| ctx.form.with(|f| f.chat));
        Some(view! {
            <p class="note" data-testid="token-count">
                {if terms.is_empty() {
                    format!("Tokens: prompt {} (context {}).", counts.prompt, cfg.n_positions)
                } else {
                    format!("Tokens: prompt {} (context {}); terms {terms}.", counts.prompt, cfg.n_positions)
                }}
            </p>
            {rendered.map(|text| view! {
                <div class="rendered-prompt">
                    <p class="note">"The prompt as the model reads it, through its chat template:"</p>
                    <pre data-testid="chat-rendered">{text}</pre>
                </div>
            })}
        })
    }
}

/// Chat template on/off and the system message, for models that have a template.
#[component]
fn ChatOptions() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let has_template = move || ctx.loaded.with(|l| l.as_ref().is_some_and(|l| l.chat_template));
    move || {
        has_template().then(|| {
            view! {
                <label class="check">
                    <input type="checkbox" data-testid="chat" prop:checked=move || ctx.form.with(|f| f.chat)
                        on:change=move |ev| ctx.form.update(|f| f.chat = event_target_checked(&ev))/>
                    "Chat: send the prompt as the user's message through the model's chat template (off: raw text)"
                </label>
                <div class="row" style:display=move || if ctx.form.with(|f| f.chat) { "" } else { "none" }>
                    <label for="system">"System message"</label>
                    <input id="system" type="text" data-testid="system" placeholder="(none)"
                        prop:value=move || ctx.form.with(|f| f.system.clone())
                        on:input=move |ev| ctx.form.update(|f| f.system = event_target_value(&ev))/>
                </div>
                <label class="check" style:display=move || if ctx.form.with(|f| f.chat) { "" } else { "none" }>
                    <input type="checkbox" data-testid="chat-terms" prop:checked=move || ctx.form.with(|f| f.chat_terms)
                        on:change=move |ev| ctx.form.update(|f| f.chat_terms = event_target_checked(&ev))/>
                    "Template the steering texts too (each becomes a user message, so a pair's template tokens line up with the prompt's and cancel)"
                </label>
            }
        })
    }
}

/// "+c × A − c × B at layer L" in one go.
#[component]
fn PairShortcut() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let a = RwSignal::new(String::new());
    let b = RwSignal::new(String::new());
    let layer = RwSignal::new(presets::scaled_layer(6, ctx.depth()).to_string());
    let coeff = RwSignal::new("5".to_string());
    let error = RwSignal::new(None::<String>);
    let add = move |_| {
        let l = numbers::check(&layer.get(), NumKind::whole(0, ctx.depth().saturating_sub(1) as u64), "the pair's layer");
        let c = numbers::check(&coeff.get(), NumKind::real(-MAX_COEFF as f64, MAX_COEFF as f64), "the pair's coefficient");
        match (l, c) {
            (Ok(l), Ok(c)) => {
                error.set(None);
                ctx.preset.set(String::new());
                ctx.form.update(|f| {
                    f.add_term(&a.get(), l as usize, c as f32);
                    f.add_term(&b.get(), l as usize, -c as f32);
                });
            }
            (l, c) => error.set(Some([l.err(), c.err()].into_iter().flatten().collect::<Vec<_>>().join("; "))),
        }
    };
    view! {
        <fieldset class="pair">
            <legend>"Contrast pair shortcut: adds +c × A and −c × B at one layer"</legend>
            <div class="pair-row">
                <input type="text" data-testid="pair-a" placeholder="A, e.g. Love" aria-label="pair text A (added)" prop:value=move || a.get() on:input=move |ev| a.set(event_target_value(&ev))/>
                <input type="text" data-testid="pair-b" placeholder="B, e.g. Hate" aria-label="pair text B (subtracted)" prop:value=move || b.get() on:input=move |ev| b.set(event_target_value(&ev))/>
                <span class="pair-num">"layer"
                    <NumInput testid="pair-layer" label="the pair's layer" value=layer set=move |v| layer.set(v)
                        kind=Signal::derive(move || NumKind::whole(0, ctx.depth().saturating_sub(1) as u64))/>
                </span>
                <span class="pair-num">"c"
                    <NumInput testid="pair-coeff" label="the pair's coefficient" value=coeff set=move |v| coeff.set(v)
                        kind=NumKind::real(-MAX_COEFF as f64, MAX_COEFF as f64) flip=true/>
                </span>
                <button class="small" data-testid="pair-add" on:click=add>"Add pair"</button>
            </div>
            {move || error.get().map(|e| view! { <p class="invalid">{e}</p> })}
        </fieldset>
    }
}

/// BOS, positions, site.
#[component]
fn Options() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let positions = [
        (Positions::Front, "front: ActAdd (prompt's first n positions, once)"),
        (Positions::All, "all positions (CAA-style, not ActAdd)"),
        (Positions::Last, "last position each step (function-vector style)"),
    ];
    let sites = [
        (Site::ResidPre, "resid_pre: residual stream before block L"),
        (Site::AttnOut, "attn_out: attention output of block L"),
        (Site::MlpOut, "mlp_out: MLP output of block L"),
    ];
    view! {
        <div class="options">
            <label class="check">
                <input type="checkbox" data-testid="bos" prop:checked=move || ctx.form.with(|f| f.bos)
                    on:change=move |ev| {
                        ctx.bos_pinned.set_value(true);
                        ctx.form.update(|f| f.bos = event_target_checked(&ev));
                    }/>
                "BOS: put the tokenizer's BOS (<|endoftext|> for GPT-2) before the prompt and each steering text"
            </label>
            <ChatOptions/>
            <div class="row">
                <label for="positions">"Positions"</label>
                <ChoiceSelect testid="positions" id="positions" options=positions.to_vec()
                    value=Signal::derive(move || ctx.form.with(|f| f.positions))
                    set=move |v: Positions| ctx.form.update(|f| f.positions = v)/>
            </div>
            <div class="row">
                <label for="site">"Site"</label>
                <ChoiceSelect testid="site" id="site" options=sites.to_vec()
                    value=Signal::derive(move || ctx.form.with(|f| f.site))
                    set=move |v: Site| ctx.form.update(|f| f.site = v)/>
            </div>
        </div>
    }
}

/// One numeric setting bound to a text field of the form.
#[component]
fn NumberField(
    /// The `data-testid` and element id.
    testid: &'static str,
    /// The visible label.
    label: &'static str,
    /// A tooltip saying what the setting does.
    hint: &'static str,
    /// Reads the field from the form.
    get: fn(&Form) -> String,
    /// Writes the field into the form.
    set: fn(&mut Form, String),
    /// What it accepts.
    #[prop(into)]
    kind: Signal<NumKind>,
    /// A slider beside it: (min, max, step).
    #[prop(optional, into)]
    slider: Option<Signal<(f64, f64, f64)>>,
) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let value = Signal::derive(move || ctx.form.with(get));
    let set = move |v: String| ctx.form.update(|f| set(f, v));
    view! {
        <label class="num" title=hint>
            <span>{label}</span>
            {match slider {
                Some(slider) => view! { <NumInput testid=testid id=testid label=label value=value set=set kind=kind slider=slider/> }.into_any(),
                None => view! { <NumInput testid=testid id=testid label=label value=value set=set kind=kind/> }.into_any(),
            }}
        </label>
    }
}

/// Sampling, comparisons, length, seed.
#[component]
fn Sampling() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <fieldset class="sampling">
            <legend>"Sampling (the post's defaults: temperature 1, top-p 0.3, frequency penalty 1)"</legend>
            <div class="grid">
                <NumberField testid="temperature" label="temperature" hint="Divides the logits; higher is more random." get=|f| f.temperature.clone() set=|f, v| f.temperature = v
                    kind=NumKind::above(0.0, 100.0) slider=Signal::derive(|| (0.05, 2.0, 0.05))/>
                <NumberField testid="top-p" label="top-p" hint="Keep the smallest set of tokens whose probability adds up to p (1 = off)." get=|f| f.top_p.clone() set=|f, v| f.top_p = v
                    kind=NumKind::above(0.0, 1.0)/>
                <NumberField testid="top-k" label="top-k" hint="Keep only the k most likely tokens (0 = off)." get=|f| f.top_k.clone() set=|f, v| f.top_k = v
                    kind=Signal::derive(move || NumKind::whole(0, ctx.config().map_or(u32::MAX as u64, |c| c.vocab_size as u64)))/>
                <NumberField testid="freq-penalty" label="frequency penalty" hint="Subtracted from a token's logit once per time it was generated." get=|f| f.freq_penalty.clone() set=|f, v| f.freq_penalty = v
                    kind=NumKind::real(-100.0, 100.0)/>
                <NumberField testid="rep-penalty" label="repetition penalty" hint="Hugging Face's repetition penalty over prompt and output (1 = off)." get=|f| f.rep_penalty.clone() set=|f, v| f.rep_penalty = v
                    kind=NumKind::above(0.0, 100.0)/>
                <NumberField testid="n" label="comparisons" hint="How many unsteered/steered pairs to generate." get=|f| f.n.clone() set=|f, v| f.n = v
                    kind=NumKind::whole(1, MAX_COMPARISONS as u64)/>
                <NumberField testid="max-tokens" label="max new tokens" hint="Length of each completion." get=|f| f.max_tokens.clone() set=|f, v| f.max_tokens = v
                    kind=Signal::derive(move || NumKind::whole(1, ctx.config().map_or(1024, |c| c.n_positions).saturating_sub(1) as u64))/>
                <NumberField testid="seed" label="seed" hint="Same seed, recipe and GPU give the same completions." get=|f| f.seed.clone() set=|f, v| f.seed = v
                    kind=NumKind::whole(0, u64::MAX)/>
            </div>
            <label class="check">
                <input type="checkbox" data-testid="greedy" prop:checked=move || ctx.form.with(|f| f.greedy)
                    on:change=move |ev| ctx.form.update(|f| f.greedy = event_target_checked(&ev))/>
                "greedy (always the most likely token; ignores temperature, top-k, top-p)"
            </label>
            <label class="check">
                <input type="checkbox" data-testid="stop-at-eot" prop:checked=move || ctx.form.with(|f| f.stop_at_eot)
                    on:change=move |ev| ctx.form.update(|f| f.stop_at_eot = event_target_checked(&ev))/>
                "stop a completion at <|endoftext|>"
            </label>
        </fieldset>
    }
}
