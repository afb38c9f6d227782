//! Time as the core sees it: milliseconds since the Unix epoch, UTC. The caller supplies `now`;
//! the core never reads a clock.

/// An instant, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    pub const fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    pub const fn plus_days(self, days: i64) -> Self {
        self.plus_millis(days.saturating_mul(86_400_000))
    }
}

/// A half-open period `[not_before, expires_at)`; an absent end never expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    not_before: Timestamp,
    expires_at: Option<Timestamp>,
}

/// A period whose end is not after its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the period ends before it begins")]
pub struct EmptyPeriod;

impl Period {
    pub fn new(not_before: Timestamp, expires_at: Option<Timestamp>) -> Result<Self, EmptyPeriod> {
        match expires_at {
            Some(end) if end <= not_before => Err(EmptyPeriod),
            _ => Ok(Self { not_before, expires_at }),
        }
    }

    pub fn not_before(&self) -> Timestamp {
        self.not_before
    }

    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }

    pub fn contains(&self, now: Timestamp) -> bool {
        self.not_before <= now && self.expires_at.is_none_or(|end| now < end)
    }
}
