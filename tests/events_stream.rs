//! `GET /api/v1/events` over real HTTP: envelopes as Server-Sent Events, resumed with `Last-Event-ID`, and ended when the server shuts down.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use hemostat::bus::EventSink;
use hemostat::bus::memory::MemorySink;
use hemostat::http::dashboard::events::EventLog;
use hemostat::http::{ApiState, serve};
use hemostat::metrics::Metrics;
use hemostat::model::wire::{Envelope, EventType};
use hemostat::policy::registry::PolicyRegistry;
use hemostat::store::memory::MemoryStore;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// One parsed SSE event.
#[derive(Debug, Default, Clone)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Reads events from a response until `n` have arrived (or 10 s pass).
async fn read_events(mut response: reqwest::Response, n: usize) -> Vec<Sse> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events: {out:?}", out.len()))
            .unwrap()
            .expect("the stream ended");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut e = Sse::default();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    e.id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    e.event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    e.data.push_str(v);
                }
            }
            if !e.data.is_empty() {
                out.push(e);
            }
        }
    }
    out
}

#[tokio::test]
async fn the_event_stream_sends_envelopes_and_resumes_after_the_last_event_id() {
    let sink = Arc::new(MemorySink::default());
    sink.publish(Envelope::new(
        EventType::HealthAlert,
        json!({"container": "before-start"}),
    ))
    .await;
    let shutdown = CancellationToken::new();
    let events = Arc::new(EventLog::new());
    events.spawn(sink.clone(), shutdown.clone());
    let state = ApiState {
        ready: Arc::new(AtomicBool::new(true)),
        observed: Default::default(),
        sink: sink.clone(),
        store: Arc::new(MemoryStore::ephemeral()),
        policies: Arc::new(PolicyRegistry::new(vec![])),
        metrics: Arc::new(Metrics::new()),
        node: "n".into(),
        events: events.clone(),
        access: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(serve(listener, state, shutdown.clone()));
    let http = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Live: hello first, then each envelope as it is published.
    let live = http
        .get(format!("{base}/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let publisher = {
        let sink = sink.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for i in 1..=3 {
                sink.publish(Envelope::new(
                    EventType::FalseAlarm,
                    json!({"container": format!("c{i}")}),
                ))
                .await;
            }
        })
    };
    let got = read_events(live, 4).await;
    publisher.await.unwrap();
    assert_eq!(got[0].event.as_deref(), Some("hello"));
    let boot = serde_json::from_str::<serde_json::Value>(&got[0].data).unwrap()["boot"]
        .as_str()
        .unwrap()
        .to_owned();
    let containers: Vec<String> = got[1..]
        .iter()
        .map(|e| {
            serde_json::from_str::<Envelope>(&e.data).unwrap().data["container"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(containers, ["c1", "c2", "c3"]);
    // The envelope loaded at start is #1; the live ones follow.
    assert_eq!(got[1].id.as_deref(), Some(format!("{boot}-2").as_str()));

    // Resume after c1: c2 and c3 come from the buffer, then a new one live.
    let resumed = http
        .get(format!("{base}/api/v1/events"))
        .header("last-event-id", format!("{boot}-2"))
        .send()
        .await
        .unwrap();
    let later = {
        let sink = sink.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sink.publish(Envelope::new(
                EventType::HealthAlert,
                json!({"container": "c4"}),
            ))
            .await;
        })
    };
    let got = read_events(resumed, 4).await;
    later.await.unwrap();
    let ids: Vec<&str> = got[1..].iter().map(|e| e.id.as_deref().unwrap()).collect();
    assert_eq!(
        ids,
        [
            format!("{boot}-3"),
            format!("{boot}-4"),
            format!("{boot}-5")
        ]
    );
    assert!(got[3].data.contains("\"c4\""));

    // An id from another process (the operator restarted): what this one published since it
    // started, not what it loaded at start.
    let other = http
        .get(format!("{base}/api/v1/events?lastEventId=0123456789ab-77"))
        .send()
        .await
        .unwrap();
    let got = read_events(other, 5).await;
    assert!(
        got[1..].iter().all(|e| !e.data.contains("before-start")),
        "{got:?}"
    );
    assert_eq!(got[1].id.as_deref(), Some(format!("{boot}-2").as_str()));

    // Shutdown ends open streams, so the server stops instead of waiting for them.
    let open = http
        .get(format!("{base}/api/v1/events"))
        .send()
        .await
        .unwrap();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stopped with a stream open")
        .unwrap()
        .unwrap();
    drop(open);
}
