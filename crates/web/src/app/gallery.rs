//! The gallery: one-click examples of published results and of the page's methods, each with
//! two lines on what it is, where it comes from, and what to look for. A click sets the page up
//! (the editor, the sweep or the Vectors area) and brings that area into view; the user runs it.

use leptos::prelude::*;

use super::editor::apply_preset;
use super::{reveal_area, Ctx};

const ACTADD: &str = "https://www.lesswrong.com/posts/5spBue2z2tw4JuDCZ/steering-gpt-2-xl-by-adding-an-activation-vector";
const CAA: &str = "https://arxiv.org/abs/2312.06681";

/// What an example sets up.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Setup {
    /// An ActAdd preset of the editor (`presets::PRESETS`).
    Preset(&'static str),
    /// The post's wedding vector in the editor and the sweep panel's wedding and other texts.
    WeddingSweep,
    /// A shipped pair set in the Vectors area's build form.
    Pairs(&'static str),
}

struct Example {
    id: &'static str,
    title: &'static str,
    what: &'static str,
    look_for: &'static str,
    source: (&'static str, &'static str),
    setup: Setup,
}

const EXAMPLES: &[Example] = &[
    Example {
        id: "love-hate",
        title: "Love − Hate (ActAdd)",
        what: "The post's first example: +5 × “Love” − 5 × “Hate” added before block 6 of gpt2-xl, on the prompt “I hate you because”.",
        look_for: "Steered completions turn warm although the prompt is hostile; the unsteered ones stay hostile.",
        source: ("Turner et al., Steering GPT-2-XL by adding an activation vector", ACTADD),
        setup: Setup::Preset("love-hate"),
    },
    Example {
        id: "weddings",
        title: "Talk about weddings (ActAdd)",
        what: "“I talk about weddings constantly” − “I do not talk about weddings constantly” at layer 20 of 48, × 4.",
        look_for: "Weddings, brides and receptions appear in steered completions of an unrelated prompt.",
        source: ("Turner et al., the wedding example", ACTADD),
        setup: Setup::Preset("weddings"),
    },
    Example {
        id: "eiffel-rome",
        title: "The Eiffel Tower is in Rome (ActAdd)",
        what: "A factual edit by a vector: “The Eiffel Tower is in Rome” − “… in France” at layer 24 of 48, × 10.",
        look_for: "Steered completions send the tourists to Rome or Italy; how strongly depends on the model.",
        source: ("Turner et al., the Eiffel Tower example", ACTADD),
        setup: Setup::Preset("eiffel-rome"),
    },
    Example {
        id: "wedding-sweep",
        title: "The wedding perplexity study (sweep)",
        what: "The post's measure: + “ weddings” − “” at every layer, several strengths, scored on wedding texts and on unrelated texts.",
        look_for: "On a real GPT-2 the wedding texts' perplexity ratio drops below 1 at most layers while the unrelated texts stay near 1.",
        source: ("Turner et al., the perplexity study", ACTADD),
        setup: Setup::WeddingSweep,
    },
    Example {
        id: "caa-sentiment",
        title: "A sentiment vector from 16 pairs (CAA)",
        what: "Contrastive Activation Addition: the mean difference of positive and negative sentences' activations, built here, then used at every position.",
        look_for: "Build it, “Use in recipe”, Run: steered completions read more positive; its norm beside the prompt's residual says how big a coefficient is.",
        source: ("Rimsky et al., Steering Llama 2 via Contrastive Activation Addition", CAA),
        setup: Setup::Pairs("sentiment"),
    },
    Example {
        id: "caa-optimism",
        title: "Does it change the answers? (CAA's A/B measure)",
        what: "An optimism vector from A/B questions, evaluated on held-out questions: p(the optimistic letter) against the coefficient.",
        look_for: "Build it (a quarter is held out), then Evaluate: a line rising to the right means the vector moves the model's answers.",
        source: ("Rimsky et al., the behavioural evaluation", CAA),
        setup: Setup::Pairs("optimism-ab"),
    },
    Example {
        id: "speak-french",
        title: "Speak French (CAA, English − French pairs)",
        what: "A comment on the ActAdd post found a vector that makes GPT-2 speak French; this one is a CAA direction from 16 English sentences and their French translations.",
        look_for: "Build it, “Use in recipe” and give it a negative coefficient (it points from French to English): French words appear.",
        source: ("Turner et al., comments on the post", ACTADD),
        setup: Setup::Pairs("english-french"),
    },
];

fn set_up(ctx: Ctx, setup: Setup) -> &'static str {
    match setup {
        Setup::Preset(id) => {
            apply_preset(ctx, id, ctx.depth());
            reveal_area("area-recipe");
            "In the editor (layer scaled to this model): press Run."
        }
        Setup::WeddingSweep => {
            super::sweep::use_wedding_vector(ctx);
            ctx.set_sweep_form(crate::sweep::SweepForm::new(ctx.depth()));
            ctx.sweep_open.set(true);
            reveal_area("area-sweep");
            "In the Sweep area, with the wedding and other texts: press Run sweep."
        }
        Setup::Pairs(id) => {
            ctx.vec_form.update(|f| {
                f.pick_preset(id);
                if id == "optimism-ab" {
                    f.held_out = "0.25".into();
                }
            });
            ctx.vectors_open.set(true);
            reveal_area("area-vectors");
            "In the Vectors area: press Build vector."
        }
    }
}

/// The gallery's card.
#[component]
pub fn Gallery() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let said = RwSignal::new(None::<(&'static str, &'static str)>);
    let cards = EXAMPLES
        .iter()
        .map(|e| {
            let (id, setup) = (e.id, e.setup);
            view! {
                <li class="gallery-item" data-testid="gallery-item" data-id=id>
                    <strong>{e.title}</strong>
                    <p>{e.what}</p>
                    <p><em>"Look for: "</em>{e.look_for}</p>
                    <div class="buttons">
                        <button class="small primary" data-testid="gallery-try" disabled=move || ctx.busy()
                            on:click=move |_| said.set(Some((id, set_up(ctx, setup))))>"Set it up"</button>
                        <a class="small" href=e.source.1 target="_blank" rel="noopener">{e.source.0}</a>
                        {move || said.get().filter(|(which, _)| *which == id).map(|(_, s)| view! { <span class="note" data-testid="gallery-note" role="status">{s}</span> })}
                    </div>
                </li>
            }
        })
        .collect_view();
    view! {
        <details class="card gallery" id="area-gallery" data-testid="gallery">
            <summary><h2>"Gallery: examples that teach"</h2></summary>
            <p class="note">"Each sets the page up for a published result or a method; then you run it. Layers are scaled from gpt2-xl's 48 to the loaded model's depth. A tiny or small model shows the mechanics, not the effect's full size."</p>
            <ol class="gallery-list">{cards}</ol>
        </details>
    }
}
