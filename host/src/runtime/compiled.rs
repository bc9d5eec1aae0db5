//! Compiled components on disk, so a restart or a re-drop of the same file does not run
//! Cranelift again (seconds for a Python or JavaScript component).
//!
//! An entry is named by the component's SHA-256 and a hash of the wasmtime version and
//! engine settings, and starts with a digest of the compiled bytes after it (SHA-256 over
//! the SHA-256s of its 4 MiB chunks, so the chunks hash on every core). Before an entry
//! is used its digest is checked and wasmtime checks that it was made by this
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
        if let Some(component) = read_entry(engine, &path)? {
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

/// A sound entry's component; `Ok(None)` when there is none (or it was unsound and is
/// gone); `Err` when wasmtime refuses it under this host's limits, which compiling again
/// would not change (another host with other limits may still use the entry).
fn read_entry(engine: &Engine, path: &Path) -> wasmtime::Result<Option<Component>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = match std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Ok(discard(path, &format!("it cannot be opened: {e}"))),
    };
    // Checked on the open file, so what is read is what was checked.
    let private = file.metadata().is_ok_and(|meta| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        meta.is_file() && meta.uid() == unsafe { libc::geteuid() } && meta.mode() & 0o022 == 0
    });
    if !private {
        return Ok(discard(path, "it is not a private file of this user"));
    }
    let mut data = Vec::new();
    if let Err(e) = file.read_to_end(&mut data) {
        return Ok(discard(path, &format!("it cannot be read: {e}")));
    }
    let sound = data.len() > HEADER
        && &data[..MAGIC.len()] == MAGIC
        && data[MAGIC.len()..HEADER] == digest(&data[HEADER..])[..];
    if !sound {
        return Ok(discard(path, "its digest does not match its contents"));
    }
    // SAFETY: the bytes are what `write_entry` stored from `Component::serialize` (the
    // digest matches) in a private file of a directory only this user can write, and
    // wasmtime refuses an artefact of another version or other settings.
    match unsafe { Component::deserialize(engine, &data[HEADER..]) } {
        Ok(component) => Ok(Some(component)),
        Err(e) if super::component_limits::is_refusal(&e) => Err(e),
        Err(e) => Ok(discard(path, &format!("{e:#}"))),
    }
}

fn discard(path: &Path, why: &str) -> Option<Component> {
    tracing::warn!(path = %path.display(), reason = %why, "discarding a compiled component from the cache; compiling again");
    let _ = std::fs::remove_file(path);
    None
}

/// What a file in the directory is, by its name: only these are ever removed.
#[derive(PartialEq)]
enum Ours {
    Entry,
    Temporary,
}

fn ours(name: &str) -> Option<Ours> {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    // Byte offsets below: anything else in the directory is not ours.
    if !name.is_ascii() {
        return None;
    }
    let (key, rest) = name.split_at_checked(81)?;
    let valid_key = hex(&key[..64], 64) && &key[64..65] == "-" && hex(&key[65..], 16);
    match rest {
        _ if !valid_key => None,
        ".cwasm" => Some(Ours::Entry),
        _ if rest
            .strip_prefix(".tmp-")
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()) =>
        {
            Some(Ours::Temporary)
        }
        _ => None,
    }
}

/// Removes the least recently used entries (never `keep`) until the directory's entries
/// fit in `budget` bytes, and temporary files a crash left behind.
fn prune(dir: &Path, keep: &Path, budget: u64) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    let mut entries = Vec::new();
    for entry in listing.filter_map(Result::ok) {
        let (path, name) = (entry.path(), entry.file_name());
        let (Some(kind), Ok(meta)) = (name.to_str().and_then(ours), entry.metadata()) else {
            continue;
        };
        let Ok(modified) = meta.modified() else {
            continue;
        };
        match kind {
            Ours::Temporary if modified < stale => {
                let _ = std::fs::remove_file(&path);
            }
            Ours::Temporary => {}
            Ours::Entry => entries.push((modified, meta.len(), path)),
        }
    }
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

/// Written to a private temporary file of its own and renamed, so a reader never sees
/// half an entry and writers (threads, hosts sharing the directory) never interleave.
fn write_entry(component: &Component, path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let compiled = component
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let temporary = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    let written = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(MAGIC)?;
            file.write_all(&digest(&compiled))?;
            file.write_all(&compiled)
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_names_are_ours_and_no_name_panics() {
        let key = format!("{}-{}", "a".repeat(64), "b".repeat(16));
        assert!(ours(&format!("{key}.cwasm")) == Some(Ours::Entry));
        let temporary = format!("{key}.tmp-{}", uuid::Uuid::new_v4());
        assert!(ours(&temporary) == Some(Ours::Temporary));
        // A multi-byte character across the byte offsets the name is cut at.
        let odd = format!("{}é{}.cwasm", "a".repeat(63), "b".repeat(16));
        for name in [odd.as_str(), "notes.cwasm", "", &format!("{key}.tmp-x")] {
            assert!(ours(name).is_none(), "{name}");
        }
    }
}
