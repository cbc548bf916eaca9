//! Reads a server-sent event stream frame by frame.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;

/// One frame: its fields, or a comment.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

impl Frame {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("a frame of JSON")
    }
}

/// An open stream.
pub struct Reader {
    bytes: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Reader {
    pub fn new(response: reqwest::Response) -> Self {
        Reader {
            bytes: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next frame, comments included; `None` when the stream ended.
    /// Fails the test after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        tokio::time::timeout(within, self.read())
            .await
            .unwrap_or_else(|_| panic!("no frame within {within:?}"))
    }

    /// The next frame that carries data.
    pub async fn next_event(&mut self, within: Duration) -> Frame {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(frame) if frame.comment.is_none() => return frame,
                Some(_) => {}
                None => panic!("the stream ended"),
            }
        }
    }

    /// Asserts no data frame comes within `quiet` (comments may).
    pub async fn no_event_within(&mut self, quiet: Duration) {
        if let Ok(Some(frame)) = tokio::time::timeout(quiet, self.next_data()).await {
            panic!("an unexpected frame: {frame:?}");
        }
    }

    async fn next_data(&mut self) -> Option<Frame> {
        loop {
            match self.read().await {
                Some(frame) if frame.comment.is_some() => {}
                other => return other,
            }
        }
    }

    async fn read(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let text: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&text));
            }
            let chunk = self.bytes.next().await?.ok()?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 frames"));
        }
    }
}

fn parse(text: &str) -> Frame {
    let mut frame = Frame::default();
    let mut data = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            frame.comment = Some(comment.trim().to_owned());
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => frame.id = Some(value),
                "event" => frame.event = Some(value),
                "data" => data.push(value),
                _ => {}
            }
        }
    }
    frame.data = data.join("\n");
    frame
}
