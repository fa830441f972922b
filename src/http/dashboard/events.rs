//! `GET /api/v1/events`: every envelope as a Server-Sent Event, resumable with `Last-Event-ID`.
//!
//! One [`EventLog`] task per process reads [`EventSink::subscribe`], numbers each envelope
//! and keeps the newest [`BUFFER`] of them. Each event's id is `<boot>-<seq>`: `boot` names
//! this process (it changes when the operator restarts), `seq` counts from 1. A client that
//! reconnects with `Last-Event-ID` (the header browsers send, or `?lastEventId=` for scripts)
//! first gets what it missed from the buffer, then the live stream:
//!
//! - same `boot`: every buffered envelope after `seq`;
//! - another `boot` (the operator restarted): every envelope published since this process
//!   started (those it loaded from the sink at start may have been seen already);
//! - nothing, or a malformed id: only the live stream.
//!
//! Every connection starts with `event: hello` (`{"boot": …}`), so a page can tell that it is
//! talking to a new process and reload its state. A client too slow to keep up gets
//! `event: reset` and should reload, rather than slowing the operator down. When the policies
//! in force or the file source's reload status change (a file edited, broken or fixed),
//! `event: policies` (`{}`) tells the page to read `/api/v1/policies` and `/api/v1/reload` again.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::bus::EventSink;
use crate::http::ApiState;
use crate::model::wire::Envelope;

/// How many envelopes are kept for resuming clients.
pub(crate) const BUFFER: usize = 1000;

/// How long a browser waits before reconnecting (the SSE `retry` field).
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// One numbered envelope, serialised once for every client.
#[derive(Clone, Debug)]
pub(crate) struct Numbered {
    /// Position in this process's stream, from 1.
    pub seq: u64,
    /// The envelope as JSON.
    pub json: Arc<str>,
}

#[derive(Debug, Default)]
struct Buffer {
    entries: VecDeque<Numbered>,
    next: u64,
    /// Entries up to this seq were loaded from the sink at start, not published since.
    seeded: u64,
}

/// The numbered recent envelopes and the live feed of new ones.
#[derive(Debug)]
pub struct EventLog {
    boot: String,
    buffer: Mutex<Buffer>,
    live: broadcast::Sender<Numbered>,
    /// Cancelled when the operator shuts down: every open stream ends, so the HTTP server's
    /// graceful shutdown does not wait for them forever.
    closing: CancellationToken,
}

/// Where a reconnecting client resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Live only.
    Live,
    /// Buffered envelopes with a seq above this one, then live.
    After(u64),
}

impl EventLog {
    /// An empty log named by a fresh boot id.
    pub fn new() -> Self {
        Self {
            boot: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            buffer: Mutex::new(Buffer {
                next: 1,
                ..Buffer::default()
            }),
            live: broadcast::channel(crate::bus::LIVE_CAPACITY).0,
            closing: CancellationToken::new(),
        }
    }

    /// This process's boot id, the first half of every event id.
    pub(crate) fn boot(&self) -> &str {
        &self.boot
    }

    /// Loads the sink's recent envelopes, then follows it until `shutdown`. The subscription is
    /// taken before the recent ones are read, so nothing published in between is lost.
    pub fn spawn(self: &Arc<Self>, sink: Arc<dyn EventSink>, shutdown: CancellationToken) {
        let mut rx = sink.subscribe();
        let log = self.clone();
        tokio::spawn(async move {
            for envelope in sink.recent(None, BUFFER).await {
                log.record(&envelope);
            }
            {
                let mut b = log.buffer.lock().expect("event log mutex");
                b.seeded = b.next - 1;
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        log.closing.cancel();
                        return;
                    }
                    got = rx.recv() => match got {
                        Ok(envelope) => {
                            log.record(&envelope);
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "the event stream fell behind the sink");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
    }

    /// Numbers and keeps one envelope, and sends it to the live clients.
    pub(crate) fn record(&self, envelope: &Envelope) -> u64 {
        let json: Arc<str> = serde_json::to_string(envelope)
            .expect("an envelope is always serialisable")
            .into();
        let mut b = self.buffer.lock().expect("event log mutex");
        let seq = b.next;
        b.next += 1;
        let entry = Numbered { seq, json };
        b.entries.push_back(entry.clone());
        while b.entries.len() > BUFFER {
            b.entries.pop_front();
        }
        // Sent under the lock, so the live order is the seq order.
        let _ = self.live.send(entry);
        seq
    }

    /// Where a client sending `last_event_id` resumes.
    pub(crate) fn resume_point(&self, last_event_id: Option<&str>) -> Resume {
        let Some((boot, seq)) = last_event_id.and_then(|id| id.trim().rsplit_once('-')) else {
            return Resume::Live;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            return Resume::Live;
        };
        if boot == self.boot {
            Resume::After(seq)
        } else {
            Resume::After(self.buffer.lock().expect("event log mutex").seeded)
        }
    }

    /// The buffered envelopes after `resume`, and a live receiver taken at the same instant.
    pub(crate) fn attach(&self, resume: Resume) -> (Vec<Numbered>, broadcast::Receiver<Numbered>) {
        let b = self.buffer.lock().expect("event log mutex");
        let rx = self.live.subscribe();
        let replay = match resume {
            Resume::Live => Vec::new(),
            Resume::After(seq) => b.entries.iter().filter(|e| e.seq > seq).cloned().collect(),
        };
        (replay, rx)
    }

    fn event(&self, n: &Numbered) -> Event {
        Event::default()
            .id(format!("{}-{}", self.boot, n.seq))
            .data(&*n.json)
    }
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

/// `?lastEventId=` for clients that cannot set the header.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventsQuery {
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

/// The SSE handler.
pub(crate) async fn stream(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let log = state.events.clone();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id);
    let (replay, rx) = log.attach(log.resume_point(last.as_deref()));
    let hello = Event::default()
        .event("hello")
        .retry(RETRY)
        .data(serde_json::json!({"boot": log.boot()}).to_string());
    let replayed: Vec<Result<Event, Infallible>> = std::iter::once(hello)
        .chain(replay.iter().map(|n| log.event(n)))
        .map(Ok)
        .collect();
    let live = futures::stream::unfold((rx, log), |(mut rx, log)| async move {
        let event = match rx.recv().await {
            Ok(n) => log.event(&n),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                Event::default().event("reset").data("{}")
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), (rx, log)))
    });
    let policies = futures::stream::unfold(
        (state.policies.changed(), state.policies.reload_changed()),
        |(mut set, mut reload)| async move {
            tokio::select! {
                r = set.changed() => r.ok()?,
                r = reload.changed() => r.ok()?,
            }
            let event = Event::default().event("policies").data("{}");
            Some((Ok(event), (set, reload)))
        },
    );
    let closing = state.events.closing.clone();
    Sse::new(
        futures::stream::select(futures::stream::iter(replayed).chain(live), policies)
            .take_until(closing.cancelled_owned()),
    )
    .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::wire::EventType;

    fn envelope(i: u64) -> Envelope {
        Envelope::new(EventType::FalseAlarm, serde_json::json!({"i": i}))
    }

    #[test]
    fn a_client_resumes_after_the_last_event_it_saw_in_this_process() {
        let log = EventLog::new();
        for i in 1..=5 {
            assert_eq!(log.record(&envelope(i)), i);
        }
        let id = format!("{}-3", log.boot());
        assert_eq!(log.resume_point(Some(&id)), Resume::After(3));
        let (replay, _rx) = log.attach(Resume::After(3));
        assert_eq!(replay.iter().map(|n| n.seq).collect::<Vec<_>>(), [4, 5]);
        assert!(replay[0].json.contains("\"i\":4"));
    }

    #[test]
    fn an_id_from_another_process_replays_what_this_one_published_since_it_started() {
        let log = EventLog::new();
        log.record(&envelope(1)); // loaded from the sink at start
        log.buffer.lock().unwrap().seeded = 1;
        log.record(&envelope(2));
        assert_eq!(log.resume_point(Some("0123456789ab-40")), Resume::After(1));
        for bad in [None, Some(""), Some("nodash"), Some("x-y")] {
            assert_eq!(log.resume_point(bad), Resume::Live, "{bad:?}");
        }
    }

    #[test]
    fn the_buffer_keeps_the_newest_envelopes_and_live_clients_get_new_ones_in_order() {
        let log = EventLog::new();
        for i in 0..(BUFFER as u64 + 10) {
            log.record(&envelope(i));
        }
        let (replay, mut rx) = log.attach(Resume::After(0));
        assert_eq!(replay.len(), BUFFER);
        assert_eq!(replay[0].seq, 11);
        log.record(&envelope(99));
        assert_eq!(rx.try_recv().unwrap().seq, BUFFER as u64 + 11);
    }
}
