//! `cairn verify`: is a snapshot whole? Every problem is found, not only the first.

use std::collections::HashSet;
use std::io::Read;

use serde::Serialize;

use crate::backend::StateMeta;
use crate::error::{Error, Result};
use crate::keygroup::MaxParallelism;
use crate::snapshot::canonical::CanonicalReader;
use crate::snapshot::{KeyedStateHandle, SnapshotFile, SnapshotFormat, SnapshotKind};
use crate::storage::{Location, SnapshotStore, StoragePath};

use super::inspect::kind_name;
use super::open::{locate, OpenSnapshot, Target};
use super::read::stream_file;
use super::{Progress, Unit};

/// What kind of problem [`verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// `_metadata` does not decode, or disagrees with its directory's name.
    Metadata,
    /// A referenced file is missing.
    Missing,
    /// A file's size differs from the recorded one.
    Size,
    /// A file's CRC32 differs from the recorded one.
    Crc32,
    /// A canonical stream fails one of its own checks (a block CRC, its structure).
    Stream,
    /// A canonical stream's header disagrees with its handle in `_metadata`.
    Mismatch,
    /// A file cannot be read (permissions, I/O error, a path through a symbolic link).
    Unreadable,
}

/// One problem: which file, what kind, and the details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file, as a local path.
    pub file: String,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What exactly is wrong.
    pub detail: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The `_metadata` file.
    pub metadata: String,
    /// `checkpoint`, `canonical-savepoint` or `native-savepoint`; null if `_metadata` does
    /// not decode.
    pub kind: Option<String>,
    /// The snapshot's id; null if `_metadata` does not decode.
    pub id: Option<u64>,
    /// Files whose size and CRC32 were checked.
    pub files_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Entries read from canonical streams (RocksDB files are checked by CRC32 only).
    pub canonical_entries: u64,
    /// Every problem found; empty if the snapshot is whole.
    pub problems: Vec<Problem>,
    /// Whether no problem was found.
    pub ok: bool,
}

/// Verifies the snapshot `location` names (local or on an object store): its `_metadata`
/// decodes, every file it references exists with the recorded size and CRC32, and every
/// canonical stream reads through, every block checked. Problems are collected, not
/// returned as errors.
///
/// # Errors
/// Only when there is nothing to verify: [`Error::InvalidPath`] if `location` is not a
/// snapshot; [`Error::Io`] or the store's errors if it cannot be read at all.
pub fn verify(location: &Location, progress: &dyn Progress) -> Result<VerifyReport> {
    let metadata = match locate(location)? {
        Target::Snapshot(metadata) => metadata,
        Target::Root(_) => {
            return Err(Error::InvalidPath {
                path: location.to_string(),
                reason: "it is a checkpoint storage root, not one snapshot; name one of its \
                         chk-<id> or savepoint directories (`cairn inspect` lists them)",
            })
        }
    };
    let mut report = VerifyReport {
        metadata: metadata.to_string(),
        kind: None,
        id: None,
        files_checked: 0,
        bytes_checked: 0,
        canonical_entries: 0,
        problems: Vec::new(),
        ok: false,
    };
    let snapshot = match OpenSnapshot::open_metadata(&metadata) {
        Ok(snapshot) => snapshot,
        Err(e @ Error::Corrupted { .. }) => {
            report.problems.push(Problem {
                file: report.metadata.clone(),
                kind: ProblemKind::Metadata,
                detail: detail_of(&e),
            });
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let job = &snapshot.job;
    report.kind = Some(kind_name(job).into());
    report.id = Some(job.checkpoint_id);
    if job.kind == SnapshotKind::Checkpoint {
        if let Some(dir_id) = snapshot.dir_checkpoint_id() {
            if dir_id != job.checkpoint_id {
                report.problems.push(Problem {
                    file: report.metadata.clone(),
                    kind: ProblemKind::Metadata,
                    detail: format!(
                        "it describes checkpoint {} but is in the directory of checkpoint {dir_id}",
                        job.checkpoint_id
                    ),
                });
            }
        }
    }
    let store = snapshot.store.as_ref();
    let local = |path: &StoragePath| snapshot.files_root.join(path.as_str());

    // Sizes and CRC32s of every file, each once.
    let mut seen = HashSet::new();
    let files: Vec<&SnapshotFile> = job.files().filter(|f| seen.insert(&f.path)).collect();
    progress.start(
        "checking files",
        files.iter().map(|f| f.size).sum(),
        Unit::Bytes,
    );
    let mut intact: HashSet<&StoragePath> = HashSet::new();
    for file in files {
        match check_file(store, file, progress) {
            Ok(()) => {
                intact.insert(&file.path);
                report.files_checked += 1;
                report.bytes_checked += file.size;
            }
            Err((kind, detail)) => report.problems.push(Problem {
                file: local(&file.path).to_string(),
                kind,
                detail,
            }),
        }
    }
    progress.finish();

    // Every block of every canonical stream whose file is intact.
    let streams: Vec<(&KeyedStateHandle, MaxParallelism)> = job
        .operators
        .iter()
        .flat_map(|o| o.subtasks.iter().map(|h| (h, o.max_parallelism)))
        .filter(|(h, _)| h.format == SnapshotFormat::Canonical)
        .collect();
    if !streams.is_empty() {
        progress.start(
            "reading canonical streams",
            streams.len() as u64,
            Unit::Items,
        );
    }
    for (handle, max) in &streams {
        let file = match stream_file(handle) {
            Ok(file) => file,
            Err(e) => {
                report.problems.push(Problem {
                    file: report.metadata.clone(),
                    kind: ProblemKind::Metadata,
                    detail: detail_of(&e),
                });
                continue;
            }
        };
        if intact.contains(&file.path) {
            match read_stream(store, handle, file, *max) {
                Ok(entries) => report.canonical_entries += entries,
                Err((kind, detail)) => report.problems.push(Problem {
                    file: local(&file.path).to_string(),
                    kind,
                    detail,
                }),
            }
        }
        progress.advance(1);
    }
    if !streams.is_empty() {
        progress.finish();
    }
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// The message of an error without the advice that ends every `Corrupted` message.
fn detail_of(e: &Error) -> String {
    match e {
        Error::Corrupted { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

fn unreadable(e: &Error) -> (ProblemKind, String) {
    match e {
        Error::NotFound { .. } => (ProblemKind::Missing, "the file is missing".into()),
        Error::Corrupted { detail, .. } => (ProblemKind::Stream, detail.clone()),
        other => (ProblemKind::Unreadable, other.to_string()),
    }
}

/// Checks one file's size and CRC32.
fn check_file(
    store: &dyn SnapshotStore,
    file: &SnapshotFile,
    progress: &dyn Progress,
) -> std::result::Result<(), (ProblemKind, String)> {
    let size = match store.size(&file.path) {
        Ok(Some(size)) => size,
        Ok(None) => return Err((ProblemKind::Missing, "the file is missing".into())),
        Err(e) => return Err(unreadable(&e)),
    };
    if size != file.size {
        progress.advance(file.size);
        return Err((
            ProblemKind::Size,
            format!(
                "{size} bytes where the snapshot records {}{}",
                file.size,
                if size < file.size { " (truncated)" } else { "" }
            ),
        ));
    }
    let mut input = store.open(&file.path).map_err(|e| unreadable(&e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((ProblemKind::Unreadable, format!("cannot read it: {e}"))),
        };
        hasher.update(&buf[..n]);
        read += n as u64;
        progress.advance(n as u64);
    }
    if read != file.size {
        return Err((
            ProblemKind::Size,
            format!(
                "{read} bytes read where the snapshot records {}: it changed while being read",
                file.size
            ),
        ));
    }
    let crc = hasher.finalize();
    if crc != file.crc32 {
        return Err((
            ProblemKind::Crc32,
            format!(
                "CRC32 {crc:08x} where the snapshot records {:08x}: its bytes changed",
                file.crc32
            ),
        ));
    }
    Ok(())
}

fn same_states(a: &[StateMeta], b: &[StateMeta]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|s| b.iter().any(|t| t.name == s.name && t.same_layout(s)))
}

/// Reads every entry of a canonical stream; returns how many there are.
fn read_stream(
    store: &dyn SnapshotStore,
    handle: &KeyedStateHandle,
    file: &SnapshotFile,
    max: MaxParallelism,
) -> std::result::Result<u64, (ProblemKind, String)> {
    let reader = CanonicalReader::open(store, file).map_err(|e| unreadable(&e))?;
    if reader.max_parallelism() != max
        || reader.key_groups() != handle.key_groups
        || !same_states(reader.states(), &handle.states)
    {
        return Err((
            ProblemKind::Mismatch,
            format!(
                "the stream holds {} of max parallelism {} with {} states, but _metadata \
                 records {} of max parallelism {max} with {} states",
                reader.key_groups(),
                reader.max_parallelism(),
                reader.states().len(),
                handle.key_groups,
                handle.states.len()
            ),
        ));
    }
    let mut entries = 0u64;
    reader
        .read(reader.key_groups(), &mut |_, _, _| {
            entries += 1;
            Ok(())
        })
        .map_err(|e| unreadable(&e))?;
    Ok(entries)
}
