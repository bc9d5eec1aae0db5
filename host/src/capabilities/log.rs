//! The `log` import: the plugin's messages in the host's `tracing` output, attributed to
//! the plugin and the event being handled.

use super::HostState;
use crate::runtime::bindings::log::{Host, Level};

/// Longer messages are cut, so a plugin cannot flood the host's log with one call.
const MAX_MESSAGE: usize = 8 * 1024;
/// Messages kept per invocation for the caller (the tracing output gets them all).
const MAX_KEPT: usize = 100;

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) {
        let mut message = message;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [truncated]");
        }
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
