//! Durations as people read them in logs and summaries.

/// Formats milliseconds: `850ms`, `12.3s`, `2m05s`, `1h02m05s` (tenths of a second below a
/// minute, rounded to the nearest unit shown).
pub fn format_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let tenths = (ms + 50) / 100;
    if tenths < 600 {
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    let secs = (ms + 500) / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else {
        format!("{m}m{s:02}s")
    }
}

#[cfg(test)]
mod tests {
    use super::format_duration;

    #[test]
    fn durations_read_naturally_at_every_scale() {
        for (ms, text) in [
            (0, "0ms"),
            (850, "850ms"),
            (999, "999ms"),
            (1_000, "1.0s"),
            (12_345, "12.3s"),
            (59_949, "59.9s"),
            (59_950, "1m00s"),
            (125_000, "2m05s"),
            (3_725_000, "1h02m05s"),
        ] {
            assert_eq!(format_duration(ms), text, "{ms} ms");
        }
    }
}
