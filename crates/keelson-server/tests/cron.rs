//! Cron schedules: a data-driven table of (expression, zone, after, expected next), including
//! daylight-saving transitions, month ends and weekday numbering, plus invalid inputs.

use chrono::{DateTime, SecondsFormat, Utc};
use keelson_server::cron::{CronError, Schedule};

fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("bad test time {rfc3339}: {e}"))
        .timestamp_millis()
}

fn show(unix_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(unix_ms)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// (what, expression, zone, after, expected next run) — times in UTC unless an offset is given.
type NextCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
);

const NEXT_CASES: &[NextCase] = &[
    // Plain UTC schedules.
    (
        "every minute",
        "* * * * *",
        None,
        "2026-11-22T10:00:30Z",
        Some("2026-11-22T10:01:00Z"),
    ),
    (
        "quarter hours",
        "*/15 * * * *",
        None,
        "2026-11-22T10:00:00Z",
        Some("2026-11-22T10:15:00Z"),
    ),
    (
        "quarter hours wrap",
        "*/15 * * * *",
        None,
        "2026-11-22T10:50:00Z",
        Some("2026-11-22T11:00:00Z"),
    ),
    (
        "ranges with steps",
        "5-50/20 * * * *",
        None,
        "2026-11-22T10:26:00Z",
        Some("2026-11-22T10:45:00Z"),
    ),
    (
        "lists",
        "0 8,17 * * *",
        None,
        "2026-11-22T09:00:00Z",
        Some("2026-11-22T17:00:00Z"),
    ),
    (
        "weekdays only, friday to monday",
        "0 9 * * 1-5",
        None,
        "2026-11-20T10:00:00Z",
        Some("2026-11-23T09:00:00Z"),
    ),
    // Strictly after: the instant itself never counts, one millisecond before does.
    (
        "exactly on a run",
        "0 12 * * *",
        None,
        "2026-11-22T12:00:00Z",
        Some("2026-11-23T12:00:00Z"),
    ),
    (
        "just after a run",
        "0 12 * * *",
        None,
        "2026-11-22T12:00:00.001Z",
        Some("2026-11-23T12:00:00Z"),
    ),
    (
        "just before a run",
        "0 12 * * *",
        None,
        "2026-11-22T11:59:59.999Z",
        Some("2026-11-22T12:00:00Z"),
    ),
    // Sunday is 0 and 7 (and SUN); 2026-11-18 is a Wednesday.
    (
        "sunday as 0",
        "0 12 * * 0",
        None,
        "2026-11-18T00:00:00Z",
        Some("2026-11-22T12:00:00Z"),
    ),
    (
        "sunday as 7",
        "0 12 * * 7",
        None,
        "2026-11-18T00:00:00Z",
        Some("2026-11-22T12:00:00Z"),
    ),
    (
        "sunday by name",
        "0 12 * * sun",
        None,
        "2026-11-18T00:00:00Z",
        Some("2026-11-22T12:00:00Z"),
    ),
    (
        "saturday as 6",
        "0 12 * * 6",
        None,
        "2026-11-18T00:00:00Z",
        Some("2026-11-21T12:00:00Z"),
    ),
    // Month ends.
    (
        "31st skips 30-day months",
        "0 0 31 * *",
        None,
        "2026-04-01T00:00:00Z",
        Some("2026-05-31T00:00:00Z"),
    ),
    (
        "last day of february",
        "0 0 L * *",
        None,
        "2026-02-01T00:00:00Z",
        Some("2026-02-28T00:00:00Z"),
    ),
    (
        "last day of a leap february",
        "0 0 L * *",
        None,
        "2028-02-01T00:00:00Z",
        Some("2028-02-29T00:00:00Z"),
    ),
    (
        "29 february waits for a leap year",
        "0 0 29 2 *",
        None,
        "2026-01-01T00:00:00Z",
        Some("2028-02-29T00:00:00Z"),
    ),
    (
        "new year across a year end",
        "0 0 1 1 *",
        None,
        "2026-12-31T23:59:00Z",
        Some("2027-01-01T00:00:00Z"),
    ),
    (
        "never: 30 february",
        "0 0 30 2 *",
        None,
        "2026-01-01T00:00:00Z",
        None,
    ),
    // Aliases.
    (
        "@daily in New York is 05:00 UTC in winter",
        "@daily",
        Some("America/New_York"),
        "2026-11-22T00:00:00Z",
        Some("2026-11-22T05:00:00Z"),
    ),
    (
        "@daily in New York is 04:00 UTC in summer",
        "@daily",
        Some("America/New_York"),
        "2026-07-01T00:00:00Z",
        Some("2026-07-01T04:00:00Z"),
    ),
    (
        "@hourly",
        "@hourly",
        None,
        "2026-11-22T10:15:00Z",
        Some("2026-11-22T11:00:00Z"),
    ),
    (
        "@weekly is sunday midnight",
        "@weekly",
        None,
        "2026-11-18T00:00:00Z",
        Some("2026-11-22T00:00:00Z"),
    ),
    (
        "@monthly",
        "@monthly",
        Some("Europe/Paris"),
        "2026-11-22T00:00:00Z",
        Some("2026-11-30T23:00:00Z"),
    ),
    (
        "@yearly",
        "@yearly",
        None,
        "2026-11-22T00:00:00Z",
        Some("2027-01-01T00:00:00Z"),
    ),
    // Europe/Paris, spring forward on 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    // A daily 02:30 does not exist that day: it runs once, at the first instant after the gap.
    (
        "paris 02:30 on the day before",
        "30 2 * * *",
        Some("Europe/Paris"),
        "2026-03-27T12:00:00Z",
        Some("2026-03-28T01:30:00Z"),
    ),
    (
        "paris 02:30 on spring-forward day runs at 03:00 CEST",
        "30 2 * * *",
        Some("Europe/Paris"),
        "2026-03-28T12:00:00Z",
        Some("2026-03-29T01:00:00Z"),
    ),
    (
        "paris 02:30 the day after is CEST",
        "30 2 * * *",
        Some("Europe/Paris"),
        "2026-03-29T01:00:00Z",
        Some("2026-03-30T00:30:00Z"),
    ),
    (
        "paris quarter hours skip the gap",
        "*/15 * * * *",
        Some("Europe/Paris"),
        "2026-03-29T00:50:00Z",
        Some("2026-03-29T01:00:00Z"),
    ),
    (
        "paris 03:30 is unaffected",
        "30 3 * * *",
        Some("Europe/Paris"),
        "2026-03-28T12:00:00Z",
        Some("2026-03-29T01:30:00Z"),
    ),
    // Europe/Paris, fall back on 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC), so 02:xx
    // happens twice. A daily 02:30 runs once, at the first (CEST) occurrence.
    (
        "paris 02:30 on fall-back day runs at the first copy",
        "30 2 * * *",
        Some("Europe/Paris"),
        "2026-10-24T12:00:00Z",
        Some("2026-10-25T00:30:00Z"),
    ),
    (
        "paris 02:30 is not repeated in the second copy",
        "30 2 * * *",
        Some("Europe/Paris"),
        "2026-10-25T00:30:00Z",
        Some("2026-10-26T01:30:00Z"),
    ),
    (
        "paris quarter hours run in both copies",
        "*/15 * * * *",
        Some("Europe/Paris"),
        "2026-10-25T00:50:00Z",
        Some("2026-10-25T01:00:00Z"),
    ),
    // America/New_York: spring forward 2026-03-08 02:00 EST → 03:00 EDT (07:00 UTC);
    // fall back 2026-11-01 02:00 EDT → 01:00 EST (06:00 UTC).
    (
        "new york 02:30 on spring-forward day runs at 03:00 EDT",
        "30 2 * * *",
        Some("America/New_York"),
        "2026-03-07T12:00:00Z",
        Some("2026-03-08T07:00:00Z"),
    ),
    (
        "new york 01:30 on fall-back day runs at the EDT copy",
        "30 1 * * *",
        Some("America/New_York"),
        "2026-10-31T12:00:00Z",
        Some("2026-11-01T05:30:00Z"),
    ),
    (
        "new york 01:30 is not repeated in EST",
        "30 1 * * *",
        Some("America/New_York"),
        "2026-11-01T05:30:00Z",
        Some("2026-11-02T06:30:00Z"),
    ),
    (
        "new york hourly job runs in both copies of 01:xx",
        "30 * * * *",
        Some("America/New_York"),
        "2026-11-01T05:30:00Z",
        Some("2026-11-01T06:30:00Z"),
    ),
    (
        "new york job with an hour list runs in both copies",
        "30 1,13 * * *",
        Some("America/New_York"),
        "2026-11-01T05:30:00Z",
        Some("2026-11-01T06:30:00Z"),
    ),
    // Fixed offsets far from UTC.
    (
        "kolkata half-hour offset",
        "0 9 * * *",
        Some("Asia/Kolkata"),
        "2026-11-22T00:00:00Z",
        Some("2026-11-22T03:30:00Z"),
    ),
];

#[test]
fn next_after_table() {
    let mut failures = Vec::new();
    for (what, expression, zone, after, expected) in NEXT_CASES {
        let schedule = Schedule::parse(expression, *zone)
            .unwrap_or_else(|e| panic!("{what}: `{expression}` should parse: {e}"));
        let got = schedule.next_after(ms(after));
        let want = expected.map(ms);
        if got != want {
            failures.push(format!(
                "{what}: `{expression}` in {} after {after}: got {:?}, want {:?}",
                zone.unwrap_or("UTC"),
                got.map(show),
                want.map(show),
            ));
        }
        if let Some(next) = got {
            assert!(next > ms(after), "{what}: not strictly after");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn iterating_a_day_of_quarter_hours_gives_96_runs() {
    let schedule = Schedule::parse("*/15 * * * *", Some("Europe/Paris")).unwrap();
    let start = ms("2026-11-22T00:00:00+01:00");
    let end = ms("2026-11-23T00:00:00+01:00");
    let mut cursor = start - 1;
    let mut runs = Vec::new();
    while let Some(next) = schedule.next_after(cursor) {
        if next >= end {
            break;
        }
        runs.push(next);
        cursor = next;
    }
    assert_eq!(runs.len(), 96);
    assert!(
        runs.windows(2)
            .all(|pair| pair[1] - pair[0] == 15 * 60 * 1000)
    );
}

#[test]
fn spring_forward_day_in_paris_has_23_hourly_runs_and_fall_back_day_25() {
    let schedule = Schedule::parse("0 * * * *", Some("Europe/Paris")).unwrap();
    let count = |from: &str, to: &str| {
        let (start, end) = (ms(from), ms(to));
        let mut cursor = start - 1;
        let mut count = 0;
        while let Some(next) = schedule.next_after(cursor) {
            if next >= end {
                break;
            }
            count += 1;
            cursor = next;
        }
        count
    };
    assert_eq!(
        count("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"),
        23
    );
    assert_eq!(
        count("2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00"),
        25
    );
    assert_eq!(
        count("2026-11-22T00:00:00+01:00", "2026-11-23T00:00:00+01:00"),
        24
    );
}

#[test]
fn out_of_range_instants_give_none_not_a_panic() {
    let schedule = Schedule::parse("* * * * *", None).unwrap();
    assert_eq!(schedule.next_after(i64::MAX), None);
    assert_eq!(schedule.next_after(i64::MIN), None);
    assert!(schedule.next_after(0).is_some());
    assert!(schedule.next_after(-86_400_000).is_some());
}

#[test]
fn accessors_and_description() {
    let schedule = Schedule::parse("  30 2 * * 1-5 ", Some("Europe/Paris")).unwrap();
    assert_eq!(schedule.expression(), "30 2 * * 1-5");
    assert_eq!(schedule.timezone(), "Europe/Paris");
    let description = schedule.describe();
    assert!(description.ends_with("(Europe/Paris)"), "{description}");
    assert!(
        description.contains("02:30") || description.contains("2:30"),
        "{description}"
    );
    let utc = Schedule::parse("@daily", None).unwrap();
    assert_eq!(utc.timezone(), "UTC");
    assert!(utc.describe().ends_with("(UTC)"), "{}", utc.describe());
}

#[test]
fn invalid_inputs_are_clear_errors() {
    enum Want {
        Empty,
        FieldCount(usize),
        Invalid,
        Zone,
    }
    let cases: &[(&str, Option<&str>, Want)] = &[
        ("", None, Want::Empty),
        ("   ", None, Want::Empty),
        ("* * * *", None, Want::FieldCount(4)),
        ("0 0 0 * * *", None, Want::FieldCount(6)),
        ("0 0 1 1 * 2030 x", None, Want::FieldCount(7)),
        ("60 * * * *", None, Want::Invalid),
        ("* 24 * * *", None, Want::Invalid),
        ("* * 32 * *", None, Want::Invalid),
        ("* * 0 * *", None, Want::Invalid),
        ("* * * 13 *", None, Want::Invalid),
        ("* * * * 8", None, Want::Invalid),
        ("*/0 * * * *", None, Want::Invalid),
        ("a b c d e", None, Want::Invalid),
        ("5-1x * * * *", None, Want::Invalid),
        ("@fortnightly", None, Want::Invalid),
        ("0 3 * * *", Some("Mars/Olympus_Mons"), Want::Zone),
        ("0 3 * * *", Some(""), Want::Zone),
        ("0 3 * * *", Some("CEST+2"), Want::Zone),
    ];
    for (expression, zone, want) in cases {
        let error = Schedule::parse(expression, *zone)
            .err()
            .unwrap_or_else(|| panic!("`{expression}` in {zone:?} should be refused"));
        let message = error.to_string();
        match (want, &error) {
            (Want::Empty, CronError::Empty) => {}
            (Want::FieldCount(n), CronError::WrongFieldCount { fields, .. }) if fields == n => {
                assert!(message.contains("expected five"), "{message}");
            }
            (Want::Invalid, CronError::InvalidExpression { expression: e, .. }) => {
                assert_eq!(e, expression.trim());
                assert!(message.contains(expression.trim()), "{message}");
            }
            (Want::Zone, CronError::UnknownTimeZone(name)) => {
                assert_eq!(name, zone.unwrap().trim());
                assert!(message.contains("IANA"), "{message}");
            }
            _ => panic!("`{expression}` in {zone:?}: unexpected error {error:?}"),
        }
    }
}
