//! The first-visit tour: a few steps, each pointing at one area of the page (outlined and
//! brought into view). It shows once; closing it (at any step) keeps it closed for good, and the
//! header's "Take the tour" opens it again. It is not modal: the page works while it is open.

use leptos::prelude::*;

/// (the area's element id, the step's title, what to do there).
const STEPS: [(&str, &str, &str); 4] = [
    (
        "area-model",
        "Load a model",
        "Pick a model and press Load: its download size shows first. GPT-2 small takes a minute or two the first time; the browser keeps the files for the next visit. Everything runs on your own GPU: nothing you type is sent anywhere.",
    ),
    (
        "area-recipe",
        "Write a steering recipe",
        "A prompt, and terms like +5 × \"Love\" and −5 × \"Hate\" at layer 6: their activations are added to the prompt's. Presets fill in the published examples; the ± button flips a term's sign.",
    ),
    (
        "area-results",
        "Run and compare",
        "Run (or Ctrl+Enter): the unsteered and the steered model complete the prompt from the same random seeds, side by side. The highlight marks where each pair first differs; hover a token for its probability.",
    ),
    (
        "area-gallery",
        "Go further",
        "The gallery sets up published results in one click. Sweep charts which layer and coefficient work, Vectors builds steering vectors from many pairs, Inspect shows what a vector reads and what it changed, and Share makes a link that reproduces this run.",
    ),
];

/// Outlines the area of step `k` (and only it) and, with `scroll`, brings it into view.
fn point_at(k: Option<usize>, scroll: bool) {
    let doc = document();
    for (id, _, _) in STEPS {
        if let Some(el) = doc.get_element_by_id(id) {
            let _ = el.remove_attribute("data-tour-target");
        }
    }
    if let Some((id, _, _)) = k.and_then(|k| STEPS.get(k)) {
        if let Some(el) = doc.get_element_by_id(id) {
            let _ = el.set_attribute("data-tour-target", "");
            if scroll {
                super::reveal_area(id);
            }
        }
    }
}

fn focus_next() {
    super::focus_later("tour-next");
}

/// The tour's panel, and the signal that opens it (`Some(step)`).
#[component]
pub fn Tour(step: RwSignal<Option<usize>>) -> impl IntoView {
    // On load the first step does not scroll the page: the model area is at the top.
    Effect::new(move |ran: Option<()>| point_at(step.get(), ran.is_some()));
    let close = move || {
        step.set(None);
        super::storage::save_tour_done();
    };
    let on_key = move |ev: web_sys::KeyboardEvent| {
        if ev.key() == "Escape" {
            close();
        }
    };
    move || {
        let k = step.get()?;
        let (_, title, text) = STEPS[k];
        let last = k + 1 == STEPS.len();
        Some(view! {
            <div class="tour" data-testid="tour" data-step=k.to_string() role="dialog" aria-modal="false" aria-labelledby="tour-title" on:keydown=on_key>
                <p class="tour-count">{format!("Tour · step {} of {}", k + 1, STEPS.len())}</p>
                <h2 id="tour-title">{title}</h2>
                <p class="tour-text" data-testid="tour-text">{text}</p>
                <div class="buttons">
                    <button class="small" data-testid="tour-back" disabled=k == 0 on:click=move |_| step.set(Some(k.saturating_sub(1)))>"Back"</button>
                    <button class="primary small" data-testid="tour-next" on:click=move |_| {
                        if last { close() } else { step.set(Some(k + 1)); focus_next(); }
                    }>{if last { "Done" } else { "Next" }}</button>
                    <button class="small link" data-testid="tour-close" on:click=move |_| close()>"Close the tour"</button>
                </div>
            </div>
        })
    }
}

/// Whether the tour shows on this visit: once, until closed.
pub fn first_visit() -> Option<usize> {
    (!super::storage::tour_done()).then_some(0)
}

/// The header's button that opens the tour again.
#[component]
pub fn TourButton(step: RwSignal<Option<usize>>) -> impl IntoView {
    view! {
        <button class="small" data-testid="tour-open" on:click=move |_| { step.set(Some(0)); focus_next(); }>"Take the tour"</button>
    }
}
