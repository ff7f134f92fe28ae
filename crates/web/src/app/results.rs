//! Results: the shown run's unsteered and steered completions side by side (streaming), and
//! the history of runs, each with its recipe to show, re-run or share, kept across reloads.

use leptos::prelude::*;

use super::client;
use super::{Ctx, RunRecord, RunState};
use crate::form::Form;
use crate::protocol::{CompletionView, RunTiming};
use crate::share::{self, ShareState};

fn shown(ctx: Ctx) -> Option<RunRecord> {
    let id = ctx.shown_run.get()?;
    ctx.runs.with(|runs| runs.iter().find(|r| r.id == id).cloned())
}

/// A one-line summary of a recipe's terms: `+5 × "Love" −5 × "Hate" @6 +3 × vector “calm” @2`.
pub fn terms_summary(recipe: &tiller_core::Recipe) -> String {
    let sign = |c: f32| if c >= 0.0 { "+" } else { "−" };
    let texts = recipe.terms.iter().map(|t| format!("{}{} × \"{}\" @{}", sign(t.coeff), t.coeff.abs(), t.text, t.layer));
    let vectors = recipe.vectors.iter().map(|v| format!("{}{} × vector “{}” @{}", sign(v.coeff), v.coeff.abs(), v.name, v.layer));
    texts.chain(vectors).collect::<Vec<_>>().join(" ")
}

/// How fast the run went: "first tokens after 0.42 s, then 95 ms per step (6 sequences a step)".
pub fn timing_summary(t: &RunTiming, sequences: usize) -> String {
    if t.steps == 0 {
        return String::new();
    }
    let first = format!("first tokens after {:.2} s", t.first_ms / 1000.0);
    match t.ms_per_step() {
        Some(ms) => format!("{first}, then {ms:.0} ms per step ({sequences} sequences a step)"),
        None => first,
    }
}

/// Where a steered completion first departs from its unsteered twin (same seed): the text
/// before it is shared. `chars` counts characters of the shared text; `token` is the index of
/// the first differing token. None while the two agree (so far, or entirely).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Departure {
    pub chars: usize,
    pub token: usize,
}

pub fn departure(unsteered: &str, steered: &str, ut: &[u32], st: &[u32]) -> Option<Departure> {
    let token = ut.iter().zip(st).take_while(|(a, b)| a == b).count();
    // Nothing to mark while the tokens agree, or when different tokens spell the same text.
    if (token == ut.len() && token == st.len()) || unsteered == steered {
        return None;
    }
    // The shared text is the texts' common prefix (a token may decode to part of a character,
    // so the split is made on characters, not on the tokens' decodings).
    let chars = unsteered.chars().zip(steered.chars()).take_while(|(a, b)| a == b).count();
    Some(Departure { chars, token })
}

/// One token's share of a completion's text: its characters, its index, the model's
/// probability of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub text: String,
    pub token: usize,
    pub p: Option<f32>,
}

/// The completion cut into its tokens' pieces (by `ends`, the characters once each token is
/// decoded) and at the departure's character `at`: (before, after). Without `ends` (a run kept
/// from before they existed) the text is one piece with no probability.
pub fn pieces(text: &str, ends: &[usize], probs: &[f32], at: Option<usize>) -> (Vec<Piece>, Vec<Piece>) {
    let chars: Vec<char> = text.chars().collect();
    let total = chars.len();
    let mut spans: Vec<(usize, usize, usize, Option<f32>)> = Vec::new();
    if ends.is_empty() {
        spans.push((0, total, 0, None));
    } else {
        let mut start = 0;
        for (i, &end) in ends.iter().enumerate() {
            let end = end.min(total).max(start);
            spans.push((start, end, i, probs.get(i).copied()));
            start = end;
        }
        if start < total {
            // Characters no token accounts for (text decoded differently at the end): the last token's.
            let (i, p) = spans.last().map_or((0, None), |s| (s.2, s.3));
            spans.push((start, total, i, p));
        }
    }
    let cut = at.unwrap_or(total).min(total);
    let piece = |a: usize, b: usize, token: usize, p: Option<f32>| Piece { text: chars[a..b].iter().collect(), token, p };
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    for (a, b, token, p) in spans {
        if a < cut.min(b) {
            head.push(piece(a, cut.min(b), token, p));
        }
        if cut.max(a) < b {
            tail.push(piece(cut.max(a), b, token, p));
        }
    }
    (head, tail)
}

fn piece_views(pieces: Vec<Piece>, token_ids: &[u32]) -> impl IntoView {
    pieces
        .into_iter()
        .map(|pc| {
            let title = pc.p.map(|p| {
                format!(
                    "token {} (id {}): the model gave it p = {}",
                    pc.token + 1,
                    token_ids.get(pc.token).copied().unwrap_or(0),
                    prob_text(p)
                )
            });
            view! { <span class="tok" data-p=pc.p.map(|p| format!("{p}")) title=title>{pc.text}</span> }
        })
        .collect_view()
}

/// A probability as people read it: 0.31, 0.0042, 3e-7.
fn prob_text(p: f32) -> String {
    if p >= 0.01 {
        format!("{p:.2}")
    } else if p >= 1e-4 {
        format!("{p:.4}")
    } else {
        format!("{p:.0e}")
    }
}

/// A completion with the part after its departure marked (`data-departs`: the character
/// offset, -1 while the pair agrees), each token a span whose title gives the model's
/// probability of it. The element's text is the whole completion.
fn departed(testid: String, c: Option<&CompletionView>, d: Option<Departure>) -> impl IntoView {
    let (text, tokens, ends, probs) = c.map_or((String::new(), Vec::new(), Vec::new(), Vec::new()), |c| {
        (c.text.clone(), c.tokens.clone(), c.ends.clone(), c.probs.clone())
    });
    let (head, tail) = pieces(&text, &ends, &probs, d.map(|d| d.chars));
    let title = d.map(|d| format!("the pair departs here, at generated token {}", d.token + 1));
    view! {
        <span class="gen" data-testid=testid data-departs=d.map_or(-1, |d| d.chars as i64) data-departs-token=d.map_or(-1, |d| d.token as i64)>
            {piece_views(head, &tokens)}
            {(!tail.is_empty()).then(|| view! { <mark class="departs" title=title>{piece_views(tail, &tokens)}</mark> })}
        </span>
    }
}

/// The shown run, side by side.
#[component]
pub fn Results() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let body = move || {
        let Some(run) = shown(ctx) else {
            return view! {
                <p class="placeholder">"Completions appear here: the unsteered model on the left, the steered one on the right, generated from the same seeds so each row is a fair comparison."</p>
            }
            .into_any();
        };
        let n = run.recipe.n;
        let prompt = run.recipe.prompt.clone();
        let done = run.state == RunState::Done;
        let steers = !run.recipe.terms.is_empty() || !run.recipe.vectors.is_empty();
        let rows = (0..n)
            .map(|i| {
                let u = run.generation.unsteered.get(i).map(|c| c.text.clone()).unwrap_or_default();
                let s = run.generation.steered.get(i).map(|c| c.text.clone()).unwrap_or_default();
                let ut = run.generation.unsteered.get(i).map(|c| c.tokens.as_slice()).unwrap_or_default();
                let st = run.generation.steered.get(i).map(|c| c.tokens.as_slice()).unwrap_or_default();
                let d = departure(&u, &s, ut, st);
                let p1 = prompt.clone();
                let p2 = prompt.clone();
                let (uc, sc) = (run.generation.unsteered.get(i), run.generation.steered.get(i));
                let run_id = run.id;
                let can_compare = done && steers && sc.is_some_and(|c| !c.tokens.is_empty());
                let open_here = move || ctx.inspect.changes.with(|c| c.as_ref().is_some_and(|c| c.run == run_id && c.index == i));
                view! {
                    <div class="pair-row-out">
                        <div class="completion unsteered">
                            <span class="prompt-echo">{p1}</span>
                            {departed(format!("unsteered-{i}"), uc, d)}
                        </div>
                        <div class="completion steered">
                            <span class="prompt-echo">{p2}</span>
                            {departed(format!("steered-{i}"), sc, d)}
                            {can_compare.then(|| view! {
                                <button class="small link changes-open" data-testid="changes-open" aria-expanded=move || open_here().to_string()
                                    title="At each token of this completion: how far steering moved the prediction, and the tokens that rose and fell"
                                    disabled=move || ctx.model_state.get() != super::ModelState::Ready
                                    on:click=move |_| super::inspect::open_changes(ctx, run_id, i)>
                                    {move || if open_here() { "Hide what changed" } else { "What changed?" }}</button>
                            })}
                        </div>
                    </div>
                    <super::inspect::ChangeStrip run=run_id index=i/>
                }
            })
            .collect_view();
        let status = match run.state {
            RunState::Running => "generating…".to_string(),
            RunState::Done if run.stopped => "stopped".to_string(),
            RunState::Done => "done".to_string(),
            RunState::Error => format!("failed: {}", run.error.clone().unwrap_or_default()),
            RunState::Idle => String::new(),
        };
        let timing = run.timing;
        view! {
            <p class="run-meta">
                {format!("Run #{} on {} · {} · seed {} · ", run.number, run.source.label(), terms_summary(&run.recipe), run.recipe.seed)}
                <span class="run-state">{status}</span>
            </p>
            <p class="run-timing" data-testid="run-timing" data-steps=timing.steps data-first-ms=timing.first_ms
                data-step-ms=timing.ms_per_step().unwrap_or(0.0) data-wasm-memory=timing.wasm_memory>
                {timing_summary(&timing, 2 * n)}
            </p>
            {(done && steers).then(|| {
                let run_id = run.id;
                view! {
                    <div class="buttons run-inspect">
                        <button class="small" data-testid="inspect-run-steering" title="Read this run's steering vector against the built-in corpus or your texts, and its prompt layer by layer"
                            on:click=move |_| super::inspect::inspect_run(ctx, run_id)>"Inspect the steering"</button>
                    </div>
                }
            })}
            <p class="note departs-legend">"Highlighted: where each pair of completions departs from the other (the text before it is the same in both). Hover a token for the probability the model gave it."</p>
            <div class="columns-head"><h3>"Unsteered"</h3><h3>"Steered"</h3></div>
            {rows}
        }
        .into_any()
    };
    let running = move || ctx.run_state.get() == RunState::Running;
    let can_run = move || ctx.model_state.get() == super::ModelState::Ready && !ctx.busy();
    view! {
        <div class="card results" id="area-results">
            <div class="card-head">
                <h2>"3 · Completions"</h2>
                // The editor's Run and Stop, repeated here so the results need no scrolling.
                <button class="primary small" data-testid="run-top" disabled=move || !can_run()
                    on:click=move |_| { let _ = super::run_from(ctx, "run-top", "stop-top"); }>"Run"</button>
                <button class="small" data-testid="stop-top" disabled=move || !running()
                    on:click=move |_| client::send(ctx, &crate::protocol::ToWorker::Stop, &[])>"Stop"</button>
            </div>
            {body}
        </div>
    }
}

/// Brings back the runs kept before a reload (the newest shown), then keeps the finished ones
/// in local storage whenever one finishes (not on every streamed token).
pub fn keep_history(ctx: Ctx) {
    let saved = super::storage::load_history();
    if !saved.is_empty() {
        let runs: Vec<RunRecord> = saved
            .into_iter()
            .map(|r| RunRecord {
                id: ctx.fresh_id(),
                number: r.number,
                source: r.source,
                recipe: r.recipe,
                generation: r.generation,
                state: RunState::Done,
                stopped: r.stopped,
                error: None,
                timing: r.timing,
            })
            .collect();
        // Opened from a link, the editor holds the link's recipe: no old run is shown beside it.
        let from_link = window().location().hash().is_ok_and(|h| h.len() > 1);
        if !from_link {
            ctx.shown_run.set(runs.last().map(|r| r.id));
        }
        ctx.runs.set(runs);
    }
    let finished =
        Memo::new(move |_| ctx.runs.with(|runs| runs.iter().filter(|r| r.state == RunState::Done).map(|r| r.id).collect::<Vec<_>>()));
    Effect::new(move |first: Option<()>| {
        // Read, not just tracked: a memo nobody has read is never computed, so it would
        // never hear of the runs changing.
        finished.with(|_| ());
        if first.is_none() {
            return;
        }
        let saved: Vec<crate::history::SavedRun> = ctx.runs.with_untracked(|runs| {
            runs.iter()
                .filter(|r| r.state == RunState::Done)
                .map(|r| crate::history::SavedRun {
                    number: r.number,
                    source: r.source.clone(),
                    recipe: r.recipe.clone(),
                    generation: r.generation.clone(),
                    stopped: r.stopped,
                    timing: r.timing,
                })
                .collect()
        });
        super::storage::save_history(&saved);
    });
}

/// Earlier runs; each keeps its recipe.
#[component]
pub fn History() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let items = move || {
        let runs = ctx.runs.get();
        let shown_id = ctx.shown_run.get();
        runs.into_iter()
            .rev()
            .map(|r| {
                let id = r.id;
                let recipe = r.recipe.clone();
                let source = r.source.clone();
                let rerun_recipe = recipe.clone();
                let link = {
                    let base = super::sharing::page_url();
                    format!("{base}#{}", share::encode(&ShareState {
                        model: source.clone(),
                        recipe: recipe.clone(),
                        vocab_ln_f: ctx.vocab_ln_f.get_untracked(),
                        // A run's link is its recipe; the sweep panel is not part of a run.
                        sweep: None,
                    }))
                };
                let running = ctx.busy();
                view! {
                    <li class:current=shown_id == Some(id) data-testid="history-entry">
                        <span class="h-label">{format!("#{} · {} · \"{}\" · {} · {}", r.number, source.label(), recipe.prompt, terms_summary(&recipe), if r.stopped { "stopped" } else { r.state.as_str() })}</span>
                        <button class="small" data-testid="history-show" on:click=move |_| {
                            ctx.shown_run.set(Some(id));
                            ctx.vocab_recipe.set_value(None);
                            client::request_vocab(ctx);
                        }>"show"</button>
                        <button class="small" data-testid="history-rerun" disabled=running on:click=move |_| {
                            ctx.form.set(Form::from_recipe(&rerun_recipe));
                            ctx.bos_pinned.set_value(true);
                            ctx.preset.set(String::new());
                            let _ = client::run(ctx);
                        }>"re-run"</button>
                        <a class="small" data-testid="history-share" href=link.clone() target="_blank" rel="noopener">"link"</a>
                    </li>
                }
            })
            .collect_view()
    };
    view! {
        <div class="card history" id="area-history">
            <h2>"History"</h2>
            <Show when=move || ctx.runs.with(|r| !r.is_empty()) fallback=|| view! { <p class="placeholder">"Each run is kept here with its recipe, in this browser too (the newest 50)."</p> }>
                <ol class="history-list">{items}</ol>
                <div class="buttons">
                    <button class="small" data-testid="history-clear" disabled=move || ctx.busy()
                        title="Forget every finished run, here and in this browser's storage (on a shared computer, before you leave)"
                        on:click=move |_| {
                            ctx.runs.update(|runs| runs.retain(|r| r.state == RunState::Running));
                            ctx.shown_run.set(ctx.runs.with_untracked(|r| r.last().map(|r| r.id)));
                        }>"Clear history"</button>
                </div>
            </Show>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_follow_the_tokens_and_the_departure() {
        let texts = |v: &[Piece]| v.iter().map(|p| (p.text.clone(), p.token)).collect::<Vec<_>>();
        // " a" " b" " c", departing at character 2 (the second token).
        let (h, t) = pieces(" a b c", &[2, 4, 6], &[0.5, 0.25, 0.125], Some(2));
        assert_eq!(texts(&h), [(" a".to_string(), 0)]);
        assert_eq!(texts(&t), [(" b".to_string(), 1), (" c".to_string(), 2)]);
        assert_eq!(t[1].p, Some(0.125));
        // A departure inside a token's piece splits it; the pieces still spell the text.
        let (h, t) = pieces(" then", &[3, 5], &[0.5, 0.5], Some(4));
        assert_eq!(texts(&h), [(" th".to_string(), 0), ("e".to_string(), 1)]);
        assert_eq!(texts(&t), [("n".to_string(), 1)]);
        // A character split over two tokens: the first adds none, the second carries it.
        let (h, t) = pieces("é!", &[0, 1, 2], &[0.1, 0.2, 0.3], None);
        assert_eq!(texts(&h), [("é".to_string(), 1), ("!".to_string(), 2)]);
        assert!(t.is_empty());
        // A run without ends (kept from before): one piece, no probability.
        let (h, _) = pieces("old run", &[], &[], None);
        assert_eq!((h.len(), h[0].p), (1, None));
        assert_eq!(prob_text(0.3141), "0.31");
        assert_eq!(prob_text(0.00421), "0.0042");
        assert_eq!(prob_text(3e-7), "3e-7");
    }

    #[test]
    fn departure_is_the_first_differing_token_and_the_shared_text() {
        assert_eq!(departure(" a b", " a b", &[1, 2], &[1, 2]), None);
        assert_eq!(departure(" a b", " a c", &[1, 2], &[1, 3]), Some(Departure { chars: 3, token: 1 }));
        assert_eq!(departure("x", "y", &[5], &[6]), Some(Departure { chars: 0, token: 0 }));
        // One side longer (still streaming, or stopped at end of text): departs where it ends.
        assert_eq!(departure(" a", " a b", &[1], &[1, 2]), Some(Departure { chars: 2, token: 1 }));
        // Texts split mid-character: the count is of whole characters.
        assert_eq!(departure("é1", "é2", &[9, 1], &[9, 2]), Some(Departure { chars: 1, token: 1 }));
        // Tokens differ but decode alike so far (" the" + "n" vs " then"): the shared text is longer.
        assert_eq!(departure(" then", " then!", &[7, 8], &[9, 10]), Some(Departure { chars: 5, token: 0 }));
        assert_eq!(departure(" then", " then", &[7, 8], &[9]), None);
    }
}
