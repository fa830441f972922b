//! The engine's own `die` and `start` events of a test run, followed in the background with
//! the engine's `timeNano` and when this process received them. Included with
//! `#[path = "support/events.rs"] mod events;`.
#![allow(dead_code)] // each bench uses a different subset

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::EventsOptions;
use chrono::{DateTime, Utc};
use futures::StreamExt;

/// One engine event as the bench saw it.
#[derive(Clone)]
pub struct Seen {
    /// `die`, `start`, …
    pub action: String,
    /// The engine's `timeNano`.
    pub at: DateTime<Utc>,
    /// When this bench's subscription received it (same host, same clock).
    pub received: DateTime<Utc>,
}

/// Engine events seen so far: container id → events in arrival order.
pub type Events = Arc<Mutex<HashMap<String, Vec<Seen>>>>;

/// Follows the engine's `die` and `start` events of the run's containers in the background.
pub async fn follow(run_label: &str) -> Events {
    let docker = Docker::connect_with_defaults().expect("a Docker client");
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), vec![run_label.to_string()]),
        (
            "event".to_string(),
            vec!["die".to_string(), "start".to_string()],
        ),
    ]);
    let mut stream = Box::pin(docker.events(Some(EventsOptions {
        filters: Some(filters),
        ..Default::default()
    })));
    let events: Events = Arc::default();
    let sink = events.clone();
    tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            let event = event.expect("the engine's event stream failed");
            let (Some(action), Some(nanos), Some(id)) = (
                event.action,
                event.time_nano,
                event.actor.and_then(|a| a.id),
            ) else {
                continue;
            };
            let seen = Seen {
                action,
                at: DateTime::from_timestamp_nanos(nanos),
                received: Utc::now(),
            };
            sink.lock().unwrap().entry(id).or_default().push(seen);
        }
    });
    // The stream is live once the engine answered the request: give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    events
}

/// The first `die` of `id`, and the first `start` after it.
pub fn die_and_back(events: &Events, id: &str) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    let seen = events.lock().unwrap();
    let evs = seen.get(id)?;
    let die_pos = evs.iter().position(|e| e.action == "die")?;
    let back = evs[die_pos..]
        .iter()
        .find(|e| e.action == "start")
        .map(|e| e.at);
    Some((evs[die_pos].at, back))
}

/// `p50 / p95 / p99 / max` in milliseconds (nearest rank), `-` when empty.
pub fn quantiles(values: &[Duration]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let mut v = values.to_vec();
    v.sort();
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "{:.0} / {:.0} / {:.0} / {:.0}",
        ms(rank(0.50)),
        ms(rank(0.95)),
        ms(rank(0.99)),
        ms(*v.last().unwrap())
    )
}
