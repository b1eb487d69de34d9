//! Where the node connects on behalf of others: one destination policy for sandboxed
//! guests and the built-in `http.call` (address classification, allowlist rules, the
//! post-DNS resolver, per-hop redirect checks, header rules, the node's own addresses).

pub mod addr;
pub mod egress;
pub mod rules;

pub use addr::{embedded_v4, is_public};
pub use egress::{
    Destinations, Egress, EgressError, ErrorKind, MARKER_HEADER, OutRequest, OutResponse,
    SecretBinding, host_only_header, marker, parse_host,
};
pub use rules::{HostPattern, HostRule};
