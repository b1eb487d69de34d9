//! Typed identifiers. The core never generates ids: the shell passes them in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub const fn from_uuid(u: Uuid) -> Self {
                Self(u)
            }
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identifies one event in the log.
    EventId
);
uuid_id!(
    /// Identifies one run of a blueprint.
    RunId
);
uuid_id!(
    /// Identifies one step of one run (stable across its attempts).
    StepId
);
uuid_id!(
    /// Identifies one stored artifact.
    ArtifactId
);
uuid_id!(
    /// Identifies one draft (stable across revisions).
    DraftId
);

/// How many hex digits a short id has.
pub const SHORT_ID_LEN: usize = 8;

/// The short form of an id that people read and type: its last eight hex digits. Ids are
/// time-ordered (UUID v7), so their beginnings are alike for everything created the same hour;
/// their tail is random, so two short ids differ even for runs started in the same millisecond.
pub fn short_id(id: &str) -> &str {
    let id = id.trim();
    match id.char_indices().rev().nth(SHORT_ID_LEN - 1) {
        Some((i, _)) => &id[i..],
        None => id,
    }
}

/// What someone typed to name a run or an event: a whole id, or the start of its short id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdPattern {
    /// A whole id.
    Exact(Uuid),
    /// The start of a short id: three to [`SHORT_ID_LEN`] hex digits, lower case.
    Tail(String),
}

impl IdPattern {
    /// Reads what was typed; `None` when it cannot be (part of) an id. At least three digits:
    /// fewer would name most runs of a busy node.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(u) = Uuid::parse_str(s) {
            return Some(Self::Exact(u));
        }
        let ok = (3..=SHORT_ID_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| Self::Tail(s.to_ascii_lowercase()))
    }

    /// Whether `id` (hyphenated, lower case) matches.
    pub fn matches(&self, id: &str) -> bool {
        match self {
            Self::Exact(u) => u.hyphenated().to_string() == id,
            Self::Tail(t) => short_id(id).starts_with(t.as_str()),
        }
    }

    /// The half-open range `[from, to)` of the short ids that start with `tail` (for an index
    /// range scan): short ids are lower-case hex digits, all below `~`.
    pub fn range(tail: &str) -> (String, String) {
        (tail.to_string(), format!("{tail}~"))
    }
}

/// A source of fresh ids, passed into code that must create them so that tests are deterministic.
pub trait IdSource: Send + Sync {
    fn new_uuid(&self) -> Uuid;
}

/// Deterministic ids for tests: 1, 2, 3, …
#[derive(Default)]
pub struct SequentialIds(std::sync::atomic::AtomicU64);

impl IdSource for SequentialIds {
    fn new_uuid(&self) -> Uuid {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Uuid::from_u128(n as u128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "019ae6b2-1c3d-7a10-8f00-1234abcd5678";

    #[test]
    fn short_ids_are_the_random_tail() {
        assert_eq!(short_id(A), "abcd5678");
        assert_eq!(short_id("  abc "), "abc");
        // Two v7 ids of the same millisecond share their start, not their tail.
        let b = "019ae6b2-1c3d-7a10-8f00-1234ffff0000";
        assert_eq!(&A[..8], &b[..8]);
        assert_ne!(short_id(A), short_id(b));
    }

    #[test]
    fn patterns_read_what_people_type() {
        assert_eq!(
            IdPattern::parse(A),
            Some(IdPattern::Exact(Uuid::parse_str(A).unwrap_or_default()))
        );
        assert_eq!(
            IdPattern::parse(" ABCD "),
            Some(IdPattern::Tail("abcd".into()))
        );
        assert_eq!(
            IdPattern::parse("abcd5678"),
            Some(IdPattern::Tail("abcd5678".into()))
        );
        for bad in [
            "",
            "ab",
            "web-1",
            "zzzz",
            "abc'd",
            "abcd%",
            "019ae6b21",
            "019ae6b2-1c",
            &format!("{A}0"),
        ] {
            assert_eq!(IdPattern::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn patterns_match_ids() {
        assert!(IdPattern::parse("abcd").is_some_and(|p| p.matches(A)));
        assert!(IdPattern::parse("abcd5678").is_some_and(|p| p.matches(A)));
        assert!(!IdPattern::parse("5678").is_some_and(|p| p.matches(A)));
        assert!(IdPattern::parse(A).is_some_and(|p| p.matches(A)));
        let (from, to) = IdPattern::range("abcd");
        assert!(from.as_str() <= "abcd5678" && "abcd5678" < to.as_str());
        assert!("abce" >= to.as_str());
        assert!("abcdffff" < to.as_str());
    }
}
