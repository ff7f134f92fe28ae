//! Share links: the page's whole state in the URL fragment, versioned and compact.
//!
//! Format: `#v1.` followed by base64url (no padding) of the raw-deflated JSON of
//! [`ShareState`]. The version prefix lets later formats coexist; a fragment that does not
//! decode is reported as a sentence and the page keeps its defaults.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tiller_core::Recipe;

use crate::protocol::ModelSource;
use crate::sweep::SweepSettings;

/// The prefix of version 1 links (after the `#`).
pub const V1_PREFIX: &str = "v1.";
/// A decoded share link may not inflate past this (a tampered link cannot exhaust memory).
const MAX_JSON: usize = 1 << 20;
/// What a link may carry; more means it was made by hand or changed, and opening it would
/// only make the page slow (3,000 terms drew 3,000 rows; a 900 kB prompt took 10 s to read).
pub const MAX_LINK_TERMS: usize = 64;
/// Characters of the prompt, the system message, and each steering or evaluation text.
pub const MAX_LINK_TEXT: usize = 16_384;
/// Evaluation texts of a sweep, over all its sets.
pub const MAX_LINK_SWEEP_TEXTS: usize = 2_000;

/// Everything a link restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareState {
    pub model: ModelSource,
    pub recipe: Recipe,
    /// The decoded vocabulary's `ln_f` toggle.
    #[serde(default)]
    pub vocab_ln_f: bool,
    /// The sweep panel's settings; absent when they are the defaults (and in links made
    /// before the panel existed, which still open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepSettings>,
}

/// The fragment (without `#`) for a state.
pub fn encode(state: &ShareState) -> String {
    pack_json(&serde_json::to_vec(state).unwrap_or_default())
}

/// The fragment for a link's JSON, as [`encode`] packs it (deflate, base64url).
pub fn pack_json(json: &[u8]) -> String {
    let packed = miniz_oxide::deflate::compress_to_vec(json, 9);
    format!("{V1_PREFIX}{}", URL_SAFE_NO_PAD.encode(packed))
}

/// Decodes a fragment (with or without the leading `#`). `Ok(None)` when there is none.
pub fn decode(fragment: &str) -> Result<Option<ShareState>, String> {
    let fragment = fragment.trim_start_matches('#').trim();
    if fragment.is_empty() {
        return Ok(None);
    }
    let Some(body) = fragment.strip_prefix(V1_PREFIX) else {
        let version = fragment.split('.').next().unwrap_or_default();
        return Err(if version.starts_with('v') && fragment.contains('.') {
            format!("this share link has format `{version}`, which this page does not know (it reads v1): open it with a newer Tiller")
        } else {
            "this share link is not a Tiller link (it should start with #v1.)".to_string()
        });
    };
    let damaged =
        |what: &str| format!("this share link is damaged ({what}): it may have been cut off or changed when copied; copy it again");
    let packed = URL_SAFE_NO_PAD.decode(body.as_bytes()).map_err(|_| damaged("it holds characters a Tiller link never has"))?;
    let json =
        miniz_oxide::inflate::decompress_to_vec_with_limit(&packed, MAX_JSON).map_err(|_| damaged("its packed settings are incomplete"))?;
    let state: ShareState = serde_json::from_slice(&json).map_err(|e| {
        damaged(if e.is_eof() {
            "its settings stop short"
        } else if e.is_data() {
            "a setting in it has a value this page does not accept"
        } else {
            "its settings are not in the form this page writes"
        })
    })?;
    check_caps(&state)?;
    Ok(Some(state))
}

/// Refuses a link past what the page itself ever writes, naming what and the cap.
fn check_caps(st: &ShareState) -> Result<(), String> {
    let over = |what: String, cap: usize| {
        Err(format!("this share link holds {what}, more than the {cap} a Tiller link carries: it was made by hand or changed, so nothing in it was used"))
    };
    let r = &st.recipe;
    if r.terms.len() > MAX_LINK_TERMS {
        return over(format!("{} steering terms", r.terms.len()), MAX_LINK_TERMS);
    }
    if r.vectors.len() > tiller_core::recipe::MAX_VECTOR_TERMS {
        return over(format!("{} vector terms", r.vectors.len()), tiller_core::recipe::MAX_VECTOR_TERMS);
    }
    let long = |what: &str, text: &str| {
        let n = text.chars().count();
        if n > MAX_LINK_TEXT {
            over(format!("{what} of {n} characters"), MAX_LINK_TEXT)
        } else {
            Ok(())
        }
    };
    long("a prompt", &r.prompt)?;
    long("a system message", &r.system)?;
    for t in &r.terms {
        long("a steering text", &t.text)?;
    }
    if let Some(sweep) = &st.sweep {
        if sweep.sets.len() > crate::sweep::MAX_SETS {
            return over(format!("{} evaluation sets", sweep.sets.len()), crate::sweep::MAX_SETS);
        }
        if sweep.coeffs.len() > crate::sweep::MAX_COEFFS {
            return over(format!("{} sweep coefficients", sweep.coeffs.len()), crate::sweep::MAX_COEFFS);
        }
        let texts: usize = sweep.sets.iter().map(|s| s.texts.len()).sum();
        if texts > MAX_LINK_SWEEP_TEXTS {
            return over(format!("{texts} evaluation texts"), MAX_LINK_SWEEP_TEXTS);
        }
        for s in &sweep.sets {
            long("a set name", &s.name)?;
            for t in &s.texts {
                long("an evaluation text", t)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiller_core::Term;

    #[test]
    fn vectors_travel_exactly_and_compactly() {
        let mut st = state();
        let values: Vec<f32> = (0..768).map(|i| (i as f32 * 0.731).sin() * 3.0).collect();
        st.recipe.vectors = vec![tiller_core::recipe::VectorTerm::new(
            "sentiment",
            6,
            4.0,
            tiller_core::Site::ResidPre,
            tiller_core::Positions::All,
            &values,
        )];
        let link = encode(&st);
        assert!(link.len() < 4000, "a gpt2 vector takes {} characters", link.len());
        assert_eq!(decode(&link).unwrap().unwrap(), st);
        // Values are f16: within f16's rounding of the originals.
        for (a, b) in st.recipe.vectors[0].values.iter().zip(&values) {
            assert!((a - b).abs() <= b.abs() * 1e-3 + 1e-7);
        }
    }

    #[test]
    fn links_past_the_caps_are_refused_with_what_and_the_cap() {
        let mut st = state();
        st.recipe.terms = (0..MAX_LINK_TERMS + 1).map(|i| Term { layer: 0, coeff: 1.0, text: format!("t{i}"), head: None }).collect();
        let e = decode(&encode(&st)).unwrap_err();
        assert!(e.contains("65 steering terms") && e.contains("64"), "{e}");
        let mut st = state();
        st.recipe.prompt = "a".repeat(MAX_LINK_TEXT + 1);
        let e = decode(&encode(&st)).unwrap_err();
        assert!(e.contains("a prompt of 16385 characters"), "{e}");
        // A link at the caps opens.
        let mut st = state();
        st.recipe.prompt = "é".repeat(MAX_LINK_TEXT);
        assert_eq!(decode(&encode(&st)).unwrap().unwrap(), st);
        // A deflate bomb: 50 MB of spaces inside a valid JSON string packs to a few kB.
        let bomb = format!("{{\"model\":{{\"hub\":\"a/b\"}},\"recipe\":{{\"prompt\":\"{}\"}}}}", " ".repeat(50 << 20));
        let packed = miniz_oxide::deflate::compress_to_vec(bomb.as_bytes(), 9);
        assert!(packed.len() < 200_000);
        let link = format!("{V1_PREFIX}{}", URL_SAFE_NO_PAD.encode(packed));
        assert!(decode(&link).unwrap_err().contains("damaged"));
    }

    fn state() -> ShareState {
        ShareState {
            model: ModelSource::Hub("someone/tiny".into()),
            recipe: Recipe {
                prompt: "I hate you because".into(),
                terms: vec![
                    Term { layer: 6, coeff: 5.0, text: "Love".into(), head: None },
                    Term { layer: 6, coeff: -5.0, text: "Hate".into(), head: None },
                ],
                seed: 42,
                ..Recipe::default()
            },
            vocab_ln_f: true,
            sweep: None,
        }
    }

    #[test]
    fn round_trips_and_is_compact() {
        let s = state();
        let link = encode(&s);
        assert!(link.starts_with("v1."));
        assert!(link.len() < 400, "{} chars", link.len());
        assert_eq!(decode(&format!("#{link}")), Ok(Some(s)));
    }

    #[test]
    fn sweep_settings_travel_and_old_links_still_open() {
        let mut s = state();
        s.sweep = Some(SweepSettings { layers: Some((1, 2)), coeffs: vec![0.0, 3.0], ..SweepSettings::default() });
        let link = encode(&s);
        assert_eq!(decode(&link), Ok(Some(s)));
        // A v1 link from before the sweep panel: the JSON has no `sweep` field.
        let old = br#"{"model":{"default":"gpt2"},"recipe":{"prompt":"Hi"},"vocab_ln_f":false}"#;
        let link = format!("v1.{}", URL_SAFE_NO_PAD.encode(miniz_oxide::deflate::compress_to_vec(old, 9)));
        let back = decode(&link).unwrap().unwrap();
        assert_eq!(back.sweep, None);
        assert_eq!(back.recipe.prompt, "Hi");
    }

    #[test]
    fn tampered_links_say_so() {
        let link = encode(&state());
        let mut cut = link.clone();
        cut.truncate(link.len() / 2);
        assert!(decode(&cut).unwrap_err().contains("damaged"));
        assert!(decode("v1.!!!").unwrap_err().contains("damaged"));
        // Plain words, never a parser's ("expected `,` at line 1 column 463").
        let packed = |json: &[u8]| format!("v1.{}", URL_SAFE_NO_PAD.encode(miniz_oxide::deflate::compress_to_vec(json, 9)));
        let short = decode(&packed(br#"{"model":{"default":"gpt2"},"recipe":{"prompt":"Hi""#)).unwrap_err();
        assert!(short.contains("stop short") && !short.contains("line 1"), "{short}");
        let bad = decode(&packed(br#"{"model":{"default":"gpt2"},"recipe":{"prompt":5}}"#)).unwrap_err();
        assert!(bad.contains("a value this page does not accept") && !bad.contains("column"), "{bad}");
        assert!(decode("v9.abc").unwrap_err().contains("v9"));
        assert!(decode("hello").unwrap_err().contains("not a Tiller link"));
        assert_eq!(decode(""), Ok(None));
        assert_eq!(decode("#"), Ok(None));
    }
}
