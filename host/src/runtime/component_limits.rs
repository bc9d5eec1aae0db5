//! A valid component that is bigger than the host allows is refused with the limit it
//! passed, its own value and the config key that raises it, never as "not a valid
//! component". Wasmtime's pooling allocator checks these as it compiles; its refusal is a
//! message, so the figures are read back from it.

use crate::config::Limits;
use std::fmt;

/// Which limit a component passed, and by how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentLimit {
    /// What was counted: "core module instances", "bytes", ...
    pub what: &'static str,
    pub value: u64,
    pub limit: u64,
    /// The config key, under `[limits]`.
    pub key: &'static str,
}

impl fmt::Display for ComponentLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the component has {} {}, more than this host allows ({}); raise limits.{} to load it",
            self.value, self.what, self.limit, self.key
        )
    }
}

impl std::error::Error for ComponentLimit {}

/// The file itself, checked before it is read or compiled.
pub fn check_size(bytes: u64, limits: &Limits) -> Result<(), ComponentLimit> {
    let limit = limits.component_bytes as u64;
    if bytes > limit {
        return Err(ComponentLimit {
            what: "bytes",
            value: bytes,
            limit,
            key: "component_bytes",
        });
    }
    Ok(())
}

/// Wasmtime's phrase before the component's figure, what it counts, and the key.
const REFUSALS: &[(&str, &str, &str)] = &[
    (
        "transitively contains ",
        " core module instances",
        "component_core_instances",
    ),
    (
        "transitively contains ",
        " Wasm linear memories",
        "component_memories",
    ),
    ("transitively contains ", " tables,", "component_tables"),
    (
        "defined memories count of ",
        " exceeds",
        "component_memories",
    ),
    (
        "defined tables count of ",
        " exceeds the per-instance",
        "component_tables",
    ),
    ("memory has a minimum byte size of ", "", "memory"),
    ("has a minimum element size of ", "", "table_elements"),
];

/// Reads a pooling-allocator refusal back into the limit it names; `None` when the
/// error is something else (the bytes are not a component, say).
pub fn recognise(error: &wasmtime::Error, limits: &Limits) -> Option<ComponentLimit> {
    let message = format!("{error:#}");
    REFUSALS.iter().find_map(|&(before, after, key)| {
        let start = message.find(before)? + before.len();
        let digits: String = message[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let rest = &message[start + digits.len()..];
        if !rest.starts_with(after) {
            return None;
        }
        let (what, limit) = match key {
            "component_core_instances" => (
                "core module instances",
                limits.component_core_instances as u64,
            ),
            "component_memories" => ("linear memories", limits.component_memories as u64),
            "component_tables" => ("tables", limits.component_tables as u64),
            "memory" => ("bytes of initial linear memory", limits.memory as u64),
            _ => ("initial table elements", limits.table_elements as u64),
        };
        Some(ComponentLimit {
            what,
            value: digits.parse().ok()?,
            limit,
            key,
        })
    })
}

/// Whether `error` is such a refusal (whatever the limits' values).
pub fn is_refusal(error: &wasmtime::Error) -> bool {
    recognise(error, &Limits::default()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wasmtimes_refusals_back() {
        let limits = Limits::default();
        let cases = [
            ("The component transitively contains 14 core module instances, which exceeds the configured maximum of 8 in the pooling allocator", "component_core_instances", 14),
            ("The component transitively contains 3 Wasm linear memories, which exceeds the configured maximum of 2 in the pooling allocator", "component_memories", 3),
            ("The component transitively contains 9 tables, which exceeds the configured maximum of 8 in the pooling allocator", "component_tables", 9),
            ("module memory does not fit in pooling allocator requirements: defined memories count of 3 exceeds the per-instance limit of 2", "component_memories", 3),
            ("module table does not fit in pooling allocator requirements: defined tables count of 9 exceeds the per-instance limit of 8", "component_tables", 9),
            ("module memory does not fit in pooling allocator requirements: memory has a minimum byte size of 134217728 which exceeds the limit of 67108864 bytes", "memory", 134217728),
        ];
        for (message, key, value) in cases {
            let found = recognise(&wasmtime::Error::msg(message), &limits).expect(message);
            assert_eq!((found.key, found.value), (key, value), "{message}");
            assert!(found.to_string().contains(&format!("limits.{key}")));
        }
        assert_eq!(
            recognise(&wasmtime::Error::msg("magic header not detected"), &limits),
            None
        );
    }

    #[test]
    fn a_file_over_component_bytes_is_refused_by_size() {
        let limits = Limits {
            component_bytes: 100,
            ..Limits::default()
        };
        assert!(check_size(100, &limits).is_ok());
        let refused = check_size(101, &limits).unwrap_err();
        assert_eq!(
            (refused.value, refused.limit, refused.key),
            (101, 100, "component_bytes")
        );
    }
}
