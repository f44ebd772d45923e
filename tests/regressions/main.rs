//! One module per bug that the reliability suites found, each with what it was in its
//! module doc (docs/testing.md lists them). One test binary for all of them: each test
//! binary links RocksDB, so a binary per regression would cost every build its link time.

#[path = "../common/mod.rs"]
mod common;

mod directory_names;
mod many_items;
mod unfinished_uploads;
mod zstd_window;
