//! Server-Sent Events of the event log, pushed from the store's commit feed
//! ([`xyn_store::notify::EventFeed`]): an idle stream costs no database query.
//!
//! A stream delivers every event with `seq` greater than its starting point, in `seq` order,
//! exactly once: on connect it subscribes to the feed, then reads what it missed from the
//! store (`Last-Event-ID`), then follows the feed; a gap in `seq` (a commit announced out of
//! order, or a subscriber that fell behind) is filled from the store.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::{broadcast, mpsc};
use xyn_core::event::StoredEvent;
use xyn_core::{RunId, XynError, codes};

use crate::AppState;
use crate::dto::EventDto;
use crate::error::ApiResult;

/// Which events a stream carries.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Exact name or a trigger pattern (`checkmk.*`, `xyn.**`).
    pub event_name: Option<String>,
    pub run_id: Option<RunId>,
}

impl Filter {
    pub fn matches(&self, e: &StoredEvent) -> bool {
        if let Some(r) = self.run_id
            && e.event.run_id != Some(r)
        {
            return false;
        }
        match &self.event_name {
            None => true,
            Some(p) if xyn_core::glob::is_pattern(p) => {
                xyn_core::glob::matches(p, &e.event.event_name)
            }
            Some(n) => *n == e.event.event_name,
        }
    }
}

/// Where to resume: `Last-Event-ID` (the seq last received), else `?after=`.
pub fn resume_point(headers: &HeaderMap, after: Option<&str>) -> Result<Option<i64>, XynError> {
    let given = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or(after);
    given
        .map(|s| {
            s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                XynError::bad_request(
                    codes::REQUEST_INVALID_CURSOR,
                    format!("Last-Event-ID / after must be an event seq (got {s:?})"),
                )
            })
        })
        .transpose()
}

/// Starts pumping events after `after` (or the current end of the log) into a channel.
pub async fn subscribe(
    s: &AppState,
    filter: Filter,
    after: Option<i64>,
) -> ApiResult<mpsc::Receiver<StoredEvent>> {
    let rx = s.feed.subscribe();
    let last = match after {
        Some(a) => a,
        None => s.node.store().chain_head().await?.map_or(0, |(seq, _)| seq),
    };
    let (tx, out) = mpsc::channel(256);
    tokio::spawn(pump(s.clone(), filter, last, rx, tx));
    Ok(out)
}

async fn pump(
    s: AppState,
    filter: Filter,
    mut last: i64,
    mut rx: broadcast::Receiver<xyn_store::notify::Committed>,
    tx: mpsc::Sender<StoredEvent>,
) {
    if !catch_up(&s, &filter, &mut last, &tx).await {
        return;
    }
    loop {
        let got = tokio::select! {
            () = s.shutdown.cancelled() => return,
            () = tx.closed() => return,
            r = rx.recv() => r,
        };
        match got {
            Ok(batch) => {
                for e in batch.iter() {
                    if e.seq <= last {
                        continue;
                    }
                    if e.seq > last + 1 {
                        if !catch_up(&s, &filter, &mut last, &tx).await {
                            return;
                        }
                        if e.seq <= last {
                            continue;
                        }
                    }
                    last = e.seq;
                    if filter.matches(e) && tx.send(e.clone()).await.is_err() {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if !catch_up(&s, &filter, &mut last, &tx).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Reads from the store everything after `last`; false when the client is gone.
async fn catch_up(
    s: &AppState,
    filter: &Filter,
    last: &mut i64,
    tx: &mpsc::Sender<StoredEvent>,
) -> bool {
    const PAGE: usize = 500;
    loop {
        let page = match s.node.store().events_after(*last, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "event stream cannot read the log; closing it");
                return false;
            }
        };
        let n = page.len();
        for e in page {
            *last = e.seq;
            if filter.matches(&e) && tx.send(e).await.is_err() {
                return false;
            }
        }
        if n < PAGE {
            return true;
        }
    }
}

fn into_stream<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
    f: impl Fn(T) -> Option<SseEvent> + Send + 'static,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    futures_util::stream::unfold((rx, f), |(mut rx, f)| async move {
        loop {
            let item = rx.recv().await?;
            if let Some(ev) = f(item) {
                return Some((Ok(ev), (rx, f)));
            }
        }
    })
}

/// The API stream: `id:` seq, `data:` the event DTO as JSON.
pub async fn json_stream(
    s: AppState,
    filter: Filter,
    after: Option<i64>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static>> {
    let rx = subscribe(&s, filter, after).await?;
    let stream = into_stream(rx, |e: StoredEvent| {
        let id = e.seq.to_string();
        let dto = EventDto::from(e);
        serde_json::to_string(&dto)
            .ok()
            .map(|json| SseEvent::default().id(id).data(json))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A UI stream: each event rendered by `render` into `(event type, HTML)`. `after` is the log
/// position the page was rendered at, so nothing committed in between is missed.
pub async fn html_stream(
    s: AppState,
    filter: Filter,
    after: Option<i64>,
    render: impl Fn(StoredEvent) -> Option<(String, String)> + Send + 'static,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static>> {
    let rx = subscribe(&s, filter, after).await?;
    let stream = into_stream(rx, move |e: StoredEvent| {
        let id = e.seq.to_string();
        render(e).map(|(kind, html)| SseEvent::default().id(id).event(kind).data(html))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
