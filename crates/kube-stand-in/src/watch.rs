//! Watch streams: a chunked HTTP body of newline-delimited watch events. A watch from a
//! resourceVersion replays the history after it (410 Expired as an ERROR event when history
//! no longer reaches back), one without starts with the current objects as ADDED; then live
//! events follow, with BOOKMARKs when asked for, until the timeout or the connection ends.

use super::http::{ResponseBody, Shared};
use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{StoredEvent, event_matches};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

pub(crate) struct WatchRequest {
    pub resource: &'static ResourceType,
    /// Empty: all namespaces.
    pub namespace: String,
    pub fields: FieldSelector,
    pub labels: LabelSelector,
    /// `None` (or "0" on the wire): start from the current state.
    pub since: Option<u64>,
    pub bookmarks: bool,
    pub timeout: Duration,
}

/// A response body fed from a channel: each message is one chunk.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn line(event_type: &str, object: &Value) -> Bytes {
    let mut text = json!({ "type": event_type, "object": object }).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn error_line(error: &ApiError) -> Bytes {
    line("ERROR", &error.to_status())
}

impl WatchRequest {
    fn wants(&self, event: &StoredEvent) -> bool {
        event_matches(
            event,
            self.resource,
            &self.namespace,
            self.fields.name.as_deref(),
        ) && self.fields.matches(&event.object)
            && self.labels.matches(&event.object)
    }

    fn bookmark(&self, resource_version: u64) -> Value {
        json!({
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(),
            "metadata": { "resourceVersion": resource_version.to_string() }
        })
    }
}

/// Starts a watch; the body streams until the timeout, a server cut, or the client leaving.
pub(crate) fn start(shared: &Arc<Shared>, request: WatchRequest) -> ResponseBody {
    let start = {
        let store = shared.store();
        match request.since {
            None => Ok(store.current_state(request.resource, &request.namespace)),
            Some(since) => store.events_since(since),
        }
    };
    let (sender, receiver) = mpsc::channel(64);
    let body = ChannelBody(receiver).boxed();
    let (initial, mut live) = match start {
        Ok(start) => start,
        Err(expired) => {
            // The real server answers 200 and reports the 410 as the stream's only event.
            let _ = sender.try_send(error_line(&expired));
            return body;
        }
    };
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        for event in initial.iter().filter(|e| request.wants(e)) {
            if sender
                .send(line(event.event_type.as_str(), &event.object))
                .await
                .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(request.timeout);
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval(shared.bookmark_interval);
        bookmarks.tick().await;
        loop {
            let chunk = tokio::select! {
                () = &mut deadline => return,
                () = sender.closed() => return,
                _ = bookmarks.tick(), if request.bookmarks => {
                    let version = shared.store().resource_version();
                    line("BOOKMARK", &request.bookmark(version))
                }
                received = live.recv() => match received {
                    Ok(event) if request.wants(&event) => line(event.event_type.as_str(), &event.object),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let version = shared.store().resource_version();
                        let _ = sender.send(error_line(&ApiError::expired(0, version))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if sender.send(chunk).await.is_err() {
                return;
            }
        }
    });
    body
}
