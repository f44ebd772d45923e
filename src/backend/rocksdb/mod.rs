//! The RocksDB backend: one DB per subtask directory, one column family per state.
//!
//! Writes go without a WAL (a checkpoint, not the log, is what survives a crash) and flushes
//! are atomic across column families, so a flush is a consistent cut of all states. Per state
//! kind, the column family gets:
//! - list: a merge operator that concatenates operands (elements are length-prefixed, so
//!   appending is concatenation and needs no read);
//! - map: a prefix extractor on `[kg][key][namespace]` with a memtable prefix bloom, so
//!   iterating one map seeks only where that prefix can be;
//! - TTL: a compaction filter factory that drops expired entries.
//!
//! - timers: nothing; a timer set's column family is read only by its queue ([`timers`]).
//!
//! The internal column family `_cairn_meta` records the backend's key groups and every
//! state's [`StateMeta`], so a reopened directory opens each column family with the options
//! its kind needs (read first through a read-only open) and rejects a mismatched
//! registration.

mod checkpoint;
mod flush;
mod migrate;
mod options;
mod restore;
mod savepoint;
mod timers;
mod ttl_filter;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Instant;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, FlushOptions, MergeOperands, ReadOptions, SliceTransform,
    WriteBatch, WriteOptions, DB,
};
use tracing::debug;

use crate::backend::key::{prefix_successor, CompositeKey};
use crate::backend::{
    check_not_timers, check_owned, check_prefix, register_in, unknown_state, PayloadRewrite,
    StateId, StateKind, StateMeta, Visit,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::snapshot::{
    CheckpointId, InstanceId, KeyedStateHandle, PendingSnapshot, SnapshotFormat, SnapshotRequest,
    SnapshotType,
};
use crate::storage::SnapshotStore;
use crate::ttl::entry_expired;
use crate::KeyedStateBackend;
use checkpoint::{StagedCheckpoint, UploadedFiles};
use savepoint::StagedCanonical;

pub use options::{MemoryBudget, RocksDbOptions};
use ttl_filter::TtlFilterFactory;

/// The internal column family holding the backend record and the state metadata.
pub(super) const META_CF: &str = "_cairn_meta";
pub(super) const BACKEND_RECORD: &[u8] = b"backend";
const STATE_RECORD_PREFIX: &[u8] = b"state/";
const BACKEND_RECORD_VERSION: u8 = 1;

/// Builds a [`RocksDbBackend`]: where, which key groups, and the injected pieces.
pub struct RocksDbBackendBuilder {
    dir: PathBuf,
    max_parallelism: MaxParallelism,
    range: KeyGroupRange,
    options: RocksDbOptions,
    budget: Option<MemoryBudget>,
    clock: Arc<dyn Clock>,
    restore: Option<(Arc<dyn SnapshotStore>, Vec<KeyedStateHandle>)>,
}

impl RocksDbBackendBuilder {
    /// Restores the backend from snapshot handles (a [`SubtaskRestore`]'s), into `dir`,
    /// which must be missing or empty. The first handle is the base (see the module
    /// docs of the restore); with no handles the backend starts empty.
    ///
    /// [`SubtaskRestore`]: crate::SubtaskRestore
    pub fn restore_from(
        mut self,
        store: Arc<dyn SnapshotStore>,
        handles: Vec<KeyedStateHandle>,
    ) -> Self {
        self.restore = Some((store, handles));
        self
    }

    /// Sets the RocksDB options.
    pub fn options(mut self, options: RocksDbOptions) -> Self {
        self.options = options;
        self
    }

    /// Shares `budget` (block cache and write buffer manager) with other backends. Without
    /// it the backend gets a budget of its own of [`MemoryBudget::DEFAULT_BYTES`].
    pub fn memory_budget(mut self, budget: &MemoryBudget) -> Self {
        self.budget = Some(budget.clone());
        self
    }

    /// Sets the clock TTL reads (the system clock by default).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Opens the backend, creating the directory and the DB if needed, restoring first if
    /// [`restore_from`](Self::restore_from) was given.
    ///
    /// # Errors
    /// For a restore: [`Error::Restore`] if the directory is not empty, the handles are
    /// not RocksDB snapshots, disagree on a state, or have another max parallelism;
    /// [`Error::NotFound`] / [`Error::Corrupted`] for a missing file or one whose size or
    /// CRC32 differs from the snapshot's record. Otherwise:
    /// [`Error::BackendMismatch`] if the directory holds a backend of another max
    /// parallelism or key-group range; [`Error::Corrupted`] if its metadata does not decode;
    /// [`Error::RocksDb`] / [`Error::Io`] if it cannot be opened.
    pub fn open(self) -> Result<RocksDbBackend> {
        RocksDbBackend::open(self)
    }
}

/// A keyed state backend on RocksDB, for one subtask.
///
/// # Examples
/// ```
/// use cairn::{KeyGroupRange, MaxParallelism, RocksDbBackend};
/// # let dir = tempfile::tempdir().unwrap();
/// let max = MaxParallelism::DEFAULT;
/// let backend = RocksDbBackend::builder(dir.path(), max, KeyGroupRange::all(max)).open()?;
/// # Ok::<(), cairn::Error>(())
/// ```
pub struct RocksDbBackend {
    dir: PathBuf,
    max_parallelism: MaxParallelism,
    range: KeyGroupRange,
    options: RocksDbOptions,
    budget: MemoryBudget,
    clock: Arc<dyn Clock>,
    write_options: WriteOptions,
    read_options: ReadOptions,
    /// Names the files this opening uploads.
    instance: InstanceId,
    /// The SST files of earlier snapshots that later ones may reference.
    uploaded: Arc<Mutex<UploadedFiles>>,
    /// `None` once closed. Reads and writes share the lock; registering and closing take it.
    open: RwLock<Option<OpenDb>>,
}

struct OpenDb {
    db: DB,
    states: Vec<StateMeta>,
    /// Per state, the TTL its compaction filter reads.
    ttl_millis: Vec<Arc<AtomicU64>>,
    /// Per state, a timer set's queue once a timer call built it.
    queues: timers::Queues,
}

impl RocksDbBackend {
    /// A builder for the backend in `dir` owning `range` of `max_parallelism`.
    pub fn builder(
        dir: impl AsRef<Path>,
        max_parallelism: MaxParallelism,
        range: KeyGroupRange,
    ) -> RocksDbBackendBuilder {
        RocksDbBackendBuilder {
            dir: dir.as_ref().to_path_buf(),
            max_parallelism,
            range,
            options: RocksDbOptions::default(),
            budget: None,
            clock: Arc::new(SystemClock),
            restore: None,
        }
    }

    /// The directory of the DB.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id that names the files this opening uploads.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    fn open(b: RocksDbBackendBuilder) -> Result<Self> {
        let restoring = b.restore.as_ref().is_some_and(|(_, h)| !h.is_empty());
        if !restoring {
            return Self::open_or_restore(b);
        }
        restore::check_empty(&b.dir)?;
        let dir = b.dir.clone();
        let result = Self::open_or_restore(b);
        if result.is_err() {
            // The directory was missing or empty: a failed restore leaves it empty again.
            restore::clear_dir(&dir);
        }
        result
    }

    fn open_or_restore(mut b: RocksDbBackendBuilder) -> Result<Self> {
        let mut expected_range = b.range;
        let mut uploaded = UploadedFiles::default();
        let mut restore_rest = None;
        if let Some((store, handles)) = b.restore.take().filter(|(_, h)| !h.is_empty()) {
            let started = Instant::now();
            let what = format!("{} into {}", b.range, b.dir.display());
            let states = restore::validate(store.as_ref(), &handles, &what)?;
            let base = &handles[0];
            if base.format == SnapshotFormat::RocksDb {
                restore::download_into(store.as_ref(), base, &b.dir)?;
                expected_range = base.key_groups;
                if handles.len() == 1 && base.key_groups == b.range {
                    uploaded = UploadedFiles::restored(base, store.location());
                }
            }
            restore_rest = Some((store, handles, states, what, started));
        }
        let backend = Self::open_dir(b, expected_range, uploaded)?;
        if let Some((store, handles, states, what, started)) = restore_rest {
            if expected_range != backend.range {
                backend.clip_to_range()?;
            }
            for meta in &states {
                backend.register(meta).map_err(|e| Error::Restore {
                    what: what.clone(),
                    detail: e.to_string(),
                })?;
            }
            for (index, handle) in handles.iter().enumerate() {
                match handle.format {
                    // The base was opened as it is.
                    SnapshotFormat::RocksDb if index == 0 => {}
                    SnapshotFormat::RocksDb => {
                        backend.ingest_handle(store.as_ref(), handle, index)?
                    }
                    SnapshotFormat::Canonical => {
                        backend.ingest_canonical(store.as_ref(), handle, index, &what)?
                    }
                }
            }
            tracing::info!(dir = %backend.dir.display(), range = %backend.range,
                handles = handles.len(), ms = started.elapsed().as_millis() as u64,
                "restored RocksDB backend");
        }
        Ok(backend)
    }

    fn open_dir(
        b: RocksDbBackendBuilder,
        expected_range: KeyGroupRange,
        uploaded: UploadedFiles,
    ) -> Result<Self> {
        std::fs::create_dir_all(&b.dir).map_err(|source| Error::Io {
            op: "create backend directory",
            path: b.dir.clone(),
            source,
        })?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        let backend = RocksDbBackend {
            budget: b
                .budget
                .unwrap_or_else(|| MemoryBudget::new(MemoryBudget::DEFAULT_BYTES)),
            dir: b.dir,
            max_parallelism: b.max_parallelism,
            range: b.range,
            options: b.options,
            clock: b.clock,
            write_options,
            read_options: ReadOptions::default(),
            instance: InstanceId::random(),
            uploaded: Arc::new(Mutex::new(uploaded)),
            open: RwLock::new(None),
        };
        let (states, orphans) = backend.read_existing_states(expected_range)?;
        let ttl_millis: Vec<Arc<AtomicU64>> = states
            .iter()
            .map(|s| Arc::new(AtomicU64::new(s.ttl.map_or(0, |t| t.ttl_millis()))))
            .collect();
        let mut descriptors = vec![ColumnFamilyDescriptor::new(
            META_CF,
            rocksdb::Options::default(),
        )];
        for (meta, ttl) in states.iter().zip(&ttl_millis) {
            descriptors.push(ColumnFamilyDescriptor::new(
                meta.name.as_str(),
                backend.state_cf_options(meta, ttl),
            ));
        }
        for orphan in &orphans {
            descriptors.push(ColumnFamilyDescriptor::new(
                orphan.as_str(),
                rocksdb::Options::default(),
            ));
        }
        let mut db = DB::open_cf_descriptors(&backend.db_options(), &backend.dir, descriptors)
            .map_err(|e| backend.rocks("open", e))?;
        for orphan in &orphans {
            tracing::warn!(dir = %backend.dir.display(), column_family = %orphan,
                "dropping a column family left without state metadata by an interrupted registration");
            db.drop_cf(orphan)
                .map_err(|e| backend.rocks(format!("drop column family '{orphan}'"), e))?;
        }
        let meta_cf = db
            .cf_handle(META_CF)
            .ok_or_else(|| backend.missing_cf(META_CF))?;
        let record = encode_backend_record(backend.max_parallelism, backend.range);
        db.put_cf(meta_cf, BACKEND_RECORD, record)
            .and_then(|()| db.flush_cf(meta_cf))
            .map_err(|e| backend.rocks("write the backend record", e))?;
        debug!(dir = %backend.dir.display(), states = states.len(), "opened RocksDB backend");
        let queues = states.iter().map(|_| Mutex::default()).collect();
        *backend.open.write().unwrap_or_else(|e| e.into_inner()) = Some(OpenDb {
            db,
            states,
            ttl_millis,
            queues,
        });
        Ok(backend)
    }

    /// Reads the backend record and state metadata of an existing DB through a read-only
    /// open, and checks the record against this backend's configuration. Also returns the
    /// column families that have no state record: a registration creates the column family
    /// first and records it second, and writes start only after both, so such a column
    /// family was left empty by an interrupted registration.
    fn read_existing_states(
        &self,
        expected_range: KeyGroupRange,
    ) -> Result<(Vec<StateMeta>, Vec<String>)> {
        if !self.dir.join("CURRENT").exists() {
            return Ok((Vec::new(), Vec::new()));
        }
        let families = DB::list_cf(&rocksdb::Options::default(), &self.dir)
            .map_err(|e| self.rocks("list column families", e))?;
        if !families.iter().any(|f| f == META_CF) {
            return Err(Error::BackendMismatch {
                path: self.dir.clone(),
                found: "a RocksDB database that cairn did not create".into(),
                requested: "a cairn backend".into(),
                hint: "give each subtask a directory of its own",
            });
        }
        let db =
            DB::open_cf_for_read_only(&rocksdb::Options::default(), &self.dir, [META_CF], false)
                .map_err(|e| self.rocks("open read-only", e))?;
        let cf = db
            .cf_handle(META_CF)
            .ok_or_else(|| self.missing_cf(META_CF))?;
        let record = db
            .get_cf(cf, BACKEND_RECORD)
            .map_err(|e| self.rocks("read the backend record", e))?
            .ok_or_else(|| self.corrupted("backend record", "missing".into()))?;
        self.check_backend_record(&record, expected_range)?;
        let mut states = Vec::new();
        for item in db.prefix_iterator_cf(cf, STATE_RECORD_PREFIX) {
            let (key, value) = item.map_err(|e| self.rocks("read state metadata", e))?;
            if !key.starts_with(STATE_RECORD_PREFIX) {
                break;
            }
            let meta = StateMeta::decode(&value)
                .map_err(|detail| self.corrupted("state metadata", detail))?;
            if !families.contains(&meta.name) {
                return Err(self.corrupted(
                    "state metadata",
                    format!("state '{}' has no column family", meta.name),
                ));
            }
            states.push(meta);
        }
        let orphans = families
            .into_iter()
            .filter(|f| f != "default" && f != META_CF && !states.iter().any(|s| &s.name == f))
            .collect();
        Ok((states, orphans))
    }

    fn check_backend_record(&self, record: &[u8], expected_range: KeyGroupRange) -> Result<()> {
        let (max, range) = parse_backend_record(record)
            .map_err(|detail| self.corrupted("backend record", detail))?;
        if expected_range != self.range {
            // A restore: the key groups are re-cut, the max parallelism cannot be, and the
            // files must be those of the snapshot's key groups.
            if range != expected_range {
                return Err(self.corrupted(
                    "backend record",
                    format!("the snapshot of {expected_range} holds the files of {range}"),
                ));
            }
            return restore::check_max_parallelism(
                max,
                self.max_parallelism,
                &format!("{} into {}", self.range, self.dir.display()),
            );
        }
        if max != self.max_parallelism.get() || range != self.range {
            return Err(Error::BackendMismatch {
                path: self.dir.clone(),
                found: format!("max parallelism {max} and {range}"),
                requested: format!("max parallelism {} and {}", self.max_parallelism, self.range),
                hint: "open it with the configuration it was created with, or restore into a new directory to rescale",
            });
        }
        Ok(())
    }

    fn db_options(&self) -> rocksdb::Options {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Without a WAL, only an atomic flush gives a consistent cut across column families.
        opts.set_atomic_flush(true);
        opts.set_max_background_jobs(self.options.max_background_jobs);
        opts.set_write_buffer_manager(&self.budget.write_buffers);
        opts.set_keep_log_file_num(2);
        opts
    }

    /// The options of the SST files a restore writes to ingest: the state's, but LZ4 at the
    /// bottom level too. Ingested files land there; zstd would cost a restore a quarter of
    /// its time, and the next compaction of those files recompresses them with zstd.
    fn ingest_file_options(&self, meta: &StateMeta) -> rocksdb::Options {
        let mut options = self.state_cf_options(meta, &Arc::default());
        if self.options.compression {
            options.set_bottommost_compression_type(rocksdb::DBCompressionType::Lz4);
        }
        options
    }

    fn state_cf_options(&self, meta: &StateMeta, ttl_millis: &Arc<AtomicU64>) -> rocksdb::Options {
        let mut cf = self.options.column_family(&self.budget);
        match meta.kind {
            StateKind::List => cf.set_merge_operator_associative("cairn.list-append", concat),
            StateKind::Map => {
                cf.set_prefix_extractor(SliceTransform::create(
                    "cairn.key-namespace",
                    key_namespace_prefix,
                    Some(has_key_namespace_prefix),
                ));
                cf.set_memtable_prefix_bloom_ratio(0.1);
            }
            StateKind::Value | StateKind::Reducing | StateKind::Aggregating | StateKind::Timers => {
            }
        }
        if meta.ttl.is_some() {
            cf.set_compaction_filter_factory(TtlFilterFactory {
                kind: meta.kind,
                ttl_millis: ttl_millis.clone(),
                clock: self.clock.clone(),
                name: CString::new("cairn.ttl").unwrap_or_default(),
            });
        }
        cf
    }

    /// Writes a state's record to `_cairn_meta` and flushes it at once: without a WAL it
    /// would not survive a crash.
    fn write_state_record(&self, db: &DB, meta: &StateMeta) -> Result<()> {
        let mut record = Vec::new();
        meta.encode(&mut record);
        let mut record_key = STATE_RECORD_PREFIX.to_vec();
        record_key.extend_from_slice(meta.name.as_bytes());
        let meta_cf = db
            .cf_handle(META_CF)
            .ok_or_else(|| self.missing_cf(META_CF))?;
        db.put_cf_opt(meta_cf, &record_key, &record, &self.write_options)
            .and_then(|()| db.flush_cf(meta_cf))
            .map_err(|e| self.rocks(format!("record the metadata of state '{}'", meta.name), e))
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<OpenDb>> {
        // Every write under the lock is a single RocksDB call or a push after one succeeded,
        // so the state is consistent even if a holder panicked.
        self.open.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with the DB, the state's column family and its meta; `f` checks that the key
    /// or prefix it was given is owned before it touches anything.
    fn with_cf<T>(
        &self,
        state: StateId,
        f: impl FnOnce(&DB, &ColumnFamily, &StateMeta) -> Result<T>,
    ) -> Result<T> {
        let guard = self.read();
        let open = guard.as_ref().ok_or(Error::Closed)?;
        let meta = open
            .states
            .get(state.0 as usize)
            .ok_or_else(|| unknown_state(state))?;
        let cf = open
            .db
            .cf_handle(&meta.name)
            .ok_or_else(|| self.missing_cf(&meta.name))?;
        f(&open.db, cf, meta)
    }

    /// The scan of [`KeyedStateBackend::scan`], on an open DB and column family.
    fn scan_db(
        &self,
        db: &DB,
        cf: &ColumnFamily,
        meta: &StateMeta,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit,
    ) -> Result<()> {
        // One map's prefix: a prefix seek, which the prefix bloom filters make skip every
        // SST without that prefix, bounded by the extractor. Any other scan (a key group,
        // the whole state) ignores the extractor and is bounded by the prefix's successor.
        let one_map =
            meta.kind == StateKind::Map && CompositeKey::prefix_len(prefix) == Some(prefix.len());
        let mut read_options = ReadOptions::default();
        if one_map {
            read_options.set_prefix_same_as_start(true);
        } else {
            read_options.set_total_order_seek(true);
            if let Some(upper) = prefix_successor(prefix) {
                read_options.set_iterate_upper_bound(upper);
            }
        }
        let mut it = db.raw_iterator_cf_opt(cf, read_options);
        match start_after {
            Some(after) if after >= prefix => {
                it.seek(after);
                if it.key() == Some(after) {
                    it.next();
                }
            }
            _ => it.seek(prefix),
        }
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            if !key.starts_with(prefix) || visit(key, value).is_break() {
                break;
            }
            it.next();
        }
        it.status()
            .map_err(|e| self.rocks(format!("scan state '{}'", meta.name), e))
    }

    fn rocks(&self, op: impl Into<String>, e: rocksdb::Error) -> Error {
        Error::RocksDb {
            op: op.into(),
            path: self.dir.clone(),
            detail: e.into_string(),
        }
    }

    fn missing_cf(&self, name: &str) -> Error {
        self.corrupted(
            "column families",
            format!("column family '{name}' is missing"),
        )
    }

    fn corrupted(&self, what: &'static str, detail: String) -> Error {
        Error::Corrupted {
            what,
            path: self.dir.clone(),
            detail,
        }
    }
}

/// The backend record of a backend of `max` key groups owning `range` (docs/format.md,
/// section 5): `[version = 1][max parallelism: u32][first: u16][last: u16]`, big endian.
pub(crate) fn encode_backend_record(max: MaxParallelism, range: KeyGroupRange) -> [u8; 9] {
    let mut record = [0u8; 9];
    record[0] = BACKEND_RECORD_VERSION;
    record[1..5].copy_from_slice(&max.get().to_be_bytes());
    record[5..7].copy_from_slice(&range.start().to_be_bytes());
    record[7..9].copy_from_slice(&range.end().to_be_bytes());
    record
}

/// The max parallelism and key groups of a backend record (docs/format.md, section 5).
pub(crate) fn parse_backend_record(
    record: &[u8],
) -> std::result::Result<(u32, KeyGroupRange), String> {
    let [version, m0, m1, m2, m3, s0, s1, e0, e1] = record else {
        return Err(format!("{} bytes, not 9", record.len()));
    };
    if *version != BACKEND_RECORD_VERSION {
        return Err(format!(
            "version {version} is not supported (this cairn reads {BACKEND_RECORD_VERSION})"
        ));
    }
    let max = u32::from_be_bytes([*m0, *m1, *m2, *m3]);
    let start = u16::from_be_bytes([*s0, *s1]);
    let end = u16::from_be_bytes([*e0, *e1]);
    if start > end {
        return Err(format!("key groups {start}..={end} are reversed"));
    }
    Ok((max, KeyGroupRange::new(start, end)))
}

/// The list merge operator: existing value and operands, concatenated in order.
fn concat(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let len = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(existing.unwrap_or_default());
    for operand in operands {
        out.extend_from_slice(operand);
    }
    Some(out)
}

/// The map prefix extractor: the `[kg][key][namespace]` part of a composite key.
fn key_namespace_prefix(key: &[u8]) -> &[u8] {
    match CompositeKey::prefix_len(key) {
        Some(len) => &key[..len],
        None => key,
    }
}

fn has_key_namespace_prefix(key: &[u8]) -> bool {
    CompositeKey::prefix_len(key).is_some()
}

impl KeyedStateBackend for RocksDbBackend {
    fn max_parallelism(&self) -> MaxParallelism {
        self.max_parallelism
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn register(&self, meta: &StateMeta) -> Result<StateId> {
        let mut guard = self.open.write().unwrap_or_else(|e| e.into_inner());
        let open = guard.as_mut().ok_or(Error::Closed)?;
        let mut states = open.states.clone();
        let (index, new) = register_in(&mut states, meta)?;
        let ttl_millis = meta.ttl.map_or(0, |t| t.ttl_millis());
        if new {
            let ttl = Arc::new(AtomicU64::new(ttl_millis));
            let cf_options = self.state_cf_options(meta, &ttl);
            open.db.create_cf(&meta.name, &cf_options).map_err(|e| {
                self.rocks(
                    format!("create the column family of state '{}'", meta.name),
                    e,
                )
            })?;
            open.ttl_millis.push(ttl);
            open.queues.push(Mutex::default());
        } else {
            open.ttl_millis[index].store(ttl_millis, std::sync::atomic::Ordering::Relaxed);
        }
        if new || open.states[index] != states[index] {
            self.write_state_record(&open.db, &states[index])?;
        }
        open.states = states;
        Ok(StateId(index as u32))
    }

    fn evolve(
        &self,
        meta: &StateMeta,
        rewrite: Option<&mut PayloadRewrite<'_>>,
    ) -> Result<StateId> {
        self.evolve_state(meta, rewrite)
    }

    fn states(&self) -> Result<Vec<StateMeta>> {
        let guard = self.read();
        Ok(guard.as_ref().ok_or(Error::Closed)?.states.clone())
    }

    fn get(&self, state: StateId, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        self.with_cf(state, |db, cf, meta| {
            check_owned(self.range, meta, key)?;
            out.clear();
            match db.get_pinned_cf_opt(cf, key, &self.read_options) {
                Ok(Some(value)) => {
                    out.extend_from_slice(&value);
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(e) => Err(self.rocks(format!("read state '{}'", meta.name), e)),
            }
        })
    }

    fn put(&self, state: StateId, key: &[u8], value: &[u8]) -> Result<()> {
        self.with_cf(state, |db, cf, meta| {
            check_owned(self.range, meta, key)?;
            check_not_timers(meta)?;
            db.put_cf_opt(cf, key, value, &self.write_options)
                .map_err(|e| self.rocks(format!("write state '{}'", meta.name), e))
        })
    }

    fn append(&self, state: StateId, key: &[u8], elements: &[u8]) -> Result<()> {
        self.with_cf(state, |db, cf, meta| {
            check_owned(self.range, meta, key)?;
            check_not_timers(meta)?;
            db.merge_cf_opt(cf, key, elements, &self.write_options)
                .map_err(|e| self.rocks(format!("append to state '{}'", meta.name), e))
        })
    }

    fn delete(&self, state: StateId, key: &[u8]) -> Result<()> {
        self.with_cf(state, |db, cf, meta| {
            check_owned(self.range, meta, key)?;
            check_not_timers(meta)?;
            db.delete_cf_opt(cf, key, &self.write_options)
                .map_err(|e| self.rocks(format!("delete from state '{}'", meta.name), e))
        })
    }

    fn delete_prefix(&self, state: StateId, prefix: &[u8]) -> Result<()> {
        check_prefix_not_empty(prefix)?;
        // Point deletes of the keys found, not a range tombstone: clears are frequent and
        // small (one map), and many range tombstones slow every later read.
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        self.scan(state, prefix, None, &mut |key, _| {
            doomed.push(key.to_vec());
            Visit::Continue(())
        })?;
        self.with_cf(state, |db, cf, meta| {
            check_prefix(self.range, meta, prefix)?;
            check_not_timers(meta)?;
            let mut batch = WriteBatch::default();
            for key in &doomed {
                batch.delete_cf(cf, key);
            }
            db.write_opt(batch, &self.write_options)
                .map_err(|e| self.rocks(format!("clear entries of state '{}'", meta.name), e))
        })
    }

    fn scan(
        &self,
        state: StateId,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit,
    ) -> Result<()> {
        self.with_cf(state, |db, cf, meta| {
            check_prefix(self.range, meta, prefix)?;
            self.scan_db(db, cf, meta, prefix, start_after, visit)
        })
    }

    fn add_timer(&self, timers: StateId, timer: &[u8]) -> Result<()> {
        self.with_timers(timers, Some(timer), |queue, store| queue.add(store, timer))
    }

    fn delete_timer(&self, timers: StateId, timer: &[u8]) -> Result<()> {
        self.with_timers(timers, Some(timer), |queue, store| {
            queue.delete(store, timer)
        })
    }

    fn poll_timer(&self, timers: StateId, up_to: u64, out: &mut Vec<u8>) -> Result<bool> {
        self.with_timers(timers, None, |queue, store| queue.poll(store, up_to, out))
    }

    fn next_timer(&self, timers: StateId) -> Result<Option<u64>> {
        self.with_timers(timers, None, |queue, _| Ok(queue.peek()))
    }

    fn purge_expired(&self) -> Result<()> {
        let now = self.clock.now_millis();
        let guard = self.read();
        let open = guard.as_ref().ok_or(Error::Closed)?;
        for (index, meta) in open.states.iter().enumerate() {
            let Some(ttl) = meta.ttl else { continue };
            let cf = open
                .db
                .cf_handle(&meta.name)
                .ok_or_else(|| self.missing_cf(&meta.name))?;
            if meta.kind == StateKind::List {
                // Appends are merge operands, which the compaction filter never sees.
                let mut batch = WriteBatch::default();
                let state = StateId(index as u32);
                let ttl_millis = ttl.ttl_millis();
                self.scan_db(&open.db, cf, meta, &[], None, &mut |key, value| {
                    if entry_expired(meta.kind, value, ttl_millis, now) {
                        batch.delete_cf(cf, key);
                    }
                    Visit::Continue(())
                })?;
                debug!(state = ?state, expired = batch.len(), "swept expired lists");
                open.db.write_opt(batch, &self.write_options).map_err(|e| {
                    self.rocks(format!("delete expired lists of state '{}'", meta.name), e)
                })?;
            }
            open.db
                .flush_cf(cf)
                .map_err(|e| self.rocks(format!("flush state '{}'", meta.name), e))?;
            open.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    fn snapshot(&self, request: &SnapshotRequest) -> Result<PendingSnapshot> {
        let started = Instant::now();
        let now = self.clock.now_millis();
        let guard = self.read();
        let open = guard.as_ref().ok_or(Error::Closed)?;
        let staging = checkpoint::stage(&open.db, &self.dir, &open.states, request.checkpoint_id)?;
        let states = open.states.clone();
        drop(guard);
        if request.snapshot_type == SnapshotType::CanonicalSavepoint {
            let states = states
                .into_iter()
                .map(|meta| {
                    let options = self.state_cf_options(&meta, &Arc::default());
                    (meta, options)
                })
                .collect();
            return Ok(StagedCanonical {
                request: request.clone(),
                staging,
                instance: self.instance,
                max: self.max_parallelism,
                range: self.range,
                states,
                now,
            }
            .into_pending(started));
        }
        Ok(StagedCheckpoint {
            request: request.clone(),
            staging,
            instance: self.instance,
            range: self.range,
            states,
            uploaded: self.uploaded.clone(),
            db_dir: self.dir.clone(),
        }
        .into_pending(started))
    }

    fn notify_checkpoint_complete(&self, checkpoint_id: CheckpointId) {
        self.uploaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .complete(checkpoint_id);
    }

    fn close(&self) -> Result<()> {
        let mut guard = self.open.write().unwrap_or_else(|e| e.into_inner());
        let Some(open) = guard.take() else {
            return Ok(());
        };
        let mut cfs: Vec<&ColumnFamily> = Vec::new();
        for meta in &open.states {
            cfs.push(
                open.db
                    .cf_handle(&meta.name)
                    .ok_or_else(|| self.missing_cf(&meta.name))?,
            );
        }
        let mut flush = FlushOptions::default();
        flush.set_wait(true);
        open.db
            .flush_cfs_opt(&cfs, &flush)
            .map_err(|e| self.rocks("flush on close", e))?;
        debug!(dir = %self.dir.display(), "closed RocksDB backend");
        Ok(())
    }
}

fn check_prefix_not_empty(prefix: &[u8]) -> Result<()> {
    if prefix.len() < 2 {
        return Err(Error::InvalidConfig {
            what: "delete prefix",
            detail: "a prefix to delete must start with a key group".into(),
        });
    }
    Ok(())
}

impl Drop for RocksDbBackend {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "closing the RocksDB backend failed");
        }
    }
}
