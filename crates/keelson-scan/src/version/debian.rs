//! Debian ordering (deb-version(7)): `[epoch:]upstream[-revision]`, compared part by part with
//! alternating non-digit runs (letters before other characters, `~` before everything, even the
//! end of the string) and digit runs (numerically).

use std::cmp::Ordering;

use super::{cmp_numbers, is_number};

#[derive(Debug)]
pub(super) struct Version<'a> {
    epoch: &'a str,
    upstream: &'a str,
    revision: &'a str,
}

impl<'a> Version<'a> {
    pub(super) fn parse(s: &'a str) -> Result<Self, &'static str> {
        let (epoch, rest) = match s.split_once(':') {
            Some((epoch, rest)) => {
                if !is_number(epoch) {
                    return Err("the epoch (before `:`) must be a number");
                }
                (epoch, rest)
            }
            None => ("0", s),
        };
        let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, "0"));
        Ok(Version {
            epoch,
            upstream,
            revision,
        })
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_numbers(self.epoch, other.epoch)
            .then_with(|| cmp_part(self.upstream, other.upstream))
            .then_with(|| cmp_part(self.revision, other.revision))
    }
}

impl PartialEq for Version<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Version<'_> {}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// dpkg's character weight: `~` first, then the end of the run, then letters, then the rest.
fn weight(c: Option<u8>) -> u32 {
    match c {
        Some(b'~') => 1,
        None => 2,
        Some(c) if c.is_ascii_alphabetic() => u32::from(c),
        Some(c) => u32::from(c) + 256,
    }
}

fn split_run(s: &str, digits: bool) -> (&str, &str) {
    let end = s
        .bytes()
        .position(|b| b.is_ascii_digit() != digits)
        .unwrap_or(s.len());
    s.split_at(end)
}

fn cmp_part(mut a: &str, mut b: &str) -> Ordering {
    while !a.is_empty() || !b.is_empty() {
        let (an, ar) = split_run(a, false);
        let (bn, br) = split_run(b, false);
        if an != bn {
            let (ab, bb) = (an.as_bytes(), bn.as_bytes());
            for i in 0..ab.len().max(bb.len()) {
                let order = weight(ab.get(i).copied()).cmp(&weight(bb.get(i).copied()));
                if order.is_ne() {
                    return order;
                }
            }
        }
        let (ad, ar) = split_run(ar, true);
        let (bd, br) = split_run(br, true);
        let order = cmp_numbers(ad, bd);
        if order.is_ne() {
            return order;
        }
        a = ar;
        b = br;
    }
    Ordering::Equal
}
