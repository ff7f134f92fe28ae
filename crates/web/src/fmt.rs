//! Human-readable sizes, speeds and durations.

/// `1.5 GB`, `548 MB`, `12.3 kB`, `900 B` (decimal units, as download sizes are quoted).
pub fn bytes(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2} GB", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1} MB", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} kB", x / 1e3)
    } else {
        format!("{n} B")
    }
}

/// `3 s`, `2 min 05 s`, `1 h 02 min`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".into();
    }
    let s = seconds.round() as u64;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::bytes(548_105_171), "548.1 MB");
        assert_eq!(super::bytes(6_431_829_964), "6.43 GB");
        assert_eq!(super::bytes(12), "12 B");
        assert_eq!(super::duration(125.0), "2 min 05 s");
        assert_eq!(super::duration(f64::NAN), "?");
    }
}
