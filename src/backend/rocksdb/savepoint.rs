//! Canonical savepoints of a RocksDB backend, and restoring canonical snapshots into it.
//!
//! A canonical savepoint needs a consistent, immutable view of the DB that outlives the
//! call that takes it. RocksDB's snapshots are that view, but the Rust binding ties one to
//! a borrow of the DB, which the asynchronous phase cannot hold; so the synchronous phase
//! takes the same hard-link checkpoint an incremental checkpoint takes (no file is copied)
//! and the asynchronous phase opens it read-only and streams it, key group by key group,
//! into the canonical format (entirely expired entries left out), then removes it.
//!
//! Restoring a canonical stream reads only the owned key groups (the stream's index),
//! writes each state's entries, already in key order, into an SST file and ingests it: no
//! put per key, no memtable.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rocksdb::{ColumnFamilyDescriptor, SstFileWriter, DB};
use tracing::info;

use crate::backend::rocksdb::{RocksDbBackend, META_CF};
use crate::error::{Error, Result};
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::snapshot::canonical::{CanonicalReader, CanonicalWriter, STREAM_NAME};
use crate::snapshot::transfer::{in_parallel, TRANSFER_THREADS};
use crate::snapshot::{
    InstanceId, KeyedStateHandle, PendingSnapshot, SnapshotFile, SnapshotFormat, SnapshotRequest,
};
use crate::storage::{CrcWriter, SnapshotStore};
use crate::ttl::entry_expired;
use crate::StateMeta;

/// What the asynchronous phase of a canonical savepoint needs.
pub(super) struct StagedCanonical {
    pub(super) request: SnapshotRequest,
    pub(super) staging: PathBuf,
    pub(super) instance: InstanceId,
    pub(super) max: MaxParallelism,
    pub(super) range: KeyGroupRange,
    /// Each state with the column family options it is read with.
    pub(super) states: Vec<(StateMeta, rocksdb::Options)>,
    /// The clock's time at the synchronous phase: what "expired" means in the stream.
    pub(super) now: u64,
}

impl StagedCanonical {
    pub(super) fn into_pending(self, sync_started: Instant) -> PendingSnapshot {
        let id = self.request.checkpoint_id;
        let sync_ms = sync_started.elapsed().as_millis() as u64;
        PendingSnapshot::new(id, move || {
            let staging = self.staging.clone();
            let started = Instant::now();
            let result = self.write();
            if let Err(e) = std::fs::remove_dir_all(&staging) {
                tracing::warn!(dir = %staging.display(), error = %e, "cannot remove a staging directory");
            }
            if let Ok(handle) = &result {
                info!(
                    savepoint = id,
                    sync_ms,
                    async_ms = started.elapsed().as_millis() as u64,
                    bytes = handle.total_bytes(),
                    "canonical savepoint of a RocksDB backend written"
                );
            }
            result
        })
    }

    fn write(self) -> Result<KeyedStateHandle> {
        let db = open_read_only(&self.staging, &self.states)?;
        let path = self
            .request
            .private_dir
            .join(&format!("{}/{STREAM_NAME}", self.instance))?;
        let store = self.request.store.as_ref();
        let storage_error = |source: std::io::Error| Error::Storage {
            op: "write",
            location: store.location(),
            path: path.to_string(),
            source,
        };
        let metas: Vec<StateMeta> = self.states.iter().map(|(m, _)| m.clone()).collect();
        let out = CrcWriter::new(store.create(&path)?);
        let mut writer =
            CanonicalWriter::new(out, self.max, self.range, &metas).map_err(storage_error)?;
        let rocks = |op: String, e: rocksdb::Error| Error::RocksDb {
            op,
            path: self.staging.clone(),
            detail: e.into_string(),
        };
        let mut iterators = Vec::with_capacity(metas.len());
        for meta in &metas {
            let cf = db.cf_handle(&meta.name).ok_or_else(|| Error::Corrupted {
                what: "column families",
                path: self.staging.clone(),
                detail: format!("column family '{}' is missing", meta.name),
            })?;
            let mut read = rocksdb::ReadOptions::default();
            read.set_total_order_seek(true);
            iterators.push(db.raw_iterator_cf_opt(cf, read));
        }
        for key_group in self.range.iter() {
            let prefix = key_group.to_be_bytes();
            for (index, (meta, it)) in metas.iter().zip(iterators.iter_mut()).enumerate() {
                let ttl = meta.ttl.map(|t| t.ttl_millis());
                it.seek(prefix);
                while let (Some(key), Some(value)) = (it.key(), it.value()) {
                    if !key.starts_with(&prefix) {
                        break;
                    }
                    if !ttl.is_some_and(|ttl| entry_expired(meta.kind, value, ttl, self.now)) {
                        // Fewer states than u32::MAX.
                        writer
                            .add(index as u32, key, value)
                            .map_err(storage_error)?;
                    }
                    it.next();
                }
                it.status()
                    .map_err(|e| rocks(format!("read state '{}'", meta.name), e))?;
            }
        }
        let out = writer.finish().map_err(storage_error)?;
        let crc32 = out.crc.finalize();
        let size = out.inner.finish()?;
        Ok(KeyedStateHandle {
            format: SnapshotFormat::Canonical,
            key_groups: self.range,
            instance: self.instance,
            checkpoint_id: self.request.checkpoint_id,
            states: metas,
            files: vec![SnapshotFile {
                name: STREAM_NAME.to_string(),
                path,
                size,
                crc32,
            }],
        })
    }
}

/// Opens a RocksDB checkpoint directory read-only, with each state's column family options
/// (the list merge operator above all: reads must see merged lists).
pub(super) fn open_read_only(dir: &Path, states: &[(StateMeta, rocksdb::Options)]) -> Result<DB> {
    let mut descriptors = vec![ColumnFamilyDescriptor::new(
        META_CF,
        rocksdb::Options::default(),
    )];
    for (meta, options) in states {
        descriptors.push(ColumnFamilyDescriptor::new(
            meta.name.as_str(),
            options.clone(),
        ));
    }
    DB::open_cf_descriptors_read_only(&rocksdb::Options::default(), dir, descriptors, false)
        .map_err(|e| Error::RocksDb {
            op: "open a snapshot read-only".into(),
            path: dir.to_path_buf(),
            detail: e.into_string(),
        })
}

impl RocksDbBackend {
    /// Brings the owned key groups of a canonical stream in: one SST file per state,
    /// written in key order and ingested.
    pub(super) fn ingest_canonical(
        &self,
        store: &dyn SnapshotStore,
        handle: &KeyedStateHandle,
        index: usize,
        what: &str,
    ) -> Result<()> {
        let Some(range) = handle.key_groups.intersect(&self.range) else {
            return Ok(());
        };
        let file = handle
            .files
            .iter()
            .find(|f| f.name == STREAM_NAME)
            .ok_or_else(|| Error::Restore {
                what: what.to_string(),
                detail: format!(
                    "the canonical snapshot of {} has no stream file",
                    handle.key_groups
                ),
            })?;
        let reader = CanonicalReader::open(store, file)?;
        if reader.key_groups() != handle.key_groups {
            return Err(Error::Corrupted {
                what: "canonical keyed-state stream",
                path: file.path.as_str().into(),
                detail: format!(
                    "the snapshot of {} holds the stream of {}",
                    handle.key_groups,
                    reader.key_groups()
                ),
            });
        }
        if reader.max_parallelism() != self.max_parallelism {
            return Err(Error::Restore {
                what: what.to_string(),
                detail: format!(
                    "the snapshot has max parallelism {}, not {}; the max parallelism of an \
                     operator cannot change, so restore with max parallelism {}",
                    reader.max_parallelism(),
                    self.max_parallelism,
                    reader.max_parallelism()
                ),
            });
        }
        let states: Vec<(StateMeta, rocksdb::Options)> = reader
            .states()
            .iter()
            .map(|m| (m.clone(), self.ingest_file_options(m)))
            .collect();
        let temp = self.dir.join(super::restore::RESTORE_DIR);
        std::fs::create_dir_all(&temp).map_err(|source| Error::Io {
            op: "create the restore directory",
            path: temp.clone(),
            source,
        })?;
        let sst_error = |path: &Path, e: rocksdb::Error| Error::RocksDb {
            op: "write an SST file to ingest".into(),
            path: path.to_path_buf(),
            detail: e.into_string(),
        };
        // One reader per slice of the key groups, in parallel: each slice writes its own
        // file per state, and a state's files cover disjoint key ranges.
        let slices = super::restore::key_group_slices(range, TRANSFER_THREADS);
        let written = in_parallel(TRANSFER_THREADS, &slices, |slice| {
            let reader = CanonicalReader::open(store, file)?;
            let paths: Vec<PathBuf> = (0..states.len())
                .map(|s| temp.join(format!("canonical-{index}-{s}-{}.sst", slice.start())))
                .collect();
            let mut writers: Vec<Option<SstFileWriter<'_>>> = states.iter().map(|_| None).collect();
            let mut entries = 0u64;
            reader.read(*slice, &mut |state, key, value| {
                let state = state as usize;
                let (Some(slot), Some((_, options)), Some(path)) =
                    (writers.get_mut(state), states.get(state), paths.get(state))
                else {
                    return Err(Error::Corrupted {
                        what: "canonical keyed-state stream",
                        path: file.path.as_str().into(),
                        detail: format!(
                            "an entry of state {state}, which the stream does not have"
                        ),
                    });
                };
                let writer = match slot {
                    Some(writer) => writer,
                    None => {
                        let writer = SstFileWriter::create(options);
                        writer.open(path).map_err(|e| sst_error(path, e))?;
                        slot.insert(writer)
                    }
                };
                writer.put(key, value).map_err(|e| sst_error(path, e))?;
                entries += 1;
                Ok(())
            })?;
            let mut files = Vec::new();
            for (state, (slot, path)) in writers.into_iter().zip(paths).enumerate() {
                if let Some(mut writer) = slot {
                    writer.finish().map_err(|e| sst_error(&path, e))?;
                    files.push((state, path));
                }
            }
            Ok((files, entries))
        })?;
        let entries: u64 = written.iter().map(|(_, n)| n).sum();
        let files: Vec<(&str, &Path)> = written
            .iter()
            .flat_map(|(files, _)| files)
            .map(|(state, path)| (states[*state].0.name.as_str(), path.as_path()))
            .collect();
        self.ingest_files(&files)?;
        let _ = std::fs::remove_dir_all(&temp);
        info!(dir = %self.dir.display(), from = %handle.key_groups, entries,
            "ingested a canonical snapshot");
        Ok(())
    }
}
