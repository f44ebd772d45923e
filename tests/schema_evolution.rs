//! Schema evolution: a savepoint written with version 1 value codecs restores with version 2
//! codecs through migrations (both backends, both savepoint kinds, at another parallelism),
//! values equal the migrated model and TTL stamps are kept; a change nothing resolves is
//! refused, changes nothing, and leaves the savepoint's bytes as they were.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn::{
    BigEndian, Bincode, CheckpointStorage, Codec, CodecError, CodecInfo, Error, KeyedStateStore,
    LocalStore, MapStateDescriptor, MaxParallelism, Retention, SavepointFormat, SnapshotStore,
    StateDescriptor, SubStore, TtlConfig, Utf8,
};
use common::job::{restore_targets, Job};
use common::KINDS;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Score {
    points: u64,
    label: String,
}

const HOUR: u64 = 3_600_000;

fn score_v1() -> StateDescriptor<String, u32> {
    StateDescriptor::new("score", Utf8, BigEndian)
}
fn events_v1() -> StateDescriptor<String, String> {
    StateDescriptor::new("events", Utf8, Utf8)
}
fn by_hour_v1() -> MapStateDescriptor<String, u8, u64> {
    MapStateDescriptor::new("by-hour", Utf8, BigEndian, BigEndian)
        .with_ttl(TtlConfig::new(Duration::from_millis(HOUR)))
}

/// The migrations: a score becomes a struct, an event its length and text, an hourly count
/// its half as an f64.
fn migrate_score(old: u32) -> Score {
    Score {
        points: u64::from(old) * 10,
        label: format!("p{old}"),
    }
}
fn migrate_event(old: &str) -> (u32, String) {
    (old.len() as u32, old.to_string())
}
fn migrate_count(old: u64) -> f64 {
    old as f64 / 2.0
}

fn u32_of(old: &[u8]) -> Result<u32, CodecError> {
    Ok(u32::from_be_bytes(
        old.try_into().map_err(|_| CodecError("not a u32".into()))?,
    ))
}
fn u64_of(old: &[u8]) -> Result<u64, CodecError> {
    Ok(u64::from_be_bytes(
        old.try_into().map_err(|_| CodecError("not a u64".into()))?,
    ))
}

fn score_v2(calls: &Arc<AtomicUsize>) -> StateDescriptor<String, Score> {
    let calls = calls.clone();
    StateDescriptor::new("score", Utf8, Bincode::with_version(2)).with_migration(
        CodecInfo::new("u32-be", 1),
        move |old| {
            calls.fetch_add(1, Ordering::Relaxed);
            u32_of(old).map(migrate_score)
        },
    )
}
fn events_v2() -> StateDescriptor<String, (u32, String)> {
    StateDescriptor::new("events", Utf8, Bincode::with_version(2)).with_migration(
        CodecInfo::new("utf8", 1),
        |old| {
            let text = std::str::from_utf8(old).map_err(|e| CodecError(e.to_string()))?;
            Ok(migrate_event(text))
        },
    )
}
fn by_hour_v2() -> MapStateDescriptor<String, u8, f64> {
    MapStateDescriptor::new("by-hour", Utf8, BigEndian, Bincode::with_version(2))
        .with_ttl(TtlConfig::new(Duration::from_millis(HOUR)))
        .with_migration(CodecInfo::new("u64-be", 1), |old| {
            u64_of(old).map(migrate_count)
        })
}

/// What key `k<i>` holds in version 1.
#[derive(Debug, Clone, PartialEq)]
struct V1 {
    score: u32,
    events: Vec<String>,
    by_hour: BTreeMap<u8, u64>,
}

fn model() -> BTreeMap<String, V1> {
    (0..120u32)
        .map(|i| {
            let v = V1 {
                score: i * 7,
                events: (0..i % 4).map(|e| format!("e{e}-{i}")).collect(),
                by_hour: (0..(i % 3) as u8)
                    .map(|h| (h, u64::from(i) + u64::from(h)))
                    .collect(),
            };
            (format!("k{i}"), v)
        })
        .collect()
}

fn fill_v1(job: &Job) {
    for (key, v) in model() {
        let store = &job.subtasks[job.owner(&key)];
        store
            .value_state(&score_v1())
            .unwrap()
            .update(&key, &v.score)
            .unwrap();
        store
            .list_state(&events_v1())
            .unwrap()
            .add_all(&key, &v.events)
            .unwrap();
        let mut map = store.map_state(&by_hour_v1()).unwrap();
        for (h, n) in &v.by_hour {
            map.put(&key, h, n).unwrap();
        }
    }
}

fn check_v1(job: &Job) {
    for (key, v) in model() {
        let store = &job.subtasks[job.owner(&key)];
        let score = store.value_state(&score_v1()).unwrap().get(&key).unwrap();
        let events: Vec<String> = store
            .list_state(&events_v1())
            .unwrap()
            .get(&key)
            .unwrap()
            .collect();
        let by_hour: BTreeMap<u8, u64> = store
            .map_state(&by_hour_v1())
            .unwrap()
            .iter(&key)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(
            (score, &events, &by_hour),
            (Some(v.score), &v.events, &v.by_hour),
            "{key}"
        );
    }
}

/// Registers the version 2 descriptors on every subtask (migrating) and checks every key
/// against the migrated model.
fn check_v2(job: &Job, calls: &Arc<AtomicUsize>, what: &str) {
    for (key, v) in model() {
        let store = &job.subtasks[job.owner(&key)];
        let score = store
            .value_state(&score_v2(calls))
            .unwrap()
            .get(&key)
            .unwrap();
        let events: Vec<(u32, String)> = store
            .list_state(&events_v2())
            .unwrap()
            .get(&key)
            .unwrap()
            .collect();
        let by_hour: BTreeMap<u8, f64> = store
            .map_state(&by_hour_v2())
            .unwrap()
            .iter(&key)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        let expected_events: Vec<(u32, String)> =
            v.events.iter().map(|e| migrate_event(e)).collect();
        let expected_by_hour: BTreeMap<u8, f64> = v
            .by_hour
            .iter()
            .map(|(h, n)| (*h, migrate_count(*n)))
            .collect();
        assert_eq!(score, Some(migrate_score(v.score)), "{what}: {key}");
        assert_eq!(events, expected_events, "{what}: {key}");
        assert_eq!(by_hour, expected_by_hour, "{what}: {key}");
    }
}

fn root() -> (tempfile::TempDir, Arc<dyn SnapshotStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    (dir, store)
}

fn value_codec_of(store: &KeyedStateStore, state: &str) -> CodecInfo {
    let states = store.backend().states().unwrap();
    states
        .into_iter()
        .find(|s| s.name == state)
        .unwrap()
        .value_codec
}

/// Every file of a savepoint directory, with its bytes.
fn files_of(dir: &std::path::Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn a_v1_savepoint_restores_with_v2_codecs_through_migrations() {
    let max = MaxParallelism::new(32).unwrap();
    for from in KINDS {
        for format in [SavepointFormat::Canonical, SavepointFormat::Native] {
            let (_dir, root) = root();
            let job = Job::new(from, max, 2);
            fill_v1(&job);
            let (dir, snapshot) = job.savepoint(&root, 1, format).unwrap();
            let store: Arc<dyn SnapshotStore> = Arc::new(SubStore::new(root.clone(), dir));
            for &to in restore_targets(from, format) {
                for parallelism in [2, 3] {
                    let what = format!("{from:?} {format:?} -> {to:?} at {parallelism}");
                    let restored = Job::restore(to, &store, &snapshot, max, parallelism).unwrap();
                    let calls = Arc::new(AtomicUsize::new(0));
                    check_v2(&restored, &calls, &what);
                    // Each value was migrated once, on its subtask's first registration.
                    assert_eq!(calls.load(Ordering::Relaxed), model().len(), "{what}");
                    for subtask in &restored.subtasks {
                        assert_eq!(
                            value_codec_of(subtask, "score"),
                            CodecInfo::new("bincode-1.3", 2)
                        );
                        assert_eq!(
                            value_codec_of(subtask, "by-hour"),
                            CodecInfo::new("bincode-1.3", 2)
                        );
                    }
                    // A snapshot after the migration records version 2 and restores with it,
                    // with no migration left to run.
                    let (dir2, snapshot2) = restored
                        .savepoint(&root, 10 + parallelism as u64, SavepointFormat::Canonical)
                        .unwrap();
                    assert!(snapshot2.operators[0].subtasks[0]
                        .states
                        .iter()
                        .any(|s| s.name == "events"
                            && s.value_codec == CodecInfo::new("bincode-1.3", 2)));
                    let store2: Arc<dyn SnapshotStore> =
                        Arc::new(SubStore::new(root.clone(), dir2));
                    let again = Job::restore(to, &store2, &snapshot2, max, 1).unwrap();
                    let calls = Arc::new(AtomicUsize::new(0));
                    check_v2(&again, &calls, &format!("{what}, again"));
                    assert_eq!(calls.load(Ordering::Relaxed), 0, "{what}: migrated twice");
                }
            }
        }
    }
}

/// From a checkpoint this time: a migration runs on the restored backend, whatever it was
/// restored from.
#[test]
fn a_migration_after_a_checkpoint_keeps_ttl_stamps() {
    let max = MaxParallelism::new(8).unwrap();
    for kind in KINDS {
        let (_dir, root) = root();
        let storage = CheckpointStorage::open(root.clone(), Retention::default()).unwrap();
        let job = Job::new(kind, max, 1);
        job.clock().set(1_000);
        fill_v1(&job);
        let snapshot = job.checkpoint(&storage, 1).unwrap();
        let restored = Job::restore(kind, &root, &snapshot, max, 1).unwrap();
        // Migrated half an hour later: the entries still expire an hour after their write.
        restored.clock().set(1_000 + HOUR / 2);
        let calls = Arc::new(AtomicUsize::new(0));
        check_v2(&restored, &calls, &format!("{kind:?}"));
        let key = "k2".to_string();
        let mut map = restored.subtasks[0].map_state(&by_hour_v2()).unwrap();
        restored.clock().set(1_000 + HOUR - 1);
        assert_eq!(map.get(&key, &0).unwrap(), Some(1.0), "{kind:?}");
        restored.clock().set(1_000 + HOUR);
        assert_eq!(
            map.get(&key, &1).unwrap(),
            None,
            "{kind:?}: expired with its old stamp"
        );
    }
}

#[test]
fn an_incompatible_change_is_refused_and_changes_nothing() {
    let max = MaxParallelism::new(16).unwrap();
    for from in KINDS {
        for format in [SavepointFormat::Canonical, SavepointFormat::Native] {
            let (root_dir, root) = root();
            let job = Job::new(from, max, 2);
            fill_v1(&job);
            let (dir, snapshot) = job.savepoint(&root, 1, format).unwrap();
            let before = files_of(&root_dir.path().join(dir.as_str()));
            let store: Arc<dyn SnapshotStore> = Arc::new(SubStore::new(root.clone(), dir.clone()));
            let to = from;
            let restored = Job::restore(to, &store, &snapshot, max, 3).unwrap();
            let what = format!("{from:?} {format:?} -> {to:?}");
            for subtask in &restored.subtasks {
                // A new value codec without a migration.
                let v2 =
                    StateDescriptor::<String, Score>::new("score", Utf8, Bincode::with_version(2));
                let err = subtask.value_state(&v2).err().unwrap();
                let message = err.to_string();
                assert!(
                    matches!(err, Error::SchemaIncompatible { .. }),
                    "{what}: {message}"
                );
                assert!(
                    message.contains("'score'")
                        && message.contains("u32-be v1")
                        && message.contains("bincode-1.3 v2"),
                    "{message}"
                );
                // A migration that fails on one value.
                let failing =
                    StateDescriptor::<String, Score>::new("score", Utf8, Bincode::with_version(2))
                        .with_migration(CodecInfo::new("u32-be", 1), |old| {
                            let v = u32_of(old)?;
                            if v == 7 * 33 {
                                Err(CodecError("cannot migrate 231".into()))
                            } else {
                                Ok(migrate_score(v))
                            }
                        });
                let holds_k33 = subtask.key_group_range().contains(max.key_group_of(b"k33"));
                let result = subtask.value_state(&failing);
                if holds_k33 {
                    let err = result.err().unwrap();
                    assert!(
                        err.to_string().contains("cannot migrate 231"),
                        "{what}: {err}"
                    );
                } else {
                    assert!(result.is_ok(), "{what}: no value of this subtask fails");
                }
                // Key codec and map user-key codec changes are refused, as Flink does.
                let other_key = StateDescriptor::<u64, u32>::new("score", BigEndian, BigEndian);
                assert!(matches!(
                    subtask.value_state(&other_key).err().unwrap(),
                    Error::StateMismatch { .. }
                ));
                let other_user_key = MapStateDescriptor::<String, u16, u64>::new(
                    "by-hour", Utf8, BigEndian, BigEndian,
                )
                .with_ttl(TtlConfig::new(Duration::from_millis(HOUR)))
                .with_migration(CodecInfo::new("u64-be", 1), u64_of);
                assert!(matches!(
                    subtask.map_state(&other_user_key).err().unwrap(),
                    Error::StateMismatch { .. }
                ));
            }
            // Where nothing resolved the change, the values are version 1's, untouched.
            let score_ok: Vec<bool> = restored
                .subtasks
                .iter()
                .map(|s| value_codec_of(s, "score") == CodecInfo::new("u32-be", 1))
                .collect();
            for (key, v) in model() {
                let subtask = &restored.subtasks[restored.owner(&key)];
                if score_ok[restored.owner(&key)] {
                    assert_eq!(
                        subtask.value_state(&score_v1()).unwrap().get(&key).unwrap(),
                        Some(v.score),
                        "{what}: {key}"
                    );
                }
                let events: Vec<String> = subtask
                    .list_state(&events_v1())
                    .unwrap()
                    .get(&key)
                    .unwrap()
                    .collect();
                assert_eq!(events, v.events);
            }
            assert!(
                score_ok[restored.owner("k33")],
                "{what}: the failed migration changed nothing"
            );
            drop(restored);
            // The savepoint is untouched and still restores with version 1.
            assert_eq!(
                files_of(&root_dir.path().join(dir.as_str())),
                before,
                "{what}"
            );
            check_v1(&Job::restore(to, &store, &snapshot, max, 2).unwrap());
        }
    }
}

/// A codec whose version 2 reads version 1's bytes: big-endian u32 either way.
struct U32V2;
impl Codec<u32> for U32V2 {
    fn encode(&self, value: &u32, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(&value.to_be_bytes());
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<u32, CodecError> {
        u32_of(bytes)
    }
    fn info(&self) -> CodecInfo {
        CodecInfo::new("u32-be", 2)
    }
    fn can_read(&self, written_by: &CodecInfo) -> bool {
        *written_by == self.info() || *written_by == CodecInfo::new("u32-be", 1)
    }
}

#[test]
fn a_codec_that_reads_the_old_bytes_is_compatible_as_is() {
    let max = MaxParallelism::new(8).unwrap();
    for kind in KINDS {
        let job = Job::new(kind, max, 1);
        fill_v1(&job);
        let store = &job.subtasks[0];
        let mut score = store
            .value_state(&StateDescriptor::<String, u32>::new("score", Utf8, U32V2))
            .unwrap();
        assert_eq!(score.get(&"k5".to_string()).unwrap(), Some(35));
        assert_eq!(value_codec_of(store, "score"), CodecInfo::new("u32-be", 2));
        // Version 1 no longer matches what is recorded, and cannot read version 2.
        let err = store.value_state(&score_v1()).err().unwrap();
        assert!(
            matches!(err, Error::SchemaIncompatible { .. }),
            "{kind:?}: {err}"
        );
    }
}

#[test]
fn a_reducing_state_migrates_as_a_value_state() {
    for kind in KINDS {
        let job = Job::new(kind, MaxParallelism::new(8).unwrap(), 1);
        let store = &job.subtasks[0];
        let v1 = StateDescriptor::<String, u32>::new("sum", Utf8, BigEndian);
        let mut sum = store.reducing_state(&v1, |a, b| a + b).unwrap();
        for (key, n) in [("a", 1u32), ("a", 2), ("b", 5)] {
            sum.add(&key.to_string(), &n).unwrap();
        }
        // Version 2 sums u64s, and counts in tenths.
        let v2 = StateDescriptor::<String, u64>::new("sum", Utf8, Bincode::with_version(2))
            .with_migration(CodecInfo::new("u32-be", 1), |old| {
                u32_of(old).map(|v| u64::from(v) * 10)
            });
        let mut sum = store.reducing_state(&v2, |a, b| a + b).unwrap();
        assert_eq!(sum.get(&"a".to_string()).unwrap(), Some(30), "{kind:?}");
        sum.add(&"b".to_string(), &1).unwrap();
        assert_eq!(sum.get(&"b".to_string()).unwrap(), Some(51), "{kind:?}");
    }
}
