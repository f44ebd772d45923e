//! The one error type of cairn: what failed, where, and what the caller can do about it.

use std::path::PathBuf;

use crate::keygroup::{KeyGroup, KeyGroupRange};

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in cairn.
///
/// Each variant names the state, key group, path or checkpoint involved and, in its message,
/// what to do next. Use [`Error::kind`] to branch on the broad class of failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid {what}: {detail}")]
    InvalidConfig {
        /// The setting that was wrong, e.g. `max_parallelism`.
        what: &'static str,
        /// Why, and which values are accepted.
        detail: String,
    },

    /// A state was registered again with another kind, codec or TTL than before.
    #[error(
        "state '{state}' is already registered as {registered}, not {requested}; \
         use a new state name, or register it exactly as before"
    )]
    StateMismatch {
        /// The state name.
        state: String,
        /// What the backend already holds for this name.
        registered: String,
        /// What the caller asked for.
        requested: String,
    },

    /// A state is registered with a value codec that cannot read the values it holds, and
    /// its descriptor has no migration from the codec that wrote them. Nothing was changed.
    #[error(
        "state '{state}' holds values written by {stored}, which {requested} does not read; \
         give the descriptor a migration from {stored} (with_migration), or register it with \
         {stored} as before; nothing was changed"
    )]
    SchemaIncompatible {
        /// The state name.
        state: String,
        /// The value codec (id and version) that wrote the held values.
        stored: String,
        /// The value codec the registration asked for.
        requested: String,
    },

    /// A state name that cairn reserves for itself, or that RocksDB cannot use.
    #[error("state name '{state}' is not allowed: {reason}")]
    InvalidStateName {
        /// The rejected name.
        state: String,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// An operation addressed a key whose key group this subtask does not own.
    #[error(
        "state '{state}': key group {key_group} is not owned by this subtask (it owns {owned}); \
         route the key to the subtask that owns its key group"
    )]
    KeyGroupNotOwned {
        /// The state that was accessed.
        state: String,
        /// The key group of the key.
        key_group: KeyGroup,
        /// The key groups this backend owns.
        owned: KeyGroupRange,
    },

    /// The backend was closed; state handles that outlive it fail with this error.
    #[error("the state backend was closed; open it again to use its state")]
    Closed,

    /// A value, key or element could not be encoded or decoded by its codec.
    #[error("state '{state}': cannot {action} the {part}: {detail}")]
    Codec {
        /// The state whose bytes were involved.
        state: String,
        /// `encode`, `decode`, or `migrate` (a migration function failed).
        action: &'static str,
        /// `key`, `value`, `user key`, `element`, ...
        part: &'static str,
        /// The codec's own message.
        detail: String,
    },

    /// Bytes read from disk do not have the layout cairn wrote.
    #[error("corrupted {what} in {path}: {detail}; restore from a checkpoint or savepoint")]
    Corrupted {
        /// What was being read (e.g. `state metadata`).
        what: &'static str,
        /// The file or directory it was read from.
        path: PathBuf,
        /// What exactly was wrong.
        detail: String,
    },

    /// A directory belongs to a backend with another configuration.
    #[error("{path} holds a backend with {found}, but {requested} was asked for; {hint}")]
    BackendMismatch {
        /// The backend directory.
        path: PathBuf,
        /// What the directory holds.
        found: String,
        /// What the caller asked for.
        requested: String,
        /// What to do.
        hint: &'static str,
    },

    /// RocksDB reported an error.
    #[error("RocksDB failed to {op} in {path}: {detail}")]
    RocksDb {
        /// The operation, e.g. `open`, `write state 'count'`.
        op: String,
        /// The backend directory.
        path: PathBuf,
        /// RocksDB's message.
        detail: String,
    },

    /// A file system operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// The operation, e.g. `create directory`.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot path that could leave the storage root or that a store cannot hold.
    #[error("invalid snapshot path '{path}': {reason}")]
    InvalidPath {
        /// The rejected path.
        path: String,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// A snapshot, checkpoint or file that should exist does not.
    #[error(
        "no {what} at '{path}' in {location}; check the path, or restore from another snapshot"
    )]
    NotFound {
        /// What was looked for, e.g. `completed checkpoint`.
        what: &'static str,
        /// The store's location.
        location: String,
        /// The path under the store's root.
        path: String,
    },

    /// Checkpoint storage failed to read or write a file.
    #[error("cannot {op} '{path}' in {location}: {source}")]
    Storage {
        /// The operation, e.g. `write`.
        op: &'static str,
        /// The store's location.
        location: String,
        /// The path under the store's root.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint could not be taken or committed; the previous one stays the latest.
    #[error("checkpoint {checkpoint_id} failed: {detail}")]
    Checkpoint {
        /// The checkpoint's id.
        checkpoint_id: u64,
        /// What went wrong, and what to do.
        detail: String,
    },

    /// A snapshot cannot be restored as asked.
    #[error("cannot restore {what}: {detail}")]
    Restore {
        /// What was being restored, e.g. `operator 'word-count' from checkpoint 7`.
        what: String,
        /// Why not, and what to do.
        detail: String,
    },
}

/// The broad class of an [`Error`]: tells a caller what kind of reaction fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something wrong; fix the call or the configuration.
    InvalidInput,
    /// Persisted bytes are damaged; restore from another snapshot.
    DataCorruption,
    /// The object was closed.
    Closed,
    /// A snapshot or file does not exist.
    NotFound,
    /// The storage underneath failed; retrying or freeing resources may help.
    Unavailable,
}

impl Error {
    /// The broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidConfig { .. }
            | Error::StateMismatch { .. }
            | Error::SchemaIncompatible { .. }
            | Error::InvalidStateName { .. }
            | Error::KeyGroupNotOwned { .. }
            | Error::BackendMismatch { .. }
            | Error::InvalidPath { .. }
            | Error::Restore { .. } => ErrorKind::InvalidInput,
            Error::Codec { action, .. } if *action == "encode" || *action == "migrate" => {
                ErrorKind::InvalidInput
            }
            Error::Codec { .. } | Error::Corrupted { .. } => ErrorKind::DataCorruption,
            Error::Closed => ErrorKind::Closed,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::RocksDb { .. }
            | Error::Io { .. }
            | Error::Storage { .. }
            | Error::Checkpoint { .. } => ErrorKind::Unavailable,
        }
    }
}
