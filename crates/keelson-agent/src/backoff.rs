//! Capped exponential backoff for retrying calls the server could not answer (network errors,
//! `5xx`, `429`): 100 ms, 200 ms, 400 ms, … up to 5 s, back to 100 ms after a success.
//!
//! Invariant: the delay never exceeds [`Backoff::MAX`] and never drops below [`Backoff::MIN`].

use std::time::Duration;

/// The delay sequence of one retried call (or one long-lived sender, reset on success).
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// The first delay.
    pub const MIN: Duration = Duration::from_millis(100);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(5);

    /// A backoff starting at [`Backoff::MIN`].
    pub fn new() -> Backoff {
        Backoff { next: Self::MIN }
    }

    /// The delay to wait now; the following one doubles, capped at [`Backoff::MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    /// Back to [`Backoff::MIN`] (after a call succeeded).
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(backoff: &mut Backoff, count: usize) -> Vec<u128> {
        (0..count)
            .map(|_| backoff.next_delay().as_millis())
            .collect()
    }

    #[test]
    fn doubles_from_100ms_and_caps_at_5s() {
        let mut backoff = Backoff::new();
        assert_eq!(
            millis(&mut backoff, 9),
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new();
        millis(&mut backoff, 5);
        backoff.reset();
        assert_eq!(millis(&mut backoff, 3), [100, 200, 400]);
    }
}
