//! Events: the immutable records of the append-only, hash-chained log.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::canonical::write_canonical;
use crate::ids::{EventId, RunId, StepId};
use crate::time::Timestamp;

/// What an event is about (`{type, id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// An event before the log has given it a place (`seq`) and a hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: EventId,
    pub event_name: String,
    pub occurred_at: Timestamp,
    pub env_id: String,
    pub actor: String,
    pub correlation_id: String,
    pub run_id: Option<RunId>,
    pub step_id: Option<StepId>,
    pub resource: Option<Resource>,
    pub data: Value,
}

/// An event as stored: its position in the log and its link in the hash chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub hash: String,
    #[serde(flatten)]
    pub event: Event,
}

/// The hash that precedes the first event of a log: 32 zero bytes.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

impl Event {
    /// The canonical JSON of the event together with its sequence number: the bytes that are hashed.
    pub fn canonical_bytes(&self, seq: i64) -> Vec<u8> {
        self.canonical_with_data(seq, &crate::canonical::to_canonical(&self.data))
    }

    /// The canonical JSON of the event, given the canonical JSON of its `data`. Keys are
    /// written in sorted order directly (no intermediate map), which is what makes the
    /// result canonical.
    fn canonical_with_data(&self, seq: i64, data: &[u8]) -> Vec<u8> {
        fn key(out: &mut Vec<u8>, k: &str, first: bool) {
            if !first {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
        }
        fn string(out: &mut Vec<u8>, s: &str) {
            write_canonical(&Value::String(s.to_string()), out);
        }
        fn opt_string(out: &mut Vec<u8>, s: Option<String>) {
            match s {
                Some(s) => string(out, &s),
                None => out.extend_from_slice(b"null"),
            }
        }
        let mut out = Vec::with_capacity(320 + data.len());
        out.push(b'{');
        key(&mut out, "actor", true);
        string(&mut out, &self.actor);
        key(&mut out, "correlation_id", false);
        string(&mut out, &self.correlation_id);
        key(&mut out, "data", false);
        out.extend_from_slice(data);
        key(&mut out, "env_id", false);
        string(&mut out, &self.env_id);
        key(&mut out, "event_id", false);
        string(&mut out, &self.event_id.to_string());
        key(&mut out, "event_name", false);
        string(&mut out, &self.event_name);
        key(&mut out, "occurred_at", false);
        string(&mut out, &self.occurred_at.to_string());
        key(&mut out, "resource", false);
        match &self.resource {
            Some(r) => write_canonical(&json!({"type": r.kind, "id": r.id}), &mut out),
            None => out.extend_from_slice(b"null"),
        }
        key(&mut out, "run_id", false);
        opt_string(&mut out, self.run_id.map(|r| r.to_string()));
        key(&mut out, "seq", false);
        out.extend_from_slice(seq.to_string().as_bytes());
        key(&mut out, "step_id", false);
        opt_string(&mut out, self.step_id.map(|r| r.to_string()));
        out.push(b'}');
        out
    }

    /// `sha256(prev_hash ‖ canonical JSON of the event with its seq)`.
    pub fn chain_hash(&self, prev: &[u8; 32], seq: i64) -> [u8; 32] {
        self.chain_hash_and_data(prev, seq).0
    }

    /// Serialises the event once, before its `seq` is known, so that a store can compute the
    /// chain hash later with [`ChainParts::hash`] while it holds the chain's lock (one sha256,
    /// no serialisation).
    pub fn chain_parts(&self) -> ChainParts {
        let data = crate::canonical::to_canonical(&self.data);
        // The seq is the only part that varies: render it as 0 and split around it. Only
        // `step_id` (an id or null) follows it, so the last match is the seq, whatever the
        // data holds.
        let whole = self.canonical_with_data(0, &data);
        let marker = b"\"seq\":0,";
        let at = whole
            .windows(marker.len())
            .rposition(|w| w == marker)
            .map_or(whole.len(), |p| p + marker.len() - 2);
        let (head, tail) = whole.split_at(at);
        ChainParts {
            head: head.to_vec(),
            tail: tail[1..].to_vec(),
            data_text: String::from_utf8(data)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    /// The chain hash together with the canonical JSON text of `data` (what the store keeps),
    /// so an append serialises the data once.
    pub fn chain_hash_and_data(&self, prev: &[u8; 32], seq: i64) -> ([u8; 32], String) {
        let data = crate::canonical::to_canonical(&self.data);
        let mut h = Sha256::new();
        h.update(prev);
        h.update(self.canonical_with_data(seq, &data));
        let text = String::from_utf8(data)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        (h.finalize().into(), text)
    }
}

/// An event's canonical JSON split around its `seq` (see [`Event::chain_parts`]).
#[derive(Clone, Debug)]
pub struct ChainParts {
    head: Vec<u8>,
    tail: Vec<u8>,
    /// The canonical JSON text of the event's `data`.
    pub data_text: String,
}

impl ChainParts {
    /// `sha256(prev ‖ canonical JSON of the event with this seq)`, equal to
    /// [`Event::chain_hash`].
    pub fn hash(&self, prev: &[u8; 32], seq: i64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(prev);
        h.update(&self.head);
        h.update(seq.to_string().as_bytes());
        h.update(&self.tail);
        h.finalize().into()
    }
}

/// Builds the `data` object of a platform event from key/value pairs.
pub fn data(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

/// Why an event name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventNameError {
    #[error("event_name must not be empty")]
    Empty,
    #[error("event_name is longer than 200 characters")]
    TooLong,
    #[error(
        "event_name may contain only lowercase letters, digits, '_' and '-', in dot-separated segments (got {0:?})"
    )]
    BadCharacters(String),
    #[error("event names starting with 'xyn.' are reserved for the platform")]
    Reserved,
}

/// Checks an event name given by a client: dot-separated lowercase segments
/// (`checkmk.alert`, `git.push`), not in the reserved `xyn.` namespace.
pub fn validate_external_event_name(name: &str) -> Result<(), EventNameError> {
    validate_event_name(name)?;
    if name == "xyn" || name.starts_with("xyn.") {
        return Err(EventNameError::Reserved);
    }
    Ok(())
}

/// Checks the syntax of any event name, platform ones included.
pub fn validate_event_name(name: &str) -> Result<(), EventNameError> {
    if name.is_empty() {
        return Err(EventNameError::Empty);
    }
    if name.len() > 200 {
        return Err(EventNameError::TooLong);
    }
    let ok = name.split('.').all(|seg| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(EventNameError::BadCharacters(name.to_string()))
    }
}

/// The outcome of walking the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    pub ok: bool,
    pub events_checked: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub head_hash: Option<String>,
    /// The first sequence number at which the chain is broken.
    pub broken_seq: Option<i64>,
    pub reason: Option<String>,
}

/// Verifies a log incrementally: feed it the stored events in `seq` order.
///
/// It detects edited rows (hash mismatch), removed rows (gap in `seq`) and rows whose stored
/// hash was rewritten (the next link no longer matches). A removed tail is caught by comparing
/// against the head recorded beside the log ([`ChainVerifier::finish`]).
pub struct ChainVerifier {
    prev: [u8; 32],
    expected_seq: Option<i64>,
    checked: u64,
    first_seq: Option<i64>,
    broken: Option<(i64, String)>,
}

impl ChainVerifier {
    /// Starts at the genesis hash and expects `seq` 1 first.
    pub fn new() -> Self {
        Self::from_checkpoint(0, GENESIS_HASH)
    }

    /// Starts after a checkpoint: the event at `seq + 1` must link to `hash`.
    pub fn from_checkpoint(seq: i64, hash: [u8; 32]) -> Self {
        Self {
            prev: hash,
            expected_seq: Some(seq + 1),
            checked: 0,
            first_seq: None,
            broken: None,
        }
    }

    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Checks the next stored event. Returns `false` once the chain is broken.
    pub fn push(&mut self, e: &StoredEvent) -> bool {
        if self.broken.is_some() {
            return false;
        }
        if let Some(expected) = self.expected_seq
            && e.seq != expected
        {
            let reason = if e.seq > expected {
                format!(
                    "event seq {expected} is missing (next stored seq is {})",
                    e.seq
                )
            } else {
                format!("seq {} appears out of order (expected {expected})", e.seq)
            };
            self.broken = Some((expected, reason));
            return false;
        }
        let computed = e.event.chain_hash(&self.prev, e.seq);
        let computed_hex = hex::encode(computed);
        if computed_hex != e.hash {
            self.broken = Some((
                e.seq,
                format!(
                    "event seq {} does not match its hash (content or link changed)",
                    e.seq
                ),
            ));
            return false;
        }
        self.first_seq.get_or_insert(e.seq);
        self.prev = computed;
        self.expected_seq = Some(e.seq + 1);
        self.checked += 1;
        true
    }

    /// Records that the stored row at `seq` cannot be read (`why`): the chain is broken there.
    pub fn unreadable(&mut self, seq: i64, why: impl std::fmt::Display) {
        if self.broken.is_none() {
            self.broken = Some((seq, format!("event seq {seq} cannot be read: {why}")));
        }
    }

    /// Ends the walk, comparing with the head the store recorded (`seq`, `hash`), if any.
    pub fn finish(mut self, recorded_head: Option<(i64, String)>) -> ChainReport {
        let last_seq = self.expected_seq.map(|s| s - 1).filter(|s| *s > 0);
        if self.broken.is_none()
            && let Some((head_seq, head_hash)) = recorded_head
        {
            let last = last_seq.unwrap_or(0);
            if head_seq > last {
                self.broken = Some((
                    last + 1,
                    format!(
                        "the log ends at seq {last} but its recorded head is seq {head_seq}: events were removed"
                    ),
                ));
            } else if head_seq == last && head_seq > 0 && hex::encode(self.prev) != head_hash {
                self.broken = Some((
                    head_seq,
                    format!("event seq {head_seq} does not match the recorded head hash"),
                ));
            }
        }
        let ok = self.broken.is_none();
        let (broken_seq, reason) = match self.broken {
            Some((s, r)) => (Some(s), Some(r)),
            None => (None, None),
        };
        ChainReport {
            ok,
            events_checked: self.checked,
            first_seq: self.first_seq,
            last_seq,
            head_hash: if self.checked > 0 {
                Some(hex::encode(self.prev))
            } else {
                None
            },
            broken_seq,
            reason,
        }
    }
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn ev(n: u128, data: Value) -> Event {
        Event {
            event_id: EventId(Uuid::from_u128(n)),
            event_name: "checkmk.alert".into(),
            occurred_at: Timestamp::from_micros(1_700_000_000_000_000 + n as i64),
            env_id: "local".into(),
            actor: "system".into(),
            correlation_id: "c-1".into(),
            run_id: None,
            step_id: None,
            resource: None,
            data,
        }
    }

    fn chain(n: usize) -> Vec<StoredEvent> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|i| {
                let e = ev(i as u128, json!({"i": i, "seq": 0, "x": "\"seq\":0,"}));
                let h = e.chain_hash(&prev, i as i64);
                prev = h;
                StoredEvent {
                    seq: i as i64,
                    hash: hex::encode(h),
                    event: e,
                }
            })
            .collect()
    }

    fn verify(events: &[StoredEvent], head: Option<(i64, String)>) -> ChainReport {
        let mut v = ChainVerifier::new();
        for e in events {
            if !v.push(e) {
                break;
            }
        }
        v.finish(head)
    }

    #[test]
    fn the_canonical_form_equals_a_sorted_map_rendering() {
        let mut e = ev(7, json!({"b": [1, {"z": 1, "a": "é\n"}], "a": null}));
        e.resource = Some(Resource {
            kind: "host".into(),
            id: "web-1".into(),
        });
        e.run_id = Some(RunId(Uuid::from_u128(9)));
        let v = json!({
            "seq": 3,
            "event_id": e.event_id.to_string(),
            "event_name": e.event_name,
            "occurred_at": e.occurred_at.to_string(),
            "env_id": e.env_id,
            "actor": e.actor,
            "correlation_id": e.correlation_id,
            "run_id": e.run_id.map(|r| r.to_string()),
            "step_id": null,
            "resource": {"type": "host", "id": "web-1"},
            "data": e.data,
        });
        assert_eq!(e.canonical_bytes(3), crate::canonical::to_canonical(&v));
    }

    #[test]
    fn chain_parts_hash_like_the_whole_event() {
        for (i, e) in chain(3).iter().enumerate() {
            let parts = e.event.chain_parts();
            for seq in [1, 9, 10, 12345, i as i64] {
                let prev = [i as u8; 32];
                assert_eq!(parts.hash(&prev, seq), e.event.chain_hash(&prev, seq));
            }
            assert_eq!(
                parts.data_text,
                String::from_utf8(crate::canonical::to_canonical(&e.event.data)).unwrap()
            );
        }
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        let head = Some((5, c[4].hash.clone()));
        let r = verify(&c, head);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.events_checked, 5);
    }

    #[test]
    fn edited_row_is_named() {
        let mut c = chain(5);
        c[2].event.data = json!({"i": 999});
        let r = verify(&c, None);
        assert_eq!(r.broken_seq, Some(3));
    }

    #[test]
    fn rewritten_hash_breaks_the_next_link() {
        let mut c = chain(5);
        c[2].event.data = json!({"i": 999});
        let prev = hex::decode(&c[1].hash).unwrap().try_into().unwrap();
        c[2].hash = hex::encode(c[2].event.chain_hash(&prev, 3));
        let r = verify(&c, None);
        assert_eq!(r.broken_seq, Some(4));
    }

    #[test]
    fn deleted_row_is_named() {
        let mut c = chain(5);
        c.remove(1);
        let r = verify(&c, None);
        assert_eq!(r.broken_seq, Some(2));
    }

    #[test]
    fn removed_tail_is_caught_by_the_head() {
        let c = chain(5);
        let head = Some((5, c[4].hash.clone()));
        let r = verify(&c[..4], head);
        assert_eq!(r.broken_seq, Some(5));
    }

    #[test]
    fn event_names() {
        assert!(validate_external_event_name("checkmk.alert").is_ok());
        assert!(validate_external_event_name("git.push-v2.x_1").is_ok());
        assert_eq!(
            validate_external_event_name("xyn.run.started"),
            Err(EventNameError::Reserved)
        );
        assert!(validate_external_event_name("Checkmk.Alert").is_err());
        assert!(validate_external_event_name("a..b").is_err());
        assert!(validate_external_event_name("a b").is_err());
        assert!(validate_external_event_name("").is_err());
    }
}
