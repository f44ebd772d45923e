//! Fixtures shared by the integration tests: one body of tests runs on every backend.

#![allow(dead_code)]

pub mod faulty_store;
pub mod job;
pub mod s3;
pub mod timers;

use std::collections::BTreeSet;
use std::sync::Arc;

use cairn::{
    HeapBackend, KeyGroupRange, KeyedStateStore, ManualClock, MaxParallelism, RocksDbBackend,
    SnapshotStore,
};
use tempfile::TempDir;

/// Which backend a test body runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Heap,
    RocksDb,
}

pub const KINDS: [Kind; 2] = [Kind::Heap, Kind::RocksDb];

/// A backend under test: its directory (RocksDB), its manual clock and its key groups.
pub struct Fixture {
    pub kind: Kind,
    pub dir: TempDir,
    pub clock: ManualClock,
    pub max: MaxParallelism,
    pub range: KeyGroupRange,
}

impl Fixture {
    pub fn new(kind: Kind) -> Self {
        let max = MaxParallelism::DEFAULT;
        Self::with_range(kind, max, KeyGroupRange::all(max))
    }

    pub fn with_range(kind: Kind, max: MaxParallelism, range: KeyGroupRange) -> Self {
        Fixture {
            kind,
            dir: tempfile::tempdir().expect("temp dir"),
            clock: ManualClock::new(1_000),
            max,
            range,
        }
    }

    /// What the fixture's clock reads now.
    pub fn clock_now(&self) -> u64 {
        cairn::Clock::now_millis(&self.clock)
    }

    /// Opens the backend (again, for RocksDB: the same directory).
    pub fn open(&self) -> KeyedStateStore {
        let clock = Arc::new(self.clock.clone());
        match self.kind {
            Kind::Heap => {
                KeyedStateStore::new(HeapBackend::with_clock(self.max, self.range, clock))
            }
            Kind::RocksDb => KeyedStateStore::new(
                RocksDbBackend::builder(self.dir.path(), self.max, self.range)
                    .clock(clock)
                    .open()
                    .expect("open RocksDB backend"),
            ),
        }
    }
}

/// Runs `body` once per backend kind, saying which one failed.
pub fn on_every_backend(body: impl Fn(&Fixture)) {
    for kind in KINDS {
        eprintln!("-- on the {kind:?} backend");
        body(&Fixture::new(kind));
    }
}

/// Counts the raw stored entries of a state (expired ones included).
pub fn stored_entries(store: &KeyedStateStore, state: &str) -> usize {
    let backend = store.backend();
    let meta = backend
        .states()
        .expect("states")
        .into_iter()
        .find(|m| m.name == state)
        .expect("state registered");
    let id = backend.register(&meta).expect("register");
    let mut count = 0;
    backend
        .scan(id, &[], None, &mut |_, _| {
            count += 1;
            cairn::Visit::Continue(())
        })
        .expect("scan");
    count
}

/// Programs per model test: 48 in CI, `PROPTEST_CASES=N` for more.
pub fn proptest_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// What an operation of a model test answered, compared between the model and a backend.
#[derive(Debug, PartialEq)]
pub enum Answer {
    None,
    Value(Option<u64>),
    List(Vec<u16>),
    Entries(Vec<(u8, u64)>),
    Bool(bool),
    Keys(BTreeSet<u8>),
}

/// Every file path in `store`.
pub fn listing(store: &dyn SnapshotStore) -> BTreeSet<String> {
    store
        .list(None)
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect()
}
