//! Reading a Server-Sent Events response the way a browser's EventSource
//! does, for the tests of the REST streams.

use std::time::Duration;

use futures::StreamExt as _;

/// One parsed Server-Sent Event.
#[derive(Debug)]
pub struct SseEvent {
    /// `event:` (`message` when absent).
    pub event: String,
    /// `id:`, what a reconnect sends as `Last-Event-ID`.
    pub id: Option<String>,
    /// Every `data:` line, joined.
    pub data: String,
}

/// Reads events from an SSE response (keep-alive comments skipped) until
/// `done` says the events so far are enough; panics, with what it got, if
/// the stream ends or stalls first or `timeout` passes.
pub async fn read_sse(
    response: reqwest::Response,
    timeout: Duration,
    done: impl Fn(&[SseEvent]) -> bool,
) -> Vec<SseEvent> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(&events) {
        let next = tokio::time::timeout_at(deadline, body.next()).await;
        let Ok(Some(Ok(bytes))) = next else {
            panic!("the stream ended or stalled; events {events:?}");
        };
        buffer.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(at) = buffer.find("\n\n") {
            let block: String = buffer.drain(..at + 2).collect();
            let mut event = SseEvent {
                event: "message".into(),
                id: None,
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event.event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    event.data.push_str(v.trim_start());
                } else if let Some(v) = line.strip_prefix("id:") {
                    event.id = Some(v.trim().to_string());
                }
            }
            if event.data.is_empty() && event.event == "message" {
                continue; // a keep-alive comment
            }
            events.push(event);
            if done(&events) {
                break;
            }
        }
    }
    events
}
