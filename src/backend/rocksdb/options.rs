//! RocksDB settings: plain-data options, and the memory budget all backends of a process share.

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, DBCompressionType, WriteBufferManager,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// RocksDB tuning, as plain data (loadable with serde); every field has a default.
///
/// # Examples
/// ```
/// use cairn::RocksDbOptions;
/// let options = RocksDbOptions::default().block_size(16 * 1024).bloom_bits_per_key(12.0);
/// assert_eq!(options.block_size, 16 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RocksDbOptions {
    /// Size of an SST data block (RocksDB's default, 4 KiB).
    pub block_size: usize,
    /// Bloom filter bits per key; 0 turns the filter off.
    pub bloom_bits_per_key: f64,
    /// Memtable size per column family before it is flushed.
    pub write_buffer_size: usize,
    /// Memtables per column family (one active, the rest flushing).
    pub max_write_buffer_number: i32,
    /// Background flush and compaction threads of the DB.
    pub max_background_jobs: i32,
    /// Target size of SST files on level 1.
    pub target_file_size_base: u64,
    /// Compress SST blocks with LZ4, and the bottommost level with Zstd.
    pub compression: bool,
}

impl Default for RocksDbOptions {
    fn default() -> Self {
        RocksDbOptions {
            block_size: 4 * 1024,
            bloom_bits_per_key: 10.0,
            write_buffer_size: 64 << 20,
            max_write_buffer_number: 2,
            max_background_jobs: 2,
            target_file_size_base: 64 << 20,
            compression: true,
        }
    }
}

impl RocksDbOptions {
    /// Sets [`block_size`](Self::block_size).
    pub fn block_size(mut self, bytes: usize) -> Self {
        self.block_size = bytes;
        self
    }

    /// Sets [`bloom_bits_per_key`](Self::bloom_bits_per_key).
    pub fn bloom_bits_per_key(mut self, bits: f64) -> Self {
        self.bloom_bits_per_key = bits;
        self
    }

    /// Sets [`write_buffer_size`](Self::write_buffer_size).
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// Sets [`max_background_jobs`](Self::max_background_jobs).
    pub fn max_background_jobs(mut self, jobs: i32) -> Self {
        self.max_background_jobs = jobs;
        self
    }

    /// Sets [`compression`](Self::compression).
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// The column family options every state starts from.
    pub(crate) fn column_family(&self, budget: &MemoryBudget) -> rocksdb::Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_size(self.block_size);
        // Index and filter blocks live in the shared cache, so memory stays in the budget.
        // They are partitioned into small blocks under a pinned top level: a whole-file
        // filter of a large SST (megabytes) is bigger than one shard of the LRU cache, can
        // never stay cached, and would be read from disk on every point read.
        table.set_block_cache(&budget.cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        if self.bloom_bits_per_key > 0.0 {
            table.set_bloom_filter(self.bloom_bits_per_key, false);
        }
        let mut cf = rocksdb::Options::default();
        cf.set_block_based_table_factory(&table);
        cf.set_write_buffer_size(self.write_buffer_size);
        cf.set_max_write_buffer_number(self.max_write_buffer_number);
        cf.set_target_file_size_base(self.target_file_size_base);
        if self.compression {
            cf.set_compression_type(DBCompressionType::Lz4);
            cf.set_bottommost_compression_type(DBCompressionType::Zstd);
        } else {
            cf.set_compression_type(DBCompressionType::None);
        }
        cf
    }
}

/// The memory that all RocksDB backends of a process share: one block cache and one write
/// buffer manager, sized from a single budget, as Flink's managed memory does.
///
/// The write buffer manager is charged to the block cache, so memtables and cached blocks
/// compete for the same bytes. Split (Flink's arithmetic, with `r` the write buffer ratio,
/// default 0.5): the cache gets `budget * (3 - r) / 3` and the write buffer manager
/// `budget * 2r / 3`. The write buffer manager flushes once the mutable memtables reach 7/8
/// of its size and memtables being flushed can take up to half as much again, so at most
/// `1.5 * 2r / 3 = r` of the budget is memtables; the rest stays for blocks, index and filters.
/// Clones share the same cache and manager.
///
/// # Examples
/// ```
/// use cairn::MemoryBudget;
/// let budget = MemoryBudget::new(256 << 20);
/// assert_eq!(budget.write_buffer_capacity(), (256 << 20) / 3);
/// ```
#[derive(Clone)]
pub struct MemoryBudget {
    pub(crate) cache: Cache,
    pub(crate) write_buffers: WriteBufferManager,
    total: usize,
    cache_capacity: usize,
    write_buffer_capacity: usize,
}

impl MemoryBudget {
    /// The default write buffer ratio, as in Flink.
    pub const DEFAULT_WRITE_BUFFER_RATIO: f64 = 0.5;

    /// The budget a backend gets when it is given none: 256 MiB.
    pub const DEFAULT_BYTES: usize = 256 << 20;

    /// A budget of `bytes` with the default write buffer ratio.
    pub fn new(bytes: usize) -> Self {
        Self::build(bytes, Self::DEFAULT_WRITE_BUFFER_RATIO)
    }

    /// A budget of `bytes` of which about `ratio` may be memtables.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `ratio` is not in `(0, 1)` or `bytes` is below 1 MiB.
    pub fn with_write_buffer_ratio(bytes: usize, ratio: f64) -> Result<Self> {
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(Error::InvalidConfig {
                what: "write buffer ratio",
                detail: format!("{ratio} is not strictly between 0 and 1"),
            });
        }
        if bytes < 1 << 20 {
            return Err(Error::InvalidConfig {
                what: "memory budget",
                detail: format!("{bytes} bytes is below the 1 MiB minimum"),
            });
        }
        Ok(Self::build(bytes, ratio))
    }

    fn build(bytes: usize, ratio: f64) -> Self {
        let total = bytes as f64;
        let cache_capacity = (total * (3.0 - ratio) / 3.0) as usize;
        let write_buffer_capacity = (total * 2.0 * ratio / 3.0) as usize;
        let cache = Cache::new_lru_cache(cache_capacity);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            write_buffer_capacity,
            false,
            cache.clone(),
        );
        MemoryBudget {
            cache,
            write_buffers,
            total: bytes,
            cache_capacity,
            write_buffer_capacity,
        }
    }

    /// The whole budget in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The block cache's capacity (memtables are charged to it as well).
    pub fn cache_capacity(&self) -> usize {
        self.cache_capacity
    }

    /// The write buffer manager's capacity.
    pub fn write_buffer_capacity(&self) -> usize {
        self.write_buffer_capacity
    }

    /// Bytes the block cache holds now, memtable reservations included.
    pub fn cache_usage(&self) -> usize {
        self.cache.get_usage()
    }

    /// Bytes of memtables the write buffer manager accounts for now.
    pub fn write_buffer_usage(&self) -> usize {
        self.write_buffers.get_usage()
    }
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("total", &self.total)
            .field("cache_capacity", &self.cache_capacity)
            .field("write_buffer_capacity", &self.write_buffer_capacity)
            .finish()
    }
}
