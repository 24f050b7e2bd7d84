//! `--net-egress-max` / `--net-ingress-max` values: bits per second with a
//! unit, as tc writes them.

use std::fmt;

use crate::cgroup::limits::InvalidLimit;

/// A rate in bits per second, 64 kbit/s to 400 Gbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NetRate(u64);

const MIN_BITS: u64 = 64_000;
const MAX_BITS: u64 = 400_000_000_000;
const EXPECTED: &str = "expected a rate in bits per second with a unit, as tc writes it: \
                        500kbit, 8mbit, 1gbit (bit, kbit, mbit, gbit, tbit; kibit, mibit, gibit \
                        for powers of 1024), from 64kbit to 400gbit";

impl NetRate {
    pub fn parse(s: &str) -> Result<NetRate, InvalidLimit> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        if number.is_empty() {
            return Err(EXPECTED.into());
        }
        let scale: u64 = match unit.as_str() {
            "" => {
                return Err(format!("a bare number is ambiguous (tc reads it as bytes per second); {EXPECTED}").into());
            }
            "bit" => 1,
            "kbit" => 1_000,
            "mbit" => 1_000_000,
            "gbit" => 1_000_000_000,
            "tbit" => 1_000_000_000_000,
            "kibit" => 1 << 10,
            "mibit" => 1 << 20,
            "gibit" => 1 << 30,
            u if u.ends_with("bps") || u.ends_with('b') => {
                return Err(format!("tc's \"{u}\" means bytes per second, not bits; {EXPECTED}").into());
            }
            _ => return Err(EXPECTED.into()),
        };
        let bits = decimal_times(number, scale).ok_or(EXPECTED)?;
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(EXPECTED.into());
        }
        Ok(NetRate(bits))
    }

    /// A rate read back from a bucket (which holds bytes per second).
    pub fn from_bytes_per_sec(bytes: u64) -> NetRate {
        NetRate(bytes.saturating_mul(8))
    }

    pub fn bits_per_sec(self) -> u64 {
        self.0
    }

    /// What the programs count in (a packet's length is in bytes).
    pub fn bytes_per_sec(self) -> u64 {
        self.0 / 8
    }
}

/// `number` ("12", "1.5") times `scale`, exactly, if it is a whole number.
fn decimal_times(number: &str, scale: u64) -> Option<u64> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut value = whole.checked_mul(scale)?;
    if !frac.is_empty() {
        let digits: u64 = frac.parse().ok()?;
        let denominator = 10u64.pow(frac.len() as u32);
        let part = u128::from(digits) * u128::from(scale);
        if part % u128::from(denominator) != 0 {
            return None;
        }
        value = value.checked_add(u64::try_from(part / u128::from(denominator)).ok()?)?;
    }
    Some(value)
}

impl fmt::Display for NetRate {
    /// The shortest exact tc spelling: `8mbit`, `1500kbit`, `64001bit`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (scale, unit) in [
            (1_000_000_000_000, "tbit"),
            (1_000_000_000, "gbit"),
            (1_000_000, "mbit"),
            (1_000, "kbit"),
        ] {
            if self.0.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}bit", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_units() {
        let bits = |s: &str| NetRate::parse(s).unwrap().bits_per_sec();
        assert_eq!(bits("500kbit"), 500_000);
        assert_eq!(bits("8mbit"), 8_000_000);
        assert_eq!(bits("8Mbit"), 8_000_000);
        assert_eq!(bits("1gbit"), 1_000_000_000);
        assert_eq!(bits("1.5mbit"), 1_500_000);
        assert_eq!(bits("64kibit"), 65_536);
        assert_eq!(bits("2 mbit"), 2_000_000);
        assert_eq!(NetRate::parse("8mbit").unwrap().bytes_per_sec(), 1_000_000);
    }

    #[test]
    fn bare_numbers_bytes_and_out_of_range_are_refused() {
        let err = |s: &str| NetRate::parse(s).unwrap_err().0;
        assert!(err("1000000").contains("bare number is ambiguous"));
        assert!(err("8mbps").contains("bytes per second"));
        assert!(err("1mb").contains("bytes per second"));
        for bad in [
            "",
            "mbit",
            "-5mbit",
            "1.2.3mbit",
            "8 furlongs",
            "1kbit",
            "401gbit",
            "0.0000000001gbit",
        ] {
            assert!(NetRate::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn display_is_what_parse_reads() {
        for s in ["500kbit", "8mbit", "1gbit", "1500kbit", "64001bit"] {
            assert_eq!(NetRate::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(NetRate::parse("1.5mbit").unwrap().to_string(), "1500kbit");
    }
}
