//! Offline tools over snapshots on disk: what the `cairn` binary runs.
//!
//! Each tool is a function that takes a path and returns a plain data struct (serializable
//! with serde, so the binary prints it as a table or as JSON):
//!
//! - [`inspect`]: what a checkpoint or savepoint holds (operators, states, key groups, files,
//!   sizes), or which snapshots a storage root holds;
//! - [`verify`]: every file present with its recorded size and CRC32, every block of every
//!   canonical stream intact, reporting every problem found;
//! - [`dump`]: the entries of one state, decoded by their codecs;
//! - [`diff`]: files (and, if asked, entries) added, removed and shared between two
//!   snapshots;
//! - [`collect_garbage`]: orphans under a storage root, found by the engine's own rule;
//! - [`convert`]: a new canonical or native savepoint from any snapshot, at the same or
//!   another parallelism, by restoring each subtask into a scratch backend and taking its
//!   snapshot.
//!
//! A snapshot is named by a directory holding a `_metadata` (a checkpoint `chk-<id>/` or a
//! savepoint directory) or by the `_metadata` file itself; [`files_root`] says which
//! directory its file paths are relative to. Tools never write into a snapshot; only
//! [`collect_garbage`] deletes, and only what the engine would; [`convert`] writes a new
//! savepoint beside, never into, the snapshot it reads.

mod convert;
pub(crate) mod decode;
mod diff;
mod dump;
mod gc;
mod inspect;
pub(crate) mod open;
mod read;
mod verify;

pub use convert::{convert, ConvertOptions, ConvertReport, ConvertedOperator};
pub use decode::{format_millis, DecodedValue};
pub use diff::{diff, DiffOptions, DiffReport, FileDiff, FileRef, StateDiff};
pub use dump::{dump, DumpEntry, DumpOptions, DumpSummary};
pub use gc::{collect_garbage, DeletedFile, GcReport};
pub use inspect::{
    inspect, FileReport, Inspection, OperatorReport, RootEntry, RootReport, SnapshotReport,
    StateReport, SubtaskReport, TtlReport,
};
pub use open::{files_root, locate, OpenSnapshot, Target};
pub use verify::{verify, Problem, ProblemKind, VerifyReport};

/// Where a long-running tool reports how far it is; the binary draws progress bars with it.
///
/// Every method has an empty default, so `&NoProgress` turns reporting off.
pub trait Progress: Sync {
    /// A new phase begins: `message` says what it does, `total` how many `unit`s it will
    /// process.
    fn start(&self, message: &str, total: u64, unit: Unit) {
        let _ = (message, total, unit);
    }

    /// `units` more units are done.
    fn advance(&self, units: u64) {
        let _ = units;
    }

    /// The phase is over.
    fn finish(&self) {}
}

/// What a [`Progress`] phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes read.
    Bytes,
    /// Subtasks, streams or key groups done.
    Items,
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
