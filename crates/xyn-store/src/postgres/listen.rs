//! The listener: one connection per process that LISTENs on the signal channel and turns
//! notifications into wake-ups, reconnecting with a backoff.

use super::*;

// ---------------------------------------------------------------------------------------------
// The listener.

pub(super) async fn listener_loop(
    pc: tokio_postgres::Config,
    target: String,
    signals: broadcast::Sender<Signal>,
    ready: Arc<tokio::sync::Notify>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        match pc.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let (ntx, mut nrx) = mpsc::unbounded_channel();
                let pump = tokio::spawn(async move {
                    let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(m) = stream.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(n)) => {
                                if ntx.send(n.payload().to_string()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::debug!(error = %e, "listener connection ended");
                                break;
                            }
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    tracing::warn!(error = %e, "cannot LISTEN; retrying");
                    pump.abort();
                } else {
                    backoff = Duration::from_millis(100);
                    if first {
                        first = false;
                        ready.notify_one();
                    } else {
                        tracing::info!(store = %target, "reconnected to PostgreSQL");
                        let _ = signals.send(Signal::Reconnected);
                    }
                    while let Some(p) = nrx.recv().await {
                        let s = match p.as_str() {
                            "outbox" => Signal::Outbox,
                            "work" => Signal::Work,
                            "catalog" => Signal::Catalog,
                            other => {
                                match other.strip_prefix("cancel:").and_then(|r| r.parse().ok()) {
                                    Some(id) => Signal::Cancel(id),
                                    None => continue,
                                }
                            }
                        };
                        let _ = signals.send(s);
                    }
                    pump.abort();
                    drop(client);
                    tracing::warn!(store = %target, "lost the PostgreSQL listener connection; reconnecting");
                }
            }
            Err(e) => {
                if first {
                    first = false;
                    ready.notify_one();
                }
                tracing::warn!(store = %target, error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "cannot reach PostgreSQL");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
