//! Restoring a RocksDB backend from checkpoint handles, at the same or another parallelism.
//!
//! The handle that overlaps the new key groups most is the *base*: its files are
//! downloaded into the backend's directory (size and CRC32 checked) and opened as they
//! are. If it holds exactly the new key groups, nothing else happens and the next
//! checkpoint goes on referencing its shared files (the incremental chain continues).
//! Otherwise the base is clipped to the new key groups: whole SST files outside them are
//! dropped (`DeleteFilesInRange`), and range tombstones cover the rest (`DeleteRange`),
//! so no key is read. Each other handle is downloaded to a temporary directory, opened
//! read-only, and the entries of the new key groups are written, in order, into SST files
//! that are ingested into the base (`IngestExternalFile`); they lie in key groups the base
//! does not hold, so they go straight to the bottom level. This iterates the keys of the
//! other handles once: the RocksDB binding cairn uses exposes neither
//! `CreateColumnFamilyWithImport` nor ingestion of DB-generated files, which would
//! move those files without reading them; nothing is ever written key by key into a
//! memtable.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, IngestExternalFileOptions, SstFileWriter, DB};
use tracing::info;

use crate::backend::rocksdb::RocksDbBackend;
use crate::error::{Error, Result};
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::snapshot::transfer::{download, in_parallel, TRANSFER_THREADS};
use crate::snapshot::KeyedStateHandle;
use crate::storage::SnapshotStore;
use crate::StateMeta;

/// The directory, inside a backend's directory, where other handles are unpacked.
pub(super) const RESTORE_DIR: &str = "_cairn_restore";

/// One key past the largest key group (max parallelism is at most 32768).
const PAST_LAST_KEY_GROUP: [u8; 2] = 32768u16.to_be_bytes();

/// Checks the handles before anything is downloaded: one format for all, each file
/// present with its recorded size, and states that agree across handles. The sizes are
/// asked for [`transfer_concurrency`](SnapshotStore::transfer_concurrency) at a time (one
/// HEAD each on an object store), then checked in order, so the first problem is reported
/// whatever the order the answers came in.
pub(super) fn validate(
    store: &dyn SnapshotStore,
    handles: &[KeyedStateHandle],
    what: &str,
) -> Result<Vec<StateMeta>> {
    let files: Vec<&crate::snapshot::SnapshotFile> =
        handles.iter().flat_map(|h| &h.files).collect();
    let mut sizes = in_parallel(store.transfer_concurrency(), &files, |file| {
        Ok(store.size(&file.path))
    })?
    .into_iter();
    let mut states: Vec<StateMeta> = Vec::new();
    for handle in handles {
        if handle.format != handles[0].format {
            return Err(Error::Restore {
                what: what.to_string(),
                detail: format!(
                    "the snapshots to restore mix the {} and {} formats",
                    handles[0].format, handle.format
                ),
            });
        }
        for file in &handle.files {
            let size = sizes.next().unwrap_or_else(|| store.size(&file.path));
            match size? {
                Some(size) if size == file.size => {}
                Some(size) => {
                    return Err(Error::Corrupted {
                        what: "snapshot file",
                        path: file.path.as_str().into(),
                        detail: format!("{size} bytes where the snapshot records {}", file.size),
                    })
                }
                None => {
                    return Err(Error::NotFound {
                        what: "snapshot file",
                        location: store.location(),
                        path: file.path.to_string(),
                    })
                }
            }
        }
        for meta in &handle.states {
            match states.iter().find(|s| s.name == meta.name) {
                Some(known) if !known.same_layout(meta) => {
                    return Err(Error::Restore {
                        what: what.to_string(),
                        detail: format!(
                            "state '{}' is {} in one subtask's snapshot and {} in another's",
                            meta.name,
                            known.describe(),
                            meta.describe()
                        ),
                    })
                }
                Some(_) => {}
                None => states.push(meta.clone()),
            }
        }
    }
    Ok(states)
}

/// Downloads every file of `handle` into `dir`, checking sizes and CRC32s.
pub(super) fn download_into(
    store: &dyn SnapshotStore,
    handle: &KeyedStateHandle,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        op: "create the restore directory",
        path: dir.to_path_buf(),
        source,
    })?;
    in_parallel(store.transfer_concurrency(), &handle.files, |file| {
        download(store, file, &dir.join(&file.name))
    })?;
    Ok(())
}

/// Fails unless `dir` is missing or empty: a restore never overwrites a backend.
pub(super) fn check_empty(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            op: "inspect the backend directory",
            path: dir.to_path_buf(),
            source,
        }),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(Error::Restore {
                what: format!("into {}", dir.display()),
                detail: "the directory is not empty; restore into a new or empty directory".into(),
            }),
        },
    }
}

/// Removes everything a failed restore left in `dir`, which was missing or empty before it.
pub(super) fn clear_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), error = %e, "cannot clean up after a failed restore");
        }
    }
}

impl RocksDbBackend {
    /// Drops everything outside the owned key groups from the restored base, without
    /// reading it.
    pub(super) fn clip_to_range(&self) -> Result<()> {
        let guard = self.read();
        let open = guard.as_ref().ok_or(Error::Closed)?;
        let below: (Vec<u8>, Vec<u8>) = (Vec::new(), self.range.start().to_be_bytes().to_vec());
        let above = (
            (self.range.end() + 1).to_be_bytes().to_vec(),
            PAST_LAST_KEY_GROUP.to_vec(),
        );
        for meta in &open.states {
            let cf = open
                .db
                .cf_handle(&meta.name)
                .ok_or_else(|| self.missing_cf(&meta.name))?;
            for (from, to) in [&below, &above] {
                if from >= to {
                    continue;
                }
                open.db
                    .delete_file_in_range_cf(cf, from, to)
                    .and_then(|()| {
                        open.db
                            .delete_range_cf_opt(cf, from, to, &self.write_options)
                    })
                    .map_err(|e| self.rocks(format!("clip state '{}'", meta.name), e))?;
            }
        }
        Ok(())
    }

    /// Brings the entries of the owned key groups from another subtask's snapshot in:
    /// downloaded to a temporary directory, read once in key order into SST files, and
    /// ingested.
    pub(super) fn ingest_handle(
        &self,
        store: &dyn SnapshotStore,
        handle: &KeyedStateHandle,
        index: usize,
    ) -> Result<()> {
        let Some(range) = handle.key_groups.intersect(&self.range) else {
            return Ok(());
        };
        let temp = self.dir.join(RESTORE_DIR).join(index.to_string());
        let _ = std::fs::remove_dir_all(&temp);
        download_into(store, handle, &temp)?;
        let result = self.ingest_from(&temp, handle, range);
        if let Err(e) = std::fs::remove_dir_all(self.dir.join(RESTORE_DIR)) {
            tracing::warn!(dir = %temp.display(), error = %e, "cannot remove a restore directory");
        }
        result
    }

    fn ingest_from(
        &self,
        temp: &Path,
        handle: &KeyedStateHandle,
        range: KeyGroupRange,
    ) -> Result<()> {
        let rocks = |op: String, e: rocksdb::Error| Error::RocksDb {
            op,
            path: temp.to_path_buf(),
            detail: e.into_string(),
        };
        let metas: Vec<&StateMeta> = handle.states.iter().collect();
        let options: Vec<rocksdb::Options> =
            metas.iter().map(|m| self.ingest_file_options(m)).collect();
        let mut descriptors = vec![ColumnFamilyDescriptor::new(
            super::META_CF,
            rocksdb::Options::default(),
        )];
        for (meta, opts) in metas.iter().zip(&options) {
            descriptors.push(ColumnFamilyDescriptor::new(
                meta.name.as_str(),
                opts.clone(),
            ));
        }
        let source = DB::open_cf_descriptors_read_only(
            &rocksdb::Options::default(),
            temp,
            descriptors,
            false,
        )
        .map_err(|e| rocks("open a snapshot to restore from".into(), e))?;
        self.check_snapshot_record(&source, temp, handle)?;
        // One job per state and slice of the key groups, written in parallel: each slice is
        // a disjoint key range, so a state's files ingest together without overlapping.
        let slices = key_group_slices(range, TRANSFER_THREADS);
        let jobs: Vec<(usize, KeyGroupRange)> = (0..metas.len())
            .flat_map(|state| slices.iter().map(move |slice| (state, *slice)))
            .collect();
        let written = in_parallel(TRANSFER_THREADS, &jobs, |&(state, slice)| {
            let (meta, opts) = (metas[state], &options[state]);
            let cf = source
                .cf_handle(&meta.name)
                .ok_or_else(|| self.missing_cf(&meta.name))?;
            let sst = temp.join(format!("ingest-{state}-{}.sst", slice.start()));
            let mut read = rocksdb::ReadOptions::default();
            read.set_total_order_seek(true);
            read.set_iterate_upper_bound((slice.end() + 1).to_be_bytes().to_vec());
            let mut it = source.raw_iterator_cf_opt(cf, read);
            it.seek(slice.start().to_be_bytes());
            let mut writer: Option<SstFileWriter<'_>> = None;
            let mut count = 0u64;
            let write_error = |e| rocks(format!("write an SST of state '{}'", meta.name), e);
            while let (Some(key), Some(value)) = (it.key(), it.value()) {
                let w = match writer.as_mut() {
                    Some(w) => w,
                    None => {
                        let w = SstFileWriter::create(opts);
                        w.open(&sst).map_err(write_error)?;
                        writer.insert(w)
                    }
                };
                w.put(key, value).map_err(write_error)?;
                count += 1;
                it.next();
            }
            it.status()
                .map_err(|e| rocks(format!("read state '{}'", meta.name), e))?;
            match writer {
                Some(mut writer) => {
                    writer.finish().map_err(write_error)?;
                    Ok((state, Some(sst), count))
                }
                None => Ok((state, None, 0)),
            }
        })?;
        let ingested: u64 = written.iter().map(|(_, _, count)| count).sum();
        let files: Vec<(&str, &Path)> = written
            .iter()
            .filter_map(|(state, path, _)| Some((metas[*state].name.as_str(), path.as_deref()?)))
            .collect();
        self.ingest_files(&files)?;
        info!(dir = %self.dir.display(), from = %handle.key_groups, entries = ingested,
            "ingested the entries of another subtask's snapshot");
        Ok(())
    }
}

impl RocksDbBackend {
    /// Ingests SST files written for a restore, each named with its state: one ingestion
    /// per state, whose files cover disjoint key ranges.
    pub(super) fn ingest_files(&self, files: &[(&str, &Path)]) -> Result<()> {
        let guard = self.read();
        let open = guard.as_ref().ok_or(Error::Closed)?;
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in files {
            if !names.contains(name) {
                names.push(name);
            }
        }
        for name in names {
            let paths: Vec<&Path> = files
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, path)| *path)
                .collect();
            let cf = open
                .db
                .cf_handle(name)
                .ok_or_else(|| self.missing_cf(name))?;
            let mut ingest = IngestExternalFileOptions::default();
            ingest.set_move_files(true);
            open.db
                .ingest_external_file_cf_opts(cf, &ingest, paths)
                .map_err(|e| self.rocks(format!("ingest state '{name}'"), e))?;
        }
        Ok(())
    }

    /// Checks that a snapshot opened from `dir` holds the key groups and max parallelism
    /// its handle says: a `_metadata` naming another subtask's files is refused.
    fn check_snapshot_record(&self, db: &DB, dir: &Path, handle: &KeyedStateHandle) -> Result<()> {
        let corrupted = |detail: String| Error::Corrupted {
            what: "backend record",
            path: dir.to_path_buf(),
            detail,
        };
        let cf = db
            .cf_handle(super::META_CF)
            .ok_or_else(|| corrupted("the snapshot has no _cairn_meta column family".into()))?;
        let record = db
            .get_cf(cf, super::BACKEND_RECORD)
            .map_err(|e| self.rocks("read the backend record of a snapshot", e))?
            .ok_or_else(|| corrupted("missing".into()))?;
        let (max, range) = super::parse_backend_record(&record).map_err(corrupted)?;
        if range != handle.key_groups || max != self.max_parallelism.get() {
            return Err(corrupted(format!(
                "the snapshot of {} (max parallelism {}) holds the files of {range} (max \
                 parallelism {max})",
                handle.key_groups, self.max_parallelism
            )));
        }
        Ok(())
    }
}

/// `range` cut into at most `parts` slices of consecutive key groups, in order.
pub(super) fn key_group_slices(range: KeyGroupRange, parts: usize) -> Vec<KeyGroupRange> {
    let len = range.len() as usize;
    let parts = parts.clamp(1, len);
    (0..parts)
        .map(|i| {
            // Key groups are below 32768: the offsets fit in u16.
            let first = range.start() + (i * len / parts) as u16;
            let last = range.start() + ((i + 1) * len / parts - 1) as u16;
            KeyGroupRange::new(first, last)
        })
        .collect()
}

/// Checks the max parallelism recorded in a restored DB against the one asked for.
pub(super) fn check_max_parallelism(
    found: u32,
    requested: MaxParallelism,
    what: &str,
) -> Result<()> {
    if found == requested.get() {
        return Ok(());
    }
    Err(Error::Restore {
        what: what.to_string(),
        detail: format!(
            "the snapshot has max parallelism {found}, not {requested}; the max parallelism \
             of an operator cannot change, so restore with max parallelism {found}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_range_in_order_without_overlap() {
        for (start, end, parts) in [(0, 127, 4), (43, 85, 4), (5, 6, 4), (9, 9, 4), (0, 10, 3)] {
            let range = KeyGroupRange::new(start, end);
            let slices = key_group_slices(range, parts);
            assert!(slices.len() <= parts);
            assert_eq!(slices[0].start(), start);
            assert_eq!(slices[slices.len() - 1].end(), end);
            for pair in slices.windows(2) {
                assert_eq!(pair[0].end() + 1, pair[1].start(), "{slices:?}");
            }
        }
    }
}
