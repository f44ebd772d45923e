//! What every typed state handle shares: its registration, its reused buffers, the key group
//! and composite key of a key, the TTL rules, and batched scans.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::backend::key::{write_prefix, CompositeKey};
use crate::backend::{KeyedStateBackend, StateId, StateMeta, Visit};
use crate::codec::{Codec, CodecError};
use crate::error::{Error, Result};
use crate::keygroup::MaxParallelism;
use crate::ttl::{read_stamp, TtlConfig, TtlUpdate, TtlVisibility, STAMP_LEN};

/// A view of a state handle in one namespace: the same operations, scoped to `namespace`.
///
/// Made by the handles' `namespace` method, e.g. `window_counts.namespace(&window).get(&key)`.
pub struct Namespaced<'a, S> {
    pub(crate) state: &'a mut S,
    pub(crate) namespace: &'a [u8],
}

/// How a stored TTL entry reads at this moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Live; return it as it is.
    Live,
    /// Live, and the read renews its stamp (`OnReadAndWrite`).
    LiveRenew,
    /// Expired: remove it, but return it this once (`ReturnExpiredIfNotCleanedUp`).
    ExpiredVisible,
    /// Expired: remove it and return nothing.
    ExpiredHidden,
}

impl Freshness {
    pub(crate) fn expired(self) -> bool {
        matches!(self, Freshness::ExpiredVisible | Freshness::ExpiredHidden)
    }

    pub(crate) fn visible(self) -> bool {
        self != Freshness::ExpiredHidden
    }
}

pub(crate) struct StateCore<K> {
    pub(crate) backend: Arc<dyn KeyedStateBackend>,
    pub(crate) id: StateId,
    pub(crate) name: Arc<str>,
    key_codec: Arc<dyn Codec<K>>,
    pub(crate) ttl: Option<TtlConfig>,
    max_parallelism: MaxParallelism,
    key_buf: Vec<u8>,
    /// The composite key (or its `[kg][key][namespace]` prefix) of the current operation.
    pub(crate) composite: Vec<u8>,
    /// The stored value of the current operation.
    pub(crate) value_buf: Vec<u8>,
}

impl<K> StateCore<K> {
    /// The core of a handle on state `id`, which `meta` registered.
    pub(crate) fn new(
        backend: &Arc<dyn KeyedStateBackend>,
        id: StateId,
        meta: &StateMeta,
        key_codec: Arc<dyn Codec<K>>,
    ) -> Self {
        StateCore {
            backend: backend.clone(),
            id,
            name: meta.name.as_str().into(),
            key_codec,
            ttl: meta.ttl,
            max_parallelism: backend.max_parallelism(),
            key_buf: Vec::new(),
            composite: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// Puts `[kg][key][namespace]` of `key` into `self.composite`.
    pub(crate) fn set_prefix(&mut self, namespace: &[u8], key: &K) -> Result<()> {
        self.key_buf.clear();
        self.key_codec
            .encode(key, &mut self.key_buf)
            .map_err(|e| self.codec_error("encode", "key", e))?;
        check_len(&self.name, "key", &self.key_buf)?;
        check_len(&self.name, "namespace", namespace)?;
        let key_group = self.max_parallelism.key_group_of(&self.key_buf);
        write_prefix(&mut self.composite, key_group, &self.key_buf, namespace);
        Ok(())
    }

    pub(crate) fn codec_error(
        &self,
        action: &'static str,
        part: &'static str,
        e: CodecError,
    ) -> Error {
        Error::Codec {
            state: self.name.to_string(),
            action,
            part,
            detail: e.0,
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.backend.clock().now_millis()
    }

    /// Where the payload starts in a stored value: after the stamp when the state has TTL.
    pub(crate) fn payload_start(&self) -> usize {
        if self.ttl.is_some() {
            STAMP_LEN
        } else {
            0
        }
    }

    /// Clears `value_buf` and, for a state with TTL, writes the current stamp into it.
    pub(crate) fn begin_value(&mut self) {
        self.value_buf.clear();
        if let Some(stamp) = self.stamp() {
            self.value_buf.extend_from_slice(&stamp);
        }
    }

    /// The current stamp, for a state with TTL.
    pub(crate) fn stamp(&self) -> Option<[u8; STAMP_LEN]> {
        self.ttl.map(|_| self.now().to_be_bytes())
    }

    /// Applies the TTL rules to a stored value (a plain value, element or map user value).
    pub(crate) fn freshness(&self, stored: &[u8], now: u64) -> Result<Freshness> {
        freshness(self.ttl, &self.name, stored, now)
    }

    /// Reads the value at `self.composite` into `self.value_buf` and applies TTL: removes it
    /// if expired, renews it if the policy says so. Returns whether a visible value is in
    /// `value_buf` (payload from [`payload_start`](Self::payload_start)).
    pub(crate) fn read_value(&mut self) -> Result<bool> {
        if !self
            .backend
            .get(self.id, &self.composite, &mut self.value_buf)?
        {
            return Ok(false);
        }
        if self.ttl.is_none() {
            return Ok(true);
        }
        let now = self.now();
        let freshness = self.freshness(&self.value_buf, now)?;
        if freshness.expired() {
            self.backend.delete(self.id, &self.composite)?;
        } else if freshness == Freshness::LiveRenew {
            self.value_buf[..STAMP_LEN].copy_from_slice(&now.to_be_bytes());
            self.backend
                .put(self.id, &self.composite, &self.value_buf)?;
        }
        Ok(freshness.visible())
    }

    /// A lazy iterator over the keys of this state that have an entry in `namespace`.
    pub(crate) fn keys(&self, namespace: &[u8]) -> Keys<K> {
        Keys {
            scan: BatchScan::new(
                self.backend.clone(),
                self.id,
                Vec::new(),
                BatchScan::MAX_BATCH,
                false,
            ),
            key_codec: self.key_codec.clone(),
            name: self.name.clone(),
            namespace: namespace.to_vec(),
            last_key: None,
            _key: PhantomData,
        }
    }
}

/// How a stored value of a state with `ttl` reads at `now`.
pub(crate) fn freshness(
    ttl: Option<TtlConfig>,
    state: &str,
    stored: &[u8],
    now: u64,
) -> Result<Freshness> {
    let Some(ttl) = ttl else {
        return Ok(Freshness::Live);
    };
    let stamp = read_stamp(stored).ok_or_else(|| Error::Codec {
        state: state.to_string(),
        action: "decode",
        part: "TTL timestamp",
        detail: format!("the stored value has {} bytes, fewer than 8", stored.len()),
    })?;
    Ok(if !ttl.is_expired(stamp, now) {
        match ttl.update {
            TtlUpdate::OnReadAndWrite => Freshness::LiveRenew,
            TtlUpdate::OnCreateAndWrite => Freshness::Live,
        }
    } else {
        match ttl.visibility {
            TtlVisibility::ReturnExpiredIfNotCleanedUp => Freshness::ExpiredVisible,
            TtlVisibility::NeverReturnExpired => Freshness::ExpiredHidden,
        }
    })
}

fn check_len(state: &str, part: &'static str, bytes: &[u8]) -> Result<()> {
    if u32::try_from(bytes.len()).is_err() {
        return Err(Error::Codec {
            state: state.to_string(),
            action: "encode",
            part,
            detail: format!("{} bytes is above the 4 GiB limit", bytes.len()),
        });
    }
    Ok(())
}

/// Scans a prefix of a state in batches, so that no borrow of the backend outlives a call:
/// the iterators built on it can be held while the state is written.
///
/// A batch is copied into one buffer that is reused from batch to batch (no allocation per
/// entry). Batches start at `first_batch` entries and double up to [`BatchScan::MAX_BATCH`],
/// so a caller that wants one entry reads about one, and a long scan re-seeks rarely.
pub(crate) struct BatchScan {
    backend: Arc<dyn KeyedStateBackend>,
    id: StateId,
    prefix: Vec<u8>,
    resume_after: Vec<u8>,
    /// The keys and values of the current batch, back to back.
    buffer: Vec<u8>,
    /// Per entry of the current batch: where its key ends and where its value ends.
    spans: VecDeque<(usize, usize)>,
    /// Where the next entry starts in `buffer`.
    cursor: usize,
    batch_size: usize,
    /// Whether values are wanted; key listings leave them out.
    values: bool,
    started: bool,
    done: bool,
}

impl BatchScan {
    pub(crate) const MAX_BATCH: usize = 128;

    pub(crate) fn new(
        backend: Arc<dyn KeyedStateBackend>,
        id: StateId,
        prefix: Vec<u8>,
        first_batch: usize,
        values: bool,
    ) -> Self {
        let batch_size = first_batch.clamp(1, Self::MAX_BATCH);
        BatchScan {
            backend,
            id,
            prefix,
            resume_after: Vec::new(),
            // Sized for a small map in one go; a long scan grows them once or twice.
            buffer: Vec::with_capacity(512),
            spans: VecDeque::with_capacity(batch_size.min(16)),
            cursor: 0,
            batch_size,
            values,
            started: false,
            done: false,
        }
    }

    pub(crate) fn prefix_len(&self) -> usize {
        self.prefix.len()
    }

    /// The next entry (composite key, value), borrowed until the next call.
    pub(crate) fn next_entry(&mut self) -> Option<Result<(&[u8], &[u8])>> {
        if self.spans.is_empty() {
            if self.done {
                return None;
            }
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        let (key_end, value_end) = self.spans.pop_front()?;
        let start = std::mem::replace(&mut self.cursor, value_end);
        Some(Ok((
            &self.buffer[start..key_end],
            &self.buffer[key_end..value_end],
        )))
    }

    fn fill(&mut self) -> Result<()> {
        let (buffer, spans) = (&mut self.buffer, &mut self.spans);
        let (limit, values) = (self.batch_size, self.values);
        buffer.clear();
        let mut last_key = 0..0;
        let resume_after = self.started.then_some(self.resume_after.as_slice());
        self.backend
            .scan(self.id, &self.prefix, resume_after, &mut |key, value| {
                let key_start = buffer.len();
                buffer.extend_from_slice(key);
                let key_end = buffer.len();
                if values {
                    buffer.extend_from_slice(value);
                }
                spans.push_back((key_end, buffer.len()));
                last_key = key_start..key_end;
                if spans.len() >= limit {
                    Visit::Break(())
                } else {
                    Visit::Continue(())
                }
            })?;
        self.started = true;
        self.cursor = 0;
        self.done = self.spans.len() < limit;
        if !self.done {
            self.resume_after.clear();
            self.resume_after.extend_from_slice(&self.buffer[last_key]);
        }
        self.batch_size = (limit * 2).min(Self::MAX_BATCH);
        Ok(())
    }
}

/// The keys of a state that have an entry in one namespace, in key-group order.
///
/// Each key comes once, also for map states with many user keys. Keys are listed if they have
/// stored entries, expired or not (as Flink's `getKeys`).
pub struct Keys<K> {
    scan: BatchScan,
    key_codec: Arc<dyn Codec<K>>,
    name: Arc<str>,
    namespace: Vec<u8>,
    last_key: Option<Vec<u8>>,
    _key: PhantomData<fn() -> K>,
}

impl<K> Iterator for Keys<K> {
    type Item = Result<K>;

    fn next(&mut self) -> Option<Result<K>> {
        loop {
            let (composite, _) = match self.scan.next_entry()? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e)),
            };
            let Some(parsed) = CompositeKey::parse(composite) else {
                return Some(Err(Error::Codec {
                    state: self.name.to_string(),
                    action: "decode",
                    part: "composite key",
                    detail: format!("{} bytes that are not a composite key", composite.len()),
                }));
            };
            if parsed.namespace != self.namespace.as_slice()
                || self.last_key.as_deref() == Some(parsed.key)
            {
                continue;
            }
            self.last_key = Some(parsed.key.to_vec());
            return Some(self.key_codec.decode(parsed.key).map_err(|e| Error::Codec {
                state: self.name.to_string(),
                action: "decode",
                part: "key",
                detail: e.0,
            }));
        }
    }
}
