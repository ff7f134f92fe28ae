//! What a number field accepts, as plain Rust (unit-tested natively): the page's number fields
//! are text inputs that keep what the user typed (`-`, `0.`, `1e` are half-typed numbers, not
//! empty ones), and say what is wrong next to the field once the user leaves it or presses Run.

/// The numbers a field takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumKind {
    /// A whole number in `min..=max`.
    Whole { min: u64, max: u64 },
    /// A finite number in `[min, max]`, or `(min, max]` when `above_min`.
    Real { min: f64, max: f64, above_min: bool },
}

impl NumKind {
    pub const fn whole(min: u64, max: u64) -> Self {
        NumKind::Whole { min, max }
    }
    pub const fn real(min: f64, max: f64) -> Self {
        NumKind::Real { min, max, above_min: false }
    }
    /// `(min, max]`
    pub const fn above(min: f64, max: f64) -> Self {
        NumKind::Real { min, max, above_min: true }
    }
    /// `inputmode` for phone keyboards.
    pub fn inputmode(self) -> &'static str {
        match self {
            NumKind::Whole { .. } => "numeric",
            NumKind::Real { .. } => "decimal",
        }
    }
}

fn show(x: f64) -> String {
    format!("{x}")
}

/// The value of `text`, or a sentence saying why it is not one (`what` names the field).
pub fn check(text: &str, kind: NumKind, what: &str) -> Result<f64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("{what} is empty: type a number"));
    }
    match kind {
        NumKind::Whole { min, max } => {
            let Ok(v) = t.parse::<u64>() else {
                let hint = if t.parse::<f64>().is_ok_and(|v| v.is_finite()) { "a whole number" } else { "a number" };
                return Err(format!("{what}: `{t}` is not {hint} (use {min} to {max})"));
            };
            if v < min || v > max {
                return Err(format!("{what}: {v} is out of range (use {min} to {max})"));
            }
            Ok(v as f64)
        }
        NumKind::Real { min, max, above_min } => {
            // Rust reads "inf" and "NaN" (its only words) as numbers, never finite ones.
            let v = t.parse::<f64>().ok().filter(|v| v.is_finite());
            let Some(v) = v else {
                return Err(format!("{what}: `{t}` is not a number yet (e.g. -8, 0.7, 1e-3)"));
            };
            let low_ok = if above_min { v > min } else { v >= min };
            if !low_ok || v > max {
                let range = if above_min {
                    format!("above {} and at most {}", show(min), show(max))
                } else {
                    format!("{} to {}", show(min), show(max))
                };
                return Err(format!("{what}: {} is out of range (use {range})", show(v)));
            }
            Ok(v)
        }
    }
}

/// `text` with its sign flipped, as typed: `8` → `-8`, `-0.5` → `0.5`, `` → `-`.
pub fn flip_sign(text: &str) -> String {
    let t = text.trim();
    match t.strip_prefix('-') {
        Some(rest) => rest.to_string(),
        None => format!("-{}", t.strip_prefix('+').unwrap_or(t)),
    }
}

/// The sign a coefficient field shows (for its colour): 1, -1, or 0 while it does not parse.
pub fn sign(text: &str) -> i8 {
    match text.trim().parse::<f64>() {
        Ok(v) if v > 0.0 => 1,
        Ok(v) if v < 0.0 => -1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_typed_numbers_are_kept_and_named() {
        let coeff = NumKind::real(-1e4, 1e4);
        for half in ["-", "0.", "1e", "-.", "+"] {
            // "0." reads as 0 in Rust, as it should: only truly partial ones are errors.
            if half == "0." {
                assert_eq!(check(half, coeff, "c"), Ok(0.0));
                continue;
            }
            let e = check(half, coeff, "the coefficient").unwrap_err();
            assert!(e.contains(&format!("`{half}`")), "{e}");
        }
        for (typed, want) in [("-8", -8.0), ("0.7", 0.7), ("1e-3", 1e-3), ("2.", 2.0), (" 5 ", 5.0), ("-0.95", -0.95)] {
            assert_eq!(check(typed, coeff, "c"), Ok(want), "{typed}");
        }
        for odd in ["inf", "NaN", "-infinity", "1e400"] {
            assert!(check(odd, coeff, "c").is_err(), "{odd}");
        }
    }

    #[test]
    fn ranges_are_sentences_with_the_range() {
        let layer = NumKind::whole(0, 11);
        assert_eq!(check("11", layer, "layer"), Ok(11.0));
        assert!(check("12", layer, "layer").unwrap_err().contains("0 to 11"));
        assert!(check("-1", layer, "layer").unwrap_err().contains("0 to 11"));
        assert!(check("2.5", layer, "layer").unwrap_err().contains("not a whole number"));
        let top_p = NumKind::above(0.0, 1.0);
        assert!(check("0", top_p, "top-p").unwrap_err().contains("above 0 and at most 1"));
        assert_eq!(check("0.95", top_p, "top-p"), Ok(0.95));
        assert!(check("950", top_p, "top-p").is_err());
        assert!(check("", top_p, "top-p").unwrap_err().contains("empty"));
    }

    #[test]
    fn flipping_a_sign_keeps_the_typed_text() {
        assert_eq!(flip_sign("8"), "-8");
        assert_eq!(flip_sign("-0.5"), "0.5");
        assert_eq!(flip_sign("+3"), "-3");
        assert_eq!(flip_sign(""), "-");
        assert_eq!(flip_sign(&flip_sign("1e-3")), "1e-3");
        assert_eq!((sign("4"), sign("-2"), sign("-"), sign("0")), (1, -1, 0, 0));
    }
}
