//! State descriptors: a state's name, codecs and TTL, as the job declares them.

use std::sync::Arc;

use crate::backend::{StateKind, StateMeta};
use crate::codec::Codec;
use crate::ttl::TtlConfig;

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
        }
    }

    /// Gives the state a time-to-live.
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
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
}

impl<K, V> Clone for StateDescriptor<K, V> {
    fn clone(&self) -> Self {
        StateDescriptor {
            name: self.name.clone(),
            key_codec: self.key_codec.clone(),
            value_codec: self.value_codec.clone(),
            ttl: self.ttl,
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
