//! Run identifiers: sortable by creation time, unique without coordination.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifier of one pipeline run: `<unix-millis in base36>-<8 random hex digits>`.
///
/// The time prefix makes ids sort by start time in directory listings; the random suffix keeps two
/// runs started in the same millisecond apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A new id for a run starting at `unix_millis`.
    pub fn new(unix_millis: u64) -> RunId {
        let mut random = [0u8; 4];
        // A failing system random source only weakens uniqueness; the time prefix still orders runs.
        let _ = getrandom::fill(&mut random);
        RunId(format!(
            "{:0>9}-{:08x}",
            to_base36(unix_millis),
            u32::from_be_bytes(random)
        ))
    }

    /// Wraps an id read back from storage or the command line.
    pub fn from_string(id: String) -> RunId {
        RunId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn to_base36(mut value: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base36 digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time() {
        let earlier = RunId::new(1_700_000_000_000);
        let later = RunId::new(1_700_000_000_001);
        assert!(earlier < later, "{earlier} should sort before {later}");
    }

    #[test]
    fn base36_round_numbers() {
        assert_eq!(to_base36(0), "0");
        assert_eq!(to_base36(35), "z");
        assert_eq!(to_base36(36), "10");
    }
}
