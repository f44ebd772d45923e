//! The bodies of the fuzz targets under `fuzz/`, one per parser of persisted or external
//! bytes. Not part of cairn's API: compiled only with the `fuzzing` feature, for the fuzz
//! crate and for `tests/fuzz_corpus.rs`, which replays every corpus file and every past
//! finding through these same functions, so the fuzzers and CI cannot drift apart.
//!
//! Each target takes the fuzzer's bytes and
//! 1. hands them, as they are, to the parser (`_metadata`, the canonical stream, the
//!    composite key, the state and backend records, operator state, a path the user gives
//!    the CLI), which must answer `Ok` or `Err`, never panic, loop or allocate from an
//!    unchecked length; and checks what it accepted: it encodes again and decodes to the
//!    same value, and what later code derives from it (restore plans, ranged reads) holds
//!    together;
//!    The bytes are also decoded once more with their CRC32s (and `_metadata`'s payload
//!    length) made right, so that mutations reach the decoders behind the checksums;
//! 2. reads the same bytes as a recipe ([`arbitrary::Unstructured`]) for a *valid* value,
//!    encodes it with cairn's own encoder and checks that the decoder gives it back
//!    exactly: `decode(encode(x)) == x`.
//!
//! A broken invariant panics with what broke; that is what a fuzzer reports. The `Result`
//! each target returns is the parser's answer to the raw bytes, for the replay test to
//! compare with what a corpus file or a regression file expects.

mod canonical;
mod cli;
mod key;
mod mem_store;
mod metadata;
mod operator_state;
mod recipe;
mod reseal;
mod state_record;

pub use canonical::canonical;
pub use cli::cli_path;
pub use key::composite_key;
pub use metadata::metadata;
pub use operator_state::operator_state;
pub use state_record::state_record;

/// A fuzz target body: the parser's answer to the raw bytes (`Err` with its message).
pub type Target = fn(&[u8]) -> Result<(), String>;

/// Every target, by the name of its directory under `fuzz/corpus/` and `fuzz/regressions/`
/// and of its binary in `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("metadata", metadata),
    ("canonical", canonical),
    ("composite_key", composite_key),
    ("state_record", state_record),
    ("operator_state", operator_state),
    ("cli_path", cli_path),
];

/// Encodings the corpus generator needs that are private to cairn.
pub mod encode {
    use crate::backend::rocksdb::encode_backend_record;
    use crate::keygroup::{KeyGroupRange, MaxParallelism};
    use crate::operator_state::OperatorStateSnapshot;

    /// The persisted bytes of one subtask's operator state (docs/format.md, section 9).
    pub fn operator_state(state: &OperatorStateSnapshot) -> Vec<u8> {
        let mut out = Vec::new();
        state.encode(&mut out);
        out
    }

    /// A RocksDB backend record (docs/format.md, section 5).
    pub fn backend_record(max: MaxParallelism, range: KeyGroupRange) -> Vec<u8> {
        encode_backend_record(max, range).to_vec()
    }
}
