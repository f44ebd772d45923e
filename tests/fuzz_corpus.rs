//! The fuzz targets' seed corpus and past findings, replayed without a fuzzer.
//!
//! Every file under `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through
//! `cairn::fuzzing::<target>`, the very body the fuzz target in `fuzz/fuzz_targets/` runs:
//! it must not panic (a broken invariant panics), and the parser's answer must be the one
//! the file's name expects: `Err` for names ending in `.err`, `Ok` for every other.
//!
//! The corpus is made from real snapshots: the golden files under `tests/golden/` and
//! small snapshots written here by cairn itself. Rebuild it with
//! `cargo test --test fuzz_corpus -- --ignored rebuild_fuzz_corpus` (it replaces every
//! `fuzz/corpus/<target>/` directory; `fuzz/regressions/` is never touched).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn::fuzzing::{encode, TARGETS};
use cairn::layout::{write_prefix, write_timer_key, CompositeKey};
use cairn::{
    CheckpointStorage, CodecInfo, JobSnapshot, KeyGroupRange, LocalStore, MaxParallelism,
    Retention, SavepointFormat, SnapshotFile, SnapshotFormat, SnapshotStore, StateKind, StateMeta,
    TtlConfig, TtlUpdate, TtlVisibility,
};
use common::job::{Job, Model, Rng};
use common::Kind;

fn fuzz_dir(part: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(part)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` on every file of `dir`; returns how many there were.
fn replay(name: &str, target: cairn::fuzzing::Target, dir: &Path) -> usize {
    let files = files_in(dir);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let answer = target(&bytes);
        let expects_err = file.extension().is_some_and(|e| e == "err");
        assert_eq!(
            answer.is_err(),
            expects_err,
            "{name}: {} answered {answer:?}",
            file.display()
        );
    }
    files.len()
}

#[test]
fn every_corpus_file_and_past_finding_replays() {
    for &(name, target) in TARGETS {
        let seeds = replay(name, target, &fuzz_dir("corpus").join(name));
        assert!(
            seeds > 0,
            "{name}: fuzz/corpus/{name}/ is empty; rebuild the corpus"
        );
        replay(name, target, &fuzz_dir("regressions").join(name));
    }
}

// ---- the corpus generator ----

/// One corpus file: its bytes, and whether the parser must refuse them.
struct Seed {
    name: String,
    bytes: Vec<u8>,
}

fn seed(name: impl Into<String>, bytes: Vec<u8>) -> Seed {
    Seed {
        name: name.into(),
        bytes,
    }
}

/// A snapshot on disk: where its file paths are relative to, and its `_metadata`.
struct Snapshot {
    label: String,
    files_root: PathBuf,
    metadata: Vec<u8>,
    job: JobSnapshot,
}

impl Snapshot {
    fn read(label: &str, files_root: &Path, metadata: &Path) -> Snapshot {
        let bytes = std::fs::read(metadata).unwrap();
        let path = cairn::StoragePath::new("_metadata").unwrap();
        Snapshot {
            label: label.into(),
            files_root: files_root.to_path_buf(),
            job: JobSnapshot::decode(&bytes, &path).unwrap(),
            metadata: bytes,
        }
    }

    /// The canonical streams it references.
    fn streams(&self) -> Vec<(&SnapshotFile, Vec<u8>)> {
        self.job
            .operators
            .iter()
            .flat_map(|o| &o.subtasks)
            .filter(|h| h.format == SnapshotFormat::Canonical)
            .flat_map(|h| &h.files)
            .map(|f| {
                (
                    f,
                    std::fs::read(self.files_root.join(f.path.as_str())).unwrap(),
                )
            })
            .collect()
    }
}

fn golden() -> Vec<Snapshot> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out = Vec::new();
    // Version 1, and version 2 with timers.
    for (version, label) in [("v1", "golden-checkpoint"), ("v2", "golden-checkpoint-v2")] {
        let checkpoint = dir.join(format!("checkpoint-{version}"));
        out.push(Snapshot::read(
            label,
            &checkpoint,
            &checkpoint.join("chk-1/_metadata"),
        ));
    }
    for name in [
        "canonical-savepoint-v1",
        "native-savepoint-v1",
        "canonical-savepoint-v2",
        "native-savepoint-v2",
    ] {
        let root = dir.join(name);
        out.push(Snapshot::read(
            &format!("golden-{name}"),
            &root,
            &root.join("_metadata"),
        ));
    }
    out
}

/// Small snapshots of the test job: checkpoints of both backends, savepoints of both
/// formats, at several parallelisms and max parallelisms.
fn generated(scratch: &Path) -> Vec<Snapshot> {
    let mut out = Vec::new();
    let cases = [
        (Kind::Heap, 128, 2, None),
        (Kind::RocksDb, 16, 3, None),
        (Kind::Heap, 4, 1, Some(SavepointFormat::Canonical)),
        (Kind::RocksDb, 128, 2, Some(SavepointFormat::Canonical)),
        (Kind::RocksDb, 8, 2, Some(SavepointFormat::Native)),
    ];
    for (i, (kind, max, parallelism, savepoint)) in cases.into_iter().enumerate() {
        let max = MaxParallelism::new(max).unwrap();
        let root = scratch.join(format!("root-{i}"));
        let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(&root).unwrap());
        let job = Job::new_in(scratch, kind, max, parallelism);
        job.write(&mut Model::default(), &mut Rng(7 + i as u64), 40, 120);
        let label = format!("{kind:?}-max{max}-p{parallelism}").to_lowercase();
        match savepoint {
            None => {
                let storage = CheckpointStorage::open(store, Retention::default()).unwrap();
                job.checkpoint(&storage, 1).unwrap();
                let files_root = root.clone();
                out.push(Snapshot::read(
                    &format!("{label}-checkpoint"),
                    &files_root,
                    &root.join("chk-1/_metadata"),
                ));
            }
            Some(format) => {
                let (dir, _) = job.savepoint(&store, 1, format).unwrap();
                let dir = root.join(dir.as_str());
                let name = format!("{label}-{format:?}-savepoint").to_lowercase();
                out.push(Snapshot::read(&name, &dir, &dir.join("_metadata")));
            }
        }
    }
    out
}

/// State records the corpus adds to those of the snapshots: every kind, TTL settings.
fn more_state_records() -> Vec<StateMeta> {
    let meta = |name: &str, kind, user_key: bool, ttl: Option<TtlConfig>| StateMeta {
        name: name.into(),
        kind,
        key_codec: CodecInfo::new("utf8", 1),
        value_codec: CodecInfo::new("bincode-1.3", 3),
        user_key_codec: user_key.then(|| CodecInfo::new("u64-be", 1)),
        ttl,
    };
    let ttl = TtlConfig::new(Duration::from_secs(3600));
    vec![
        meta("sum", StateKind::Reducing, false, None),
        meta("avg", StateKind::Aggregating, false, Some(ttl)),
        meta(
            "windows",
            StateKind::Map,
            true,
            Some(ttl.update(TtlUpdate::OnReadAndWrite)),
        ),
        meta(
            "events",
            StateKind::List,
            false,
            Some(ttl.visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)),
        ),
    ]
}

/// `[path length][path][_metadata]`, the input of the `cli_path` target.
fn cli_input(path: &str, metadata: &[u8]) -> Vec<u8> {
    let mut out = vec![path.len() as u8];
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(metadata);
    out
}

fn seeds(snapshots: &[Snapshot]) -> Vec<(&'static str, Seed)> {
    let mut out = Vec::new();
    let mut records = BTreeSet::new();
    for s in snapshots {
        out.push(("metadata", seed(&s.label, s.metadata.clone())));
        for (i, (_, bytes)) in s.streams().into_iter().enumerate() {
            if bytes.len() <= 64 << 10 {
                out.push(("canonical", seed(format!("{}-{i}", s.label), bytes)));
            }
        }
        for (o, operator) in s.job.operators.iter().enumerate() {
            for (i, state) in operator.operator_state.iter().enumerate() {
                let bytes = encode::operator_state(state);
                out.push((
                    "operator_state",
                    seed(format!("{}-{o}-{i}", s.label), bytes),
                ));
            }
            for handle in &operator.subtasks {
                for meta in &handle.states {
                    let mut bytes = Vec::new();
                    meta.encode(&mut bytes);
                    records.insert(bytes);
                }
            }
        }
    }
    for meta in more_state_records() {
        let mut bytes = Vec::new();
        meta.encode(&mut bytes);
        records.insert(bytes);
    }
    for (i, bytes) in records.into_iter().enumerate() {
        out.push(("state_record", seed(format!("state-{i}"), bytes)));
    }
    for (i, (max, range)) in [
        (128, (0, 63)),
        (128, (64, 127)),
        (8, (0, 7)),
        (32_768, (0, 32_767)),
    ]
    .into_iter()
    .enumerate()
    {
        let max = MaxParallelism::new(max).unwrap();
        let bytes = encode::backend_record(max, KeyGroupRange::new(range.0, range.1));
        out.push(("state_record", seed(format!("backend-{i}.err"), bytes)));
    }
    let max = MaxParallelism::DEFAULT;
    let keys: [(&[u8], &[u8], &[u8]); 5] = [
        (b"hello", b"", b""),
        (b"cairn", &1_700_000_000u64.to_be_bytes(), b""),
        (b"k", b"", b"uk"),
        (&42u64.to_be_bytes(), b"window", &7u32.to_be_bytes()),
        (&[0xAB; 200], b"", b""),
    ];
    for (i, (key, namespace, user_key)) in keys.into_iter().enumerate() {
        let mut bytes = Vec::new();
        write_prefix(&mut bytes, max.key_group_of(key), key, namespace);
        bytes.extend_from_slice(user_key);
        out.push(("composite_key", seed(format!("key-{i}"), bytes)));
    }
    // Timer keys (format version 2) go through the same target; its answer is the composite
    // key parser's, which may or may not read a timer key as one.
    let timers: [(u64, &[u8], &[u8]); 3] = [
        (1_700_000_000_000, b"hello", b""),
        (0, &7u64.to_be_bytes(), b"window"),
        (u64::MAX, b"", b""),
    ];
    for (i, (timestamp, key, namespace)) in timers.into_iter().enumerate() {
        let mut bytes = Vec::new();
        write_timer_key(&mut bytes, max.key_group_of(key), timestamp, key, namespace);
        let suffix = if CompositeKey::parse(&bytes).is_some() {
            ""
        } else {
            ".err"
        };
        out.push(("composite_key", seed(format!("timer-{i}{suffix}"), bytes)));
    }
    let checkpoint = &snapshots[0];
    let savepoint = &snapshots[1];
    for (name, path, metadata) in [
        ("chk-dir", "root/chk-1", &checkpoint.metadata),
        ("chk-file", "root/chk-1/_metadata", &checkpoint.metadata),
        (
            "savepoint",
            "root/savepoint-3-0000abcd",
            &savepoint.metadata,
        ),
        ("root.err", "root", &checkpoint.metadata),
        ("unfinished.err", "root/chk-2", &checkpoint.metadata),
        ("missing.err", "root/chk-9", &checkpoint.metadata),
        (
            "garbage.err",
            "root/chk-1",
            &b"CAIRN-MD not really".to_vec(),
        ),
    ] {
        out.push(("cli_path", seed(name, cli_input(path, metadata))));
    }
    out
}

#[test]
#[ignore = "rebuilds fuzz/corpus/ from the golden files and new snapshots"]
fn rebuild_fuzz_corpus() {
    let scratch = tempfile::tempdir().unwrap();
    let mut snapshots = golden();
    snapshots.extend(generated(scratch.path()));
    let seeds = seeds(&snapshots);
    for &(name, _) in TARGETS {
        let dir = fuzz_dir("corpus").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut total = 0;
    for (target, seed) in &seeds {
        let path = fuzz_dir("corpus").join(target).join(&seed.name);
        std::fs::write(&path, &seed.bytes).unwrap();
        total += seed.bytes.len();
    }
    eprintln!("{} corpus files, {total} bytes", seeds.len());
    every_corpus_file_and_past_finding_replays();
}
