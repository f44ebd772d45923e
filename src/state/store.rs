//! The keyed state of one subtask: registers states on a backend and hands out typed handles.

use std::sync::Arc;

use crate::backend::{KeyedStateBackend, StateKind};
use crate::codec::Codec;
use crate::error::Result;
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::state::{
    AggregateFunction, AggregatingState, ListState, MapState, MapStateDescriptor, ReducingState,
    StateDescriptor, TimerService, ValueState,
};

/// The keyed state of one subtask: the typed front of a [`KeyedStateBackend`].
///
/// Handles it returns share the backend; registering the same state twice gives two handles
/// on the same entries. After [`close`](Self::close), every handle fails with
/// [`Error::Closed`](crate::Error::Closed).
///
/// # Examples
/// ```
/// use cairn::{BigEndian, KeyGroupRange, KeyedStateStore, MaxParallelism, RocksDbBackend, StateDescriptor, Utf8};
/// # let dir = tempfile::tempdir().unwrap();
/// let max = MaxParallelism::DEFAULT;
/// let backend = RocksDbBackend::builder(dir.path(), max, KeyGroupRange::all(max)).open()?;
/// let store = KeyedStateStore::new(backend);
/// let mut words = store.list_state(&StateDescriptor::new("words", BigEndian, Utf8))?;
/// words.add(&7u64, &"hello".to_string())?;
/// words.add(&7u64, &"cairn".to_string())?;
/// assert_eq!(words.get(&7u64)?.collect::<Vec<_>>(), ["hello", "cairn"]);
/// store.close()?;
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Clone)]
pub struct KeyedStateStore {
    backend: Arc<dyn KeyedStateBackend>,
}

impl KeyedStateStore {
    /// The keyed state kept by `backend`.
    pub fn new(backend: impl KeyedStateBackend + 'static) -> Self {
        KeyedStateStore {
            backend: Arc::new(backend),
        }
    }

    /// The keyed state kept by a shared backend.
    pub fn from_shared(backend: Arc<dyn KeyedStateBackend>) -> Self {
        KeyedStateStore { backend }
    }

    /// The byte-level backend underneath.
    pub fn backend(&self) -> &Arc<dyn KeyedStateBackend> {
        &self.backend
    }

    /// The number of key groups of the operator.
    pub fn max_parallelism(&self) -> MaxParallelism {
        self.backend.max_parallelism()
    }

    /// The key groups this subtask owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.backend.key_group_range()
    }

    /// Registers (or finds again) a value state.
    ///
    /// # Errors
    /// [`Error::StateMismatch`](crate::Error::StateMismatch) if the name is registered with
    /// another kind or codec; [`Error::InvalidStateName`](crate::Error::InvalidStateName).
    pub fn value_state<K, V>(
        &self,
        descriptor: &StateDescriptor<K, V>,
    ) -> Result<ValueState<K, V>> {
        ValueState::register(&self.backend, descriptor, StateKind::Value)
    }

    /// Registers (or finds again) a list state.
    ///
    /// # Errors
    /// As [`value_state`](Self::value_state).
    pub fn list_state<K, V>(&self, descriptor: &StateDescriptor<K, V>) -> Result<ListState<K, V>> {
        ListState::register(&self.backend, descriptor)
    }

    /// Registers (or finds again) a map state.
    ///
    /// # Errors
    /// As [`value_state`](Self::value_state).
    pub fn map_state<K, UK, UV>(
        &self,
        descriptor: &MapStateDescriptor<K, UK, UV>,
    ) -> Result<MapState<K, UK, UV>> {
        MapState::register(&self.backend, descriptor)
    }

    /// Registers (or finds again) a reducing state folded by `reduce`.
    ///
    /// # Errors
    /// As [`value_state`](Self::value_state).
    pub fn reducing_state<K, V>(
        &self,
        descriptor: &StateDescriptor<K, V>,
        reduce: impl Fn(&V, &V) -> V + Send + Sync + 'static,
    ) -> Result<ReducingState<K, V>> {
        ReducingState::register(&self.backend, descriptor, Arc::new(reduce))
    }

    /// Registers (or finds again) an aggregating state whose accumulators `descriptor`
    /// describes, folded by `function`.
    ///
    /// # Errors
    /// As [`value_state`](Self::value_state).
    pub fn aggregating_state<K, IN, ACC, OUT>(
        &self,
        descriptor: &StateDescriptor<K, ACC>,
        function: impl AggregateFunction<IN, ACC, OUT> + 'static,
    ) -> Result<AggregatingState<K, IN, ACC, OUT>> {
        AggregatingState::register(&self.backend, descriptor, Arc::new(function))
    }

    /// Registers (or finds again) the timer service `name`, whose keys `key_codec` encodes:
    /// its event-time and processing-time timers live in two timer sets of the backend
    /// (`_cairn_timers/<name>/event` and `/processing`).
    ///
    /// # Errors
    /// [`Error::StateMismatch`](crate::Error::StateMismatch) if the service is registered
    /// with another key codec; [`Error::InvalidStateName`](crate::Error::InvalidStateName)
    /// for an empty name.
    pub fn timer_service<K>(
        &self,
        name: &str,
        key_codec: impl Codec<K> + 'static,
    ) -> Result<TimerService<K>> {
        TimerService::register(&self.backend, name, std::sync::Arc::new(key_codec))
    }

    /// Flushes and closes the backend; handles fail with `Error::Closed` from now on.
    ///
    /// # Errors
    /// If the final flush fails.
    pub fn close(&self) -> Result<()> {
        self.backend.close()
    }
}
