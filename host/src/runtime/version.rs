//! Which contract version a component was built against, read from its import and export
//! names (`eventhost:plugin/handler@0.1.0`), so a mismatch is refused with a message that
//! names both versions instead of a linker error about a missing instance.

use super::bindings::{WIT_PACKAGE, WIT_VERSION};
use wasmtime::component::Component;
use wasmtime::Engine;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VersionError {
    #[error("the component targets {WIT_PACKAGE}@{found}, but this host supports {WIT_PACKAGE}@{WIT_VERSION}; rebuild the plugin against this host's wit/ (or run a host that supports {found})")]
    Unsupported { found: String },
    #[error("the component does not export {WIT_PACKAGE}/handler: it is not an eventhost plugin (exports: {exports})")]
    NotAPlugin { exports: String },
}

/// Versions are compatible when they share the semver track wasmtime links against:
/// the major version, or for 0.x the minor too.
fn compatible(found: &str) -> bool {
    let track = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(if major == 0 {
            (0, minor)
        } else {
            (major, u64::MAX)
        })
    };
    track(found).is_some() && track(found) == track(WIT_VERSION)
}

pub fn check(component: &Component, engine: &Engine) -> Result<(), VersionError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let imports = ty.imports(engine).map(|(name, _)| name.to_string());
    let prefix = format!("{WIT_PACKAGE}/");
    for name in exports.iter().cloned().chain(imports) {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let found = rest
            .split_once('@')
            .map(|(_, v)| v)
            .unwrap_or("(unversioned)");
        if !compatible(found) {
            return Err(VersionError::Unsupported {
                found: found.to_string(),
            });
        }
    }
    if !exports
        .iter()
        .any(|e| e.starts_with(&format!("{prefix}handler")))
    {
        return Err(VersionError::NotAPlugin {
            exports: exports.join(", "),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn semver_tracks() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.7"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("1.0.0"));
        assert!(!compatible("garbage"));
    }
}
