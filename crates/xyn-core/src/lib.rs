//! The functional core of Xyn.
//!
//! Events and their hash chain, blueprints (parse, validate, compile), templates, jq,
//! cron, the run/step state machine, footprints and the error codes.
//!
//! *Architecture Invariant:* this crate does no I/O, knows no SQL, HTTP or file paths, and
//! never reads a clock or a random source: time and ids are passed in.

pub mod blueprint;
pub mod canonical;
pub mod cron;
pub mod duration;
pub mod error;
pub mod event;
pub mod footprint;
pub mod glob;
pub mod ids;
pub mod jq;
pub mod names;
pub mod records;
pub mod redact;
pub mod run;
pub mod template;
pub mod time;

pub use error::{ErrorKind, XynError, codes};
pub use event::{Event, Resource, StoredEvent};
pub use ids::{
    ArtifactId, DraftId, EventId, IdPattern, IdSource, RunId, SHORT_ID_LEN, StepId, short_id,
};
pub use time::Timestamp;
