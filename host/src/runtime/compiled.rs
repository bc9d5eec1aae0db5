//! Compiled components on disk, so a restart or a re-drop of the same file does not run
//! Cranelift again (seconds for a Python or JavaScript component).
//!
//! An entry is named by the component's SHA-256 and a hash of the wasmtime version and
//! engine settings, and starts with a digest of the compiled bytes after it (SHA-256 over
//! the SHA-256s of its 4 MiB chunks, so the chunks hash on every core: the check is most
//! of a warm load). Before an
//! entry is used its digest is checked and wasmtime checks that it was made by this
//! version with these settings; a stale, truncated or altered entry is removed and the
//! component compiled again. Loading compiled code is as trusting as running the host
//! binary, so the directory must belong to the host's user and be writable by no one else.
//! The directory stays under 1 GiB: the least recently used entries go first.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

const MAGIC: &[u8; 8] = b"EVHCWAS2";
const HEADER: usize = MAGIC.len() + 32;
const CHUNK: usize = 4 << 20;
/// The directory is kept under this size: after a new entry is stored, the entries used
/// least recently (by mtime, which a hit refreshes) are removed.
const BUDGET: u64 = 1 << 30;

/// Where compiled components are kept; `None` compiles every time.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
    budget: u64,
}

/// How a component was obtained, for the load's log line and the benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Compiled,
    Cached,
}

impl CompileCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            budget: BUDGET,
        }
    }

    /// The size the directory is kept under (1 GiB unless set).
    pub fn with_budget(self, bytes: u64) -> Self {
        Self {
            budget: bytes,
            ..self
        }
    }

    /// The component for `bytes` (whose SHA-256 is `digest`), from the cache when a sound
    /// entry is there, compiled (and stored) otherwise. Blocking: run it off the async
    /// workers.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> wasmtime::Result<(Component, Source)> {
        let Some(dir) = self.dir.as_deref().filter(|dir| usable(dir)) else {
            return Ok((Component::new(engine, bytes)?, Source::Compiled));
        };
        let path = dir.join(format!("{digest}-{}.cwasm", settings_hash(engine)));
        if let Some(component) = read_entry(engine, &path) {
            let _ = std::fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok((component, Source::Cached));
        }
        let component = Component::new(engine, bytes)?;
        match write_entry(&component, &path) {
            Ok(()) => prune(dir, &path, self.budget),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not store the compiled component; it will be compiled again next time")
            }
        }
        Ok((component, Source::Compiled))
    }
}

/// Made (0700) if missing; refused when someone other than the host's user could write
/// into it, since whatever is there gets executed.
fn usable(dir: &Path) -> bool {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the compile cache; compiling every time");
        return false;
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let open = meta.permissions().mode() & 0o022 != 0;
    if meta.uid() != me || open {
        tracing::warn!(dir = %dir.display(), "the compile cache is not private to this user (owner or group/other write); compiling every time");
        return false;
    }
    true
}

/// The wasmtime version and every engine setting that shapes compiled code (target, ISA
/// flags, tunables, features: wasmtime's own compatibility hash).
fn settings_hash(engine: &Engine) -> String {
    // SipHash with fixed keys: stable for one build of the host, which is all a cache
    // entry needs (another build may simply miss).
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn read_entry(engine: &Engine, path: &Path) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    let sound = data.len() > HEADER
        && &data[..MAGIC.len()] == MAGIC
        && data[MAGIC.len()..HEADER] == digest(&data[HEADER..])[..];
    let refused = if sound {
        // SAFETY: the bytes are what `write_entry` stored from `Component::serialize` (the
        // digest matches) in a directory only this user can write, and wasmtime refuses
        // an artefact of another version or other settings.
        match unsafe { Component::deserialize(engine, &data[HEADER..]) } {
            Ok(component) => return Some(component),
            Err(e) => format!("{e:#}"),
        }
    } else {
        "its digest does not match its contents".to_string()
    };
    tracing::warn!(path = %path.display(), reason = %refused, "discarding a compiled component from the cache; compiling again");
    let _ = std::fs::remove_file(path);
    None
}

/// Removes the least recently used entries (never `keep`) until the directory's entries
/// fit in `budget` bytes.
fn prune(dir: &Path, keep: &Path, budget: u64) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = listing
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total <= budget {
            break;
        }
        if path != keep && std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// Written to a temporary name and renamed, so a reader never sees half an entry and
/// hosts sharing the directory cannot interleave.
fn write_entry(component: &Component, path: &Path) -> std::io::Result<()> {
    let compiled = component
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let mut data = Vec::with_capacity(HEADER + compiled.len());
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&digest(&compiled));
    data.extend_from_slice(&compiled);
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, &data)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// SHA-256 over the SHA-256s of `CHUNK`-sized pieces, the pieces hashed in parallel. The
/// chunking is fixed, so the digest does not depend on the number of cores.
pub fn digest(data: &[u8]) -> [u8; 32] {
    let chunks: Vec<&[u8]> = data.chunks(CHUNK).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(chunks.len().max(1));
    let per_thread = chunks.len().div_ceil(threads).max(1);
    let mut digests = vec![[0u8; 32]; chunks.len()];
    std::thread::scope(|scope| {
        for (work, out) in chunks
            .chunks(per_thread)
            .zip(digests.chunks_mut(per_thread))
        {
            scope.spawn(move || {
                for (chunk, slot) in work.iter().zip(out.iter_mut()) {
                    *slot = Sha256::digest(chunk).into();
                }
            });
        }
    });
    let mut all = Sha256::new();
    for d in &digests {
        all.update(d);
    }
    all.finalize().into()
}
