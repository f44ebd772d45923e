//! State descriptors: a state's name, codecs, TTL and migrations, as the job declares them.
//!
//! Registering a descriptor resolves a change of value codec against what the backend holds
//! (Flink's schema compatibility): a migration from the held codec rewrites every value once;
//! a codec that reads the held one's bytes ([`Codec::can_read`]) only changes the record;
//! anything else is [`Error::SchemaIncompatible`] and changes nothing. Kind, key codec,
//! user-key codec and TTL presence never change ([`Error::StateMismatch`]).

use std::sync::Arc;

use crate::backend::{KeyedStateBackend, StateId, StateKind, StateMeta};
use crate::codec::{Codec, CodecError, CodecInfo};
use crate::error::{Error, Result};
use crate::ttl::TtlConfig;

/// A function from a value's bytes as an older codec wrote them to the value.
pub(crate) type MigrateFn<V> = Arc<dyn Fn(&[u8]) -> Result<V, CodecError> + Send + Sync>;

/// Declares a value, list, reducing or aggregating state: its name, the codec of its keys,
/// the codec of its values (list elements, accumulators) and its TTL.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use cairn::{BigEndian, StateDescriptor, TtlConfig, Utf8};
/// let counts = StateDescriptor::<String, u64>::new("counts", Utf8, BigEndian)
///     .with_ttl(TtlConfig::new(Duration::from_secs(3600)));
/// assert_eq!(counts.name(), "counts");
/// ```
pub struct StateDescriptor<K, V> {
    pub(crate) name: String,
    pub(crate) key_codec: Arc<dyn Codec<K>>,
    pub(crate) value_codec: Arc<dyn Codec<V>>,
    pub(crate) ttl: Option<TtlConfig>,
    /// Per older value codec, how its bytes become a value.
    pub(crate) migrations: Vec<(CodecInfo, MigrateFn<V>)>,
}

impl<K, V> StateDescriptor<K, V> {
    /// A state named `name` with the given key and value codecs, without TTL.
    pub fn new(
        name: impl Into<String>,
        key_codec: impl Codec<K> + 'static,
        value_codec: impl Codec<V> + 'static,
    ) -> Self {
        StateDescriptor {
            name: name.into(),
            key_codec: Arc::new(key_codec),
            value_codec: Arc::new(value_codec),
            ttl: None,
            migrations: Vec::new(),
        }
    }

    /// Gives the state a time-to-live.
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Migrates values written by the value codec `from` (an older version, or another
    /// codec) when this descriptor is registered over them: `migrate` turns each value's old
    /// bytes into the new value, which the descriptor's value codec then encodes. Every
    /// value, list element, map user value and accumulator of the state is rewritten once,
    /// at registration (RocksDB: in one pass); TTL stamps are kept, and the new codec is
    /// recorded, so the migration never runs again. Give one migration per older codec a
    /// snapshot may hold.
    ///
    /// If `migrate` fails on any value, registration fails with its error and nothing
    /// changes. Without a migration from the held codec, registration fails with
    /// [`Error::SchemaIncompatible`] unless the new codec [reads](Codec::can_read) the old
    /// bytes as they are.
    ///
    /// # Examples
    /// ```
    /// use cairn::{Bincode, BigEndian, CodecError, CodecInfo, HeapBackend, KeyGroupRange,
    ///             KeyedStateStore, MaxParallelism, StateDescriptor, Utf8};
    /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    /// struct Visits { count: u64, last_seen: u64 }
    ///
    /// let max = MaxParallelism::DEFAULT;
    /// let store = KeyedStateStore::new(HeapBackend::new(max, KeyGroupRange::all(max)));
    /// // Version 1 of the job counted visits as a u64.
    /// let v1 = StateDescriptor::<String, u64>::new("visits", Utf8, BigEndian);
    /// store.value_state(&v1)?.update(&"alice".to_string(), &3)?;
    ///
    /// // Version 2 keeps a struct, in version 2 of its bincode encoding.
    /// let v2 = StateDescriptor::<String, Visits>::new("visits", Utf8, Bincode::with_version(2))
    ///     .with_migration(CodecInfo::new("u64-be", 1), |old: &[u8]| {
    ///         let count = u64::from_be_bytes(old.try_into().map_err(|_| CodecError("not a u64".into()))?);
    ///         Ok(Visits { count, last_seen: 0 })
    ///     });
    /// let mut visits = store.value_state(&v2)?; // rewrites every value once
    /// assert_eq!(visits.get(&"alice".to_string())?, Some(Visits { count: 3, last_seen: 0 }));
    /// # Ok::<(), cairn::Error>(())
    /// ```
    pub fn with_migration(
        mut self,
        from: CodecInfo,
        migrate: impl Fn(&[u8]) -> Result<V, CodecError> + Send + Sync + 'static,
    ) -> Self {
        self.migrations.retain(|(codec, _)| *codec != from);
        self.migrations.push((from, Arc::new(migrate)));
        self
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn meta(&self, kind: StateKind) -> StateMeta {
        StateMeta {
            name: self.name.clone(),
            kind,
            key_codec: self.key_codec.info(),
            value_codec: self.value_codec.info(),
            user_key_codec: None,
            ttl: self.ttl,
        }
    }

    /// Registers `meta` (this descriptor's, as a state of some kind) on `backend`, resolving
    /// a change of value codec against the state the backend holds.
    pub(crate) fn register_on(
        &self,
        backend: &Arc<dyn KeyedStateBackend>,
        meta: &StateMeta,
    ) -> Result<StateId> {
        let mismatch = match backend.register(meta) {
            Err(mismatch @ Error::StateMismatch { .. }) => mismatch,
            registered => return registered,
        };
        let held = backend.states()?.into_iter().find(|s| s.name == meta.name);
        let Some(held) = held.filter(|held| held.same_but_value_codec(meta)) else {
            // More than the value codec differs: the kind, a key codec, TTL on or off.
            return Err(mismatch);
        };
        if let Some((_, migrate)) = self
            .migrations
            .iter()
            .find(|(from, _)| *from == held.value_codec)
        {
            let codec = &self.value_codec;
            let state = meta.name.as_str();
            let mut rewrite = |old: &[u8], out: &mut Vec<u8>| -> Result<()> {
                let value = migrate(old).map_err(|e| migration_error(state, "migrate", e))?;
                codec
                    .encode(&value, out)
                    .map_err(|e| migration_error(state, "encode", e))
            };
            return backend.evolve(meta, Some(&mut rewrite));
        }
        if self.value_codec.can_read(&held.value_codec) {
            return backend.evolve(meta, None);
        }
        Err(Error::SchemaIncompatible {
            state: meta.name.clone(),
            stored: held.value_codec.to_string(),
            requested: meta.value_codec.to_string(),
        })
    }
}

fn migration_error(state: &str, action: &'static str, e: CodecError) -> Error {
    Error::Codec {
        state: state.to_string(),
        action,
        part: "migrated value",
        detail: e.0,
    }
}

impl<K, V> Clone for StateDescriptor<K, V> {
    fn clone(&self) -> Self {
        StateDescriptor {
            name: self.name.clone(),
            key_codec: self.key_codec.clone(),
            value_codec: self.value_codec.clone(),
            ttl: self.ttl,
            migrations: self.migrations.clone(),
        }
    }
}

/// Declares a map state: a [`StateDescriptor`] of its keys and user values, plus the codec
/// of its user keys. TTL applies to each user value on its own.
pub struct MapStateDescriptor<K, UK, UV> {
    pub(crate) base: StateDescriptor<K, UV>,
    pub(crate) user_key_codec: Arc<dyn Codec<UK>>,
}

impl<K, UK, UV> MapStateDescriptor<K, UK, UV> {
    /// A map state named `name`.
    pub fn new(
        name: impl Into<String>,
        key_codec: impl Codec<K> + 'static,
        user_key_codec: impl Codec<UK> + 'static,
        user_value_codec: impl Codec<UV> + 'static,
    ) -> Self {
        MapStateDescriptor {
            base: StateDescriptor::new(name, key_codec, user_value_codec),
            user_key_codec: Arc::new(user_key_codec),
        }
    }

    /// Gives every user value a time-to-live.
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.base.ttl = Some(ttl);
        self
    }

    /// Migrates user values written by the codec `from`: see
    /// [`StateDescriptor::with_migration`]. User keys cannot change codec.
    pub fn with_migration(
        mut self,
        from: CodecInfo,
        migrate: impl Fn(&[u8]) -> Result<UV, CodecError> + Send + Sync + 'static,
    ) -> Self {
        self.base = self.base.with_migration(from, migrate);
        self
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.base.name
    }

    pub(crate) fn meta(&self) -> StateMeta {
        let mut meta = self.base.meta(StateKind::Map);
        meta.user_key_codec = Some(self.user_key_codec.info());
        meta
    }
}
