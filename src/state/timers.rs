//! Timer services: per key and namespace, a callback time in event time or processing time.

use std::sync::Arc;

use crate::backend::meta::TIMER_VALUE_CODEC;
use crate::backend::timers::{timer_state_name, write_timer_key, TimerKey};
use crate::backend::{KeyedStateBackend, StateId, StateKind, StateMeta, TimeDomain};
use crate::codec::{Codec, CodecInfo};
use crate::error::{Error, Result};
use crate::keygroup::MaxParallelism;

/// A timer that came due: the key and namespace it was registered for, and its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer<K> {
    /// The key it was registered for.
    pub key: K,
    /// The namespace it was registered in (a window, say; empty for none).
    pub namespace: Vec<u8>,
    /// Its timestamp, in milliseconds of its time domain.
    pub timestamp: u64,
}

/// The timers of one operator's timer service, by name, as Flink's `InternalTimerService`:
/// event-time and processing-time timers per (key, namespace, timestamp), stored in the
/// backend, part of every checkpoint and savepoint, moved with their key groups on rescale.
///
/// A timer registered twice is one timer. [`advance_watermark`](Self::advance_watermark)
/// makes the event-time timers at or before the watermark due, and
/// [`poll_event_time`](Self::poll_event_time) hands them out one by one, each once, in
/// timestamp order across every key group the subtask owns (timers of one timestamp in
/// key-group order, then by their keys' bytes). A timer registered while polling fires in
/// the same round if it is due. Processing time works the same way with
/// [`advance_processing_time`](Self::advance_processing_time) and
/// [`poll_processing_time`](Self::poll_processing_time). The watermark and processing time
/// are this handle's own and start unset: a restored job fires nothing until it advances
/// them, as Flink's does after a restore.
///
/// # Examples
/// ```
/// use cairn::{HeapBackend, KeyGroupRange, KeyedStateStore, MaxParallelism, Utf8};
/// let max = MaxParallelism::DEFAULT;
/// let store = KeyedStateStore::new(HeapBackend::new(max, KeyGroupRange::all(max)));
/// let mut windows = store.timer_service("window-end", Utf8)?;
/// let window = 60_000u64.to_be_bytes(); // the window [0, 60 s) as the namespace
/// windows.register_event_time_timer(&"cairn".to_string(), &window, 59_999)?;
/// windows.register_event_time_timer(&"flink".to_string(), &window, 59_999)?;
/// windows.register_event_time_timer(&"later".to_string(), &window, 90_000)?;
/// windows.delete_event_time_timer(&"flink".to_string(), &window, 59_999)?;
///
/// windows.advance_watermark(60_000);
/// let mut fired = Vec::new();
/// while let Some(timer) = windows.poll_event_time()? {
///     fired.push((timer.key, timer.timestamp)); // emit the window of timer.key here
/// }
/// assert_eq!(fired, [("cairn".to_string(), 59_999)]);
/// assert_eq!(windows.next_event_time()?, Some(90_000));
/// # Ok::<(), cairn::Error>(())
/// ```
pub struct TimerService<K> {
    backend: Arc<dyn KeyedStateBackend>,
    name: Arc<str>,
    event: StateId,
    processing: StateId,
    key_codec: Arc<dyn Codec<K>>,
    max_parallelism: MaxParallelism,
    watermark: Option<u64>,
    processing_time: Option<u64>,
    key_buf: Vec<u8>,
    timer_buf: Vec<u8>,
}

impl<K> TimerService<K> {
    pub(crate) fn register(
        backend: &Arc<dyn KeyedStateBackend>,
        name: &str,
        key_codec: Arc<dyn Codec<K>>,
    ) -> Result<Self> {
        if name.is_empty() {
            return Err(Error::InvalidStateName {
                state: name.to_string(),
                reason: "a timer service needs a name",
            });
        }
        let meta = |domain| StateMeta {
            name: timer_state_name(name, domain),
            kind: StateKind::Timers,
            key_codec: key_codec.info(),
            value_codec: CodecInfo::new(TIMER_VALUE_CODEC.0, TIMER_VALUE_CODEC.1),
            user_key_codec: None,
            ttl: None,
        };
        let event = backend.register(&meta(TimeDomain::EventTime))?;
        let processing = backend.register(&meta(TimeDomain::ProcessingTime))?;
        Ok(TimerService {
            backend: backend.clone(),
            name: name.into(),
            event,
            processing,
            key_codec,
            max_parallelism: backend.max_parallelism(),
            watermark: None,
            processing_time: None,
            key_buf: Vec::new(),
            timer_buf: Vec::new(),
        })
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Registers an event-time timer for `key` in `namespace` at `timestamp`.
    ///
    /// # Errors
    /// [`Error::KeyGroupNotOwned`] for a key of another subtask; a codec or backend failure.
    pub fn register_event_time_timer(
        &mut self,
        key: &K,
        namespace: &[u8],
        timestamp: u64,
    ) -> Result<()> {
        self.set_timer(key, namespace, timestamp)?;
        self.backend.add_timer(self.event, &self.timer_buf)
    }

    /// Deletes an event-time timer; deleting one that is not registered changes nothing.
    ///
    /// # Errors
    /// As [`register_event_time_timer`](Self::register_event_time_timer).
    pub fn delete_event_time_timer(
        &mut self,
        key: &K,
        namespace: &[u8],
        timestamp: u64,
    ) -> Result<()> {
        self.set_timer(key, namespace, timestamp)?;
        self.backend.delete_timer(self.event, &self.timer_buf)
    }

    /// Registers a processing-time timer for `key` in `namespace` at `timestamp`.
    ///
    /// # Errors
    /// As [`register_event_time_timer`](Self::register_event_time_timer).
    pub fn register_processing_time_timer(
        &mut self,
        key: &K,
        namespace: &[u8],
        timestamp: u64,
    ) -> Result<()> {
        self.set_timer(key, namespace, timestamp)?;
        self.backend.add_timer(self.processing, &self.timer_buf)
    }

    /// Deletes a processing-time timer; deleting one that is not registered changes nothing.
    ///
    /// # Errors
    /// As [`register_event_time_timer`](Self::register_event_time_timer).
    pub fn delete_processing_time_timer(
        &mut self,
        key: &K,
        namespace: &[u8],
        timestamp: u64,
    ) -> Result<()> {
        self.set_timer(key, namespace, timestamp)?;
        self.backend.delete_timer(self.processing, &self.timer_buf)
    }

    /// Moves the watermark to `watermark`: event-time timers at or before it are due. A
    /// watermark never goes back; a lower one is ignored.
    pub fn advance_watermark(&mut self, watermark: u64) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
    }

    /// The watermark, if one was given.
    pub fn current_watermark(&self) -> Option<u64> {
        self.watermark
    }

    /// Removes and returns the earliest due event-time timer (at or before the watermark);
    /// `None` when none is due. Call it until `None` after advancing the watermark.
    ///
    /// # Errors
    /// A codec failure decoding the key; a backend failure.
    pub fn poll_event_time(&mut self) -> Result<Option<Timer<K>>> {
        self.poll(TimeDomain::EventTime)
    }

    /// The timestamp of the earliest event-time timer, due or not.
    ///
    /// # Errors
    /// A backend failure.
    pub fn next_event_time(&self) -> Result<Option<u64>> {
        self.backend.next_timer(self.event)
    }

    /// Moves processing time to `now`: processing-time timers at or before it are due. It
    /// never goes back; a lower time is ignored.
    pub fn advance_processing_time(&mut self, now: u64) {
        self.processing_time = Some(self.processing_time.map_or(now, |t| t.max(now)));
    }

    /// The processing time, if one was given.
    pub fn current_processing_time(&self) -> Option<u64> {
        self.processing_time
    }

    /// Removes and returns the earliest due processing-time timer; `None` when none is due.
    ///
    /// # Errors
    /// As [`poll_event_time`](Self::poll_event_time).
    pub fn poll_processing_time(&mut self) -> Result<Option<Timer<K>>> {
        self.poll(TimeDomain::ProcessingTime)
    }

    /// The timestamp of the earliest processing-time timer, due or not: when to wake up.
    ///
    /// # Errors
    /// A backend failure.
    pub fn next_processing_time(&self) -> Result<Option<u64>> {
        self.backend.next_timer(self.processing)
    }

    /// Puts the timer key of (`key`, `namespace`, `timestamp`) into `timer_buf`.
    fn set_timer(&mut self, key: &K, namespace: &[u8], timestamp: u64) -> Result<()> {
        self.key_buf.clear();
        self.key_codec
            .encode(key, &mut self.key_buf)
            .map_err(|e| self.codec_error("encode", e.0))?;
        if u32::try_from(self.key_buf.len()).is_err() || u32::try_from(namespace.len()).is_err() {
            return Err(self.codec_error("encode", "a key or namespace above 4 GiB".into()));
        }
        let key_group = self.max_parallelism.key_group_of(&self.key_buf);
        write_timer_key(
            &mut self.timer_buf,
            key_group,
            timestamp,
            &self.key_buf,
            namespace,
        );
        Ok(())
    }

    fn poll(&mut self, domain: TimeDomain) -> Result<Option<Timer<K>>> {
        let (set, time) = match domain {
            TimeDomain::EventTime => (self.event, self.watermark),
            TimeDomain::ProcessingTime => (self.processing, self.processing_time),
        };
        let Some(time) = time else {
            return Ok(None);
        };
        if !self.backend.poll_timer(set, time, &mut self.timer_buf)? {
            return Ok(None);
        }
        let parsed = TimerKey::parse(&self.timer_buf).ok_or_else(|| {
            self.codec_error("decode", "a stored timer is not a timer key".into())
        })?;
        let key = self
            .key_codec
            .decode(parsed.key)
            .map_err(|e| self.codec_error("decode", e.0))?;
        Ok(Some(Timer {
            key,
            namespace: parsed.namespace.to_vec(),
            timestamp: parsed.timestamp,
        }))
    }

    fn codec_error(&self, action: &'static str, detail: String) -> Error {
        Error::Codec {
            state: format!("timer service '{}'", self.name),
            action,
            part: "key",
            detail,
        }
    }
}
