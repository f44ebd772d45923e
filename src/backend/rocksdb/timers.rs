//! Timer sets in RocksDB: one column family per timer set, its queue in memory.
//!
//! A timer is a put of its key with an empty value; firing or deleting it is a delete. The
//! column family has no merge operator and no prefix extractor: the queue reads it only by
//! seeking to a key group's first timer (or past the last one it polled, so that a key group
//! that fired many timers does not walk their tombstones again) and reading up to
//! [`CACHE_PER_KEY_GROUP`](crate::backend::timers::CACHE_PER_KEY_GROUP) keys, bounded by the
//! next key group. The queue is built on a timer set's first timer call after the backend
//! opens, so a restored or reopened backend builds it from what its files hold.

use std::sync::Mutex;

use rocksdb::{ColumnFamily, ReadOptions, DB};

use crate::backend::rocksdb::RocksDbBackend;
use crate::backend::timers::{TimerQueue, TimerStore};
use crate::backend::{check_owned, check_timers, unknown_state, StateId};
use crate::error::{Error, Result};
use crate::keygroup::KeyGroup;

/// A timer set's column family as the store of its queue.
struct RocksTimers<'a> {
    backend: &'a RocksDbBackend,
    db: &'a DB,
    cf: &'a ColumnFamily,
    name: &'a str,
}

impl TimerStore for RocksTimers<'_> {
    fn insert(&mut self, timer: &[u8]) -> Result<()> {
        self.db
            .put_cf_opt(self.cf, timer, [], &self.backend.write_options)
            .map_err(|e| {
                self.backend
                    .rocks(format!("add a timer to '{}'", self.name), e)
            })
    }

    fn remove(&mut self, timer: &[u8]) -> Result<()> {
        self.db
            .delete_cf_opt(self.cf, timer, &self.backend.write_options)
            .map_err(|e| {
                self.backend
                    .rocks(format!("remove a timer from '{}'", self.name), e)
            })
    }

    fn load(
        &mut self,
        key_group: KeyGroup,
        from: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        let mut read = ReadOptions::default();
        read.set_total_order_seek(true);
        // Key groups are below 32768: the next one fits in two bytes.
        read.set_iterate_upper_bound((u32::from(key_group) + 1).to_be_bytes()[2..].to_vec());
        let mut it = self.db.raw_iterator_cf_opt(self.cf, read);
        match from {
            Some(from) => it.seek(from),
            None => it.seek(key_group.to_be_bytes()),
        }
        while out.len() < limit {
            let Some(key) = it.key() else { break };
            out.push(key.to_vec());
            it.next();
        }
        it.status().map_err(|e| {
            self.backend
                .rocks(format!("read the timers of '{}'", self.name), e)
        })
    }
}

/// One queue per state of the DB; only a timer set's is ever built.
pub(super) type Queues = Vec<Mutex<Option<TimerQueue>>>;

impl RocksDbBackend {
    /// Runs `f` on a timer set's queue and column family, after checking the state is a
    /// timer set and, if given, that `timer` is in an owned key group. Builds the queue
    /// first if no timer call has yet; drops it if `f` fails, so that a queue out of step
    /// with the column family is rebuilt rather than used.
    pub(super) fn with_timers<T>(
        &self,
        state: StateId,
        timer: Option<&[u8]>,
        f: impl FnOnce(&mut TimerQueue, &mut dyn TimerStore) -> Result<T>,
    ) -> Result<T> {
        let guard = self.read();
        let open = guard.as_ref().ok_or(Error::Closed)?;
        let index = state.0 as usize;
        let (meta, slot) = open
            .states
            .get(index)
            .zip(open.queues.get(index))
            .ok_or_else(|| unknown_state(state))?;
        check_timers(meta)?;
        if let Some(timer) = timer {
            check_owned(self.range, meta, timer)?;
        }
        let cf = open
            .db
            .cf_handle(&meta.name)
            .ok_or_else(|| self.missing_cf(&meta.name))?;
        let mut store = RocksTimers {
            backend: self,
            db: &open.db,
            cf,
            name: &meta.name,
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        let queue = match slot.take() {
            Some(queue) => queue,
            None => TimerQueue::load(self.range, &mut store)?,
        };
        let result = f(slot.insert(queue), &mut store);
        if result.is_err() {
            *slot = None;
        }
        result
    }
}
