//! List state: a list of elements per key (and namespace), appended to without a read.

use std::sync::Arc;

use crate::backend::key::{read_framed, write_framed};
use crate::backend::{KeyedStateBackend, StateKind};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::state::core::{Freshness, Keys, Namespaced, StateCore};
use crate::state::StateDescriptor;
use crate::ttl::STAMP_LEN;

/// A list of elements per key and namespace.
///
/// Stored as length-prefixed elements one after another, so [`add`](Self::add) is a RocksDB
/// merge (no read). With TTL each element has its own timestamp; a read drops the expired
/// ones for good.
pub struct ListState<K, V> {
    core: StateCore<K>,
    value_codec: Arc<dyn Codec<V>>,
    element_buf: Vec<u8>,
}

impl<K, V> ListState<K, V> {
    pub(crate) fn register(
        backend: &Arc<dyn KeyedStateBackend>,
        descriptor: &StateDescriptor<K, V>,
    ) -> Result<Self> {
        let meta = descriptor.meta(StateKind::List);
        let id = descriptor.register_on(backend, &meta)?;
        Ok(ListState {
            core: StateCore::new(backend, id, &meta, descriptor.key_codec.clone()),
            value_codec: descriptor.value_codec.clone(),
            element_buf: Vec::new(),
        })
    }

    /// The elements of `key` in the order they were added (empty if none).
    ///
    /// # Errors
    /// A codec or backend failure; a key of another subtask.
    pub fn get(&mut self, key: &K) -> Result<std::vec::IntoIter<V>> {
        self.get_in(&[], key)
    }

    /// Appends `value` to the list of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn add(&mut self, key: &K, value: &V) -> Result<()> {
        self.add_all_in(&[], key, std::slice::from_ref(value))
    }

    /// Appends `values` to the list of `key`, in order.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn add_all(&mut self, key: &K, values: &[V]) -> Result<()> {
        self.add_all_in(&[], key, values)
    }

    /// Replaces the list of `key` by `values` (an empty slice clears it).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn update(&mut self, key: &K, values: &[V]) -> Result<()> {
        self.update_in(&[], key, values)
    }

    /// Removes the list of `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn clear(&mut self, key: &K) -> Result<()> {
        self.clear_in(&[], key)
    }

    /// The keys that have a list, in the empty namespace.
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

    /// Frames `values` into `core.value_buf`, each with the current stamp under TTL.
    fn frame(&mut self, values: &[V]) -> Result<()> {
        let stamp = self.core.stamp();
        self.core.value_buf.clear();
        for value in values {
            self.element_buf.clear();
            if let Some(stamp) = stamp {
                self.element_buf.extend_from_slice(&stamp);
            }
            self.value_codec
                .encode(value, &mut self.element_buf)
                .map_err(|e| self.core.codec_error("encode", "element", e))?;
            if u32::try_from(self.element_buf.len()).is_err() {
                return Err(Error::Codec {
                    state: self.core.name.to_string(),
                    action: "encode",
                    part: "element",
                    detail: "an element is above the 4 GiB limit".into(),
                });
            }
            write_framed(&mut self.core.value_buf, &self.element_buf);
        }
        Ok(())
    }

    pub(crate) fn get_in(&mut self, namespace: &[u8], key: &K) -> Result<std::vec::IntoIter<V>> {
        self.core.set_prefix(namespace, key)?;
        let core = &mut self.core;
        if !core
            .backend
            .get(core.id, &core.composite, &mut core.value_buf)?
        {
            return Ok(Vec::new().into_iter());
        }
        let has_ttl = core.ttl.is_some();
        let now = if has_ttl { core.now() } else { 0 };
        let start = core.payload_start();
        let mut values = Vec::new();
        // Under TTL: the elements to keep, re-framed (renewed where the policy says so).
        let mut kept = Vec::new();
        let mut changed = false;
        let mut rest = core.value_buf.as_slice();
        while !rest.is_empty() {
            let (element, tail) = read_framed(rest).ok_or_else(|| Error::Codec {
                state: core.name.to_string(),
                action: "decode",
                part: "list",
                detail: format!("a list element is truncated ({} bytes left)", rest.len()),
            })?;
            rest = tail;
            let freshness = core.freshness(element, now)?;
            if freshness.visible() {
                let value = self
                    .value_codec
                    .decode(&element[start..])
                    .map_err(|e| core.codec_error("decode", "element", e))?;
                values.push(value);
            }
            if !has_ttl {
                continue;
            }
            match freshness {
                Freshness::Live => write_framed(&mut kept, element),
                Freshness::LiveRenew => {
                    let mut renewed = element.to_vec();
                    renewed[..STAMP_LEN].copy_from_slice(&now.to_be_bytes());
                    write_framed(&mut kept, &renewed);
                    changed = true;
                }
                Freshness::ExpiredVisible | Freshness::ExpiredHidden => changed = true,
            }
        }
        if changed {
            if kept.is_empty() {
                core.backend.delete(core.id, &core.composite)?;
            } else {
                core.backend.put(core.id, &core.composite, &kept)?;
            }
        }
        Ok(values.into_iter())
    }

    pub(crate) fn add_all_in(&mut self, namespace: &[u8], key: &K, values: &[V]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.core.set_prefix(namespace, key)?;
        self.frame(values)?;
        let core = &self.core;
        core.backend
            .append(core.id, &core.composite, &core.value_buf)
    }

    pub(crate) fn update_in(&mut self, namespace: &[u8], key: &K, values: &[V]) -> Result<()> {
        self.core.set_prefix(namespace, key)?;
        if values.is_empty() {
            return self.core.backend.delete(self.core.id, &self.core.composite);
        }
        self.frame(values)?;
        let core = &self.core;
        core.backend.put(core.id, &core.composite, &core.value_buf)
    }

    pub(crate) fn clear_in(&mut self, namespace: &[u8], key: &K) -> Result<()> {
        self.core.set_prefix(namespace, key)?;
        self.core.backend.delete(self.core.id, &self.core.composite)
    }
}

impl<K, V> Namespaced<'_, ListState<K, V>> {
    /// [`ListState::get`] in this namespace.
    ///
    /// # Errors
    /// As [`ListState::get`].
    pub fn get(&mut self, key: &K) -> Result<std::vec::IntoIter<V>> {
        self.state.get_in(self.namespace, key)
    }

    /// [`ListState::add`] in this namespace.
    ///
    /// # Errors
    /// As [`ListState::get`].
    pub fn add(&mut self, key: &K, value: &V) -> Result<()> {
        self.state
            .add_all_in(self.namespace, key, std::slice::from_ref(value))
    }

    /// [`ListState::add_all`] in this namespace.
    ///
    /// # Errors
    /// As [`ListState::get`].
    pub fn add_all(&mut self, key: &K, values: &[V]) -> Result<()> {
        self.state.add_all_in(self.namespace, key, values)
    }

    /// [`ListState::update`] in this namespace.
    ///
    /// # Errors
    /// As [`ListState::get`].
    pub fn update(&mut self, key: &K, values: &[V]) -> Result<()> {
        self.state.update_in(self.namespace, key, values)
    }

    /// [`ListState::clear`] in this namespace.
    ///
    /// # Errors
    /// As [`ListState::get`].
    pub fn clear(&mut self, key: &K) -> Result<()> {
        self.state.clear_in(self.namespace, key)
    }

    /// The keys that have a list in this namespace.
    pub fn keys(&self) -> Keys<K> {
        self.state.core.keys(self.namespace)
    }
}
