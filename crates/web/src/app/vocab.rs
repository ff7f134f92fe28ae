//! The decoded vocabulary of the shown run's steering tensors: per position and summed, top
//! and bottom tokens of `v · wteᵀ`, optionally after `ln_f`. A heuristic, not a decoding.

use leptos::prelude::*;

use super::client;
use super::{Ctx, ModelState, VocabState};
use crate::protocol::{LayerVocabView, VocabEntryView};

/// Shows a token so spaces and newlines are visible.
fn visible(token: &str) -> String {
    token.replace(' ', "␣").replace('\n', "⏎")
}

fn entry_list(entries: Vec<VocabEntryView>) -> impl IntoView {
    entries
        .into_iter()
        .map(|e| {
            view! {
                <li data-testid="vocab-entry" data-id=e.id.to_string() data-score=format!("{}", e.score) title=format!("token id {}", e.id)>
                    <code>{visible(&e.token)}</code>
                    <span class="score">{format!("{:+.2}", e.score)}</span>
                </li>
            }
        })
        .collect_view()
}

/// One layer's tensor: a picker for the position (or the sum) and its top and bottom tokens.
#[component]
fn LayerVocab(
    /// The decoded vocabulary of this layer.
    layer: LayerVocabView,
) -> impl IntoView {
    // None: the sum over positions.
    let position = RwSignal::new(None::<usize>);
    let n = layer.positions.len();
    let labels: Vec<String> = (0..n)
        .map(|p| {
            let toks: Vec<String> = layer.term_tokens.iter().filter_map(|t| t.get(p)).map(|t| visible(t)).collect();
            format!("position {p}: {}", toks.join(" / "))
        })
        .collect();
    let data = StoredValue::new(layer.clone());
    let lists = move || {
        data.with_value(|l| match position.get() {
            None => (l.sum.clone(), l.bottom.clone()),
            Some(p) => (l.positions.get(p).cloned().unwrap_or_default(), l.positions_bottom.get(p).cloned().unwrap_or_default()),
        })
    };
    view! {
        <div class="vocab-layer" data-layer=layer.layer.to_string()>
            <div class="row">
                <strong>{format!("Layer {}", layer.layer)}</strong>
                <select data-testid="vocab-position" aria-label=format!("which position of layer {}'s tensor", layer.layer) on:change=move |ev| position.set(event_target_value(&ev).parse().ok())>
                    <option value="sum">{format!("sum over the {n} positions")}</option>
                    {labels.into_iter().enumerate().map(|(p, label)| view! { <option value=p.to_string()>{label}</option> }).collect_view()}
                </select>
            </div>
            <div class="vocab-lists">
                <div>
                    <h4>"top tokens"</h4>
                    <ol class="vocab-top">{move || entry_list(lists().0)}</ol>
                </div>
                <div>
                    <h4>"bottom tokens"</h4>
                    <ol class="vocab-bottom">{move || entry_list(lists().1)}</ol>
                </div>
            </div>
        </div>
    }
}

/// The panel.
#[component]
pub fn VocabPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let body = move || match ctx.vocab.get() {
        VocabState::Empty => {
            view! { <p class="placeholder">"After a run, the steering vector's closest tokens appear here."</p> }.into_any()
        }
        VocabState::Loading => view! { <p class="placeholder">"Decoding…"</p> }.into_any(),
        VocabState::Error(e) => view! { <p class="invalid">{format!("Could not decode the vector: {e}")}</p> }.into_any(),
        VocabState::Ready(layers) => layers.into_iter().map(|layer| view! { <LayerVocab layer=layer/> }).collect_view().into_any(),
    };
    view! {
        <div class="card vocab" id="area-vocab" data-testid="vocab-panel">
            <h2>"Decoded vocabulary of the steering vector"</h2>
            <p class="note">
                "A heuristic, not a decoding: the tokens whose embeddings have the largest (and smallest) dot product with the vector, "
                "v · wteᵀ. With ln_f on, the vector first goes through the final LayerNorm (the \"logit lens\")."
            </p>
            <label class="check">
                <input type="checkbox" data-testid="vocab-ln-f" prop:checked=move || ctx.vocab_ln_f.get()
                    on:change=move |ev| {
                        ctx.vocab_ln_f.set(event_target_checked(&ev));
                        client::request_vocab(ctx);
                    }/>
                "apply ln_f first"
            </label>
            <button class="small" data-testid="vocab-decode" title="Decode the editor's current terms without running"
                disabled=move || ctx.model_state.get() != ModelState::Ready || ctx.busy()
                on:click=move |_| {
                    let cfg = ctx.config();
                    match ctx.form.with_untracked(|f| f.to_recipe(cfg.as_ref())) {
                        Ok(recipe) => client::decode_vocab(ctx, &recipe),
                        Err(errors) => ctx.vocab.set(VocabState::Error(errors.join(" "))),
                    }
                }>"Decode the editor's terms"</button>
            <button class="small" data-testid="vocab-inspect" title="Read the editor's steering vector against the built-in corpus or your texts (the Inspect area)"
                on:click=move |_| {
                    let cfg = ctx.config();
                    match ctx.form.with_untracked(|f| f.to_recipe(cfg.as_ref())) {
                        Ok(recipe) => super::inspect::inspect_recipe(ctx, "the editor's steering".into(), recipe, None),
                        Err(errors) => ctx.vocab.set(VocabState::Error(errors.join(" "))),
                    }
                }>"Inspect it"</button>
            {body}
        </div>
    }
}
