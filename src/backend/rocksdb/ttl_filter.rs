//! The compaction filter that drops expired TTL entries while RocksDB compacts.
//!
//! RocksDB passes stored values to a compaction filter, but not merge operands nor the
//! results of merging them: a list that was only ever appended to is invisible here until a
//! compaction has merged it into a value. [`RocksDbBackend::purge_expired`] therefore also
//! sweeps list states with TTL itself.
//!
//! [`RocksDbBackend::purge_expired`]: crate::KeyedStateBackend::purge_expired

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::compaction_filter::{CompactionFilter, Decision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

use crate::backend::StateKind;
use crate::clock::Clock;
use crate::ttl::entry_expired;

/// Makes one [`TtlFilter`] per compaction (a filter from a factory is used by one thread).
pub(crate) struct TtlFilterFactory {
    pub(crate) kind: StateKind,
    /// The state's TTL in milliseconds; shared so a re-registration can change it.
    pub(crate) ttl_millis: Arc<AtomicU64>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) name: CString,
}

pub(crate) struct TtlFilter {
    kind: StateKind,
    ttl_millis: u64,
    /// Read once per compaction: entries expiring during it are left for the next one.
    now: u64,
    name: CString,
}

impl CompactionFilter for TtlFilter {
    fn filter(&mut self, _level: u32, _key: &[u8], value: &[u8]) -> Decision {
        if entry_expired(self.kind, value, self.ttl_millis, self.now) {
            Decision::Remove
        } else {
            Decision::Keep
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

impl CompactionFilterFactory for TtlFilterFactory {
    type Filter = TtlFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> TtlFilter {
        TtlFilter {
            kind: self.kind,
            ttl_millis: self.ttl_millis.load(Ordering::Relaxed),
            now: self.clock.now_millis(),
            name: self.name.clone(),
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}
