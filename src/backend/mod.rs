//! The byte-level keyed state backend: one trait, two implementations.
//!
//! Everything above this module speaks types; everything in it speaks bytes. A backend
//! stores, per registered state, a sorted map from composite keys ([`key`]) to values:
//! values as the typed layer encoded them (with TTL stamps, see [`crate::ttl`]); lists as
//! concatenated length-prefixed elements, so that appending is plain concatenation (a RocksDB
//! merge); map entries one per user key. The [`HeapBackend`] is the reference implementation;
//! the [`RocksDbBackend`] keeps one RocksDB per subtask and one column family per state.
//! Both are checked against the same conformance suite (tests/conformance.rs).
//!
//! Timers are states too ([`StateKind::Timers`], one timer set per timer service and time
//! domain, laid out by [`timers`]), changed only through the trait's timer methods, which
//! keep the in-memory [`timers::TimerQueue`] of each set in step with its entries. Schema
//! evolution rewrites a state's payloads in place through [`KeyedStateBackend::evolve`]
//! ([`migrate`]).

pub(crate) mod heap;
pub(crate) mod key;
pub(crate) mod meta;
pub(crate) mod migrate;
pub(crate) mod rocksdb;
pub(crate) mod timers;

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::snapshot::{CheckpointId, PendingSnapshot, SnapshotRequest};

pub use meta::{StateKind, StateMeta};
pub use migrate::PayloadRewrite;
pub use timers::TimeDomain;

/// A registered state of a backend; valid only for the backend that returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateId(pub(crate) u32);

/// What a scan's visitor tells the scan: go on, or stop.
pub type Visit = ControlFlow<()>;

/// The byte-level interface every keyed state backend implements.
///
/// Keys are composite keys (`[kg][key][namespace][user key]`, see docs/format.md) whose key
/// group this backend must own; every method that takes one checks it and fails with
/// [`Error::KeyGroupNotOwned`] otherwise, changing nothing. All methods take `&self`: a
/// backend is shared by the state handles of its subtask. After [`close`](Self::close) every
/// method fails with [`Error::Closed`].
pub trait KeyedStateBackend: Send + Sync {
    /// The number of key groups of the operator.
    fn max_parallelism(&self) -> MaxParallelism;

    /// The key groups this backend owns.
    fn key_group_range(&self) -> KeyGroupRange;

    /// The clock TTL reads.
    fn clock(&self) -> &Arc<dyn Clock>;

    /// Registers a state, or finds it again: the same name with the same layout returns the
    /// same id (and takes the new TTL settings). A timer set (kind
    /// [`StateKind::Timers`]) is registered the same way, under its reserved name
    /// `_cairn_timers/<service>/<event|processing>`.
    ///
    /// # Errors
    /// [`Error::StateMismatch`] if the name is registered with another kind, codec or TTL
    /// presence; [`Error::InvalidStateName`] for a reserved or empty name, or a timer set
    /// whose name is not a timer set's.
    fn register(&self, meta: &StateMeta) -> Result<StateId>;

    /// Registers `meta` over a state held with another value codec (registered, or found in
    /// a restored snapshot or a reopened directory), rewriting every stored payload of that
    /// state with `rewrite` first, in one pass, and recording the new codec, so that it is
    /// never rewritten again. With `rewrite` `None` the payloads stay as they are (the new
    /// codec reads them) and only the record changes. TTL stamps, list framing and keys are
    /// kept (see [`PayloadRewrite`]). A state not held yet is simply registered.
    ///
    /// Nothing changes if any payload fails: RocksDB writes the rewritten entries into one
    /// SST file and ingests it at the end; the heap backend swaps in a rewritten map.
    ///
    /// # Errors
    /// [`Error::StateMismatch`] if more than the value codec differs (the kind, a key codec,
    /// TTL presence: those never change); [`Error::InvalidConfig`] for a timer set; the
    /// errors of `rewrite` or of a stored value that does not have its kind's layout.
    fn evolve(&self, meta: &StateMeta, rewrite: Option<&mut PayloadRewrite<'_>>)
        -> Result<StateId>;

    /// The states this backend holds: registered ones and, for a reopened RocksDB backend,
    /// the ones found in its directory.
    fn states(&self) -> Result<Vec<StateMeta>>;

    /// Reads the value at `key` into `out` (cleared first); false if there is none.
    fn get(&self, state: StateId, key: &[u8], out: &mut Vec<u8>) -> Result<bool>;

    /// Writes `value` at `key`.
    fn put(&self, state: StateId, key: &[u8], value: &[u8]) -> Result<()>;

    /// Appends length-prefixed list elements to the value at `key` (list state).
    fn append(&self, state: StateId, key: &[u8], elements: &[u8]) -> Result<()>;

    /// Removes the value at `key`.
    fn delete(&self, state: StateId, key: &[u8]) -> Result<()>;

    /// Removes every entry whose key starts with `prefix` (at least a key group long).
    fn delete_prefix(&self, state: StateId, prefix: &[u8]) -> Result<()>;

    /// Visits, in key order, the entries whose key starts with `prefix` and, if
    /// `start_after` is given, is greater than it; stops when `visit` breaks.
    fn scan(
        &self,
        state: StateId,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit,
    ) -> Result<()>;

    /// Adds `timer`, a timer key (`[kg][timestamp][key][namespace]`, docs/format.md) whose
    /// key group this backend owns, to the timer set `timers`. A timer that is there
    /// already stays one timer.
    ///
    /// # Errors
    /// [`Error::KeyGroupNotOwned`]; [`Error::InvalidConfig`] if `timers` is not a timer set
    /// or `timer` not a timer key.
    fn add_timer(&self, timers: StateId, timer: &[u8]) -> Result<()>;

    /// Removes `timer` from the timer set `timers`; one that is not there changes nothing.
    ///
    /// # Errors
    /// As [`add_timer`](Self::add_timer).
    fn delete_timer(&self, timers: StateId, timer: &[u8]) -> Result<()>;

    /// Removes the earliest timer of the set, if its timestamp is at most `up_to`, and
    /// writes its key into `out` (cleared first); false if no timer is due. Timers come in
    /// timestamp order across every owned key group; timers of one timestamp in key-group
    /// order, then in the order of their keys' bytes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `timers` is not a timer set; the store's errors.
    fn poll_timer(&self, timers: StateId, up_to: u64, out: &mut Vec<u8>) -> Result<bool>;

    /// The timestamp of the earliest timer of the set, if it has any.
    ///
    /// # Errors
    /// As [`poll_timer`](Self::poll_timer).
    fn next_timer(&self, timers: StateId) -> Result<Option<u64>>;

    /// Removes every expired entry of every state with TTL now (RocksDB: a full compaction
    /// through the TTL compaction filter; heap: a sweep).
    fn purge_expired(&self) -> Result<()>;

    /// Takes the synchronous phase of a snapshot and returns the asynchronous one.
    ///
    /// The synchronous phase fixes a consistent cut of every state, in time independent
    /// of the state's size (RocksDB: flush and hard-link the live files; heap: share the
    /// maps copy-on-write). Reads and writes may go on as soon as it returns, while the
    /// returned [`PendingSnapshot`] writes the cut to `request.store`. Call it from the
    /// thread that writes state, between two writes, as a stream task does at a barrier.
    ///
    /// # Errors
    /// [`Error::Closed`]; the backend's error if the cut cannot be taken.
    fn snapshot(&self, request: &SnapshotRequest) -> Result<PendingSnapshot>;

    /// Tells the backend that checkpoint `checkpoint_id` completed (its `_metadata` is
    /// committed), so later incremental checkpoints may reference the files it wrote.
    /// Until told, a backend references only files of checkpoints it knows completed.
    fn notify_checkpoint_complete(&self, checkpoint_id: CheckpointId) {
        let _ = checkpoint_id;
    }

    /// Flushes and releases the backend; later calls fail with [`Error::Closed`].
    fn close(&self) -> Result<()>;
}

pub use heap::HeapBackend;
pub use rocksdb::{MemoryBudget, RocksDbBackend, RocksDbBackendBuilder, RocksDbOptions};

/// Names reserved for cairn's own column families and RocksDB's default one.
pub(crate) const RESERVED_PREFIX: &str = "_cairn";

/// The registration rules both backends share: valid names, and the same layout on re-use.
///
/// Returns the index of the state in `states` (appending `meta` if it is new) and whether
/// it was new.
pub(crate) fn register_in(states: &mut Vec<StateMeta>, meta: &StateMeta) -> Result<(usize, bool)> {
    check_state_name(meta)?;
    if let Some(index) = states.iter().position(|s| s.name == meta.name) {
        let existing = &mut states[index];
        if !existing.same_layout(meta) {
            return Err(Error::StateMismatch {
                state: meta.name.clone(),
                registered: existing.describe(),
                requested: meta.describe(),
            });
        }
        existing.ttl = meta.ttl;
        return Ok((index, false));
    }
    states.push(meta.clone());
    Ok((states.len() - 1, true))
}

fn check_state_name(meta: &StateMeta) -> Result<()> {
    let name = meta.name.as_str();
    let is_timer_name = timers::parse_timer_state_name(name).is_some();
    let reason = if meta.kind == StateKind::Timers {
        if is_timer_name {
            return Ok(());
        }
        "a timer set is named '_cairn_timers/<service>/<event|processing>'"
    } else if name.is_empty() {
        "it is empty"
    } else if name == "default" {
        "'default' is RocksDB's own column family"
    } else if name.starts_with(RESERVED_PREFIX) {
        "names starting with '_cairn' are reserved for cairn's internal column families"
    } else {
        return Ok(());
    };
    Err(Error::InvalidStateName {
        state: name.to_string(),
        reason,
    })
}

/// The error for a state id that this backend did not hand out.
pub(crate) fn unknown_state(state: StateId) -> Error {
    Error::InvalidConfig {
        what: "state id",
        detail: format!("{state:?} was not registered with this backend"),
    }
}

/// Checks that the key group at the front of `key` is owned.
pub(crate) fn check_owned(range: KeyGroupRange, state: &StateMeta, key: &[u8]) -> Result<()> {
    match key::key_group_of(key) {
        Some(kg) if range.contains(kg) => Ok(()),
        Some(kg) => Err(Error::KeyGroupNotOwned {
            state: state.name.clone(),
            key_group: kg,
            owned: range,
        }),
        None => Err(Error::InvalidConfig {
            what: "composite key",
            detail: format!(
                "state '{}': a key must start with its key group",
                state.name
            ),
        }),
    }
}

/// Refuses a write of entries (put, append, delete) to a timer set: its timers change only
/// through the timer methods, which keep its queue in step.
pub(crate) fn check_not_timers(state: &StateMeta) -> Result<()> {
    if state.kind == StateKind::Timers {
        return Err(Error::InvalidConfig {
            what: "state",
            detail: format!(
                "'{}' is a timer set: add, delete and poll its timers with the timer methods",
                state.name
            ),
        });
    }
    Ok(())
}

/// Refuses a timer operation on a state that is not a timer set.
pub(crate) fn check_timers(state: &StateMeta) -> Result<()> {
    if state.kind != StateKind::Timers {
        return Err(Error::InvalidConfig {
            what: "timer set",
            detail: format!(
                "state '{}' is a {}, not a timer set",
                state.name, state.kind
            ),
        });
    }
    Ok(())
}

/// Checks that `meta` may evolve `existing`: only the value codec may differ, and a timer
/// set has none to change.
pub(crate) fn check_evolution(existing: &StateMeta, meta: &StateMeta) -> Result<()> {
    if existing.kind == StateKind::Timers || meta.kind == StateKind::Timers {
        return Err(Error::InvalidConfig {
            what: "migration",
            detail: format!("'{}' is a timer set, which holds no values", meta.name),
        });
    }
    if existing.value_codec != meta.value_codec && !existing.same_but_value_codec(meta) {
        return Err(Error::StateMismatch {
            state: meta.name.clone(),
            registered: existing.describe(),
            requested: meta.describe(),
        });
    }
    Ok(())
}

/// Checks a scan or delete prefix: empty (everything) or starting with an owned key group.
pub(crate) fn check_prefix(range: KeyGroupRange, state: &StateMeta, prefix: &[u8]) -> Result<()> {
    if prefix.is_empty() {
        Ok(())
    } else {
        check_owned(range, state, prefix)
    }
}
