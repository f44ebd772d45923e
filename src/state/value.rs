//! Value state: one value per key (and namespace).

use std::sync::Arc;

use crate::backend::{KeyedStateBackend, StateKind};
use crate::codec::Codec;
use crate::error::Result;
use crate::state::core::{Keys, Namespaced, StateCore};
use crate::state::StateDescriptor;

/// One value per key and namespace.
///
/// # Examples
/// ```
/// use cairn::{BigEndian, HeapBackend, KeyGroupRange, KeyedStateStore, MaxParallelism, StateDescriptor, Utf8};
/// let max = MaxParallelism::DEFAULT;
/// let store = KeyedStateStore::new(HeapBackend::new(max, KeyGroupRange::all(max)));
/// let mut counts = store.value_state(&StateDescriptor::new("counts", Utf8, BigEndian))?;
/// counts.update(&"hello".to_string(), &1u64)?;
/// assert_eq!(counts.get(&"hello".to_string())?, Some(1));
/// # Ok::<(), cairn::Error>(())
/// ```
pub struct ValueState<K, V> {
    pub(crate) core: StateCore<K>,
    value_codec: Arc<dyn Codec<V>>,
}

impl<K, V> ValueState<K, V> {
    pub(crate) fn register(
        backend: &Arc<dyn KeyedStateBackend>,
        descriptor: &StateDescriptor<K, V>,
        kind: StateKind,
    ) -> Result<Self> {
        let meta = descriptor.meta(kind);
        let id = descriptor.register_on(backend, &meta)?;
        Ok(ValueState {
            core: StateCore::new(backend, id, &meta, descriptor.key_codec.clone()),
            value_codec: descriptor.value_codec.clone(),
        })
    }

    /// The value of `key`, if any (and not expired).
    ///
    /// # Errors
    /// A codec or backend failure; [`Error::KeyGroupNotOwned`](crate::Error::KeyGroupNotOwned)
    /// for a key of another subtask.
    pub fn get(&mut self, key: &K) -> Result<Option<V>> {
        self.get_in(&[], key)
    }

    /// Sets the value of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn update(&mut self, key: &K, value: &V) -> Result<()> {
        self.update_in(&[], key, value)
    }

    /// Removes the value of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn clear(&mut self, key: &K) -> Result<()> {
        self.clear_in(&[], key)
    }

    /// The keys that have a value, in the empty namespace.
    pub fn keys(&self) -> Keys<K> {
        self.core.keys(&[])
    }

    /// This state in `namespace`.
    pub fn namespace<'a>(&'a mut self, namespace: &'a [u8]) -> Namespaced<'a, Self> {
        Namespaced {
            state: self,
            namespace,
        }
    }

    pub(crate) fn get_in(&mut self, namespace: &[u8], key: &K) -> Result<Option<V>> {
        self.core.set_prefix(namespace, key)?;
        if !self.core.read_value()? {
            return Ok(None);
        }
        let payload = &self.core.value_buf[self.core.payload_start()..];
        self.value_codec
            .decode(payload)
            .map(Some)
            .map_err(|e| self.core.codec_error("decode", "value", e))
    }

    pub(crate) fn update_in(&mut self, namespace: &[u8], key: &K, value: &V) -> Result<()> {
        self.core.set_prefix(namespace, key)?;
        let core = &mut self.core;
        core.begin_value();
        if let Err(e) = self.value_codec.encode(value, &mut core.value_buf) {
            return Err(core.codec_error("encode", "value", e));
        }
        core.backend.put(core.id, &core.composite, &core.value_buf)
    }

    pub(crate) fn clear_in(&mut self, namespace: &[u8], key: &K) -> Result<()> {
        self.core.set_prefix(namespace, key)?;
        self.core.backend.delete(self.core.id, &self.core.composite)
    }
}

impl<K, V> Namespaced<'_, ValueState<K, V>> {
    /// [`ValueState::get`] in this namespace.
    ///
    /// # Errors
    /// As [`ValueState::get`].
    pub fn get(&mut self, key: &K) -> Result<Option<V>> {
        self.state.get_in(self.namespace, key)
    }

    /// [`ValueState::update`] in this namespace.
    ///
    /// # Errors
    /// As [`ValueState::get`].
    pub fn update(&mut self, key: &K, value: &V) -> Result<()> {
        self.state.update_in(self.namespace, key, value)
    }

    /// [`ValueState::clear`] in this namespace.
    ///
    /// # Errors
    /// As [`ValueState::get`].
    pub fn clear(&mut self, key: &K) -> Result<()> {
        self.state.clear_in(self.namespace, key)
    }

    /// The keys that have a value in this namespace.
    pub fn keys(&self) -> Keys<K> {
        self.state.core.keys(self.namespace)
    }
}
