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
