//! Fuzz target `cli_path`: what the `cairn` tools do with a path the user types and the
//! `_metadata` they find there, and [`StoragePath`]'s rules for paths inside snapshots.
//!
//! Input: `[path length: u8][path: that many bytes, as UTF-8 (lossy)][_metadata bytes]`.
//! The target lays out a storage root in a fresh scratch directory, with the `_metadata`
//! bytes as `chk-1/_metadata` and as a savepoint's, runs the tools on the user path (made
//! relative to the scratch directory, so that nothing outside it is read), and removes
//! the directory.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::snapshot::{SnapshotKind, METADATA_FILE};
use crate::storage::checkpoints::{parse_checkpoint_dir, parse_savepoint_dir};
use crate::storage::{Location, StoragePath};
use crate::tools::{self, NoProgress, OpenSnapshot, Target};

/// The longest path [`StoragePath`] accepts (docs/format.md, section 6).
const MAX_PATH_LEN: usize = 1024;

/// Checks `StoragePath` on the user path, then runs `locate`, `OpenSnapshot::open`,
/// `verify`, `inspect` and a dry-run `gc` on it in a scratch storage root. The answer is
/// [`OpenSnapshot::open`]'s.
pub fn cli_path(data: &[u8]) -> Result<(), String> {
    let (path_len, rest) = match data.split_first() {
        Some((&len, rest)) => (usize::from(len).min(rest.len()), rest),
        None => (0, data),
    };
    let (path, metadata) = rest.split_at(path_len);
    let path = String::from_utf8_lossy(path).into_owned();
    check_storage_path(&path);
    check_location(&path);
    let scratch = Scratch::new(metadata);
    let answer = scratch.run(&path);
    drop(scratch);
    answer
}

/// `Location::parse` reads any text as a local path or a URL, without touching either, and
/// what it reads takes apart without panicking: a URL's parent is a prefix of it, its file
/// name its last segment.
fn check_location(text: &str) {
    let Ok(location) = Location::parse(text) else {
        assert!(
            text.get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("file://")),
            "only a file:// URL is refused: {text:?}"
        );
        return;
    };
    if let Location::Url(url) = &location {
        if let Some(Location::Url(parent)) = location.parent() {
            assert!(
                url.starts_with(&parent),
                "the parent of {url:?} is {parent:?}"
            );
        }
        if let Some(name) = location.file_name() {
            assert!(url.ends_with(name), "the file name of {url:?} is {name:?}");
            assert!(!name.contains('/'));
        }
        let Location::Url(joined) = location.join("_metadata") else {
            panic!("a URL joined a name and became local");
        };
        assert_eq!(joined, format!("{url}/_metadata"));
    }
}

/// `StoragePath::new` accepts exactly the paths of docs/format.md, section 6.
fn check_storage_path(path: &str) {
    let valid = !path.is_empty()
        && path.len() <= MAX_PATH_LEN
        && path.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    match StoragePath::new(path) {
        Ok(parsed) => {
            assert!(valid, "StoragePath accepts {path:?}");
            assert_eq!(parsed.as_str(), path);
            assert_eq!(Some(parsed.top()), path.split('/').next());
            assert_eq!(Some(parsed.file_name()), path.rsplit('/').next());
            if let Ok(joined) = parsed.join("x") {
                assert_eq!((joined.top(), joined.file_name()), (parsed.top(), "x"));
            }
            let top = parsed.top();
            let tool_id = tools::open::checkpoint_dir_id(top);
            assert_eq!(
                parse_checkpoint_dir(top),
                tool_id,
                "the engine and the tools read the checkpoint directory {top:?} differently"
            );
            if let Some(id) = tool_id {
                assert_eq!(top, format!("chk-{id}"), "two directory names for one id");
            }
            if let Some(id) = parse_savepoint_dir(top) {
                assert!(top.starts_with(&format!("savepoint-{id}-")));
            }
        }
        Err(e) => assert!(!valid, "StoragePath refuses {path:?}: {e}"),
    }
}

/// A scratch directory holding a storage root, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(metadata: &[u8]) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cairn-fuzz-cli-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let root = dir.join("root");
        let written = fs::create_dir_all(root.join("chk-1"))
            .and_then(|()| fs::create_dir_all(root.join("chk-2")))
            .and_then(|()| fs::create_dir_all(root.join("savepoint-3-0000abcd")))
            .and_then(|()| fs::create_dir_all(root.join("shared")))
            .and_then(|()| fs::write(root.join("chk-1").join(METADATA_FILE), metadata))
            .and_then(|()| {
                fs::write(
                    root.join("savepoint-3-0000abcd").join(METADATA_FILE),
                    metadata,
                )
            })
            .and_then(|()| fs::write(root.join("shared").join("1-00-000001.sst"), b"sst"));
        if let Err(e) = written {
            panic!("cannot lay out {}: {e}", dir.display());
        }
        Scratch { dir }
    }

    /// The user path, made relative to the scratch directory: absolute prefixes and `..`
    /// components are dropped.
    fn resolve(&self, path: &str) -> PathBuf {
        let mut full = self.dir.clone();
        for component in Path::new(path).components() {
            if let Component::Normal(part) = component {
                full.push(part);
            }
        }
        full
    }

    fn files(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                match entry.metadata() {
                    Ok(meta) if meta.is_dir() => dirs.push(entry.path()),
                    Ok(meta) => out.push((entry.path(), meta.len())),
                    Err(_) => {}
                }
            }
        }
        out.sort();
        out
    }

    fn run(&self, path: &str) -> Result<(), String> {
        let full = Location::Local(self.resolve(path));
        let before = self.files();
        if let Ok(target) = tools::locate(&full) {
            let found = match &target {
                Target::Snapshot(metadata) => metadata,
                Target::Root(root) => root,
            };
            let found = found.local_path().map(Path::to_path_buf);
            let inside = fs::canonicalize(&self.dir)
                .is_ok_and(|dir| found.as_ref().is_some_and(|f| f.starts_with(dir)));
            assert!(inside, "{path:?} located {found:?} outside");
        }
        let opened = OpenSnapshot::open(&full);
        if let Ok(snapshot) = &opened {
            let expected = match snapshot.job.kind {
                SnapshotKind::Checkpoint => snapshot.dir.parent(),
                SnapshotKind::Savepoint => Some(snapshot.dir.clone()),
            };
            assert_eq!(Some(&snapshot.files_root), expected.as_ref(), "files root");
        }
        if let Ok(report) = tools::verify(&full, &NoProgress) {
            assert_eq!(
                report.ok,
                report.problems.is_empty(),
                "verify: ok and problems"
            );
        }
        // Whatever it finds, inspecting must answer, not panic.
        let _ = tools::inspect(&full, false, &NoProgress);
        if let Ok(report) = tools::collect_garbage(&Location::Local(self.dir.join("root")), true) {
            assert!(report.dry_run);
        }
        assert_eq!(
            self.files(),
            before,
            "a read-only tool changed the scratch directory"
        );
        opened.map(|_| ()).map_err(|e| e.to_string())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
