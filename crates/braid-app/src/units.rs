//! Sizes and durations as people write them in config and on the command
//! line (`512MiB`, `30m`), read the same way everywhere.

use std::time::Duration;

/// Why a size or duration did not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {why}")]
pub struct UnitError {
    pub text: String,
    pub why: String,
}

fn err(text: &str, why: impl Into<String>) -> UnitError {
    UnitError {
        text: text.to_owned(),
        why: why.into(),
    }
}

/// A size in bytes: a number and a unit (B, KB, KiB, MB, MiB, GB, GiB, TB,
/// TiB; case does not matter).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| err(s, "not a size like 512MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(err(
                s,
                format!("unknown unit {other:?} (use B, KiB, MiB, GiB)"),
            ));
        }
    };
    n.checked_mul(mult).ok_or_else(|| err(s, "too large"))
}

/// A duration like `30s`, `15m`, `2h`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| err(s, format!("not a duration like 30s, 15m, 2h ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_written() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2 kb"), Ok(2_000));
        assert_eq!(parse_size("7"), Ok(7));
        assert!(
            parse_size("12 parsecs")
                .unwrap_err()
                .why
                .contains("unknown unit")
        );
        assert!(parse_size("MiB").is_err());
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .why
                .contains("too large")
        );
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
    }
}

/// A config parser's message in words a person uses: `expected usize`
/// becomes "expected a whole number, 0 or more", `invalid type: string
/// "x"` becomes "found the text \"x\"".
pub fn in_words(message: &str) -> String {
    let mut m = message.to_owned();
    for (from, to) in [
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected u16", "expected a whole number, 0 or more"),
        ("expected u8", "expected a whole number, 0 or more"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a string", "expected text in quotes"),
        ("invalid type: string ", "found the text "),
        ("invalid type: floating point ", "found the number "),
        ("invalid type: integer ", "found the number "),
        ("invalid type: boolean ", "found "),
        ("invalid type: sequence", "found a list"),
        ("invalid type: map", "found a table"),
        ("invalid value: integer ", "out of range: "),
    ] {
        m = m.replace(from, to);
    }
    m.replace('`', "")
}

#[cfg(test)]
mod words {
    #[test]
    fn parser_types_read_as_words() {
        assert_eq!(
            super::in_words("invalid type: string \"four\", expected usize"),
            "found the text \"four\", expected a whole number, 0 or more"
        );
        assert_eq!(
            super::in_words("invalid value: integer `-2`, expected usize"),
            "out of range: -2, expected a whole number, 0 or more"
        );
        assert_eq!(
            super::in_words("invalid type: floating point `2.5`, expected u32"),
            "found the number 2.5, expected a whole number, 0 or more"
        );
    }
}
