//! Operator state: the non-keyed state of one subtask, such as a source's partition offsets.
//!
//! Three kinds, which differ only in how a restore at another parallelism hands them out
//! (done by [`JobSnapshot::restore_plan`](crate::JobSnapshot::restore_plan)):
//! - **list state**: the elements of every old subtask, in subtask order, are dealt
//!   round-robin to the new subtasks (element `j` to subtask `j % p`), so each gets an even
//!   share: how a source's partitions are redistributed;
//! - **union list state**: every new subtask gets all the elements of every old subtask,
//!   and picks what it needs;
//! - **broadcast state**: a map every subtask holds the same copy of; each new subtask gets
//!   subtask 0's copy.
//!
//! Operator state is small (offsets, not records) and lives in memory; a snapshot copies it
//! in the synchronous phase and it is stored inside `_metadata` (docs/format.md, section 9).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::key::{write_framed, write_varint};
use crate::backend::meta::Reader;
use crate::codec::{Codec, CodecInfo};
use crate::error::{Error, Result};

/// How an operator state is redistributed when the parallelism changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperatorStateKind {
    /// Elements dealt round-robin to the new subtasks.
    List,
    /// Every new subtask gets every element.
    UnionList,
    /// A map every subtask holds a copy of.
    Broadcast,
}

impl OperatorStateKind {
    fn code(self) -> u8 {
        match self {
            OperatorStateKind::List => 0,
            OperatorStateKind::UnionList => 1,
            OperatorStateKind::Broadcast => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => OperatorStateKind::List,
            1 => OperatorStateKind::UnionList,
            2 => OperatorStateKind::Broadcast,
            _ => return None,
        })
    }
}

/// One operator state's bytes: its kind, codecs and elements (or map entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorStateEntry {
    /// How it is redistributed.
    pub kind: OperatorStateKind,
    /// The codec of list elements, or of broadcast values.
    pub value_codec: CodecInfo,
    /// The codec of broadcast keys (`None` for lists).
    pub key_codec: Option<CodecInfo>,
    /// List elements in order, or broadcast entries as (key, value) in key order.
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The operator state of one subtask at a snapshot, by state name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorStateSnapshot {
    /// The states by name.
    pub states: BTreeMap<String, OperatorStateEntry>,
}

impl OperatorStateSnapshot {
    /// Whether it holds no state.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Appends the persisted encoding (docs/format.md, section 9).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        write_count(out, self.states.len());
        for (name, state) in &self.states {
            write_framed(out, name.as_bytes());
            out.push(state.kind.code());
            write_codec(out, &state.value_codec);
            if state.kind == OperatorStateKind::Broadcast {
                write_codec(
                    out,
                    state
                        .key_codec
                        .as_ref()
                        .unwrap_or(&CodecInfo::new("bytes", 1)),
                );
            }
            write_count(out, state.items.len());
            for (key, value) in &state.items {
                if state.kind == OperatorStateKind::Broadcast {
                    write_framed(out, key);
                }
                write_framed(out, value);
            }
        }
    }

    /// Decodes what [`encode`](Self::encode) wrote.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, String> {
        let count = r.varint("operator state count")?;
        let mut states = BTreeMap::new();
        for _ in 0..count {
            let name = r.string("operator state name")?;
            let code = r.u8("operator state kind")?;
            let kind = OperatorStateKind::from_code(code)
                .ok_or(format!("operator state '{name}': unknown kind {code}"))?;
            let value_codec = read_codec(r, "operator state codec")?;
            let key_codec = match kind {
                OperatorStateKind::Broadcast => Some(read_codec(r, "broadcast key codec")?),
                _ => None,
            };
            let items_count = r.varint("operator state items")?;
            let mut items = Vec::new();
            for _ in 0..items_count {
                let key = match kind {
                    OperatorStateKind::Broadcast => r.framed("broadcast key")?.to_vec(),
                    _ => Vec::new(),
                };
                items.push((key, r.framed("operator state item")?.to_vec()));
            }
            let entry = OperatorStateEntry {
                kind,
                value_codec,
                key_codec,
                items,
            };
            if states.insert(name.clone(), entry).is_some() {
                return Err(format!("operator state '{name}' appears twice"));
            }
        }
        Ok(OperatorStateSnapshot { states })
    }

    /// Hands out the operator state of all old subtasks to `parallelism` new ones, by each
    /// state's kind.
    pub(crate) fn redistribute(old: &[OperatorStateSnapshot], parallelism: u32) -> Vec<Self> {
        let parallelism = parallelism as usize;
        let mut new = vec![OperatorStateSnapshot::default(); parallelism];
        let mut names: Vec<&String> = old.iter().flat_map(|s| s.states.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let entries: Vec<&OperatorStateEntry> =
                old.iter().filter_map(|s| s.states.get(name)).collect();
            let Some(first) = entries.first() else {
                continue;
            };
            let shares: Vec<Vec<(Vec<u8>, Vec<u8>)>> = match first.kind {
                OperatorStateKind::List => {
                    let mut shares = vec![Vec::new(); parallelism];
                    let all = entries.iter().flat_map(|e| e.items.iter().cloned());
                    for (j, item) in all.enumerate() {
                        shares[j % parallelism].push(item);
                    }
                    shares
                }
                OperatorStateKind::UnionList => {
                    let all: Vec<_> = entries
                        .iter()
                        .flat_map(|e| e.items.iter().cloned())
                        .collect();
                    vec![all; parallelism]
                }
                OperatorStateKind::Broadcast => vec![first.items.clone(); parallelism],
            };
            for (subtask, items) in new.iter_mut().zip(shares) {
                subtask.states.insert(
                    name.clone(),
                    OperatorStateEntry {
                        kind: first.kind,
                        value_codec: first.value_codec.clone(),
                        key_codec: first.key_codec.clone(),
                        items,
                    },
                );
            }
        }
        new
    }
}

fn write_count(out: &mut Vec<u8>, count: usize) {
    // Bounded far below u32::MAX by the metadata size limit.
    write_varint(out, count as u32);
}

fn write_codec(out: &mut Vec<u8>, codec: &CodecInfo) {
    write_framed(out, codec.id.as_bytes());
    out.extend_from_slice(&codec.version.to_be_bytes());
}

fn read_codec(r: &mut Reader<'_>, what: &str) -> Result<CodecInfo, String> {
    let id = r.string(what)?;
    let version = u32::from_be_bytes(r.array(what)?);
    Ok(CodecInfo { id, version })
}

/// The operator state of one subtask: create it empty, or from a restore plan's share.
///
/// # Examples
/// ```
/// use cairn::{BigEndian, OperatorStateStore};
/// let store = OperatorStateStore::new();
/// let mut offsets = store.list_state::<u64>("offsets", BigEndian)?;
/// offsets.update(&[17, 42])?;
/// assert_eq!(offsets.get()?, vec![17, 42]);
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct OperatorStateStore {
    states: Arc<Mutex<OperatorStateSnapshot>>,
}

impl OperatorStateStore {
    /// An empty store.
    pub fn new() -> Self {
        OperatorStateStore::default()
    }

    /// A store holding `share`: what [`SubtaskRestore::operator_state`] gave this subtask.
    ///
    /// [`SubtaskRestore::operator_state`]: crate::SubtaskRestore::operator_state
    pub fn restore(share: OperatorStateSnapshot) -> Self {
        OperatorStateStore {
            states: Arc::new(Mutex::new(share)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OperatorStateSnapshot> {
        // Every mutation is a single assignment, so the data is whole even after a panic.
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of every state: the synchronous phase of a snapshot.
    pub fn snapshot(&self) -> OperatorStateSnapshot {
        self.lock().clone()
    }

    fn register(
        &self,
        name: &str,
        kind: OperatorStateKind,
        value_codec: CodecInfo,
        key_codec: Option<CodecInfo>,
    ) -> Result<()> {
        let mut states = self.lock();
        match states.states.get(name) {
            Some(existing)
                if existing.kind != kind
                    || existing.value_codec != value_codec
                    || existing.key_codec != key_codec =>
            {
                Err(Error::StateMismatch {
                    state: name.to_string(),
                    registered: describe(existing.kind, &existing.value_codec, &existing.key_codec),
                    requested: describe(kind, &value_codec, &key_codec),
                })
            }
            Some(_) => Ok(()),
            None => {
                states.states.insert(
                    name.to_string(),
                    OperatorStateEntry {
                        kind,
                        value_codec,
                        key_codec,
                        items: Vec::new(),
                    },
                );
                Ok(())
            }
        }
    }

    /// A list state, split evenly among the subtasks on rescale.
    ///
    /// # Errors
    /// [`Error::StateMismatch`] if `name` is registered with another kind or codec.
    pub fn list_state<T>(
        &self,
        name: &str,
        codec: impl Codec<T> + 'static,
    ) -> Result<OperatorListState<T>> {
        self.list(name, OperatorStateKind::List, codec)
    }

    /// A union list state: every subtask gets all elements on restore.
    ///
    /// # Errors
    /// [`Error::StateMismatch`] if `name` is registered with another kind or codec.
    pub fn union_list_state<T>(
        &self,
        name: &str,
        codec: impl Codec<T> + 'static,
    ) -> Result<OperatorListState<T>> {
        self.list(name, OperatorStateKind::UnionList, codec)
    }

    fn list<T>(
        &self,
        name: &str,
        kind: OperatorStateKind,
        codec: impl Codec<T> + 'static,
    ) -> Result<OperatorListState<T>> {
        self.register(name, kind, codec.info(), None)?;
        Ok(OperatorListState {
            store: self.clone(),
            name: name.to_string(),
            codec: Box::new(codec),
        })
    }

    /// A broadcast state: a map every subtask holds the same copy of.
    ///
    /// # Errors
    /// [`Error::StateMismatch`] if `name` is registered with another kind or codec.
    pub fn broadcast_state<K, V>(
        &self,
        name: &str,
        key_codec: impl Codec<K> + 'static,
        value_codec: impl Codec<V> + 'static,
    ) -> Result<BroadcastState<K, V>> {
        self.register(
            name,
            OperatorStateKind::Broadcast,
            value_codec.info(),
            Some(key_codec.info()),
        )?;
        Ok(BroadcastState {
            store: self.clone(),
            name: name.to_string(),
            key_codec: Box::new(key_codec),
            value_codec: Box::new(value_codec),
            _types: PhantomData,
        })
    }

    fn with_items<R>(&self, name: &str, f: impl FnOnce(&mut Vec<(Vec<u8>, Vec<u8>)>) -> R) -> R {
        let mut states = self.lock();
        let entry = states
            .states
            .entry(name.to_string())
            .or_insert_with(|| OperatorStateEntry {
                kind: OperatorStateKind::List,
                value_codec: CodecInfo::new("bytes", 1),
                key_codec: None,
                items: Vec::new(),
            });
        f(&mut entry.items)
    }
}

fn describe(kind: OperatorStateKind, value: &CodecInfo, key: &Option<CodecInfo>) -> String {
    match key {
        Some(key) => format!("{kind:?} operator state (key {key}, value {value})"),
        None => format!("{kind:?} operator state (element {value})"),
    }
}

fn codec_error(name: &str, action: &'static str, part: &'static str, e: impl ToString) -> Error {
    Error::Codec {
        state: name.to_string(),
        action,
        part,
        detail: e.to_string(),
    }
}

/// A list of elements of one subtask's operator state.
pub struct OperatorListState<T> {
    store: OperatorStateStore,
    name: String,
    codec: Box<dyn Codec<T>>,
}

impl<T> OperatorListState<T> {
    /// The elements, in order.
    ///
    /// # Errors
    /// [`Error::Codec`] if an element does not decode.
    pub fn get(&self) -> Result<Vec<T>> {
        self.store.with_items(&self.name, |items| {
            items
                .iter()
                .map(|(_, bytes)| {
                    self.codec
                        .decode(bytes)
                        .map_err(|e| codec_error(&self.name, "decode", "element", e))
                })
                .collect()
        })
    }

    /// Appends an element.
    ///
    /// # Errors
    /// [`Error::Codec`] if it does not encode.
    pub fn add(&mut self, value: &T) -> Result<()> {
        let bytes = self.encode(value)?;
        self.store
            .with_items(&self.name, |items| items.push((Vec::new(), bytes)));
        Ok(())
    }

    /// Replaces every element.
    ///
    /// # Errors
    /// [`Error::Codec`] if one does not encode; nothing changes then.
    pub fn update(&mut self, values: &[T]) -> Result<()> {
        let encoded = values
            .iter()
            .map(|v| Ok((Vec::new(), self.encode(v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.store.with_items(&self.name, |items| *items = encoded);
        Ok(())
    }

    /// Removes every element.
    pub fn clear(&mut self) {
        self.store.with_items(&self.name, Vec::clear);
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.codec
            .encode(value, &mut out)
            .map_err(|e| codec_error(&self.name, "encode", "element", e))?;
        Ok(out)
    }
}

/// A map every subtask of the operator holds the same copy of.
pub struct BroadcastState<K, V> {
    store: OperatorStateStore,
    name: String,
    key_codec: Box<dyn Codec<K>>,
    value_codec: Box<dyn Codec<V>>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> BroadcastState<K, V> {
    fn key(&self, key: &K) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.key_codec
            .encode(key, &mut out)
            .map_err(|e| codec_error(&self.name, "encode", "key", e))?;
        Ok(out)
    }

    /// The value at `key`.
    ///
    /// # Errors
    /// [`Error::Codec`] if the key does not encode or the value does not decode.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let key = self.key(key)?;
        self.store.with_items(&self.name, |items| {
            match items.binary_search_by(|(k, _)| k.as_slice().cmp(&key)) {
                Ok(i) => self
                    .value_codec
                    .decode(&items[i].1)
                    .map(Some)
                    .map_err(|e| codec_error(&self.name, "decode", "value", e)),
                Err(_) => Ok(None),
            }
        })
    }

    /// Sets the value at `key`.
    ///
    /// # Errors
    /// [`Error::Codec`] if the key or value does not encode.
    pub fn put(&mut self, key: &K, value: &V) -> Result<()> {
        let key = self.key(key)?;
        let mut bytes = Vec::new();
        self.value_codec
            .encode(value, &mut bytes)
            .map_err(|e| codec_error(&self.name, "encode", "value", e))?;
        self.store.with_items(&self.name, |items| {
            match items.binary_search_by(|(k, _)| k.as_slice().cmp(&key)) {
                Ok(i) => items[i].1 = bytes,
                Err(i) => items.insert(i, (key, bytes)),
            }
        });
        Ok(())
    }

    /// Removes the value at `key`.
    ///
    /// # Errors
    /// [`Error::Codec`] if the key does not encode.
    pub fn remove(&mut self, key: &K) -> Result<()> {
        let key = self.key(key)?;
        self.store.with_items(&self.name, |items| {
            if let Ok(i) = items.binary_search_by(|(k, _)| k.as_slice().cmp(&key)) {
                items.remove(i);
            }
        });
        Ok(())
    }

    /// Every entry, in key-byte order.
    ///
    /// # Errors
    /// [`Error::Codec`] if an entry does not decode.
    pub fn entries(&self) -> Result<Vec<(K, V)>> {
        self.store.with_items(&self.name, |items| {
            items
                .iter()
                .map(|(k, v)| {
                    let key = self
                        .key_codec
                        .decode(k)
                        .map_err(|e| codec_error(&self.name, "decode", "key", e))?;
                    let value = self
                        .value_codec
                        .decode(v)
                        .map_err(|e| codec_error(&self.name, "decode", "value", e))?;
                    Ok((key, value))
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BigEndian, Utf8};

    fn subtask(offsets: &[u64], all: &[u64], rules: &[(&str, u64)]) -> OperatorStateSnapshot {
        let store = OperatorStateStore::new();
        store
            .list_state::<u64>("offsets", BigEndian)
            .unwrap()
            .update(offsets)
            .unwrap();
        store
            .union_list_state::<u64>("all", BigEndian)
            .unwrap()
            .update(all)
            .unwrap();
        let mut b = store.broadcast_state("rules", Utf8, BigEndian).unwrap();
        for (k, v) in rules {
            b.put(&k.to_string(), v).unwrap();
        }
        store.snapshot()
    }

    fn restored(share: OperatorStateSnapshot) -> (Vec<u64>, Vec<u64>, Vec<(String, u64)>) {
        let store = OperatorStateStore::restore(share);
        let offsets = store
            .list_state::<u64>("offsets", BigEndian)
            .unwrap()
            .get()
            .unwrap();
        let all = store
            .union_list_state::<u64>("all", BigEndian)
            .unwrap()
            .get()
            .unwrap();
        let rules = store
            .broadcast_state("rules", Utf8, BigEndian)
            .unwrap()
            .entries()
            .unwrap();
        (offsets, all, rules)
    }

    #[test]
    fn three_subtasks_become_two_and_two_become_five() {
        let rules = [("a", 1), ("b", 2)];
        let old = vec![
            subtask(&[10, 11], &[1], &rules),
            subtask(&[20], &[2], &rules),
            subtask(&[30, 31, 32], &[3], &rules),
        ];
        let two = OperatorStateSnapshot::redistribute(&old, 2);
        let expected_rules = vec![("a".to_string(), 1), ("b".to_string(), 2)];
        // Elements 10, 11, 20, 30, 31, 32 dealt round-robin.
        assert_eq!(
            restored(two[0].clone()),
            (vec![10, 20, 31], vec![1, 2, 3], expected_rules.clone())
        );
        assert_eq!(
            restored(two[1].clone()),
            (vec![11, 30, 32], vec![1, 2, 3], expected_rules.clone())
        );

        let five = OperatorStateSnapshot::redistribute(&two, 5);
        let offsets: Vec<Vec<u64>> = five.iter().map(|s| restored(s.clone()).0).collect();
        assert_eq!(
            offsets,
            vec![vec![10, 32], vec![20], vec![31], vec![11], vec![30]]
        );
        for share in &five {
            let (_, all, rules) = restored(share.clone());
            // Both old subtasks held the whole union and snapshotted it: a union is the
            // concatenation of what every subtask holds, as in Flink. A subtask that owns
            // only part of it keeps only that part.
            assert_eq!(all, vec![1, 2, 3, 1, 2, 3]);
            assert_eq!(rules, expected_rules);
        }
    }

    #[test]
    fn the_encoding_round_trips_and_rejects_truncation() {
        let snapshot = subtask(&[1, 2], &[3], &[("x", 9)]);
        let mut bytes = Vec::new();
        snapshot.encode(&mut bytes);
        let mut r = Reader(&bytes);
        assert_eq!(OperatorStateSnapshot::decode(&mut r).unwrap(), snapshot);
        assert!(r.0.is_empty());
        for len in 0..bytes.len() {
            let mut r = Reader(&bytes[..len]);
            assert!(
                OperatorStateSnapshot::decode(&mut r).is_err(),
                "length {len}"
            );
        }
    }

    #[test]
    fn a_state_registered_again_differently_is_refused() {
        let store = OperatorStateStore::new();
        store.list_state::<u64>("offsets", BigEndian).unwrap();
        let err = store
            .union_list_state::<u64>("offsets", BigEndian)
            .err()
            .unwrap();
        assert!(matches!(err, Error::StateMismatch { .. }), "{err}");
        let err = store.list_state::<String>("offsets", Utf8).err().unwrap();
        assert!(err.to_string().contains("u64-be v1"), "{err}");
    }
}
