//! The run history the page keeps across reloads (plain Rust, unit-tested natively): finished
//! runs with their recipe, model and completions, the newest that fit in a budget of runs and
//! bytes, as JSON in local storage (`app::storage`).

use serde::{Deserialize, Serialize};
use tiller_core::Recipe;

use crate::protocol::{GenerationView, ModelSource, RunTiming};

/// At most this many runs are kept.
pub const MAX_SAVED_RUNS: usize = 50;
/// At most this much JSON is kept (local storage holds about 5 MB per site, shared with the
/// editor; a run whose recipe carries a vector is a few kB).
pub const MAX_SAVED_BYTES: usize = 1 << 20;

/// One finished run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRun {
    pub number: usize,
    pub source: ModelSource,
    pub recipe: Recipe,
    pub generation: GenerationView,
    #[serde(default)]
    pub stopped: bool,
    #[serde(default)]
    pub timing: RunTiming,
}

/// The JSON to keep: the newest of `runs` (oldest first) that fit both budgets, oldest first.
pub fn to_json(runs: &[SavedRun]) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut bytes = 2;
    for r in runs.iter().rev().take(MAX_SAVED_RUNS) {
        let Ok(json) = serde_json::to_string(r) else { continue };
        if bytes + json.len() + 1 > MAX_SAVED_BYTES {
            break;
        }
        bytes += json.len() + 1;
        kept.push(json);
    }
    kept.reverse();
    format!("[{}]", kept.join(","))
}

/// The runs kept, oldest first; anything unreadable (an older format, a hand edit) reads as
/// no history rather than an error.
pub fn from_json(json: &str) -> Vec<SavedRun> {
    let mut runs: Vec<SavedRun> = serde_json::from_str(json).unwrap_or_default();
    if runs.len() > MAX_SAVED_RUNS {
        runs.drain(..runs.len() - MAX_SAVED_RUNS);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(number: usize, prompt: &str) -> SavedRun {
        SavedRun {
            number,
            source: ModelSource::Hub("tiny/tiny-gpt2".into()),
            recipe: Recipe { prompt: prompt.into(), ..Recipe::default() },
            generation: GenerationView::default(),
            stopped: false,
            timing: RunTiming::default(),
        }
    }

    #[test]
    fn the_newest_runs_that_fit_are_kept_in_order() {
        let runs: Vec<SavedRun> = (1..=3).map(|i| run(i, "p")).collect();
        assert_eq!(from_json(&to_json(&runs)), runs);
        let many: Vec<SavedRun> = (1..=120).map(|i| run(i, "p")).collect();
        let back = from_json(&to_json(&many));
        assert_eq!(back.len(), MAX_SAVED_RUNS);
        assert_eq!((back[0].number, back.last().unwrap().number), (71, 120));
        // Big runs: only as many as fit in the byte budget, the newest.
        let big: Vec<SavedRun> = (1..=10).map(|i| run(i, &"x".repeat(300_000))).collect();
        let json = to_json(&big);
        assert!(json.len() <= MAX_SAVED_BYTES);
        let back = from_json(&json);
        assert_eq!(back.iter().map(|r| r.number).collect::<Vec<_>>(), [8, 9, 10]);
        // A run too big for the budget on its own is left out, not cut.
        assert_eq!(from_json(&to_json(&[run(1, &"x".repeat(MAX_SAVED_BYTES))])), []);
    }

    #[test]
    fn unreadable_history_is_no_history() {
        assert_eq!(from_json(""), []);
        assert_eq!(from_json("{\"not\": \"a list\"}"), []);
        assert_eq!(from_json("[{\"number\": 1}]"), []);
    }
}
