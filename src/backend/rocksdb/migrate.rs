//! Schema evolution in RocksDB: one pass over a state's column family.
//!
//! The column family is read in key order (lists merged, as a read sees them) and every
//! entry, its payloads rewritten, goes into one SST file, which is ingested at the end: the
//! ingested puts are newer than everything in the column family, so they replace every old
//! value, list and merge operand at once. If any payload fails, the file is discarded and
//! nothing has changed. The state record is then rewritten with the new value codec (and
//! flushed), so the state is never migrated twice.

use rocksdb::{IngestExternalFileOptions, ReadOptions, SstFileWriter};
use tracing::info;

use crate::backend::migrate::{rewrite_stored, PayloadRewrite};
use crate::backend::rocksdb::RocksDbBackend;
use crate::backend::{check_evolution, StateId, StateMeta};
use crate::error::{Error, Result};
use crate::KeyedStateBackend;

/// The directory, inside a backend's directory, where a migration writes its SST file.
const MIGRATE_DIR: &str = "_cairn_migrate";

impl RocksDbBackend {
    /// [`KeyedStateBackend::evolve`] on RocksDB.
    pub(super) fn evolve_state(
        &self,
        meta: &StateMeta,
        rewrite: Option<&mut PayloadRewrite<'_>>,
    ) -> Result<StateId> {
        {
            // Exclusive: no write may land between the read and the ingestion.
            let mut guard = self.open.write().unwrap_or_else(|e| e.into_inner());
            let open = guard.as_mut().ok_or(Error::Closed)?;
            let Some(index) = open.states.iter().position(|s| s.name == meta.name) else {
                drop(guard);
                return self.register(meta);
            };
            let existing = &open.states[index];
            if existing.value_codec != meta.value_codec {
                check_evolution(existing, meta)?;
                if let Some(rewrite) = rewrite {
                    self.rewrite_column_family(&open.db, existing, rewrite)?;
                }
                let mut evolved = existing.clone();
                evolved.value_codec = meta.value_codec.clone();
                self.write_state_record(&open.db, &evolved)?;
                open.states[index] = evolved;
            }
        }
        self.register(meta)
    }

    fn rewrite_column_family(
        &self,
        db: &rocksdb::DB,
        existing: &StateMeta,
        rewrite: &mut PayloadRewrite<'_>,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let cf = db
            .cf_handle(&existing.name)
            .ok_or_else(|| self.missing_cf(&existing.name))?;
        let dir = self.dir.join(MIGRATE_DIR);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            op: "create the migration directory",
            path: dir.clone(),
            source,
        })?;
        let sst = dir.join("migrated.sst");
        let write_error = |e: rocksdb::Error| {
            self.rocks(
                format!("write the migrated values of '{}'", existing.name),
                e,
            )
        };
        let result = (|| {
            let options = self.ingest_file_options(existing);
            let mut writer: Option<SstFileWriter<'_>> = None;
            let mut read = ReadOptions::default();
            read.set_total_order_seek(true);
            let mut it = db.raw_iterator_cf_opt(cf, read);
            it.seek_to_first();
            let (mut out, mut element) = (Vec::new(), Vec::new());
            let mut entries = 0u64;
            while let (Some(key), Some(value)) = (it.key(), it.value()) {
                rewrite_stored(existing, value, rewrite, &mut out, &mut element)?;
                let w = match writer.as_mut() {
                    Some(w) => w,
                    None => {
                        let w = SstFileWriter::create(&options);
                        w.open(&sst).map_err(write_error)?;
                        writer.insert(w)
                    }
                };
                w.put(key, &out).map_err(write_error)?;
                entries += 1;
                it.next();
            }
            it.status()
                .map_err(|e| self.rocks(format!("read state '{}'", existing.name), e))?;
            if let Some(mut writer) = writer {
                writer.finish().map_err(write_error)?;
                let mut ingest = IngestExternalFileOptions::default();
                ingest.set_move_files(true);
                db.ingest_external_file_cf_opts(cf, &ingest, vec![&sst])
                    .map_err(|e| {
                        self.rocks(format!("ingest the migrated '{}'", existing.name), e)
                    })?;
            }
            Ok(entries)
        })();
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the migration directory");
        }
        let entries = result?;
        info!(dir = %self.dir.display(), state = %existing.name, entries,
            ms = started.elapsed().as_millis() as u64, "migrated a state's values");
        Ok(())
    }
}
