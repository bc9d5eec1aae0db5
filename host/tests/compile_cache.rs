//! The compile cache: a second load of the same component does not compile; a stale,
//! altered or truncated entry is thrown away and compiled again; a directory others can
//! write into is not used.

mod common;

use eventhost::runtime::compiled::{CompileCache, Source};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("eventhost-cache-{}", uuid::Uuid::new_v4()));
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

fn component() -> (Vec<u8>, String) {
    let bytes = std::fs::read(common::plugin_path("audit_log")).expect("read audit_log.wasm");
    let digest = hex::encode(Sha256::digest(&bytes));
    (bytes, digest)
}

fn engine() -> wasmtime::Engine {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    wasmtime::Engine::new(&config).expect("engine")
}

/// An engine with other settings: its compiled code is not interchangeable.
fn other_engine() -> wasmtime::Engine {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    wasmtime::Engine::new(&config).expect("engine")
}

/// A fresh cache directory, its cache, the Rust audit-log component and its digest.
fn setup() -> (Scratch, CompileCache, Vec<u8>, String, wasmtime::Engine) {
    let scratch = Scratch::new();
    let cache = CompileCache::new(Some(scratch.0.clone()));
    let (bytes, digest) = component();
    (scratch, cache, bytes, digest, engine())
}

#[test]
fn the_second_load_comes_from_the_cache() {
    let (scratch, cache, bytes, digest, engine) = setup();
    let (_, first) = cache.component(&engine, &bytes, &digest).unwrap();
    assert_eq!(first, Source::Compiled);
    let stored = entries(&scratch.0);
    assert_eq!(stored.len(), 1, "one entry: {stored:?}");
    assert!(stored[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(&digest));
    let mode = std::fs::metadata(&scratch.0).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the directory is made private");
    let (_, second) = cache.component(&engine, &bytes, &digest).unwrap();
    assert_eq!(second, Source::Cached);

    // Other engine settings never use this entry.
    let other = other_engine();
    let (_, elsewhere) = cache.component(&other, &bytes, &digest).unwrap();
    assert_eq!(elsewhere, Source::Compiled);
    assert_eq!(entries(&scratch.0).len(), 2);
}

#[test]
fn an_altered_or_truncated_entry_is_compiled_again() {
    let (scratch, cache, bytes, digest, engine) = setup();
    cache.component(&engine, &bytes, &digest).unwrap();
    let entry = entries(&scratch.0).remove(0);
    let original = std::fs::read(&entry).unwrap();

    let mut altered = original.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x55;
    let damaged = [altered, original[..original.len() / 3].to_vec(), Vec::new()];
    for (n, damage) in damaged.into_iter().enumerate() {
        std::fs::write(&entry, damage).unwrap();
        let (component, source) = cache.component(&engine, &bytes, &digest).unwrap();
        assert_eq!(source, Source::Compiled, "damage {n} is not used");
        assert_eq!(
            std::fs::read(&entry).unwrap(),
            original,
            "damage {n} is replaced"
        );
        drop(component);
    }
    assert_eq!(
        cache.component(&engine, &bytes, &digest).unwrap().1,
        Source::Cached
    );
}

#[test]
fn a_sound_digest_over_foreign_bytes_is_refused_by_wasmtime_and_rebuilt() {
    let (scratch, cache, bytes, digest, engine) = setup();
    cache.component(&engine, &bytes, &digest).unwrap();
    let entry = entries(&scratch.0).remove(0);
    // A well-formed entry whose body is not an artefact of this wasmtime.
    let body = b"not a compiled component of this wasmtime".to_vec();
    let mut forged = b"EVHCWAS2".to_vec();
    forged.extend_from_slice(&eventhost::runtime::compiled::digest(&body));
    forged.extend_from_slice(&body);
    std::fs::write(&entry, forged).unwrap();
    assert_eq!(
        cache.component(&engine, &bytes, &digest).unwrap().1,
        Source::Compiled
    );
    assert_eq!(
        cache.component(&engine, &bytes, &digest).unwrap().1,
        Source::Cached
    );
}

#[test]
fn an_entry_others_could_rewrite_or_a_link_is_not_used() {
    let (scratch, cache, bytes, digest, engine) = setup();
    cache.component(&engine, &bytes, &digest).unwrap();
    let entry = entries(&scratch.0).remove(0);
    let mode = std::fs::metadata(&entry).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "entries are written private");
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(
        cache.component(&engine, &bytes, &digest).unwrap().1,
        Source::Compiled
    );
    // A symbolic link in an entry's place is not followed.
    let real = scratch.0.join("elsewhere");
    std::fs::rename(&entry, &real).unwrap();
    std::os::unix::fs::symlink(&real, &entry).unwrap();
    assert_eq!(
        cache.component(&engine, &bytes, &digest).unwrap().1,
        Source::Compiled
    );
    assert!(!std::fs::symlink_metadata(&entry)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        cache.component(&engine, &bytes, &digest).unwrap().1,
        Source::Cached
    );
}

#[test]
fn a_directory_others_can_write_into_is_not_used() {
    let scratch = Scratch::new();
    std::fs::create_dir_all(&scratch.0).unwrap();
    std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let cache = CompileCache::new(Some(scratch.0.clone()));
    let (bytes, digest) = component();
    let engine = engine();
    for _ in 0..2 {
        assert_eq!(
            cache.component(&engine, &bytes, &digest).unwrap().1,
            Source::Compiled
        );
    }
    assert!(entries(&scratch.0).is_empty(), "nothing is stored there");
}

#[test]
fn the_least_recently_used_entries_go_when_the_directory_is_over_its_budget() {
    let scratch = Scratch::new();
    let (bytes, digest) = component();
    let engine = engine();
    let roomy = CompileCache::new(Some(scratch.0.clone()));
    roomy.component(&engine, &bytes, &digest).unwrap();
    let first = entries(&scratch.0);
    assert_eq!(first.len(), 1);
    // Another engine's entry of the same component, in a cache too small for both.
    let other = other_engine();
    let tight = CompileCache::new(Some(scratch.0.clone())).with_budget(1);
    tight.component(&other, &bytes, &digest).unwrap();
    let left = entries(&scratch.0);
    assert_eq!(left.len(), 1, "the older entry went: {left:?}");
    assert_ne!(left, first, "the new entry stays even over the budget");
}
