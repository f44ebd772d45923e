//! Reducing and aggregating state: value states folded by a user function on every add.

use std::sync::Arc;

use crate::backend::{KeyedStateBackend, StateKind};
use crate::error::Result;
use crate::state::core::{Keys, Namespaced};
use crate::state::{StateDescriptor, ValueState};

/// A reduce function shared by the handles of a reducing state.
pub(crate) type ReduceFn<V> = Arc<dyn Fn(&V, &V) -> V + Send + Sync>;

/// A value per key folded with a reduce function: `add(v)` stores `reduce(old, v)`.
pub struct ReducingState<K, V> {
    inner: ValueState<K, V>,
    reduce: ReduceFn<V>,
}

impl<K, V> ReducingState<K, V> {
    pub(crate) fn register(
        backend: &Arc<dyn KeyedStateBackend>,
        descriptor: &StateDescriptor<K, V>,
        reduce: ReduceFn<V>,
    ) -> Result<Self> {
        Ok(ReducingState {
            inner: ValueState::register(backend, descriptor, StateKind::Reducing)?,
            reduce,
        })
    }

    /// The reduced value of `key`.
    ///
    /// # Errors
    /// A codec or backend failure; a key of another subtask.
    pub fn get(&mut self, key: &K) -> Result<Option<V>> {
        self.inner.get_in(&[], key)
    }

    /// Folds `value` into the value of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn add(&mut self, key: &K, value: &V) -> Result<()> {
        self.add_in(&[], key, value)
    }

    /// Removes the value of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn clear(&mut self, key: &K) -> Result<()> {
        self.inner.clear_in(&[], key)
    }

    /// The keys that have a value, in the empty namespace.
    pub fn keys(&self) -> Keys<K> {
        self.inner.keys()
    }

    /// This state in `namespace`.
    pub fn namespace<'a>(&'a mut self, namespace: &'a [u8]) -> Namespaced<'a, Self> {
        Namespaced {
            state: self,
            namespace,
        }
    }

    fn add_in(&mut self, namespace: &[u8], key: &K, value: &V) -> Result<()> {
        let folded = match self.inner.get_in(namespace, key)? {
            Some(old) => (self.reduce)(&old, value),
            None => return self.inner.update_in(namespace, key, value),
        };
        self.inner.update_in(namespace, key, &folded)
    }
}

impl<K, V> Namespaced<'_, ReducingState<K, V>> {
    /// [`ReducingState::get`] in this namespace.
    ///
    /// # Errors
    /// As [`ReducingState::get`].
    pub fn get(&mut self, key: &K) -> Result<Option<V>> {
        self.state.inner.get_in(self.namespace, key)
    }

    /// [`ReducingState::add`] in this namespace.
    ///
    /// # Errors
    /// As [`ReducingState::get`].
    pub fn add(&mut self, key: &K, value: &V) -> Result<()> {
        self.state.add_in(self.namespace, key, value)
    }

    /// [`ReducingState::clear`] in this namespace.
    ///
    /// # Errors
    /// As [`ReducingState::get`].
    pub fn clear(&mut self, key: &K) -> Result<()> {
        self.state.inner.clear_in(self.namespace, key)
    }

    /// The keys that have a value in this namespace.
    pub fn keys(&self) -> Keys<K> {
        self.state.inner.core.keys(self.namespace)
    }
}

/// Folds inputs into an accumulator and reads a result from it (Flink's `AggregateFunction`).
pub trait AggregateFunction<IN, ACC, OUT>: Send + Sync {
    /// A new, empty accumulator.
    fn create_accumulator(&self) -> ACC;
    /// Folds `value` into `accumulator`.
    fn add(&self, value: &IN, accumulator: ACC) -> ACC;
    /// The result an accumulator stands for.
    fn get_result(&self, accumulator: &ACC) -> OUT;
}

/// An accumulator per key, folded with an [`AggregateFunction`]; only the accumulator is
/// stored (with the descriptor's value codec).
pub struct AggregatingState<K, IN, ACC, OUT> {
    inner: ValueState<K, ACC>,
    function: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
}

impl<K, IN, ACC, OUT> AggregatingState<K, IN, ACC, OUT> {
    pub(crate) fn register(
        backend: &Arc<dyn KeyedStateBackend>,
        descriptor: &StateDescriptor<K, ACC>,
        function: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
    ) -> Result<Self> {
        Ok(AggregatingState {
            inner: ValueState::register(backend, descriptor, StateKind::Aggregating)?,
            function,
        })
    }

    /// The result for `key`, if anything was added.
    ///
    /// # Errors
    /// A codec or backend failure; a key of another subtask.
    pub fn get(&mut self, key: &K) -> Result<Option<OUT>> {
        self.get_in(&[], key)
    }

    /// Folds `value` into the accumulator of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn add(&mut self, key: &K, value: &IN) -> Result<()> {
        self.add_in(&[], key, value)
    }

    /// Removes the accumulator of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn clear(&mut self, key: &K) -> Result<()> {
        self.inner.clear_in(&[], key)
    }

    /// The keys that have an accumulator, in the empty namespace.
    pub fn keys(&self) -> Keys<K> {
        self.inner.keys()
    }

    /// This state in `namespace`.
    pub fn namespace<'a>(&'a mut self, namespace: &'a [u8]) -> Namespaced<'a, Self> {
        Namespaced {
            state: self,
            namespace,
        }
    }

    fn get_in(&mut self, namespace: &[u8], key: &K) -> Result<Option<OUT>> {
        Ok(self
            .inner
            .get_in(namespace, key)?
            .map(|acc| self.function.get_result(&acc)))
    }

    fn add_in(&mut self, namespace: &[u8], key: &K, value: &IN) -> Result<()> {
        let accumulator = match self.inner.get_in(namespace, key)? {
            Some(acc) => acc,
            None => self.function.create_accumulator(),
        };
        let accumulator = self.function.add(value, accumulator);
        self.inner.update_in(namespace, key, &accumulator)
    }
}

impl<K, IN, ACC, OUT> Namespaced<'_, AggregatingState<K, IN, ACC, OUT>> {
    /// [`AggregatingState::get`] in this namespace.
    ///
    /// # Errors
    /// As [`AggregatingState::get`].
    pub fn get(&mut self, key: &K) -> Result<Option<OUT>> {
        self.state.get_in(self.namespace, key)
    }

    /// [`AggregatingState::add`] in this namespace.
    ///
    /// # Errors
    /// As [`AggregatingState::get`].
    pub fn add(&mut self, key: &K, value: &IN) -> Result<()> {
        self.state.add_in(self.namespace, key, value)
    }

    /// [`AggregatingState::clear`] in this namespace.
    ///
    /// # Errors
    /// As [`AggregatingState::get`].
    pub fn clear(&mut self, key: &K) -> Result<()> {
        self.state.inner.clear_in(self.namespace, key)
    }

    /// The keys that have an accumulator in this namespace.
    pub fn keys(&self) -> Keys<K> {
        self.state.inner.core.keys(self.namespace)
    }
}
