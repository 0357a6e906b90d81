//! Minimal client-side SSE reader for OpenAI streams (`data: {...}` lines, blank line
//! between events, `data: [DONE]` at the end).

use futures_util::{Stream, StreamExt};

/// Longest SSE line accepted; a server sending more is broken or hostile.
const MAX_LINE_BYTES: usize = 16 << 20;

/// Why reading a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// Transport error.
    #[error("stream read failed: {0}")]
    Http(#[from] reqwest::Error),
    /// A line exceeded [`MAX_LINE_BYTES`].
    #[error("SSE line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
}

/// Splits a byte stream into SSE `data` payloads.
pub struct SseReader<S> {
    inner: S,
    buf: Vec<u8>,
    data: Vec<String>,
    ended: bool,
}

impl<S, B> SseReader<S>
where
    S: Stream<Item = Result<B, reqwest::Error>> + Unpin,
    B: AsRef<[u8]>,
{
    /// Reads from a response's `bytes_stream()`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            data: Vec::new(),
            ended: false,
        }
    }

    /// The next event's data (multi-line data joined by `\n`), `None` at the end.
    pub async fn next_data(&mut self) -> Option<Result<String, SseError>> {
        loop {
            while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8_lossy(&line).into_owned();
                if line.is_empty() {
                    if !self.data.is_empty() {
                        return Some(Ok(std::mem::take(&mut self.data).join("\n")));
                    }
                } else if let Some(rest) = line.strip_prefix("data:") {
                    self.data
                        .push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
                }
                // Comments (`:`) and other fields (event, id, retry) are ignored.
            }
            if self.buf.len() > MAX_LINE_BYTES {
                return Some(Err(SseError::LineTooLong));
            }
            if self.ended {
                if !self.data.is_empty() {
                    return Some(Ok(std::mem::take(&mut self.data).join("\n")));
                }
                return None;
            }
            match self.inner.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(chunk.as_ref()),
                Some(Err(e)) => return Some(Err(SseError::Http(e))),
                None => {
                    self.ended = true;
                    if !self.buf.is_empty() {
                        self.buf.push(b'\n');
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_events_across_chunks() {
        let chunks: Vec<Result<&'static [u8], reqwest::Error>> = vec![
            Ok(b": keep-alive\n\ndata: {\"a\"".as_slice()),
            Ok(b":1}\r\n\r\ndata: [DONE]\n".as_slice()),
        ];
        let mut r = SseReader::new(futures_util::stream::iter(chunks));
        assert_eq!(r.next_data().await.unwrap().unwrap(), "{\"a\":1}");
        assert_eq!(r.next_data().await.unwrap().unwrap(), "[DONE]");
        assert!(r.next_data().await.is_none());
    }
}
