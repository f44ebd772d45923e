//! # cairn
//!
//! A keyed state backend for stream processors, with RocksDB underneath: value, list, map,
//! reducing and aggregating state per key and namespace, with TTL, split into key groups so
//! that state can move between subtasks. A heap backend stands behind the same byte-level
//! trait as the reference implementation.
//!
//! The layers, top to bottom: typed state handles ([`ValueState`], [`ListState`],
//! [`MapState`], [`ReducingState`], [`AggregatingState`], handed out by a
//! [`KeyedStateStore`]) encode with [`Codec`]s and call the byte-level
//! [`KeyedStateBackend`], implemented by [`HeapBackend`] and [`RocksDbBackend`].
//! [`TimerService`]s keep event-time and processing-time timers per key and namespace in the
//! same backend, through checkpoints, savepoints and rescaling. A state's value codec may
//! change between job versions: [`StateDescriptor::with_migration`] rewrites its values once.
//!
//! ## Quick start
//! ```
//! use cairn::{BigEndian, KeyGroupRange, KeyedStateStore, MapStateDescriptor, MaxParallelism,
//!             RocksDbBackend, StateDescriptor, Utf8};
//! # let dir = tempfile::tempdir().unwrap();
//! // Subtask 1 of 2 of an operator with the default 128 key groups.
//! let max = MaxParallelism::DEFAULT;
//! let range = max.subtask_range(1, 2)?;
//! let store = KeyedStateStore::new(RocksDbBackend::builder(dir.path(), max, range).open()?);
//!
//! let mut counts = store.value_state(&StateDescriptor::new("counts", Utf8, BigEndian))?;
//! let word = "cairn".to_string();
//! assert_eq!(max.subtask_of(max.key_group_of(word.as_bytes()), 2)?, 1, "a key of subtask 1");
//! let n: u64 = counts.get(&word)?.unwrap_or(0);
//! counts.update(&word, &(n + 1))?;
//! assert_eq!(counts.get(&word)?, Some(1));
//!
//! // The same state per window: a namespace is opaque bytes.
//! let window = 1_700_000_000u64.to_be_bytes();
//! counts.namespace(&window).update(&word, &5)?;
//! assert_eq!(counts.namespace(&window).get(&word)?, Some(5));
//! assert_eq!(counts.get(&word)?, Some(1));
//!
//! let mut seen = store.map_state(&MapStateDescriptor::new("seen", Utf8, BigEndian, BigEndian))?;
//! seen.put(&word, &1u32, &10u64)?;
//! assert_eq!(seen.iter(&word)?.collect::<Result<Vec<_>, _>>()?, [(1, 10)]);
//! store.close()?;
//! # Ok::<(), cairn::Error>(())
//! ```

// One module, backend/rocksdb/flush.rs, calls RocksDB's C API for what the binding lacks.
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

mod backend;
mod clock;
mod codec;
mod coordinator;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod keygroup;
mod operator_state;
mod snapshot;
mod state;
mod storage;
pub mod tools;
mod ttl;

pub use backend::{
    HeapBackend, KeyedStateBackend, MemoryBudget, PayloadRewrite, RocksDbBackend,
    RocksDbBackendBuilder, RocksDbOptions, StateId, StateKind, StateMeta, TimeDomain, Visit,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{BigEndian, Bincode, Bytes, Codec, CodecError, CodecInfo, Utf8};
pub use coordinator::{
    checkpoint_request, CheckpointCoordinator, SubtaskAck, ACKS_DIR, ACK_MAGIC, ACK_VERSION,
    DEFAULT_CHECKPOINT_TIMEOUT, DEFAULT_POLL_INTERVAL,
};
pub use error::{Error, ErrorKind, Result};
pub use keygroup::{murmur3_x86_32, KeyGroup, KeyGroupRange, MaxParallelism};
pub use operator_state::{
    BroadcastState, OperatorListState, OperatorStateEntry, OperatorStateKind,
    OperatorStateSnapshot, OperatorStateStore,
};
pub use snapshot::{
    shared_file_creator, CheckpointId, InstanceId, JobSnapshot, KeyedStateHandle, OperatorSnapshot,
    PendingSnapshot, SavepointFormat, SnapshotFile, SnapshotFormat, SnapshotKind, SnapshotRequest,
    SnapshotTask, SnapshotType, SubtaskRestore, METADATA_FILE, METADATA_VERSION, SHARED_DIR,
};
pub use state::{
    AggregateFunction, AggregatingState, KeyedStateStore, Keys, ListState, MapIter, MapState,
    MapStateDescriptor, Namespaced, ReducingState, StateDescriptor, Timer, TimerService,
    ValueState,
};
pub use storage::{
    begin_savepoint, latest_checkpoint, list_savepoints, open_store, open_store_with,
    read_checkpoint, read_savepoint, BucketStore, CheckpointStorage, DirListing, GarbageReport,
    LocalStore, Location, ObjectStoreOptions, PendingCheckpoint, Retention, SnapshotStore,
    SnapshotWrite, StoragePath, SubStore, UnfinishedWrite,
};
pub use ttl::{TtlConfig, TtlUpdate, TtlVisibility};

/// The byte layouts the backends share, for tools and tests that read stored entries.
pub mod layout {
    pub use crate::backend::key::{
        key_group_of, prefix_successor, read_framed, read_varint, write_framed, write_prefix,
        write_varint, CompositeKey,
    };
    pub use crate::backend::timers::{write_timer_key, TimerKey};
    pub use crate::ttl::{entry_expired, read_stamp, STAMP_LEN};
}
