//! Reading the entries of one subtask's snapshot, whatever its format.
//!
//! A canonical stream is read in place through [`CanonicalReader`], one key group at a
//! time. RocksDB files are restored, exactly as a job restores them (downloaded with their
//! sizes and CRC32s checked, opened with each state's merge operator), into a scratch
//! directory that is removed afterwards, and scanned there. The restored backend's clock is
//! stopped at the epoch, so its TTL compaction filter never drops an entry: a dump shows
//! what the snapshot holds, expired entries included.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::key::{write_framed, CompositeKey};
use crate::backend::timers::TimerKey;
use crate::backend::{KeyedStateBackend, StateKind, StateMeta, Visit};
use crate::clock::ManualClock;
use crate::error::{Error, Result};
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::snapshot::canonical::CanonicalReader;
use crate::snapshot::{KeyedStateHandle, SnapshotFile, SnapshotFormat};
use crate::storage::{random_u128, SnapshotStore};
use crate::RocksDbBackend;

/// What a read calls for each entry: (composite key, stored value); it may stop the read.
pub(crate) type EntryVisit<'v> = dyn FnMut(&[u8], &[u8]) -> Result<Visit> + 'v;

/// The name of a canonical stream's one file in its handle.
pub(crate) const STREAM_NAME: &str = "keyed-state";

/// The stream file of a canonical handle.
pub(crate) fn stream_file(handle: &KeyedStateHandle) -> Result<&SnapshotFile> {
    match handle.files.as_slice() {
        [file] => Ok(file),
        files => Err(Error::Restore {
            what: format!("the canonical snapshot of {}", handle.key_groups),
            detail: format!(
                "it has {} files, not one '{STREAM_NAME}' stream",
                files.len()
            ),
        }),
    }
}

/// A directory under the system's temporary directory, removed on drop.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(crate) fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("cairn-tool-{:032x}", random_u128()));
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            op: "create a scratch directory",
            path: path.clone(),
            source,
        })?;
        Ok(ScratchDir(path))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The entries of one subtask's snapshot, ready to be read by state and key group.
pub(crate) enum HandleReader<'a> {
    /// A canonical stream, read in place.
    Canonical(CanonicalReader<'a>),
    /// RocksDB files, restored into a scratch directory. The backend is declared first so
    /// that it closes before its directory is removed.
    RocksDb {
        backend: Box<RocksDbBackend>,
        _scratch: ScratchDir,
    },
}

impl<'a> HandleReader<'a> {
    /// Opens `handle` of an operator with `max` key groups, whose files are in `store`.
    ///
    /// # Errors
    /// [`Error::NotFound`] / [`Error::Corrupted`] for a missing or damaged file (RocksDB
    /// files are checked against their sizes and CRC32s as they are copied); RocksDB's and
    /// the file system's errors.
    pub(crate) fn open(
        store: &'a Arc<dyn SnapshotStore>,
        handle: &'a KeyedStateHandle,
        max: MaxParallelism,
    ) -> Result<Self> {
        if handle.format == SnapshotFormat::Canonical {
            let file = stream_file(handle)?;
            return Ok(HandleReader::Canonical(CanonicalReader::open(
                store.as_ref(),
                file,
            )?));
        }
        let scratch = ScratchDir::new()?;
        let backend = RocksDbBackend::builder(scratch.0.join("db"), max, handle.key_groups)
            .clock(Arc::new(ManualClock::new(0)))
            .restore_from(store.clone(), vec![handle.clone()])
            .open()?;
        Ok(HandleReader::RocksDb {
            backend: Box::new(backend),
            _scratch: scratch,
        })
    }

    /// The states the snapshot holds.
    pub(crate) fn states(&self) -> Result<Vec<StateMeta>> {
        match self {
            HandleReader::Canonical(reader) => Ok(reader.states().to_vec()),
            HandleReader::RocksDb { backend, .. } => backend.states(),
        }
    }

    /// Visits, in key order, the entries of state `name` in key groups `range` (those the
    /// snapshot holds), only those of `key` if given: `visit(composite key, stored value)`.
    /// Returns false if `visit` stopped the read.
    ///
    /// # Errors
    /// [`Error::Corrupted`] for damaged bytes; the first error of `visit`.
    pub(crate) fn read(
        &self,
        name: &str,
        range: KeyGroupRange,
        key: Option<&[u8]>,
        visit: &mut EntryVisit<'_>,
    ) -> Result<bool> {
        match self {
            HandleReader::Canonical(reader) => read_canonical(reader, name, range, key, visit),
            HandleReader::RocksDb { backend, .. } => read_rocksdb(backend, name, range, key, visit),
        }
    }
}

/// The serialized key of a stored entry of a state of `kind`.
fn key_of(kind: StateKind, stored_key: &[u8]) -> Option<&[u8]> {
    if kind == StateKind::Timers {
        TimerKey::parse(stored_key).map(|t| t.key)
    } else {
        CompositeKey::parse(stored_key).map(|c| c.key)
    }
}

fn read_canonical(
    reader: &CanonicalReader<'_>,
    name: &str,
    range: KeyGroupRange,
    key: Option<&[u8]>,
    visit: &mut EntryVisit<'_>,
) -> Result<bool> {
    let Some(index) = reader.states().iter().position(|s| s.name == name) else {
        return Ok(true);
    };
    let kind = reader.states()[index].kind;
    let Some(range) = range.intersect(&reader.key_groups()) else {
        return Ok(true);
    };
    let index = index as u32;
    let mut stopped = false;
    // One key group at a time, so that a stopped read reads no further.
    for kg in range.start()..=range.end() {
        reader.read(
            KeyGroupRange::new(kg, kg),
            &mut |state, composite, value| {
                if stopped || state != index {
                    return Ok(());
                }
                if key.is_some_and(|key| key_of(kind, composite) != Some(key)) {
                    return Ok(());
                }
                stopped = visit(composite, value)?.is_break();
                Ok(())
            },
        )?;
        if stopped {
            return Ok(false);
        }
    }
    Ok(true)
}

fn read_rocksdb(
    backend: &RocksDbBackend,
    name: &str,
    range: KeyGroupRange,
    key: Option<&[u8]>,
    visit: &mut EntryVisit<'_>,
) -> Result<bool> {
    let Some(meta) = backend.states()?.into_iter().find(|s| s.name == name) else {
        return Ok(true);
    };
    let Some(range) = range.intersect(&backend.key_group_range()) else {
        return Ok(true);
    };
    // Registering a state the backend holds, exactly as recorded, finds its id.
    let id = backend.register(&meta)?;
    let mut failure = None;
    let mut prefix = Vec::new();
    // A timer's key follows its timestamp: its key group is scanned and filtered.
    let is_timers = meta.kind == StateKind::Timers;
    for kg in range.start()..=range.end() {
        prefix.clear();
        prefix.extend_from_slice(&kg.to_be_bytes());
        if let Some(key) = key.filter(|_| !is_timers) {
            write_framed(&mut prefix, key);
        }
        let mut stopped = false;
        backend.scan(id, &prefix, None, &mut |composite, value| {
            if key.is_some_and(|key| key_of(meta.kind, composite) != Some(key)) {
                return Visit::Continue(());
            }
            match visit(composite, value) {
                Ok(Visit::Continue(())) => Visit::Continue(()),
                Ok(Visit::Break(())) => {
                    stopped = true;
                    Visit::Break(())
                }
                Err(e) => {
                    failure = Some(e);
                    Visit::Break(())
                }
            }
        })?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
        if stopped {
            return Ok(false);
        }
    }
    Ok(true)
}
