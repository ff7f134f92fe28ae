//! Share links on the page: restoring the state from the address's fragment at start, the
//! "copy link" panel, and the dialog that asks before downloading a model a link names.

use leptos::prelude::*;

use super::editor::apply_preset;
use super::{client, storage, Ctx};
use crate::form::Form;
use crate::protocol::{ErrorKind, ModelSource};
use crate::share::{self, ShareState};
use crate::sweep::SweepForm;

/// The page's address without its fragment.
pub fn page_url() -> String {
    let href = window().location().href().unwrap_or_default();
    href.split('#').next().unwrap_or_default().to_string()
}

/// Keeps the editor in local storage, and answers a link pasted into this open tab: it asks
/// before the link's recipe replaces an editor that holds something else.
pub fn watch_editor_and_hash(ctx: Ctx) {
    Effect::new(move |_| ctx.form.with(storage::save_editor));
    let handle = window_event_listener(leptos::ev::hashchange, move |_| {
        let hash = window().location().hash().unwrap_or_default();
        let recipe = match share::decode(&hash) {
            Ok(Some(state)) => state.recipe,
            Ok(None) => return,
            Err(message) => {
                return ctx.show_error(ErrorKind::Recipe, format!("{message}. The page kept what you had."));
            }
        };
        let same = ctx.form.with_untracked(|f| f.to_recipe(None).ok()) == Some(recipe);
        let ok = same
            || window()
                .confirm_with_message("Open the experiment in this link? It replaces the recipe in the editor (your current one stays in the history if you ran it).")
                .unwrap_or(false);
        if ok {
            restore_from_fragment(ctx);
        }
    });
    // The listener lives as long as the page.
    std::mem::forget(handle);
}

/// Restores the state a share link carries; a damaged link is reported and the defaults stay.
/// Without a link, the editor comes back as it was left (or with the first preset).
pub fn restore_from_fragment(ctx: Ctx) {
    let hash = window().location().hash().unwrap_or_default();
    match share::decode(&hash) {
        Ok(Some(state)) => {
            ctx.form.set(Form::from_recipe(&state.recipe));
            ctx.bos_pinned.set_value(true);
            ctx.preset.set(String::new());
            ctx.vocab_ln_f.set(state.vocab_ln_f);
            ctx.set_source(&state.model);
            if let Some(sweep) = &state.sweep {
                ctx.set_sweep_form(SweepForm::from_settings(sweep, ctx.depth()));
                ctx.sweep_open.set(true);
            }
            // A built-in GPT-2 from the Hugging Face Hub loads at once; from another server
            // (`?hub=` in the address, which a link's sender controls too) it asks first.
            if state.model.is_default() && ctx.hub.get_value() == crate::protocol::DEFAULT_HUB {
                ctx.autoload.set_value(Some(state.model));
            } else {
                ctx.pending_confirm.set(Some(state.model));
            }
        }
        Ok(None) => match storage::load_editor() {
            Some(form) => ctx.form.set(form),
            None => apply_preset(ctx, "love-hate", ctx.depth()),
        },
        Err(message) => {
            match storage::load_editor() {
                Some(form) => ctx.form.set(form),
                None => apply_preset(ctx, "love-hate", ctx.depth()),
            }
            ctx.show_error(ErrorKind::Recipe, format!("{message}. The page kept what you had."));
        }
    }
}

/// The sweep panel's settings for a link: `None` when they are the defaults; an error when
/// they do not parse (the link then leaves them out, and the panel says so).
pub fn sweep_settings(ctx: Ctx) -> Result<Option<crate::sweep::SweepSettings>, Vec<String>> {
    let depth = ctx.depth();
    ctx.sweep_form.with(|f| f.to_settings(depth))
}

/// The link for the editor's recipe, the picker's model and the sweep panel.
fn current_link(ctx: Ctx) -> Result<String, String> {
    let recipe = ctx.form.with(|f| f.to_recipe(ctx.config().as_ref())).map_err(|e| e.join(" "))?;
    let state =
        ShareState { model: ctx.chosen_source(), recipe, vocab_ln_f: ctx.vocab_ln_f.get(), sweep: sweep_settings(ctx).unwrap_or(None) };
    Ok(format!("{}#{}", page_url(), share::encode(&state)))
}

/// The share link and its copy button.
#[component]
pub fn SharePanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let copied = RwSignal::new(None::<String>);
    let link = Memo::new(move |_| current_link(ctx));
    let copy = move |_| {
        let Ok(text) = link.get_untracked() else { return };
        let promise = window().navigator().clipboard().write_text(&text);
        leptos::task::spawn_local(async move {
            let ok = wasm_bindgen_futures::JsFuture::from(promise).await.is_ok();
            copied.set(Some(if ok { "Copied.".into() } else { "The browser refused the clipboard: select the link and copy it.".into() }));
        });
    };
    view! {
        <div class="card share" id="area-share">
            <h2>"Share"</h2>
            <p class="note">"The link holds the model source, the whole recipe (sampling and seed included) and the sweep panel's settings: opening it restores everything, and on the same GPU reproduces the same completions."</p>
            <div class="row">
                <input type="text" readonly data-testid="share-link" class="share-link" aria-label="the share link"
                    prop:value=move || link.get().unwrap_or_default()
                    on:focus=move |ev| { event_target::<web_sys::HtmlInputElement>(&ev).select(); }/>
                <button data-testid="share-copy" disabled=move || link.with(|l| l.is_err()) on:click=copy>"Copy link"</button>
            </div>
            {move || link.get().err().map(|e| view! { <p class="note">{format!("Fix the recipe to get a link: {e}")}</p> })}
            {move || sweep_settings(ctx).is_err().then(|| view! { <p class="note warn">"The sweep panel's settings have a problem (see the panel), so the link leaves them out."</p> })}
            {move || copied.get().map(|m| view! { <p class="note" data-testid="share-copied">{m}</p> })}
        </div>
    }
}

/// Asks before downloading a model that a share link names, unless it is one of the five
/// built-in ones.
#[component]
pub fn ConfirmDialog() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    move || {
        let source = ctx.pending_confirm.get()?;
        let hub = ctx.hub.get_value();
        Some(if source == ModelSource::Local {
            view! {
                <div class="banner banner-info" data-testid="confirm-dialog">
                    "This link was made with local model files. Pick them in the model box (or drop them there) and press Load model; the recipe is restored."
                    <button class="small" on:click=move |_| ctx.pending_confirm.set(None)>"OK"</button>
                </div>
            }
            .into_any()
        } else {
            let place = source.base_url(&hub).unwrap_or_else(|e| e);
            let confirm_source = source.clone();
            view! {
                <div class="dialog-backdrop">
                    <div class="dialog" role="dialog" data-testid="confirm-dialog">
                        <h2>"Download this model?"</h2>
                        {if hub == crate::protocol::DEFAULT_HUB {
                            view! { <p>"The link you opened names a model that is not one of the five built-in GPT-2s:"</p> }.into_any()
                        } else {
                            view! { <p data-testid="confirm-hub">"This page's address (" <code>"?hub="</code> ") sends model downloads to "
                                <strong>{hub.clone()}</strong>", not the Hugging Face Hub. The link you opened asks for this model from there:"</p> }.into_any()
                        }}
                        <p><code>{place}</code></p>
                        <p>"Only download models from sources you trust. Nothing has been asked of that server yet (not even the size); the recipe is restored either way."</p>
                        <div class="buttons">
                            <button class="primary" data-testid="confirm-download" on:click=move |_| {
                                ctx.pending_confirm.set(None);
                                client::load(ctx, confirm_source.clone());
                            }>"Download and load"</button>
                            <button data-testid="confirm-cancel" on:click=move |_| ctx.pending_confirm.set(None)>"Not now"</button>
                        </div>
                    </div>
                </div>
            }
            .into_any()
        })
    }
}
