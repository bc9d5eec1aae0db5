//! The `log` import: the plugin's messages in the host's `tracing` output, attributed to
//! the plugin and the event being handled. Bounded per invocation in size and number, so a
//! plugin cannot flood the host's log or memory.

use super::HostState;
use crate::runtime::bindings::log::{Host, Level};

/// Messages kept per invocation for the caller (`plugin invoke`, fixtures).
const MAX_KEPT: usize = 100;

/// How much one invocation may log (`limits.log_messages`, `limits.log_message_bytes`).
#[derive(Debug)]
pub struct LogBudget {
    pub max_messages: usize,
    pub max_bytes: usize,
    written: usize,
    dropped: usize,
}

impl LogBudget {
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            max_messages,
            max_bytes,
            written: 0,
            dropped: 0,
        }
    }

    /// Messages refused because the invocation had logged `max_messages` already.
    pub fn dropped(&self) -> usize {
        self.dropped
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, saying so.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let total = text.len();
        text.truncate(cut);
        text.push_str(&format!(" [truncated: {total} bytes]"));
    }
    text
}

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) {
        if self.log.written >= self.log.max_messages {
            self.log.dropped += 1;
            return;
        }
        self.log.written += 1;
        let message = truncate(message, self.log.max_bytes);
        let plugin = self.plugin.as_str();
        let event_id = self.event_id.as_deref().unwrap_or("-");
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, event_id, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, event_id, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, event_id, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, event_id, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, event_id, "{message}"),
        }
        if self.logs.len() < MAX_KEPT {
            self.logs.push((level, message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("ééé".into(), 3);
        assert!(
            cut.starts_with('é') && cut.contains("[truncated: 6 bytes]"),
            "{cut}"
        );
    }
}
