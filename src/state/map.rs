//! Map state: a map from user keys to user values per key (and namespace).

use std::sync::Arc;

use crate::backend::KeyedStateBackend;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::state::core::{freshness, BatchScan, Keys, Namespaced, StateCore};
use crate::state::MapStateDescriptor;
use crate::ttl::TtlConfig;

/// A map from user keys to user values per key and namespace.
///
/// Each entry is its own RocksDB key (`[kg][key][namespace][user key]`), so a put or get
/// touches one entry, and iteration is a prefix seek. With TTL each user value expires on
/// its own. Iteration hides expired entries but, unlike point reads, neither removes nor
/// renews them.
pub struct MapState<K, UK, UV> {
    core: StateCore<K>,
    user_key_codec: Arc<dyn Codec<UK>>,
    user_value_codec: Arc<dyn Codec<UV>>,
}

impl<K, UK, UV> MapState<K, UK, UV> {
    pub(crate) fn register(
        backend: &Arc<dyn KeyedStateBackend>,
        descriptor: &MapStateDescriptor<K, UK, UV>,
    ) -> Result<Self> {
        let meta = descriptor.meta();
        let id = descriptor.base.register_on(backend, &meta)?;
        Ok(MapState {
            core: StateCore::new(backend, id, &meta, descriptor.base.key_codec.clone()),
            user_key_codec: descriptor.user_key_codec.clone(),
            user_value_codec: descriptor.base.value_codec.clone(),
        })
    }

    /// The value of `user_key` in the map of `key`.
    ///
    /// # Errors
    /// A codec or backend failure; a key of another subtask.
    pub fn get(&mut self, key: &K, user_key: &UK) -> Result<Option<UV>> {
        self.get_in(&[], key, user_key)
    }

    /// Sets `user_key` to `value` in the map of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn put(&mut self, key: &K, user_key: &UK, value: &UV) -> Result<()> {
        self.put_in(&[], key, user_key, value)
    }

    /// Sets every `(user key, value)` of `entries` in the map of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn put_all(&mut self, key: &K, entries: &[(UK, UV)]) -> Result<()> {
        self.put_all_in(&[], key, entries)
    }

    /// Removes `user_key` from the map of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn remove(&mut self, key: &K, user_key: &UK) -> Result<()> {
        self.remove_in(&[], key, user_key)
    }

    /// Whether the map of `key` has `user_key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn contains(&mut self, key: &K, user_key: &UK) -> Result<bool> {
        self.contains_in(&[], key, user_key)
    }

    /// The entries of the map of `key`, in the order of their encoded user keys.
    ///
    /// # Errors
    /// As [`get`](Self::get); decoding errors come from the iterator.
    pub fn iter(&mut self, key: &K) -> Result<MapIter<UK, UV>> {
        self.iter_in(&[], key)
    }

    /// The user keys of the map of `key`.
    ///
    /// # Errors
    /// As [`iter`](Self::iter).
    pub fn keys(&mut self, key: &K) -> Result<impl Iterator<Item = Result<UK>>> {
        Ok(self.iter(key)?.map(|entry| entry.map(|(uk, _)| uk)))
    }

    /// The user values of the map of `key`.
    ///
    /// # Errors
    /// As [`iter`](Self::iter).
    pub fn values(&mut self, key: &K) -> Result<impl Iterator<Item = Result<UV>>> {
        Ok(self.iter(key)?.map(|entry| entry.map(|(_, uv)| uv)))
    }

    /// Whether the map of `key` has no (live) entry.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn is_empty(&mut self, key: &K) -> Result<bool> {
        self.is_empty_in(&[], key)
    }

    /// Removes the whole map of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn clear(&mut self, key: &K) -> Result<()> {
        self.clear_in(&[], key)
    }

    /// The keys that have a map entry, in the empty namespace.
    pub fn state_keys(&self) -> Keys<K> {
        self.core.keys(&[])
    }

    /// This state in `namespace`.
    pub fn namespace<'a>(&'a mut self, namespace: &'a [u8]) -> Namespaced<'a, Self> {
        Namespaced {
            state: self,
            namespace,
        }
    }

    /// Puts the entry key of `user_key` in the map of `key` into `core.composite`.
    fn set_entry_key(&mut self, namespace: &[u8], key: &K, user_key: &UK) -> Result<()> {
        self.core.set_prefix(namespace, key)?;
        self.user_key_codec
            .encode(user_key, &mut self.core.composite)
            .map_err(|e| self.core.codec_error("encode", "user key", e))
    }

    pub(crate) fn get_in(
        &mut self,
        namespace: &[u8],
        key: &K,
        user_key: &UK,
    ) -> Result<Option<UV>> {
        self.set_entry_key(namespace, key, user_key)?;
        if !self.core.read_value()? {
            return Ok(None);
        }
        let payload = &self.core.value_buf[self.core.payload_start()..];
        self.user_value_codec
            .decode(payload)
            .map(Some)
            .map_err(|e| self.core.codec_error("decode", "user value", e))
    }

    pub(crate) fn put_in(
        &mut self,
        namespace: &[u8],
        key: &K,
        user_key: &UK,
        value: &UV,
    ) -> Result<()> {
        self.set_entry_key(namespace, key, user_key)?;
        let core = &mut self.core;
        core.begin_value();
        if let Err(e) = self.user_value_codec.encode(value, &mut core.value_buf) {
            return Err(core.codec_error("encode", "user value", e));
        }
        core.backend.put(core.id, &core.composite, &core.value_buf)
    }

    pub(crate) fn put_all_in(
        &mut self,
        namespace: &[u8],
        key: &K,
        entries: &[(UK, UV)],
    ) -> Result<()> {
        entries
            .iter()
            .try_for_each(|(uk, uv)| self.put_in(namespace, key, uk, uv))
    }

    pub(crate) fn remove_in(&mut self, namespace: &[u8], key: &K, user_key: &UK) -> Result<()> {
        self.set_entry_key(namespace, key, user_key)?;
        self.core.backend.delete(self.core.id, &self.core.composite)
    }

    pub(crate) fn contains_in(&mut self, namespace: &[u8], key: &K, user_key: &UK) -> Result<bool> {
        self.set_entry_key(namespace, key, user_key)?;
        self.core.read_value()
    }

    pub(crate) fn iter_in(&mut self, namespace: &[u8], key: &K) -> Result<MapIter<UK, UV>> {
        self.scan_in(namespace, key, BatchScan::MAX_BATCH)
    }

    /// An iterator over the map of `key` whose first batch reads `first_batch` entries.
    fn scan_in(
        &mut self,
        namespace: &[u8],
        key: &K,
        first_batch: usize,
    ) -> Result<MapIter<UK, UV>> {
        self.core.set_prefix(namespace, key)?;
        Ok(MapIter {
            scan: BatchScan::new(
                self.core.backend.clone(),
                self.core.id,
                self.core.composite.clone(),
                first_batch,
                true,
            ),
            decoder: EntryDecoder {
                user_key_codec: self.user_key_codec.clone(),
                user_value_codec: self.user_value_codec.clone(),
                name: self.core.name.clone(),
                ttl: self.core.ttl,
                now: if self.core.ttl.is_some() {
                    self.core.now()
                } else {
                    0
                },
                payload_start: self.core.payload_start(),
            },
        })
    }

    pub(crate) fn is_empty_in(&mut self, namespace: &[u8], key: &K) -> Result<bool> {
        match self.scan_in(namespace, key, 1)?.next() {
            None => Ok(true),
            Some(Ok(_)) => Ok(false),
            Some(Err(e)) => Err(e),
        }
    }

    pub(crate) fn clear_in(&mut self, namespace: &[u8], key: &K) -> Result<()> {
        self.core.set_prefix(namespace, key)?;
        self.core
            .backend
            .delete_prefix(self.core.id, &self.core.composite)
    }
}

impl<K, UK, UV> Namespaced<'_, MapState<K, UK, UV>> {
    /// [`MapState::get`] in this namespace.
    ///
    /// # Errors
    /// As [`MapState::get`].
    pub fn get(&mut self, key: &K, user_key: &UK) -> Result<Option<UV>> {
        self.state.get_in(self.namespace, key, user_key)
    }

    /// [`MapState::put`] in this namespace.
    ///
    /// # Errors
    /// As [`MapState::get`].
    pub fn put(&mut self, key: &K, user_key: &UK, value: &UV) -> Result<()> {
        self.state.put_in(self.namespace, key, user_key, value)
    }

    /// [`MapState::put_all`] in this namespace.
    ///
    /// # Errors
    /// As [`MapState::get`].
    pub fn put_all(&mut self, key: &K, entries: &[(UK, UV)]) -> Result<()> {
        self.state.put_all_in(self.namespace, key, entries)
    }

    /// [`MapState::remove`] in this namespace.
    ///
    /// # Errors
    /// As [`MapState::get`].
    pub fn remove(&mut self, key: &K, user_key: &UK) -> Result<()> {
        self.state.remove_in(self.namespace, key, user_key)
    }

    /// [`MapState::contains`] in this namespace.
    ///
    /// # Errors
    /// As [`MapState::get`].
    pub fn contains(&mut self, key: &K, user_key: &UK) -> Result<bool> {
        self.state.contains_in(self.namespace, key, user_key)
    }

    /// [`MapState::iter`] in this namespace.
    ///
    /// # Errors
    /// As [`MapState::get`].
    pub fn iter(&mut self, key: &K) -> Result<MapIter<UK, UV>> {
        self.state.iter_in(self.namespace, key)
    }

    /// [`MapState::is_empty`] in this namespace.
    ///
    /// # Errors
    /// As [`MapState::get`].
    pub fn is_empty(&mut self, key: &K) -> Result<bool> {
        self.state.is_empty_in(self.namespace, key)
    }

    /// [`MapState::clear`] in this namespace.
    ///
    /// # Errors
    /// As [`MapState::get`].
    pub fn clear(&mut self, key: &K) -> Result<()> {
        self.state.clear_in(self.namespace, key)
    }

    /// The keys that have a map entry in this namespace.
    pub fn state_keys(&self) -> Keys<K> {
        self.state.core.keys(self.namespace)
    }
}

/// The entries of one map, read lazily in batches: it may be held while the state is
/// written (it then sees some of the writes, as Flink's iterators do).
pub struct MapIter<UK, UV> {
    scan: BatchScan,
    decoder: EntryDecoder<UK, UV>,
}

/// What a [`MapIter`] needs to turn stored entries into typed ones.
struct EntryDecoder<UK, UV> {
    user_key_codec: Arc<dyn Codec<UK>>,
    user_value_codec: Arc<dyn Codec<UV>>,
    name: Arc<str>,
    ttl: Option<TtlConfig>,
    now: u64,
    payload_start: usize,
}

impl<UK, UV> EntryDecoder<UK, UV> {
    /// Decodes one stored entry: `None` if TTL hides it.
    fn decode(&self, user_key: &[u8], stored: &[u8]) -> Result<Option<(UK, UV)>> {
        if !freshness(self.ttl, &self.name, stored, self.now)?.visible() {
            return Ok(None);
        }
        let codec_error = |part, e: crate::codec::CodecError| Error::Codec {
            state: self.name.to_string(),
            action: "decode",
            part,
            detail: e.0,
        };
        let user_key = self
            .user_key_codec
            .decode(user_key)
            .map_err(|e| codec_error("user key", e))?;
        let value = self
            .user_value_codec
            .decode(&stored[self.payload_start..])
            .map_err(|e| codec_error("user value", e))?;
        Ok(Some((user_key, value)))
    }
}

impl<UK, UV> Iterator for MapIter<UK, UV> {
    type Item = Result<(UK, UV)>;

    fn next(&mut self) -> Option<Self::Item> {
        let prefix_len = self.scan.prefix_len();
        loop {
            let (entry_key, stored) = match self.scan.next_entry()? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e)),
            };
            match self.decoder.decode(&entry_key[prefix_len..], stored) {
                Ok(Some(entry)) => return Some(Ok(entry)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
