//! The heap backend: every state an ordered map in memory. The reference implementation.
//!
//! Entries are ordered by composite key exactly as in RocksDB, so scans, prefix deletes and
//! key-group-ordered snapshots behave the same on both backends. Expired TTL entries are
//! hidden by the state layer on read, removed by [`purge_expired`], and left out of
//! snapshots.
//!
//! The maps are persistent (`imbl::OrdMap`): cloning one shares its nodes, and a later
//! write copies only the path it changes. That is what makes a snapshot's synchronous phase
//! O(number of states): it clones the maps under the read lock and returns; the
//! asynchronous phase writes the clones as a canonical stream ([`canonical`]) while the
//! live maps go on changing. A restore reads from each handle's stream only the key groups
//! the new backend owns.
//!
//! A timer set is a state like the others (its entries are timer keys with empty values),
//! plus its [`TimerQueue`], built from the entries when a timer method first needs it, so a
//! restored backend rebuilds it from what it restored.
//!
//! [`purge_expired`]: crate::KeyedStateBackend::purge_expired
//! [`canonical`]: crate::snapshot::canonical

use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use imbl::OrdMap;

use crate::backend::migrate::{rewrite_stored, PayloadRewrite};
use crate::backend::timers::{TimerQueue, TimerStore};
use crate::backend::{
    check_evolution, check_not_timers, check_owned, check_prefix, check_timers, register_in,
    unknown_state, StateId, StateMeta, Visit,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::keygroup::KeyGroup;
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::snapshot::canonical::{CanonicalReader, CanonicalWriter, STREAM_NAME};
use crate::snapshot::{
    CheckpointId, InstanceId, KeyedStateHandle, PendingSnapshot, SnapshotFile, SnapshotFormat,
    SnapshotRequest,
};
use crate::storage::{CrcWriter, SnapshotStore, StoragePath};
use crate::ttl::entry_expired;
use crate::KeyedStateBackend;

/// The entries of one state: composite key to stored value.
type Entries = OrdMap<Vec<u8>, Vec<u8>>;

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
    /// Names this backend's snapshot files apart from other subtasks'.
    instance: InstanceId,
    /// `None` once closed.
    states: RwLock<Option<Vec<HeapState>>>,
}

struct HeapState {
    meta: StateMeta,
    entries: Entries,
    /// A timer set's queue, once a timer method built it.
    timers: Option<TimerQueue>,
}

impl HeapState {
    fn new(meta: StateMeta, entries: Entries) -> Self {
        HeapState {
            meta,
            entries,
            timers: None,
        }
    }
}

/// A timer set's entries as the store of its queue.
struct HeapTimers<'a>(&'a mut Entries);

impl TimerStore for HeapTimers<'_> {
    fn insert(&mut self, timer: &[u8]) -> Result<()> {
        self.0.insert(timer.to_vec(), Vec::new());
        Ok(())
    }

    fn remove(&mut self, timer: &[u8]) -> Result<()> {
        self.0.remove(timer);
        Ok(())
    }

    fn load(
        &mut self,
        key_group: KeyGroup,
        from: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        let prefix = key_group.to_be_bytes();
        let lower = from.unwrap_or(&prefix[..]);
        out.extend(
            self.0
                .range::<_, [u8]>((Bound::Included(lower), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(&prefix))
                .take(limit)
                .map(|(k, _)| k.clone()),
        );
        Ok(())
    }
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
        Self::with_states(max_parallelism, range, clock, Vec::new())
    }

    fn with_states(
        max_parallelism: MaxParallelism,
        range: KeyGroupRange,
        clock: Arc<dyn Clock>,
        states: Vec<HeapState>,
    ) -> Self {
        HeapBackend {
            max_parallelism,
            range,
            clock,
            instance: InstanceId::random(),
            states: RwLock::new(Some(states)),
        }
    }

    /// A heap backend for the key groups `range` of `max`, holding what `handles` (heap
    /// snapshots, i.e. canonical streams, possibly of another parallelism) hold for them.
    ///
    /// Every state of every handle is registered, empty ones included; entries are read
    /// only for the key groups in `range`, and from each handle only the part of its
    /// stream that holds them. The handles are checked before any entry is read.
    ///
    /// # Examples
    /// ```
    /// use std::sync::Arc;
    /// use cairn::{HeapBackend, KeyGroupRange, KeyedStateBackend, LocalStore, MaxParallelism,
    ///             SnapshotRequest, SnapshotType, StoragePath, SystemClock};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let max = MaxParallelism::DEFAULT;
    /// let store = Arc::new(LocalStore::new(dir.path())?);
    /// let backend = HeapBackend::new(max, KeyGroupRange::all(max));
    /// let request = SnapshotRequest {
    ///     checkpoint_id: 1,
    ///     snapshot_type: SnapshotType::Checkpoint,
    ///     store: store.clone(),
    ///     private_dir: StoragePath::new("chk-1")?,
    /// };
    /// let handle = backend.snapshot(&request)?.run()?;
    /// // Subtask 0 of 2 restores its half of the key groups.
    /// let half = max.subtask_range(0, 2)?;
    /// let restored =
    ///     HeapBackend::restore(max, half, Arc::new(SystemClock), store.as_ref(), &[handle])?;
    /// assert_eq!(restored.key_group_range(), half);
    /// # Ok::<(), cairn::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Restore`] if a handle is not in the canonical format, was written with
    /// another max parallelism (it cannot change), holds a state that another handle holds
    /// with another layout, disagrees with its own stream, or overlaps another handle's key
    /// groups; [`Error::NotFound`] if a handle's file is missing; [`Error::Corrupted`] if it
    /// has another size than recorded or fails a check of its format; the store's errors.
    pub fn restore(
        max: MaxParallelism,
        range: KeyGroupRange,
        clock: Arc<dyn Clock>,
        store: &dyn SnapshotStore,
        handles: &[KeyedStateHandle],
    ) -> Result<HeapBackend> {
        let what = format!("a heap backend for {range} of max parallelism {max}");
        let refuse = |detail: String| Error::Restore {
            what: what.clone(),
            detail,
        };
        if u32::from(range.end()) >= max.get() {
            return Err(refuse(format!(
                "{range} is not inside max parallelism {max}"
            )));
        }
        let mut metas: Vec<StateMeta> = Vec::new();
        let mut checked: Vec<&KeyedStateHandle> = Vec::new();
        for handle in handles {
            check_handle(handle, &metas, &checked).map_err(&refuse)?;
            for meta in &handle.states {
                register_in(&mut metas, meta).map_err(|e| refuse(e.to_string()))?;
            }
            checked.push(handle);
        }
        // Open every stream before reading any: its header must agree with its handle.
        let mut readers = Vec::new();
        for handle in handles {
            let file = stream_file(handle).map_err(&refuse)?;
            let reader = CanonicalReader::open(store, file)?;
            check_stream(handle, &reader, max).map_err(&refuse)?;
            // Stream state index -> index in `metas`.
            let targets = reader
                .states()
                .iter()
                .map(|s| {
                    metas.iter().position(|m| m.name == s.name).ok_or_else(|| {
                        refuse(format!(
                            "the stream holds state '{}' its handle lacks",
                            s.name
                        ))
                    })
                })
                .collect::<Result<Vec<usize>>>()?;
            readers.push((reader, targets));
        }
        let mut maps: Vec<Entries> = vec![Entries::new(); metas.len()];
        for (reader, targets) in &readers {
            reader.read(range, &mut |state, key, value| {
                if let Some(map) = targets.get(state as usize).and_then(|&t| maps.get_mut(t)) {
                    map.insert(key.to_vec(), value.to_vec());
                }
                Ok(())
            })?;
        }
        let states = metas
            .into_iter()
            .zip(maps)
            .map(|(meta, entries)| HeapState::new(meta, entries))
            .collect();
        Ok(Self::with_states(max, range, clock, states))
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
        check_not_timers(&s.meta)?;
        Ok(f(s))
    }

    /// Runs `f` on a timer set's queue and entries, after checking the state is a timer set
    /// and, if given, that `timer` is in an owned key group. Builds the queue first if no
    /// timer method has yet.
    fn with_timers<T>(
        &self,
        state: StateId,
        timer: Option<&[u8]>,
        f: impl FnOnce(&mut TimerQueue, &mut dyn TimerStore) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.write();
        let states = guard.as_mut().ok_or(Error::Closed)?;
        let s = states
            .get_mut(state.0 as usize)
            .ok_or_else(|| unknown_state(state))?;
        check_timers(&s.meta)?;
        if let Some(timer) = timer {
            check_owned(self.range, &s.meta, timer)?;
        }
        let mut store = HeapTimers(&mut s.entries);
        let queue = match s.timers.take() {
            Some(queue) => queue,
            None => TimerQueue::load(self.range, &mut store)?,
        };
        let result = f(s.timers.insert(queue), &mut store);
        if result.is_err() {
            // The queue may be out of step with the entries: rebuild it next time.
            s.timers = None;
        }
        result
    }
}

fn state_ref(states: &[HeapState], state: StateId) -> Result<&HeapState> {
    states
        .get(state.0 as usize)
        .ok_or_else(|| unknown_state(state))
}

/// The keys of `map` starting with `prefix`, from after `start_after` if given.
fn range_from<'a>(
    map: &'a Entries,
    prefix: &'a [u8],
    start_after: Option<&'a [u8]>,
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> {
    let lower = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    map.range::<_, [u8]>((lower, Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// The stream file of a heap snapshot handle.
fn stream_file(handle: &KeyedStateHandle) -> std::result::Result<&SnapshotFile, String> {
    match handle.files.as_slice() {
        [file] if file.name == STREAM_NAME => Ok(file),
        files => Err(format!(
            "the snapshot of {} has {} files, not one '{STREAM_NAME}' stream",
            handle.key_groups,
            files.len()
        )),
    }
}

/// Checks a handle against the ones before it: the format, its file, its key groups and
/// the layout of its states.
fn check_handle(
    handle: &KeyedStateHandle,
    metas: &[StateMeta],
    before: &[&KeyedStateHandle],
) -> std::result::Result<(), String> {
    if handle.format != SnapshotFormat::Canonical {
        return Err(format!(
            "the snapshot of {} is in the {} format; a heap backend restores canonical \
             snapshots (take a canonical savepoint to move state between backends)",
            handle.key_groups, handle.format
        ));
    }
    stream_file(handle)?;
    if let Some(other) = before
        .iter()
        .find(|h| h.key_groups.intersect(&handle.key_groups).is_some())
    {
        return Err(format!(
            "two snapshots hold the same key groups ({} and {}); restore the handles of one \
             snapshot",
            other.key_groups, handle.key_groups
        ));
    }
    for meta in &handle.states {
        if let Some(known) = metas.iter().find(|m| m.name == meta.name) {
            if !known.same_layout(meta) {
                return Err(format!(
                    "state '{}' is {} in one snapshot and {} in another",
                    meta.name,
                    known.describe(),
                    meta.describe()
                ));
            }
        }
    }
    Ok(())
}

/// Checks that a stream's header agrees with its handle and with the restoring backend.
fn check_stream(
    handle: &KeyedStateHandle,
    reader: &CanonicalReader<'_>,
    max: MaxParallelism,
) -> std::result::Result<(), String> {
    if reader.max_parallelism() != max {
        return Err(format!(
            "the snapshot of {} was taken with max parallelism {}, not {max}; the max \
             parallelism of an operator cannot change, so restore with max parallelism {}",
            handle.key_groups,
            reader.max_parallelism(),
            reader.max_parallelism()
        ));
    }
    let same_states = reader.states().len() == handle.states.len()
        && reader.states().iter().all(|s| {
            handle
                .states
                .iter()
                .any(|h| h.name == s.name && h.same_layout(s))
        });
    if reader.key_groups() != handle.key_groups || !same_states {
        return Err(format!(
            "its stream holds {} and {} states, but its handle records {} and {} states; \
             the snapshot's metadata and files do not belong together",
            reader.key_groups(),
            reader.states().len(),
            handle.key_groups,
            handle.states.len()
        ));
    }
    Ok(())
}

/// The asynchronous phase of a heap snapshot: writes the cut as a canonical stream.
struct Cut {
    checkpoint_id: CheckpointId,
    max: MaxParallelism,
    range: KeyGroupRange,
    instance: InstanceId,
    now: u64,
    states: Vec<(StateMeta, Entries)>,
    store: Arc<dyn SnapshotStore>,
    path: StoragePath,
}

impl Cut {
    fn write(self) -> Result<KeyedStateHandle> {
        let started = std::time::Instant::now();
        let mut written = 0u64;
        let storage_error = |source: std::io::Error| Error::Storage {
            op: "write",
            location: self.store.location(),
            path: self.path.to_string(),
            source,
        };
        let metas: Vec<StateMeta> = self.states.iter().map(|(m, _)| m.clone()).collect();
        let out = CrcWriter::new(self.store.create(&self.path)?);
        let mut writer =
            CanonicalWriter::new(out, self.max, self.range, &metas).map_err(storage_error)?;
        for key_group in self.range.iter() {
            let lower = key_group.to_be_bytes();
            // Key groups are below 32768, so the next one fits in two bytes.
            let upper = (key_group + 1).to_be_bytes();
            let bounds = (Bound::Included(&lower[..]), Bound::Excluded(&upper[..]));
            for (index, (meta, entries)) in self.states.iter().enumerate() {
                let ttl = meta.ttl.map(|t| t.ttl_millis());
                for (key, value) in entries.range::<_, [u8]>(bounds) {
                    if ttl.is_some_and(|ttl| entry_expired(meta.kind, value, ttl, self.now)) {
                        continue;
                    }
                    // Fewer states than u32::MAX: they are counted in a u32 by the writer.
                    writer
                        .add(index as u32, key, value)
                        .map_err(storage_error)?;
                    written += 1;
                }
            }
        }
        let out = writer.finish().map_err(storage_error)?;
        let crc32 = out.crc.finalize();
        let size = out.inner.finish()?;
        tracing::debug!(
            checkpoint_id = self.checkpoint_id,
            range = %self.range,
            path = %self.path,
            entries = written,
            bytes = size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "heap snapshot written"
        );
        Ok(KeyedStateHandle {
            format: SnapshotFormat::Canonical,
            key_groups: self.range,
            instance: self.instance,
            checkpoint_id: self.checkpoint_id,
            states: metas,
            files: vec![SnapshotFile {
                name: STREAM_NAME.to_string(),
                path: self.path,
                size,
                crc32,
            }],
        })
    }
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
            states.push(HeapState::new(meta.clone(), Entries::new()));
        } else {
            states[index].meta.ttl = meta.ttl;
        }
        Ok(StateId(index as u32))
    }

    fn evolve(
        &self,
        meta: &StateMeta,
        rewrite: Option<&mut PayloadRewrite<'_>>,
    ) -> Result<StateId> {
        {
            let mut guard = self.write();
            let states = guard.as_mut().ok_or(Error::Closed)?;
            if let Some(s) = states.iter_mut().find(|s| s.meta.name == meta.name) {
                if s.meta.value_codec != meta.value_codec {
                    check_evolution(&s.meta, meta)?;
                    if let Some(rewrite) = rewrite {
                        // Into a new map: the old one stays if any payload fails.
                        let mut migrated = Entries::new();
                        let (mut out, mut element) = (Vec::new(), Vec::new());
                        for (key, value) in s.entries.iter() {
                            rewrite_stored(&s.meta, value, rewrite, &mut out, &mut element)?;
                            migrated.insert(key.clone(), out.clone());
                        }
                        s.entries = migrated;
                    }
                    s.meta.value_codec = meta.value_codec.clone();
                }
            }
        }
        self.register(meta)
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
                s.entries.remove(key.as_slice());
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
        let mut guard = self.write();
        let states = guard.as_mut().ok_or(Error::Closed)?;
        for s in states.iter_mut() {
            if let Some(ttl) = s.meta.ttl {
                let (kind, ttl_millis) = (s.meta.kind, ttl.ttl_millis());
                let expired: Vec<Vec<u8>> = s
                    .entries
                    .iter()
                    .filter(|(_, value)| entry_expired(kind, value, ttl_millis, now))
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in expired {
                    s.entries.remove(key.as_slice());
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self, request: &SnapshotRequest) -> Result<PendingSnapshot> {
        let path = request
            .private_dir
            .join(&format!("{}/{STREAM_NAME}", self.instance))?;
        let now = self.clock.now_millis();
        let states = {
            let guard = self.read();
            let states = guard.as_ref().ok_or(Error::Closed)?;
            // Clones share the maps' nodes: O(1) per state, whatever it holds.
            states
                .iter()
                .map(|s| (s.meta.clone(), s.entries.clone()))
                .collect()
        };
        let cut = Cut {
            checkpoint_id: request.checkpoint_id,
            max: self.max_parallelism,
            range: self.range,
            instance: self.instance,
            now,
            states,
            store: Arc::clone(&request.store),
            path,
        };
        Ok(PendingSnapshot::new(request.checkpoint_id, move || {
            cut.write()
        }))
    }

    fn close(&self) -> Result<()> {
        self.write().take();
        Ok(())
    }
}
