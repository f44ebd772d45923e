//! The heap backend: every state an ordered map in memory. The reference implementation.
//!
//! Entries are ordered by composite key exactly as in RocksDB, so scans, prefix deletes and
//! (later) key-group-ordered snapshots behave the same on both backends. Expired TTL entries
//! are hidden by the state layer on read and removed by [`purge_expired`], which snapshots call.
//!
//! [`purge_expired`]: crate::KeyedStateBackend::purge_expired

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::backend::{
    check_owned, check_prefix, register_in, unknown_state, StateId, StateMeta, Visit,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::ttl::entry_expired;
use crate::KeyedStateBackend;

/// A keyed state backend that keeps all state in memory.
///
/// # Examples
/// ```
/// use cairn::{HeapBackend, KeyGroupRange, MaxParallelism};
/// let max = MaxParallelism::DEFAULT;
/// let backend = HeapBackend::new(max, KeyGroupRange::all(max));
/// ```
pub struct HeapBackend {
    max_parallelism: MaxParallelism,
    range: KeyGroupRange,
    clock: Arc<dyn Clock>,
    /// `None` once closed.
    states: RwLock<Option<Vec<HeapState>>>,
}

struct HeapState {
    meta: StateMeta,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl HeapBackend {
    /// A heap backend for the key groups `range` of `max_parallelism`, on the system clock.
    pub fn new(max_parallelism: MaxParallelism, range: KeyGroupRange) -> Self {
        Self::with_clock(max_parallelism, range, Arc::new(SystemClock))
    }

    /// A heap backend whose TTL reads `clock`.
    pub fn with_clock(
        max_parallelism: MaxParallelism,
        range: KeyGroupRange,
        clock: Arc<dyn Clock>,
    ) -> Self {
        HeapBackend {
            max_parallelism,
            range,
            clock,
            states: RwLock::new(Some(Vec::new())),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<Vec<HeapState>>> {
        // A panic in another thread while it held the lock leaves the maps consistent
        // (every mutation is a single map call), so a poisoned lock is still usable.
        self.states.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Option<Vec<HeapState>>> {
        self.states.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on a state; `f` checks the key or prefix it was given before using it.
    fn with_state<T>(&self, state: StateId, f: impl FnOnce(&HeapState) -> Result<T>) -> Result<T> {
        let guard = self.read();
        f(state_ref(guard.as_ref().ok_or(Error::Closed)?, state)?)
    }

    /// Runs `f` on a state after checking that `key` starts with an owned key group.
    fn with_state_mut<T>(
        &self,
        state: StateId,
        key: &[u8],
        f: impl FnOnce(&mut HeapState) -> T,
    ) -> Result<T> {
        let mut guard = self.write();
        let states = guard.as_mut().ok_or(Error::Closed)?;
        let s = states
            .get_mut(state.0 as usize)
            .ok_or_else(|| unknown_state(state))?;
        check_owned(self.range, &s.meta, key)?;
        Ok(f(s))
    }
}

fn state_ref(states: &[HeapState], state: StateId) -> Result<&HeapState> {
    states
        .get(state.0 as usize)
        .ok_or_else(|| unknown_state(state))
}

/// The keys of `map` starting with `prefix`, from after `start_after` if given.
fn range_from<'a>(
    map: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    prefix: &'a [u8],
    start_after: Option<&[u8]>,
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> {
    let lower = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
        _ => Bound::Included(prefix.to_vec()),
    };
    map.range((lower, Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

impl KeyedStateBackend for HeapBackend {
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
        let mut guard = self.write();
        let states = guard.as_mut().ok_or(Error::Closed)?;
        let mut metas: Vec<StateMeta> = states.iter().map(|s| s.meta.clone()).collect();
        let (index, new) = register_in(&mut metas, meta)?;
        if new {
            states.push(HeapState {
                meta: meta.clone(),
                entries: BTreeMap::new(),
            });
        } else {
            states[index].meta.ttl = meta.ttl;
        }
        Ok(StateId(index as u32))
    }

    fn states(&self) -> Result<Vec<StateMeta>> {
        let guard = self.read();
        let states = guard.as_ref().ok_or(Error::Closed)?;
        Ok(states.iter().map(|s| s.meta.clone()).collect())
    }

    fn get(&self, state: StateId, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        self.with_state(state, |s| {
            check_owned(self.range, &s.meta, key)?;
            out.clear();
            Ok(match s.entries.get(key) {
                Some(value) => {
                    out.extend_from_slice(value);
                    true
                }
                None => false,
            })
        })
    }

    fn put(&self, state: StateId, key: &[u8], value: &[u8]) -> Result<()> {
        self.with_state_mut(state, key, |s| {
            s.entries.insert(key.to_vec(), value.to_vec());
        })
    }

    fn append(&self, state: StateId, key: &[u8], elements: &[u8]) -> Result<()> {
        self.with_state_mut(state, key, |s| match s.entries.get_mut(key) {
            Some(list) => list.extend_from_slice(elements),
            None => {
                s.entries.insert(key.to_vec(), elements.to_vec());
            }
        })
    }

    fn delete(&self, state: StateId, key: &[u8]) -> Result<()> {
        self.with_state_mut(state, key, |s| {
            s.entries.remove(key);
        })
    }

    fn delete_prefix(&self, state: StateId, prefix: &[u8]) -> Result<()> {
        self.with_state_mut(state, prefix, |s| {
            let doomed: Vec<Vec<u8>> = range_from(&s.entries, prefix, None)
                .map(|(k, _)| k.clone())
                .collect();
            for key in doomed {
                s.entries.remove(&key);
            }
        })
    }

    fn scan(
        &self,
        state: StateId,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit,
    ) -> Result<()> {
        self.with_state(state, |s| {
            check_prefix(self.range, &s.meta, prefix)?;
            for (k, v) in range_from(&s.entries, prefix, start_after) {
                if visit(k, v).is_break() {
                    break;
                }
            }
            Ok(())
        })
    }

    fn purge_expired(&self) -> Result<()> {
        let now = self.clock.now_millis();
        let mut guard = self.write();
        let states = guard.as_mut().ok_or(Error::Closed)?;
        for s in states.iter_mut() {
            if let Some(ttl) = s.meta.ttl {
                let (kind, ttl_millis) = (s.meta.kind, ttl.ttl_millis());
                s.entries
                    .retain(|_, value| !entry_expired(kind, value, ttl_millis, now));
            }
        }
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.write().take();
        Ok(())
    }
}
