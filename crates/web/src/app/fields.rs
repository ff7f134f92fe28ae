//! Form components every panel uses. [`NumInput`] is the one number field: a text input that
//! keeps exactly what was typed (a half-typed `-`, `0.` or `1e` stays on screen and in the
//! form), with the keyboard a phone should show, an optional slider and sign flip, and the
//! field's problem written next to it once the user leaves the field (or presses Run).

use std::sync::atomic::{AtomicU32, Ordering};

use leptos::prelude::*;

use super::Ctx;
use crate::numbers::{self, NumKind};

/// A fresh element id, for `aria-describedby`.
fn fresh_id(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A slider's value as short text: rounded to the step's decimals, no trailing zeros.
fn slider_text(v: f64, step: f64) -> String {
    let decimals = format!("{step}").split('.').nth(1).map_or(0, str::len);
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// `p` with its first letter capitalised, for display.
fn sentence(p: &str) -> String {
    let mut c = p.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// A number typed as text. `value` is the text as typed; `set` receives every edit unchanged.
/// The problem (empty, not a number yet, out of range) shows after the field loses focus or
/// once Run was pressed (`Ctx::fields_checked`), and goes as soon as the text is fixed.
#[component]
pub fn NumInput(
    /// The `data-testid`; its message is `{testid}-error`.
    testid: &'static str,
    /// The accessible name, also the start of the message ("the coefficient of `Love`").
    #[prop(into)]
    label: Signal<String>,
    /// The text as typed.
    #[prop(into)]
    value: Signal<String>,
    /// Receives the text on every edit.
    #[prop(into)]
    set: Callback<String>,
    /// What the field accepts (it may change, e.g. with the model's depth).
    #[prop(into)]
    kind: Signal<NumKind>,
    /// The element id, for a `<label for>` elsewhere.
    #[prop(optional)]
    id: Option<&'static str>,
    /// A slider beside the field: (min, max, step). Typed values may go past its ends.
    #[prop(optional, into)]
    slider: Option<Signal<(f64, f64, f64)>>,
    /// A ± button that flips the sign of the typed text.
    #[prop(optional)]
    flip: bool,
    /// A placeholder.
    #[prop(optional)]
    placeholder: &'static str,
    /// An empty field is fine (the setting is optional).
    #[prop(optional)]
    empty_ok: bool,
) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let touched = RwSignal::new(false);
    let error_id = fresh_id("num-error");
    let problem = move || {
        let shown = touched.get() || ctx.fields_checked.get();
        let text = value.get();
        if empty_ok && text.trim().is_empty() {
            return None;
        }
        shown.then(|| numbers::check(&text, kind.get(), &label.get()).err()).flatten()
    };
    let error_ref = error_id.clone();
    let input = view! {
        <input type="text" inputmode=move || kind.get().inputmode() autocomplete="off" spellcheck="false" class="num-input"
            id=id data-testid=testid placeholder=placeholder
            aria-label=move || label.get()
            aria-invalid=move || if problem().is_some() { "true" } else { "false" }
            aria-describedby=move || problem().map(|_| error_ref.clone())
            prop:value=move || value.get()
            on:input=move |ev| set.run(event_target_value(&ev))
            on:blur=move |_| touched.set(true)/>
    };
    let slider_view = slider.map(|range| {
        let current = move || {
            let (lo, hi, _) = range.get();
            value.get().trim().parse::<f64>().ok().filter(|v| v.is_finite()).unwrap_or(lo.max(0.0).min(hi)).clamp(lo, hi).to_string()
        };
        view! {
            <input type="range" class="num-slider" tabindex="-1"
                aria-label=move || format!("{} (slider)", label.get())
                min=move || range.get().0.to_string() max=move || range.get().1.to_string() step=move || range.get().2.to_string()
                prop:value=current
                on:input=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse::<f64>() {
                        set.run(slider_text(v, range.get_untracked().2));
                    }
                }/>
        }
    });
    let flip_view = flip.then(|| {
        view! {
            <button type="button" class="small flip" data-testid=format!("{testid}-flip")
                title="Flip the sign" aria-label=move || format!("flip the sign of {}", label.get())
                on:click=move |_| set.run(numbers::flip_sign(&value.get_untracked()))>"±"</button>
        }
    });
    view! {
        <span class="num-field">
            <span class="num-controls">{input}{flip_view}{slider_view}</span>
            {move || problem().map(|p| view! {
                <span class="field-error" id=error_id.clone() data-testid=format!("{testid}-error") role="alert">{sentence(&p)}</span>
            })}
        </span>
    }
}

/// A value a `<select>` chooses: the option's `value` attribute is its key.
pub trait Choice: Copy + PartialEq + Send + Sync + 'static {
    fn key(self) -> &'static str;
}

impl Choice for tiller_core::Site {
    fn key(self) -> &'static str {
        self.as_str()
    }
}

impl Choice for tiller_core::Positions {
    fn key(self) -> &'static str {
        self.as_str()
    }
}

impl Choice for tiller_core::iti::Direction {
    fn key(self) -> &'static str {
        self.as_str()
    }
}

impl Choice for tiller_core::contrast::Method {
    fn key(self) -> &'static str {
        self.as_str()
    }
}

impl Choice for tiller_core::contrast::TokenChoice {
    fn key(self) -> &'static str {
        self.as_str()
    }
}

/// A `<select>` over fixed choices, each with its label, bound to a value of the form.
#[component]
pub fn ChoiceSelect<T: Choice>(
    /// The `data-testid`.
    testid: &'static str,
    /// The element id, for a `<label for>` elsewhere.
    #[prop(optional)]
    id: Option<&'static str>,
    /// The choices in order, with their labels.
    options: Vec<(T, &'static str)>,
    /// The value chosen now.
    #[prop(into)]
    value: Signal<T>,
    /// Receives the value picked.
    #[prop(into)]
    set: Callback<T>,
) -> impl IntoView {
    let keys: Vec<T> = options.iter().map(|(t, _)| *t).collect();
    view! {
        <select id=id data-testid=testid on:change=move |ev| {
            let picked = event_target_value(&ev);
            if let Some(t) = keys.iter().find(|t| t.key() == picked) {
                set.run(*t);
            }
        }>
            {options.into_iter().map(|(t, label)| view! {
                <option value=t.key() prop:selected=move || value.get() == t>{label}</option>
            }).collect_view()}
        </select>
    }
}

/// The messages a form shows under it, in order and each once: those of the last press of
/// its button (kept until the form changes), then the live ones, then a failed job's.
pub fn form_errors(clicked: Vec<String>, live: Vec<String>, failed: Option<String>) -> Vec<String> {
    let mut all = clicked;
    for m in live.into_iter().chain(failed) {
        if !all.contains(&m) {
            all.push(m);
        }
    }
    all
}

/// The problems a form's button finds when pressed that its live check cannot see (no model,
/// busy, a file that would not read): kept until anything the form reads changes.
#[derive(Clone, Copy)]
pub struct Pressed(RwSignal<Vec<String>>);

impl Pressed {
    /// `watch` reads (tracks) what the form depends on; any change clears the problems.
    pub fn new(watch: impl Fn() + 'static) -> Self {
        let found = RwSignal::new(Vec::new());
        Effect::new(move |_| {
            watch();
            found.set(Vec::new());
        });
        Self(found)
    }

    /// Runs the button's action and keeps what it refused with.
    pub fn press(self, action: impl FnOnce() -> Result<(), Vec<String>>) {
        self.0.set(Vec::new());
        if let Err(e) = action() {
            self.0.set(e);
        }
    }

    pub fn set(self, problems: Vec<String>) {
        self.0.set(problems);
    }

    /// What the form shows: these, then the live problems, then a failed job's ([`form_errors`]).
    pub fn with_live(self, live: Vec<String>, failed: Option<String>) -> Vec<String> {
        form_errors(self.0.get(), live, failed)
    }
}

/// The list of a form's problems, each a `<p>` with `testid`.
#[component]
pub fn ErrorList(testid: &'static str, #[prop(into)] errors: Signal<Vec<String>>) -> impl IntoView {
    view! {
        <div class="validation">
            {move || errors.get().into_iter().map(|e| view! { <p class="invalid" data-testid=testid>{e}</p> }).collect_view()}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::{form_errors, slider_text};

    #[test]
    fn form_errors_keep_order_and_show_each_once() {
        let e = form_errors(vec!["a".into(), "b".into()], vec!["b".into(), "c".into()], Some("The build failed: x".into()));
        assert_eq!(e, ["a", "b", "c", "The build failed: x"]);
        assert!(form_errors(Vec::new(), Vec::new(), None).is_empty());
    }

    #[test]
    fn slider_values_read_as_typed_numbers() {
        assert_eq!(slider_text(0.7000000000000001, 0.05), "0.7");
        assert_eq!(slider_text(-8.0, 0.5), "-8");
        assert_eq!(slider_text(3.0, 1.0), "3");
        assert_eq!(slider_text(-0.0001, 0.5), "0");
        assert_eq!(slider_text(1.25, 0.25), "1.25");
    }
}
