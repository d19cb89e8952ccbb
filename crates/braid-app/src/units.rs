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
