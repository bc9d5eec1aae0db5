//! What a guest writes to stdout and stderr. Language runtimes print there (a Python
//! traceback, a JavaScript exception, a Rust panic message), so it is kept, bounded, for
//! the host's log and for the reason of a trap; the guest never sees a full pipe.

use bytes::Bytes;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// What the guest wrote to its stdout and stderr during one invocation, as kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestOutput {
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

/// One stream's output of one invocation: the first half of the budget and the last
/// half, with a count of what was skipped between them.
#[derive(Clone)]
pub struct Captured(Arc<Mutex<Kept>>);

struct Kept {
    half: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    skipped: u64,
}

impl Captured {
    pub fn new(max_bytes: usize) -> Self {
        Self(Arc::new(Mutex::new(Kept {
            half: (max_bytes / 2).max(1),
            head: Vec::new(),
            tail: VecDeque::new(),
            skipped: 0,
        })))
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        // A panic while holding this lock cannot leave the buffers inconsistent enough to
        // matter: they only ever hold bytes for the log.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn push(&self, mut bytes: &[u8]) {
        let mut kept = self.kept();
        let room = kept.half - kept.head.len();
        let into_head = room.min(bytes.len());
        kept.head.extend_from_slice(&bytes[..into_head]);
        bytes = &bytes[into_head..];
        if bytes.len() >= kept.half {
            kept.skipped += (kept.tail.len() + bytes.len() - kept.half) as u64;
            kept.tail.clear();
            bytes = &bytes[bytes.len() - kept.half..];
        }
        let overflow = (kept.tail.len() + bytes.len()).saturating_sub(kept.half);
        kept.tail.drain(..overflow);
        kept.skipped += overflow as u64;
        kept.tail.extend(bytes);
    }

    /// Everything kept, as text; `None` when the guest wrote nothing.
    pub fn text(&self) -> Option<String> {
        let kept = self.kept();
        if kept.head.is_empty() {
            return None;
        }
        let (a, b) = kept.tail.as_slices();
        let tail = [a, b].concat();
        if kept.skipped == 0 {
            // Head and tail are contiguous: a character split between them stays whole.
            let whole = [kept.head.as_slice(), &tail].concat();
            return Some(String::from_utf8_lossy(&whole).into_owned());
        }
        let mut text = String::from_utf8_lossy(&kept.head).into_owned();
        text.push_str(&format!("\n[... {} bytes skipped ...]\n", kept.skipped));
        text.push_str(&String::from_utf8_lossy(&tail));
        Some(text)
    }

    /// The last `n` non-empty lines kept, oldest first.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let Some(text) = self.text() else {
            return Vec::new();
        };
        let mut lines: Vec<String> = text
            .lines()
            .rev()
            .filter(|line| !line.trim().is_empty())
            .take(n)
            .map(str::to_owned)
            .collect();
        lines.reverse();
        lines
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Always ready and never full: what does not fit is skipped, not refused, so a chatty
/// guest never fails or blocks on a write.
const WRITE_PERMIT: usize = 64 << 10;

impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_and_last_bytes_and_counts_the_rest() {
        let out = Captured::new(8);
        assert_eq!(out.text(), None);
        out.push(b"ab");
        out.push(b"cdefgh");
        out.push(b"ijkl");
        assert_eq!(out.text().unwrap(), "abcd\n[... 4 bytes skipped ...]\nijkl");
        out.push(b"0123456789");
        assert_eq!(
            out.text().unwrap(),
            "abcd\n[... 14 bytes skipped ...]\n6789"
        );
    }

    #[test]
    fn small_output_is_kept_whole() {
        let out = Captured::new(1024);
        out.push(b"Traceback (most recent call last):\n  File \"app.py\"\n\nValueError: bad\n");
        assert_eq!(
            out.last_lines(2),
            vec![
                "  File \"app.py\"".to_string(),
                "ValueError: bad".to_string()
            ]
        );
        assert_eq!(out.last_lines(10).len(), 3);
    }
}
