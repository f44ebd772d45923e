//! The ratio harness: the same keyed-state workload on cairn's RocksDB backend, on cairn's heap
//! backend and on a raw RocksDB baseline, in one process, printed as a table of ratios.
//!
//! The workload is the one Flink 2.3's RocksDB state backend was measured on: `N` distinct
//! `u64` keys (1,000,000 unless `CAIRN_BENCH_KEYS` says otherwise) with `u64` values; per key
//! one value, one list element and ten map entries (user keys 0..9) are loaded; then each
//! operation runs on uniformly random existing keys. Every operation runs `CAIRN_BENCH_ROUNDS`
//! rounds (5) of `CAIRN_BENCH_OPS` operations (200,000) per side. Within a round, cairn and
//! raw alternate every [`SLICE`] operations on the same keys, and which of them goes first
//! alternates too, so that background flushes, compactions and other noise hit both. The
//! claim is the ratio of medians, never an absolute figure: the machine is shared and noisy.
//! Before each operation both DBs are flushed, compacted into one sorted run per column family
//! and reopened ([`Cairn::compact`], [`RawDb::compact`]): how many L0 files a read meets
//! depends on when background work happened to run, and would otherwise decide the ratio.
//! `CAIRN_BENCH_ONLY=map_get,map_iter` runs only the named operations (after the full load).
//!
//! The raw baseline is what a hand-written RocksDB state backend would have to do: the same
//! column families configured as cairn configures them (block cache and write buffer manager
//! of the same size, WAL off, atomic flush, the list merge operator, the map prefix
//! extractor), the same key bytes (`[kg][len][key][len][namespace][user key]`, built per
//! operation into a reused buffer, key group hashed per operation), the same value bytes.
//! It holds its column family handles and read/write options, and reads pinned. Its options
//! are copied by hand from `RocksDbOptions::column_family` (src/backend/rocksdb/options.rs)
//! and `RocksDbBackend::db_options`: change them together.
//!
//! `benches/state_ops.rs` reuses this file's workload through a `#[path]` module, so everything
//! it needs is `pub`.

use std::hint::black_box;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn::layout::{read_framed, write_framed, write_prefix, CompositeKey};
use cairn::{
    BigEndian, HeapBackend, KeyGroupRange, KeyedStateStore, ListState, MapState,
    MapStateDescriptor, MaxParallelism, MemoryBudget, RocksDbBackend, RocksDbOptions,
    StateDescriptor, ValueState,
};
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, BottommostLevelCompaction, Cache, ColumnFamily,
    ColumnFamilyDescriptor, CompactOptions, DBCompressionType, DBWithThreadMode, FlushOptions,
    MergeOperands, ReadOptions, SingleThreaded, SliceTransform, WriteBufferManager, WriteOptions,
};
use tempfile::TempDir;

/// User keys per map: 0..10.
pub const MAP_ENTRIES: u64 = 10;

/// Operations in a row on one side before the harness switches to the other.
pub const SLICE: usize = 10_000;

/// The operations measured, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `ValueState::update` of an existing key.
    ValueUpdate,
    /// `ValueState::get` of an existing key.
    ValueGet,
    /// `ListState::add` of one element (a merge).
    ListAdd,
    /// `ListState::get` of a whole list (one to a few elements).
    ListGet,
    /// `MapState::put` of an existing user key.
    MapPut,
    /// `MapState::get` of an existing user key.
    MapGet,
    /// `MapState::iter` over all ten entries of a map.
    MapIter,
}

impl Op {
    /// Every operation, in run order.
    pub const ALL: [Op; 7] = [
        Op::ValueUpdate,
        Op::ValueGet,
        Op::ListAdd,
        Op::ListGet,
        Op::MapPut,
        Op::MapGet,
        Op::MapIter,
    ];

    /// The benchmark name of the operation.
    pub fn name(self) -> &'static str {
        match self {
            Op::ValueUpdate => "value_update",
            Op::ValueGet => "value_get",
            Op::ListAdd => "list_add",
            Op::ListGet => "list_get",
            Op::MapPut => "map_put",
            Op::MapGet => "map_get",
            Op::MapIter => "map_iter",
        }
    }

    /// Flink 2.3's RocksDB backend on this machine with this workload, in ops/s.
    pub fn flink(self) -> Option<f64> {
        match self {
            Op::ValueUpdate => Some(397_000.0),
            Op::ValueGet => Some(257_000.0),
            Op::ListAdd => Some(343_000.0),
            Op::MapPut => Some(397_000.0),
            Op::MapGet => Some(98_000.0),
            Op::ListGet | Op::MapIter => None,
        }
    }

    /// Runs the operation once on `side`; `salt` varies the values written.
    #[inline]
    pub fn apply<S: Side>(self, side: &mut S, access: Access, salt: u64) {
        let Access { key, user_key } = access;
        match self {
            Op::ValueUpdate => side.value_update(key, key ^ salt),
            Op::ValueGet => {
                black_box(side.value_get(key));
            }
            Op::ListAdd => side.list_add(key, key.wrapping_add(salt)),
            Op::ListGet => {
                black_box(side.list_get(key));
            }
            Op::MapPut => side.map_put(key, user_key, key ^ salt),
            Op::MapGet => {
                black_box(side.map_get(key, user_key));
            }
            Op::MapIter => {
                black_box(side.map_iter(key));
            }
        }
    }

    /// Runs the operation once per access; returns the elapsed time.
    pub fn run<S: Side>(self, side: &mut S, accesses: &[Access], salt: u64) -> Duration {
        let start = Instant::now();
        // One monomorphic loop per operation, so the dispatch is not in the timed loop.
        match self {
            Op::ValueUpdate => accesses
                .iter()
                .for_each(|a| Op::ValueUpdate.apply(side, *a, salt)),
            Op::ValueGet => accesses
                .iter()
                .for_each(|a| Op::ValueGet.apply(side, *a, salt)),
            Op::ListAdd => accesses
                .iter()
                .for_each(|a| Op::ListAdd.apply(side, *a, salt)),
            Op::ListGet => accesses
                .iter()
                .for_each(|a| Op::ListGet.apply(side, *a, salt)),
            Op::MapPut => accesses
                .iter()
                .for_each(|a| Op::MapPut.apply(side, *a, salt)),
            Op::MapGet => accesses
                .iter()
                .for_each(|a| Op::MapGet.apply(side, *a, salt)),
            Op::MapIter => accesses
                .iter()
                .for_each(|a| Op::MapIter.apply(side, *a, salt)),
        }
        start.elapsed()
    }
}

/// One random access: an existing key and an existing user key of its map.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// The key, below the key count.
    pub key: u64,
    /// The user key, below [`MAP_ENTRIES`].
    pub user_key: u64,
}

/// SplitMix64: a small deterministic generator, so every run and every side sees the same keys.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (Lemire's multiply-shift; the bias is below 2^-40 here).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// `count` uniformly random accesses over `keys` existing keys.
pub fn accesses(keys: u64, count: usize, seed: u64) -> Vec<Access> {
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|_| Access {
            key: rng.below(keys),
            user_key: rng.below(MAP_ENTRIES),
        })
        .collect()
}

/// A `usize`/`u64` setting from the environment, or its default.
pub fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .replace('_', "")
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?} is not a count: {e}")),
        Err(_) => default,
    }
}

/// The number of keys: `CAIRN_BENCH_KEYS`, 1,000,000 by default.
pub fn key_count() -> u64 {
    env_or("CAIRN_BENCH_KEYS", 1_000_000).max(1)
}

/// One implementation of the workload's operations.
pub trait Side {
    /// Loads key `key`: one value, a list of one element, and the map entries 0..10.
    fn load(&mut self, key: u64);
    /// Sets the value of `key`.
    fn value_update(&mut self, key: u64, value: u64);
    /// The value of `key`.
    fn value_get(&mut self, key: u64) -> Option<u64>;
    /// Appends `element` to the list of `key`.
    fn list_add(&mut self, key: u64, element: u64);
    /// The elements of the list of `key`, summed (so all are decoded).
    fn list_get(&mut self, key: u64) -> u64;
    /// Sets `user_key` to `value` in the map of `key`.
    fn map_put(&mut self, key: u64, user_key: u64, value: u64);
    /// The value of `user_key` in the map of `key`.
    fn map_get(&mut self, key: u64, user_key: u64) -> Option<u64>;
    /// The user keys and values of the map of `key`, summed (so all are decoded).
    fn map_iter(&mut self, key: u64) -> u64;
}

/// Loads keys `0..keys` into `side`; returns how long it took.
pub fn load<S: Side>(side: &mut S, keys: u64) -> Duration {
    let start = Instant::now();
    for key in 0..keys {
        side.load(key);
    }
    start.elapsed()
}

/// cairn's typed state on one of its backends.
pub struct Cairn {
    value: ValueState<u64, u64>,
    list: ListState<u64, u64>,
    map: MapState<u64, u64, u64>,
    store: KeyedStateStore,
    /// Dropped last, after the backend has closed.
    dir: Option<TempDir>,
}

impl Cairn {
    /// cairn on a [`RocksDbBackend`] in a new temporary directory, with default options.
    pub fn rocksdb() -> Self {
        Self::rocksdb_in(tempfile::tempdir().expect("a temporary directory for cairn"))
    }

    fn rocksdb_in(dir: TempDir) -> Self {
        let max = MaxParallelism::DEFAULT;
        let backend = RocksDbBackend::builder(dir.path(), max, KeyGroupRange::all(max))
            .open()
            .expect("open cairn's RocksDB backend");
        Self::on(KeyedStateStore::new(backend), Some(dir))
    }

    /// cairn on a [`HeapBackend`].
    pub fn heap() -> Self {
        let max = MaxParallelism::DEFAULT;
        Self::on(
            KeyedStateStore::new(HeapBackend::new(max, KeyGroupRange::all(max))),
            None,
        )
    }

    fn on(store: KeyedStateStore, dir: Option<TempDir>) -> Self {
        Cairn {
            value: store
                .value_state(&StateDescriptor::new("value", BigEndian, BigEndian))
                .expect("register the value state"),
            list: store
                .list_state(&StateDescriptor::new("list", BigEndian, BigEndian))
                .expect("register the list state"),
            map: store
                .map_state(&MapStateDescriptor::new(
                    "map", BigEndian, BigEndian, BigEndian,
                ))
                .expect("register the map state"),
            store,
            dir,
        }
    }

    /// Closes the RocksDB backend (which flushes it), compacts each state's column family
    /// into one sorted run at the bottom level, and opens the backend again with a cold
    /// cache: [`RawDb::compact`] does the same to raw RocksDB, so that both LSM trees have
    /// the same shape whatever the background flushes and compactions did. The heap backend
    /// is returned as it is.
    pub fn compact(self) -> Self {
        let Cairn {
            value,
            list,
            map,
            store,
            dir,
        } = self;
        let Some(dir) = dir else {
            return Cairn {
                value,
                list,
                map,
                store,
                dir,
            };
        };
        store.close().expect("close cairn's RocksDB backend");
        drop((value, list, map, store));
        let families = Db::list_cf(&rocksdb::Options::default(), dir.path())
            .expect("list the column families of cairn's RocksDB");
        let own: Vec<String> = families
            .into_iter()
            .filter(|name| name != "default" && !STATES.contains(&name.as_str()))
            .collect();
        let (db, _cache, _write_buffers) = open_like_cairn(dir.path(), &own);
        compact_states(&db);
        drop(db);
        Self::rocksdb_in(dir)
    }

    /// Checks that `raw` stores exactly the bytes this side stores: every entry cairn's
    /// byte-level backend holds in a few key groups is in the raw DB's column family of the
    /// same name, with the same key and value. Returns how many entries were compared.
    ///
    /// # Panics
    /// On the first entry that differs.
    pub fn assert_same_bytes(&self, raw: &RawDb) -> usize {
        let backend = self.store.backend();
        let max_parallelism = backend.max_parallelism().get();
        let mut compared = 0;
        for meta in backend.states().expect("cairn's states") {
            let id = backend.register(&meta).expect("find a state again");
            let cf = raw.db.cf_handle(&meta.name).expect("the raw column family");
            for key_group in [0, max_parallelism / 2, max_parallelism - 1] {
                let prefix = (key_group as u16).to_be_bytes();
                let mut entries = 0;
                backend
                    .scan(id, &prefix, None, &mut |key, value| {
                        let stored = raw.db.get_pinned_cf(cf, key).expect("raw read");
                        assert_eq!(
                            stored.as_deref(),
                            Some(value),
                            "state '{}', key {key:?}: raw RocksDB does not store cairn's bytes",
                            meta.name
                        );
                        entries += 1;
                        if entries < 200 {
                            ControlFlow::Continue(())
                        } else {
                            ControlFlow::Break(())
                        }
                    })
                    .expect("scan cairn's state");
                compared += entries;
            }
        }
        compared
    }

    /// Flushes and closes the backend.
    pub fn close(&self) {
        self.store.close().expect("close the cairn backend");
    }
}

impl Side for Cairn {
    fn load(&mut self, key: u64) {
        self.value.update(&key, &key).expect("load a value");
        // A put, like the value and map loads: the list holds one element.
        self.list.update(&key, &[key]).expect("load a list");
        for user_key in 0..MAP_ENTRIES {
            self.map
                .put(&key, &user_key, &(key ^ user_key))
                .expect("load a map entry");
        }
    }

    fn value_update(&mut self, key: u64, value: u64) {
        self.value.update(&key, &value).expect("value update");
    }

    fn value_get(&mut self, key: u64) -> Option<u64> {
        self.value.get(&key).expect("value get")
    }

    fn list_add(&mut self, key: u64, element: u64) {
        self.list.add(&key, &element).expect("list add");
    }

    fn list_get(&mut self, key: u64) -> u64 {
        self.list
            .get(&key)
            .expect("list get")
            .fold(0, u64::wrapping_add)
    }

    fn map_put(&mut self, key: u64, user_key: u64, value: u64) {
        self.map.put(&key, &user_key, &value).expect("map put");
    }

    fn map_get(&mut self, key: u64, user_key: u64) -> Option<u64> {
        self.map.get(&key, &user_key).expect("map get")
    }

    fn map_iter(&mut self, key: u64) -> u64 {
        self.map
            .iter(&key)
            .expect("map iter")
            .map(|entry| entry.expect("map iter entry"))
            .fold(0, |sum, (uk, uv)| sum.wrapping_add(uk ^ uv))
    }
}

type Db = DBWithThreadMode<SingleThreaded>;

/// A plain RocksDB configured as cairn configures its backend, in a temporary directory.
pub struct RawDb {
    db: Db,
    // Kept with the DB that was configured with them.
    _cache: Cache,
    _write_buffers: WriteBufferManager,
    /// Dropped last, after the DB.
    _dir: TempDir,
}

/// The list merge operator, as cairn's: the existing value and the operands, concatenated.
fn concat(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let len = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(existing.unwrap_or_default());
    for operand in operands {
        out.extend_from_slice(operand);
    }
    Some(out)
}

/// The map prefix extractor, as cairn's: the `[kg][key][namespace]` part of a key.
fn key_namespace_prefix(key: &[u8]) -> &[u8] {
    match CompositeKey::prefix_len(key) {
        Some(len) => &key[..len],
        None => key,
    }
}

fn has_key_namespace_prefix(key: &[u8]) -> bool {
    CompositeKey::prefix_len(key).is_some()
}

/// The column families of the workload's states, as cairn names them.
pub const STATES: [&str; 3] = ["value", "list", "map"];

/// Opens (or creates) a DB at `path` with the state column families configured exactly as
/// cairn's backend configures them; `own` column families (cairn's internal ones) get
/// default options, as cairn gives them. Also returns the cache and write buffer manager,
/// which must outlive the DB.
fn open_like_cairn(path: &Path, own: &[String]) -> (Db, Cache, WriteBufferManager) {
    // cairn's defaults: the same sizes, read from the public API so they follow it.
    let options = RocksDbOptions::default();
    let budget = MemoryBudget::new(MemoryBudget::DEFAULT_BYTES);
    let cache = Cache::new_lru_cache(budget.cache_capacity());
    let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
        budget.write_buffer_capacity(),
        false,
        cache.clone(),
    );
    drop(budget);

    let mut db_options = rocksdb::Options::default();
    db_options.create_if_missing(true);
    db_options.create_missing_column_families(true);
    db_options.set_atomic_flush(true);
    db_options.set_max_background_jobs(options.max_background_jobs);
    db_options.set_write_buffer_manager(&write_buffers);
    db_options.set_keep_log_file_num(2);

    let column_family = || {
        let mut table = BlockBasedOptions::default();
        table.set_block_size(options.block_size);
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        if options.bloom_bits_per_key > 0.0 {
            table.set_bloom_filter(options.bloom_bits_per_key, false);
        }
        let mut cf = rocksdb::Options::default();
        cf.set_block_based_table_factory(&table);
        cf.set_write_buffer_size(options.write_buffer_size);
        cf.set_max_write_buffer_number(options.max_write_buffer_number);
        cf.set_target_file_size_base(options.target_file_size_base);
        if options.compression {
            cf.set_compression_type(DBCompressionType::Lz4);
            cf.set_bottommost_compression_type(DBCompressionType::Zstd);
        } else {
            cf.set_compression_type(DBCompressionType::None);
        }
        cf
    };
    let value = column_family();
    let mut list = column_family();
    list.set_merge_operator_associative("cairn.list-append", concat);
    let mut map = column_family();
    map.set_prefix_extractor(SliceTransform::create(
        "cairn.key-namespace",
        key_namespace_prefix,
        Some(has_key_namespace_prefix),
    ));
    map.set_memtable_prefix_bloom_ratio(0.1);

    let mut families = vec![
        ColumnFamilyDescriptor::new("value", value),
        ColumnFamilyDescriptor::new("list", list),
        ColumnFamilyDescriptor::new("map", map),
    ];
    for name in own {
        families.push(ColumnFamilyDescriptor::new(
            name.as_str(),
            rocksdb::Options::default(),
        ));
    }
    let db = Db::open_cf_descriptors(&db_options, path, families)
        .unwrap_or_else(|e| panic!("open RocksDB in {}: {e}", path.display()));
    (db, cache, write_buffers)
}

/// Flushes the state column families and compacts each into one sorted run at the bottom.
fn compact_states(db: &Db) {
    let families: Vec<&ColumnFamily> = STATES
        .iter()
        .map(|name| db.cf_handle(name).expect("a state column family"))
        .collect();
    let mut flush = FlushOptions::default();
    flush.set_wait(true);
    db.flush_cfs_opt(&families, &flush).expect("flush");
    let mut compact = CompactOptions::default();
    compact.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
    for cf in families {
        db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &compact);
    }
}

impl RawDb {
    /// Opens the baseline DB, in a new temporary directory.
    pub fn open() -> Self {
        Self::open_in(tempfile::tempdir().expect("a temporary directory for raw RocksDB"))
    }

    fn open_in(dir: TempDir) -> Self {
        let (db, cache, write_buffers) = open_like_cairn(dir.path(), &[]);
        RawDb {
            db,
            _cache: cache,
            _write_buffers: write_buffers,
            _dir: dir,
        }
    }

    /// Flushes, compacts each column family into one sorted run at the bottom level, and
    /// opens the DB again with a cold cache, as [`Cairn::compact`] does to cairn.
    pub fn compact(self) -> Self {
        let RawDb { db, _dir: dir, .. } = self;
        compact_states(&db);
        drop(db);
        Self::open_in(dir)
    }

    /// The DB and its `value` column family, configured as cairn configures a value state's
    /// (and a timer set's): the baseline of other benchmarks (`benches/timers.rs`).
    pub fn plain(&self) -> (&Db, &ColumnFamily) {
        let cf = self.db.cf_handle("value").expect("the value column family");
        (&self.db, cf)
    }

    /// A handle that runs the workload on this DB.
    pub fn side(&self) -> Raw<'_> {
        let cf = |name| {
            self.db
                .cf_handle(name)
                .unwrap_or_else(|| panic!("column family {name} of the raw RocksDB"))
        };
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Raw {
            db: &self.db,
            value: cf("value"),
            list: cf("list"),
            map: cf("map"),
            read: ReadOptions::default(),
            write,
            max_parallelism: MaxParallelism::DEFAULT,
            key: Vec::new(),
            element: Vec::new(),
        }
    }
}

/// The raw baseline's operations: a hand-written RocksDB state backend, with the same bytes.
pub struct Raw<'a> {
    db: &'a Db,
    value: &'a ColumnFamily,
    list: &'a ColumnFamily,
    map: &'a ColumnFamily,
    read: ReadOptions,
    write: WriteOptions,
    max_parallelism: MaxParallelism,
    /// The composite key of the current operation.
    key: Vec<u8>,
    /// The framed list element of the current operation.
    element: Vec<u8>,
}

impl Raw<'_> {
    /// Puts `[kg][len][key][len][namespace]` of `key` (empty namespace) into `self.key`.
    #[inline]
    fn prefix(&mut self, key: u64) {
        let bytes = key.to_be_bytes();
        let key_group = self.max_parallelism.key_group_of(&bytes);
        write_prefix(&mut self.key, key_group, &bytes, &[]);
    }

    /// Puts the entry key of `user_key` in the map of `key` into `self.key`.
    #[inline]
    fn entry(&mut self, key: u64, user_key: u64) {
        self.prefix(key);
        self.key.extend_from_slice(&user_key.to_be_bytes());
    }

    fn put(&self, cf: &ColumnFamily, value: &[u8]) {
        self.db
            .put_cf_opt(cf, &self.key, value, &self.write)
            .expect("raw put");
    }

    fn get_u64(&self, cf: &ColumnFamily) -> Option<u64> {
        let value = self
            .db
            .get_pinned_cf_opt(cf, &self.key, &self.read)
            .expect("raw get")?;
        Some(u64::from_be_bytes(
            value[..].try_into().expect("an 8-byte value"),
        ))
    }
}

impl Side for Raw<'_> {
    fn load(&mut self, key: u64) {
        self.prefix(key);
        self.put(self.value, &key.to_be_bytes());
        self.element.clear();
        write_framed(&mut self.element, &key.to_be_bytes());
        self.put(self.list, &self.element);
        for user_key in 0..MAP_ENTRIES {
            self.entry(key, user_key);
            self.put(self.map, &(key ^ user_key).to_be_bytes());
        }
    }

    fn value_update(&mut self, key: u64, value: u64) {
        self.prefix(key);
        self.put(self.value, &value.to_be_bytes());
    }

    fn value_get(&mut self, key: u64) -> Option<u64> {
        self.prefix(key);
        self.get_u64(self.value)
    }

    fn list_add(&mut self, key: u64, element: u64) {
        self.prefix(key);
        self.element.clear();
        write_framed(&mut self.element, &element.to_be_bytes());
        self.db
            .merge_cf_opt(self.list, &self.key, &self.element, &self.write)
            .expect("raw merge");
    }

    fn list_get(&mut self, key: u64) -> u64 {
        self.prefix(key);
        let Some(list) = self
            .db
            .get_pinned_cf_opt(self.list, &self.key, &self.read)
            .expect("raw list get")
        else {
            return 0;
        };
        let mut sum = 0u64;
        let mut rest = &list[..];
        while !rest.is_empty() {
            let (element, tail) = read_framed(rest).expect("a framed list element");
            sum = sum.wrapping_add(u64::from_be_bytes(
                element.try_into().expect("an 8-byte element"),
            ));
            rest = tail;
        }
        sum
    }

    fn map_put(&mut self, key: u64, user_key: u64, value: u64) {
        self.entry(key, user_key);
        self.put(self.map, &value.to_be_bytes());
    }

    fn map_get(&mut self, key: u64, user_key: u64) -> Option<u64> {
        self.entry(key, user_key);
        self.get_u64(self.map)
    }

    fn map_iter(&mut self, key: u64) -> u64 {
        self.prefix(key);
        // A prefix seek on the map's `[kg][key][namespace]`, as a hand-written backend would.
        let mut read = ReadOptions::default();
        read.set_prefix_same_as_start(true);
        let mut it = self.db.raw_iterator_cf_opt(self.map, read);
        it.seek(&self.key);
        let mut sum = 0u64;
        while let Some((entry, value)) = it.item() {
            let Some(user_key) = entry.strip_prefix(self.key.as_slice()) else {
                break;
            };
            let user_key = u64::from_be_bytes(user_key.try_into().expect("an 8-byte user key"));
            let value = u64::from_be_bytes(value.try_into().expect("an 8-byte user value"));
            sum = sum.wrapping_add(user_key ^ value);
            it.next();
        }
        it.status().expect("raw map iteration");
        sum
    }
}

/// The median of `values` (sorted in place); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn ops_per_sec(ops: usize, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

/// `1234567.8` as `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The measured ops/s of one operation, per side and round.
struct Row {
    op: Op,
    cairn: Vec<f64>,
    raw: Vec<f64>,
    heap: Vec<f64>,
}

fn main() {
    let keys = key_count();
    let rounds = env_or("CAIRN_BENCH_ROUNDS", 5).max(1);
    let ops = usize::try_from(env_or("CAIRN_BENCH_OPS", 200_000).max(1))
        .expect("CAIRN_BENCH_OPS fits in usize");
    let total = Instant::now();
    println!("cairn vs raw RocksDB: {keys} keys x (1 value + 1 list element + {MAP_ENTRIES} map entries), u64 keys and values");
    println!(
        "{rounds} rounds of {ops} uniformly random ops per operation and side; cairn and raw alternate every {SLICE} ops"
    );

    let mut cairn = Cairn::rocksdb();
    let cairn_load = load(&mut cairn, keys);
    println!(
        "load cairn-rocksdb: {:.1} s ({}/s; keys/s, each key is 12 writes)",
        cairn_load.as_secs_f64(),
        thousands(ops_per_sec(keys as usize, cairn_load))
    );
    let mut raw_db = RawDb::open();
    let raw_load = load(&mut raw_db.side(), keys);
    println!(
        "load raw-rocksdb:   {:.1} s ({}/s)",
        raw_load.as_secs_f64(),
        thousands(ops_per_sec(keys as usize, raw_load))
    );
    let mut heap = Cairn::heap();
    let heap_load = load(&mut heap, keys);
    println!(
        "load cairn-heap:    {:.1} s ({}/s)",
        heap_load.as_secs_f64(),
        thousands(ops_per_sec(keys as usize, heap_load))
    );

    let compared = cairn.assert_same_bytes(&raw_db) + heap.assert_same_bytes(&raw_db);
    println!(
        "checked {compared} entries: cairn (both backends) and raw RocksDB store the same bytes"
    );

    let run_start = Instant::now();
    let mut rows = Vec::new();
    // `CAIRN_BENCH_ONLY=map_iter` (a comma-separated list of names) runs only those operations.
    let only = std::env::var("CAIRN_BENCH_ONLY").ok();
    let selected = |op: Op| {
        only.as_deref()
            .is_none_or(|names| names.split(',').any(|n| n == op.name()))
    };
    let mut compacting = Duration::ZERO;
    for (index, op) in Op::ALL.into_iter().enumerate() {
        if !selected(op) {
            continue;
        }
        // Both LSM trees in the same shape, whatever the load or the previous operation
        // left behind: how many L0 files a read must look at depends on the timing of
        // background flushes and compactions, and would otherwise decide the ratio.
        let started = Instant::now();
        cairn = cairn.compact();
        raw_db = raw_db.compact();
        compacting += started.elapsed();
        let mut raw = raw_db.side();
        let mut row = Row {
            op,
            cairn: Vec::new(),
            raw: Vec::new(),
            heap: Vec::new(),
        };
        for round in 0..rounds {
            // The same keys for every side in a round; new keys every round.
            let seed = (index as u64) << 32 | round;
            let accesses = accesses(keys, ops, seed);
            let salt = round + 1;
            // Slice by slice, so that both sides see the same memtable fill and the flushes
            // and compactions of either DB land on both; which side goes first alternates.
            let (mut cairn_time, mut raw_time) = (Duration::ZERO, Duration::ZERO);
            for (i, slice) in accesses.chunks(SLICE).enumerate() {
                if (i as u64 + round).is_multiple_of(2) {
                    cairn_time += op.run(&mut cairn, slice, salt);
                    raw_time += op.run(&mut raw, slice, salt);
                } else {
                    raw_time += op.run(&mut raw, slice, salt);
                    cairn_time += op.run(&mut cairn, slice, salt);
                }
            }
            let heap_time = op.run(&mut heap, &accesses, salt);
            row.cairn.push(ops_per_sec(ops, cairn_time));
            row.raw.push(ops_per_sec(ops, raw_time));
            row.heap.push(ops_per_sec(ops, heap_time));
        }
        print_progress(&row);
        rows.push(row);
    }
    let run = run_start.elapsed();

    print_table(&mut rows);
    println!();
    println!(
        "keys: {keys}; rounds: {rounds} x {ops} ops per operation and side; load {:.1} s (cairn-rocksdb) / {:.1} s (raw) / {:.1} s (heap); run {:.1} s (of which {:.1} s compacting both DBs before each operation); total {:.1} s",
        cairn_load.as_secs_f64(),
        raw_load.as_secs_f64(),
        heap_load.as_secs_f64(),
        run.as_secs_f64(),
        compacting.as_secs_f64(),
        total.elapsed().as_secs_f64()
    );
    println!("The claim is the ratio to raw RocksDB measured in this run, not the absolute ops/s:");
    println!("the machine is shared and noisy, and Flink's figures come from another run.");

    cairn.close();
    heap.close();
}

fn print_progress(row: &Row) {
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|v| thousands(*v))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "{:<13} cairn-rocksdb [{}]  raw [{}]  heap [{}]",
        row.op.name(),
        list(&row.cairn),
        list(&row.raw),
        list(&row.heap)
    );
}

fn print_table(rows: &mut [Row]) {
    println!();
    println!(
        "| operation    | cairn-rocksdb ops/s | raw-rocksdb ops/s | ratio | round ratios | cairn-heap ops/s | Flink 2.3 ops/s | ratio to Flink |"
    );
    println!(
        "|--------------|--------------------:|------------------:|------:|-------------:|-----------------:|----------------:|---------------:|"
    );
    for row in rows.iter_mut() {
        let mut round_ratios: Vec<f64> =
            row.cairn.iter().zip(&row.raw).map(|(c, r)| c / r).collect();
        round_ratios.sort_by(f64::total_cmp);
        let cairn = median(&mut row.cairn);
        let raw = median(&mut row.raw);
        let heap = median(&mut row.heap);
        let (flink, to_flink) = match row.op.flink() {
            Some(flink) => (thousands(flink), format!("{:.2}x", cairn / flink)),
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "| {:<12} | {:>19} | {:>17} | {:>4.2}x | {:>5.2}-{:<5.2}  | {:>16} | {:>15} | {:>14} |",
            row.op.name(),
            thousands(cairn),
            thousands(raw),
            cairn / raw,
            round_ratios.first().copied().unwrap_or(0.0),
            round_ratios.last().copied().unwrap_or(0.0),
            thousands(heap),
            flink,
            to_flink
        );
    }
}
