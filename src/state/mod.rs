//! Typed keyed state: the handles an operator reads and writes its state through.
//!
//! A handle turns typed keys and values into bytes with its codecs, finds the key's key group,
//! builds the composite key in buffers it reuses (no allocation per operation), applies TTL,
//! and calls the byte-level [`KeyedStateBackend`](crate::KeyedStateBackend). The key is always
//! passed explicitly. Every handle works in the empty namespace; `handle.namespace(ns)` gives
//! a view with the same operations in namespace `ns` (opaque bytes, e.g. a window).
//! [`TimerService`]s keep timers per key and namespace in the same backend.

mod core;
mod descriptor;
mod list;
mod map;
mod reducing;
mod store;
mod timers;
mod value;

pub use descriptor::{MapStateDescriptor, StateDescriptor};
pub use list::ListState;
pub use map::{MapIter, MapState};
pub use reducing::{AggregateFunction, AggregatingState, ReducingState};
pub use store::KeyedStateStore;
pub use timers::{Timer, TimerService};
pub use value::ValueState;

pub use self::core::{Keys, Namespaced};
