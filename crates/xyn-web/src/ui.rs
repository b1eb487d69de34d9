//! The Xyn Core UI (stub).
use axum::Router;
use crate::AppState;
pub struct Templates;
impl Templates { pub fn new() -> Self { Templates } }
impl Default for Templates { fn default() -> Self { Self::new() } }
pub fn router() -> Router<AppState> { Router::new() }
