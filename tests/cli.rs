//! The `cairn` binary, run for real on snapshots the library made: every subcommand's
//! table and JSON output, verify finding each kind of damage, gc deleting exactly the
//! orphans, and the exit codes (0 ok, 1 problem found, 2 bad usage or unreadable input).

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use cairn::{
    BigEndian, CheckpointStorage, HeapBackend, JobSnapshot, KeyedStateStore, LocalStore,
    ManualClock, MapStateDescriptor, MaxParallelism, Retention, RocksDbBackend, SavepointFormat,
    SnapshotKind, SnapshotStore, StateDescriptor, StoragePath, TtlConfig, Utf8,
};
use serde_json::Value;
use tempfile::TempDir;

const OPERATOR: &str = "word-count";
const PARALLELISM: u32 = 2;
/// The time the job's clock reads: TTL stamps are this.
const NOW: u64 = 1_700_000_000_000;
const TTL_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Heap,
    RocksDb,
}

fn count() -> StateDescriptor<String, u64> {
    StateDescriptor::new("count", Utf8, BigEndian)
}
fn seen() -> StateDescriptor<String, u32> {
    StateDescriptor::new("seen", Utf8, BigEndian)
}
fn by_hour() -> MapStateDescriptor<String, u8, u64> {
    MapStateDescriptor::new("by-hour", Utf8, BigEndian, BigEndian)
}
fn recent() -> StateDescriptor<String, u64> {
    StateDescriptor::new("recent", Utf8, BigEndian)
        .with_ttl(TtlConfig::new(Duration::from_millis(TTL_MS)))
}

/// One operator of two subtasks, checkpointing into `root`.
struct Job {
    max: MaxParallelism,
    subtasks: Vec<KeyedStateStore>,
    storage: CheckpointStorage,
    _dirs: TempDir,
}

impl Job {
    fn new(kind: Kind, root: &Path, retained: usize) -> Self {
        let dirs = tempfile::tempdir().unwrap();
        let max = MaxParallelism::new(16).unwrap();
        let clock = ManualClock::new(NOW);
        let subtasks = (0..PARALLELISM)
            .map(|i| {
                let range = max.subtask_range(i, PARALLELISM).unwrap();
                let clock = Arc::new(clock.clone());
                match kind {
                    Kind::Heap => KeyedStateStore::new(HeapBackend::with_clock(max, range, clock)),
                    Kind::RocksDb => KeyedStateStore::new(
                        RocksDbBackend::builder(dirs.path().join(format!("{i}")), max, range)
                            .clock(clock)
                            .open()
                            .unwrap(),
                    ),
                }
            })
            .collect();
        let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(root).unwrap());
        let storage = CheckpointStorage::open(store, Retention::new(retained).unwrap()).unwrap();
        Job {
            max,
            subtasks,
            storage,
            _dirs: dirs,
        }
    }

    fn at(&self, key: &str) -> &KeyedStateStore {
        let kg = self.max.key_group_of(key.as_bytes());
        &self.subtasks[self.max.subtask_of(kg, PARALLELISM).unwrap() as usize]
    }

    /// Key `key-<i>`: count i, seen [i], by-hour {i % 4: 10 i}, recent i (with TTL).
    fn write_key(&self, i: u64) {
        let key = format!("key-{i}");
        let store = self.at(&key);
        store
            .value_state(&count())
            .unwrap()
            .update(&key, &i)
            .unwrap();
        store
            .list_state(&seen())
            .unwrap()
            .add(&key, &(i as u32))
            .unwrap();
        store
            .map_state(&by_hour())
            .unwrap()
            .put(&key, &((i % 4) as u8), &(i * 10))
            .unwrap();
        store
            .value_state(&recent())
            .unwrap()
            .update(&key, &i)
            .unwrap();
    }

    fn checkpoint(&self, id: u64) {
        let mut pending = self.storage.begin(id).unwrap();
        for (i, s) in self.subtasks.iter().enumerate() {
            let handle = s
                .backend()
                .snapshot(pending.request())
                .unwrap()
                .run()
                .unwrap();
            pending
                .acknowledge(OPERATOR, PARALLELISM, self.max, i as u32, handle)
                .unwrap();
        }
        self.storage.commit(pending).unwrap();
        for s in &self.subtasks {
            s.backend().notify_checkpoint_complete(id);
        }
    }

    /// Takes a savepoint into the storage root; returns its directory's name.
    fn savepoint(&self, format: SavepointFormat) -> String {
        let mut pending = self.storage.begin_savepoint(format).unwrap();
        let dir = pending.savepoint_dir().unwrap().to_string();
        for (i, s) in self.subtasks.iter().enumerate() {
            let handle = s
                .backend()
                .snapshot(pending.request())
                .unwrap()
                .run()
                .unwrap();
            pending
                .acknowledge(OPERATOR, PARALLELISM, self.max, i as u32, handle)
                .unwrap();
        }
        self.storage.commit(pending).unwrap();
        dir
    }
}

/// Checkpoint 1: keys 0..40. Checkpoint 2: keys 0..10 get count i + 100, keys 40..50 are
/// new, key-39 loses its map entry. Both retained.
fn two_checkpoints(kind: Kind) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("checkpoints");
    let job = Job::new(kind, &root, 2);
    for i in 0..40 {
        job.write_key(i);
    }
    job.checkpoint(1);
    for i in 0..10 {
        let key = format!("key-{i}");
        job.at(&key)
            .value_state(&count())
            .unwrap()
            .update(&key, &(i + 100))
            .unwrap();
    }
    for i in 40..50 {
        job.write_key(i);
    }
    job.at("key-39")
        .map_state(&by_hour())
        .unwrap()
        .remove(&"key-39".to_string(), &3)
        .unwrap();
    job.checkpoint(2);
    (dir, root)
}

fn cairn(args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for arg in args {
        command.arg(arg);
    }
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the binary and checks its exit code.
fn run(args: &[&dyn AsRef<OsStr>], code: i32) -> Output {
    let output = cairn(args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "cairn {:?}\nstdout:\n{}\nstderr:\n{}",
        args.iter()
            .map(|a| a.as_ref().to_owned())
            .collect::<Vec<_>>(),
        stdout(&output),
        stderr(&output)
    );
    output
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(output)))
}

/// Every file under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn names(values: &Value) -> Vec<String> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn inspect_shows_a_root_a_checkpoint_and_its_sizes() {
    for kind in [Kind::Heap, Kind::RocksDb] {
        let (_dir, root) = two_checkpoints(kind);
        let chk2 = root.join("chk-2");

        let text = stdout(&run(&[&"inspect", &root], 0));
        assert!(text.contains("chk-1") && text.contains("chk-2"), "{text}");
        let listing = json(&run(&[&"inspect", &root, &"--json"], 0));
        assert_eq!(listing["type"], "root");
        let ids: Vec<u64> = listing["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [1, 2]);

        let text = stdout(&run(&[&"inspect", &chk2], 0));
        for needle in [
            "checkpoint 2",
            "operator word-count: parallelism 2, max parallelism 16",
            "by-hour",
            "utf8 v1",
            "u64-be v1",
            "3600000 ms",
            "0..=7",
            "8..=15",
            "entries: not counted",
        ] {
            assert!(text.contains(needle), "{kind:?}: no '{needle}' in\n{text}");
        }

        let report = json(&run(&[&"inspect", &chk2, &"--json"], 0));
        assert_eq!(report["type"], "snapshot");
        assert_eq!(report["kind"], "checkpoint");
        assert_eq!(report["id"], 2);
        assert_eq!(report["metadata_version"], 1);
        let op = &report["operators"][0];
        assert_eq!(op["id"], OPERATOR);
        assert_eq!(
            (op["parallelism"].as_u64(), op["max_parallelism"].as_u64()),
            (Some(2), Some(16))
        );
        let mut states = names(&op["states"]);
        states.sort();
        assert_eq!(states, ["by-hour", "count", "recent", "seen"]);
        let recent = op["states"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "recent")
            .unwrap();
        assert_eq!(recent["ttl"]["ttl_millis"], TTL_MS);
        assert_eq!(op["subtasks"][1]["first_key_group"], 8);
        assert_eq!(op["subtasks"][1]["last_key_group"], 15);
        let (total, new, reused) = (
            report["total_bytes"].as_u64().unwrap(),
            report["new_bytes"].as_u64().unwrap(),
            report["reused_bytes"].as_u64().unwrap(),
        );
        assert_eq!(total, new + reused);
        let files: u64 = op["subtasks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["files"].as_array().unwrap())
            .map(|f| f["size"].as_u64().unwrap())
            .sum();
        assert_eq!(files, total);
        match kind {
            Kind::Heap => {
                assert_eq!(reused, 0, "a heap checkpoint writes its streams anew");
                assert_eq!(op["subtasks"][0]["format"], "canonical");
            }
            Kind::RocksDb => {
                assert!(reused > 0, "checkpoint 2 reuses checkpoint 1's SST files");
                assert_eq!(op["subtasks"][0]["format"], "rocksdb");
            }
        }
        assert!(report["operators"][0]["states"][0]["entries"].is_null());

        // The _metadata file names the same snapshot; --count counts every state.
        let counted = json(&run(
            &[&"inspect", &chk2.join("_metadata"), &"--count", &"--json"],
            0,
        ));
        assert_eq!(counted["entries_counted"], true);
        for state in counted["operators"][0]["states"].as_array().unwrap() {
            let expected = if state["name"] == "by-hour" { 49 } else { 50 };
            assert_eq!(state["entries"], expected, "{kind:?}: {state}");
        }
        let per_subtask: u64 = counted["operators"][0]["subtasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["entries"].as_u64().unwrap())
            .sum();
        assert_eq!(per_subtask, 50 * 3 + 49);
    }
}

#[test]
fn verify_passes_a_whole_snapshot() {
    for kind in [Kind::Heap, Kind::RocksDb] {
        let (_dir, root) = two_checkpoints(kind);
        let text = stdout(&run(&[&"verify", &root.join("chk-2")], 0));
        assert!(text.contains("OK"), "{text}");
        let output = run(&[&"verify", &root.join("chk-1"), &"--json"], 0);
        assert!(
            stderr(&output).is_empty(),
            "no progress bar when stderr is not a terminal"
        );
        let report = json(&output);
        assert_eq!(report["ok"], true);
        assert_eq!(report["problems"].as_array().unwrap().len(), 0);
        assert!(report["files_checked"].as_u64().unwrap() > 0);
        if kind == Kind::Heap {
            // Checkpoint 1: 40 keys in each of 4 states.
            assert_eq!(report["canonical_entries"], 160);
        }
    }
}

/// The shared SST files of a RocksDB checkpoint, and its private files.
fn files_of(root: &Path, id: u64) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let bytes = std::fs::read(root.join(format!("chk-{id}/_metadata"))).unwrap();
    let job = JobSnapshot::decode(&bytes, &StoragePath::new("_metadata").unwrap()).unwrap();
    let (shared, private): (Vec<_>, Vec<_>) = job.files().partition(|f| f.is_shared());
    let local = |files: Vec<&cairn::SnapshotFile>| -> Vec<PathBuf> {
        files.iter().map(|f| root.join(f.path.as_str())).collect()
    };
    (local(shared), local(private))
}

#[test]
fn verify_names_every_damaged_file() {
    let (_dir, root) = two_checkpoints(Kind::RocksDb);
    let (shared, private) = files_of(&root, 2);
    assert!(shared.len() >= 2, "{shared:?}");
    let flipped = &shared[0];
    let mut bytes = std::fs::read(flipped).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(flipped, &bytes).unwrap();
    let truncated = private
        .iter()
        .find(|p| p.to_string_lossy().contains("MANIFEST"))
        .unwrap();
    let len = std::fs::metadata(truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(truncated)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let missing = &shared[1];
    std::fs::remove_file(missing).unwrap();

    let output = run(&[&"verify", &root.join("chk-2")], 1);
    let text = stdout(&output);
    for (file, kind) in [
        (flipped, "crc32"),
        (truncated, "size"),
        (missing, "missing"),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(&*file.to_string_lossy()))
            .unwrap_or_else(|| panic!("{} not named in\n{text}", file.display()));
        assert!(line.contains(kind), "{line}");
    }
    assert!(text.contains("3 problems found"), "{text}");

    let report = json(&run(&[&"verify", &root.join("chk-2"), &"--json"], 1));
    assert_eq!(report["ok"], false);
    let mut kinds: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["crc32", "missing", "size"]);
}

#[test]
fn verify_names_a_damaged_canonical_stream_and_a_corrupted_metadata() {
    let (_dir, root) = two_checkpoints(Kind::Heap);
    let (_, streams) = files_of(&root, 2);
    let stream = &streams[0];
    let mut bytes = std::fs::read(stream).unwrap();
    bytes[40] ^= 0x80;
    std::fs::write(stream, &bytes).unwrap();
    let report = json(&run(&[&"verify", &root.join("chk-2"), &"--json"], 1));
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["file"], stream.display().to_string());
    assert_eq!(problems[0]["kind"], "crc32");

    let metadata = root.join("chk-1/_metadata");
    let mut bytes = std::fs::read(&metadata).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x04;
    std::fs::write(&metadata, &bytes).unwrap();
    let output = run(&[&"verify", &root.join("chk-1")], 1);
    let text = stdout(&output);
    assert!(
        text.contains(&*metadata.to_string_lossy()) && text.contains("metadata"),
        "{text}"
    );
    let report = json(&run(&[&"verify", &root.join("chk-1"), &"--json"], 1));
    assert_eq!(report["problems"][0]["kind"], "metadata");
    assert!(report["problems"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("CRC32"));

    // Other commands cannot read it: exit 2 and one line naming it.
    let output = run(&[&"inspect", &root.join("chk-1")], 2);
    let err = stderr(&output);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("chk-1/_metadata"), "{err}");
    // The root listing shows the broken checkpoint and exits 1.
    let listing = json(&run(&[&"inspect", &root, &"--json"], 1));
    assert!(listing["checkpoints"][0]["error"].is_string(), "{listing}");
}

#[test]
fn dump_decodes_every_kind_of_state_on_both_backends() {
    for kind in [Kind::Heap, Kind::RocksDb] {
        let (_dir, root) = two_checkpoints(kind);
        let chk2 = root.join("chk-2");
        let dump = |state: &str, extra: &[&str]| {
            let mut args: Vec<OsString> = vec![
                "dump".into(),
                chk2.clone().into(),
                "--operator".into(),
                OPERATOR.into(),
                "--state".into(),
                state.into(),
            ];
            args.extend(extra.iter().map(OsString::from));
            args.push("--json".into());
            let refs: Vec<&dyn AsRef<OsStr>> =
                args.iter().map(|a| a as &dyn AsRef<OsStr>).collect();
            json(&run(&refs, 0))
        };

        let counts = dump("count", &[]);
        let entries = counts["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 50, "{kind:?}");
        for e in entries {
            let i: u64 = e["key"].as_str().unwrap()["key-".len()..].parse().unwrap();
            let expected = if i < 10 { i + 100 } else { i };
            assert_eq!(e["value"]["value"], expected.to_string(), "{e}");
            assert_eq!(e["namespace_hex"], "");
            assert!(e["elements"].is_null());
        }
        let kgs: Vec<u64> = entries
            .iter()
            .map(|e| e["key_group"].as_u64().unwrap())
            .collect();
        assert!(kgs.windows(2).all(|w| w[0] <= w[1]), "key-group order");

        let one = dump("count", &["--key", "key-7"]);
        assert_eq!(one["entries"].as_array().unwrap().len(), 1);
        assert_eq!(one["entries"][0]["value"]["value"], "107");
        assert_eq!(one["entries"][0]["key_hex"], "6b65792d37");

        let kg = MaxParallelism::new(16).unwrap().key_group_of(b"key-7");
        let limited = dump("count", &["--key-group", &kg.to_string(), "--limit", "2"]);
        let got = limited["entries"].as_array().unwrap();
        assert!(!got.is_empty() && got.len() <= 2);
        assert!(got.iter().all(|e| e["key_group"] == kg));

        let list = dump("seen", &["--key", "key-42"]);
        assert_eq!(list["entries"][0]["elements"][0]["value"], "42");
        let map = dump("by-hour", &["--key", "key-42"]);
        assert_eq!(map["entries"][0]["user_key"], "2");
        assert_eq!(map["entries"][0]["value"]["value"], "420");
        let ttl = dump("recent", &["--key", "key-42"]);
        let value = &ttl["entries"][0]["value"];
        assert_eq!(value["written_at_millis"], NOW);
        assert_eq!(value["expires_at_millis"], NOW + TTL_MS);
        assert_eq!(value["expires_at"], "2023-11-14T23:13:20.000Z");
        assert_eq!(value["expired"], true, "2023 is long past");

        let text = stdout(&run(
            &[
                &"dump",
                &chk2,
                &"--operator",
                &OPERATOR,
                &"--state",
                &"recent",
                &"--limit",
                &"3",
            ],
            0,
        ));
        assert!(
            text.contains("EXPIRES") && text.contains("(expired)"),
            "{text}"
        );
        assert!(text.contains("3 entries (limit reached"), "{text}");
        let text = stdout(&run(
            &[
                &"dump",
                &chk2,
                &"--operator",
                &OPERATOR,
                &"--state",
                &"by-hour",
                &"--key",
                &"key-7",
            ],
            0,
        ));
        assert!(
            text.contains("USER KEY") && text.contains("key-7") && text.contains("70"),
            "{text}"
        );

        let output = run(
            &[&"dump", &chk2, &"--operator", &"nope", &"--state", &"count"],
            2,
        );
        assert!(
            stderr(&output).contains("word-count"),
            "names the operators it has"
        );
        let output = run(
            &[
                &"dump",
                &chk2,
                &"--operator",
                &OPERATOR,
                &"--state",
                &"nope",
            ],
            2,
        );
        assert!(
            stderr(&output).contains("by-hour"),
            "names the states it has"
        );
    }
}

#[test]
fn diff_counts_files_and_entries() {
    for kind in [Kind::Heap, Kind::RocksDb] {
        let (_dir, root) = two_checkpoints(kind);
        let (a, b) = (root.join("chk-1"), root.join("chk-2"));
        let report = json(&run(&[&"diff", &a, &b, &"--entries", &"--json"], 0));
        assert_eq!(
            (report["a_id"].as_u64(), report["b_id"].as_u64()),
            (Some(1), Some(2))
        );
        let files = &report["files"];
        assert!(!files["added"].as_array().unwrap().is_empty());
        assert!(!files["removed"].as_array().unwrap().is_empty());
        if kind == Kind::RocksDb {
            assert!(files["shared"].as_u64().unwrap() > 0, "{files}");
        }
        let states = report["entries"].as_array().unwrap();
        let get = |name: &str| {
            let s = states.iter().find(|s| s["state"] == name).unwrap();
            [&s["added"], &s["removed"], &s["changed"], &s["unchanged"]]
                .map(|v| v.as_u64().unwrap())
        };
        assert_eq!(get("count"), [10, 0, 10, 30], "{kind:?}");
        assert_eq!(get("seen"), [10, 0, 0, 40], "{kind:?}");
        assert_eq!(get("by-hour"), [10, 1, 0, 39], "{kind:?}");
        assert_eq!(get("recent"), [10, 0, 0, 40], "{kind:?}");

        let text = stdout(&run(&[&"diff", &a, &b], 0));
        assert!(text.contains("files:") && text.contains("added"), "{text}");
        let text = stdout(&run(&[&"diff", &a, &b, &"--entries"], 0));
        assert!(
            text.contains("UNCHANGED") && text.contains("count"),
            "{text}"
        );
    }
}

#[test]
fn gc_deletes_exactly_the_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("checkpoints");
    let job = Job::new(Kind::RocksDb, &root, 2);
    for id in 1..=3 {
        for i in 0..20 {
            job.write_key(id * 100 + i);
        }
        job.checkpoint(id);
    }
    drop(job);
    let instance = "0123456789abcdef0123456789abcdef";
    let put = |path: &str| {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, b"orphan?").unwrap();
    };
    // Orphans: an aborted checkpoint older than the latest, a stray file of checkpoint 1.
    let orphans = [
        format!("chk-1/{instance}/MANIFEST-000001"),
        format!("shared/1-{instance}-000099.sst"),
    ];
    // Not orphans: a checkpoint in flight and its upload, a file a retained checkpoint
    // wrote, a savepoint.
    let kept = [
        format!("chk-9/{instance}/MANIFEST-000001"),
        format!("shared/9-{instance}-000001.sst"),
        format!("shared/2-{instance}-000098.sst"),
        format!("savepoint-1-abc/{instance}/000001.sst"),
    ];
    for path in orphans.iter().chain(&kept) {
        put(path);
    }
    let before = tree(&root);

    let report = json(&run(&[&"gc", &root, &"--dry-run", &"--json"], 0));
    assert_eq!(tree(&root), before, "a dry run deletes nothing");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["checkpoints"], serde_json::json!([2, 3]));
    let listed: BTreeSet<String> = report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, orphans.iter().cloned().collect());
    assert_eq!(report["abandoned_checkpoints"], serde_json::json!([1]));
    assert_eq!(report["shared_files"], 1);
    let text = stdout(&run(&[&"gc", &root, &"--dry-run"], 0));
    assert!(text.contains("would delete 2 files"), "{text}");
    assert!(text.contains(&orphans[1]), "{text}");

    let text = stdout(&run(&[&"gc", &root], 0));
    assert!(text.contains("deleted 2 files"), "{text}");
    let after = tree(&root);
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|p| !orphans.contains(p))
        .cloned()
        .collect();
    assert_eq!(after, expected);
    for id in [2, 3] {
        run(&[&"verify", &root.join(format!("chk-{id}"))], 0);
    }
    let again = json(&run(&[&"gc", &root, &"--json"], 0));
    assert_eq!(again["deleted"].as_array().unwrap().len(), 0, "{again}");
}

/// A savepoint made by hand from a checkpoint: its files copied under its own directory,
/// `_metadata` of kind savepoint with paths relative to that directory.
fn savepoint_from(root: &Path, id: u64, name: &str) -> PathBuf {
    let bytes = std::fs::read(root.join(format!("chk-{id}/_metadata"))).unwrap();
    let mut job = JobSnapshot::decode(&bytes, &StoragePath::new("_metadata").unwrap()).unwrap();
    job.kind = SnapshotKind::Savepoint;
    let dir = root.join(name);
    for handle in job.operators.iter_mut().flat_map(|o| &mut o.subtasks) {
        for file in &mut handle.files {
            let target = format!("{}/{}", handle.instance, file.name);
            std::fs::create_dir_all(dir.join(handle.instance.to_string())).unwrap();
            std::fs::copy(root.join(file.path.as_str()), dir.join(&target)).unwrap();
            file.path = StoragePath::new(target).unwrap();
        }
    }
    std::fs::write(dir.join("_metadata"), job.encode()).unwrap();
    dir
}

#[test]
fn savepoints_resolve_their_files_against_their_own_directory() {
    for (kind, expected) in [
        (Kind::Heap, "canonical-savepoint"),
        (Kind::RocksDb, "native-savepoint"),
    ] {
        let (_dir, root) = two_checkpoints(kind);
        let savepoint = savepoint_from(&root, 2, "savepoint-2-0a1b2c");
        let report = json(&run(&[&"inspect", &savepoint, &"--json"], 0));
        assert_eq!(report["kind"], expected);
        assert_eq!(
            report["files_root"],
            savepoint.canonicalize().unwrap().display().to_string()
        );
        assert_eq!(report["reused_bytes"], 0, "a savepoint is self-contained");
        run(&[&"verify", &savepoint], 0);
        let counts = json(&run(
            &[
                &"dump",
                &savepoint,
                &"--operator",
                &OPERATOR,
                &"--state",
                &"count",
                &"--json",
            ],
            0,
        ));
        assert_eq!(counts["entries"].as_array().unwrap().len(), 50);
        let listing = json(&run(&[&"inspect", &root, &"--json"], 0));
        assert_eq!(listing["savepoints"][0]["dir"], "savepoint-2-0a1b2c");
        assert_eq!(listing["savepoints"][0]["kind"], expected);
        // Moved elsewhere, it still reads: nothing in it points outside it.
        let moved = tempfile::tempdir().unwrap();
        let target = moved.path().join("sp");
        std::fs::rename(&savepoint, &target).unwrap();
        run(&[&"verify", &target], 0);
        // No entry changed between the checkpoint and its savepoint.
        let report = json(&run(
            &[
                &"diff",
                &root.join("chk-2"),
                &target,
                &"--entries",
                &"--json",
            ],
            0,
        ));
        for state in report["entries"].as_array().unwrap() {
            for field in ["added", "removed", "changed"] {
                assert_eq!(state[field], 0, "{state}");
            }
        }
        assert_eq!(report["files"]["shared"], 0);
    }
}

#[test]
fn paths_that_are_not_snapshots_fail_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "inspect".to_string(),
            dir.path().join("missing").display().to_string(),
        ],
        vec!["inspect".to_string(), dir.path().display().to_string()],
        vec!["verify".to_string(), dir.path().display().to_string()],
        vec![
            "gc".to_string(),
            dir.path().join("missing").display().to_string(),
        ],
    ] {
        let refs: Vec<&dyn AsRef<OsStr>> = args.iter().map(|a| a as &dyn AsRef<OsStr>).collect();
        let output = run(&refs, 2);
        let err = stderr(&output);
        assert!(err.starts_with("cairn: "), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(stdout(&output).is_empty());
    }
    let text = stderr(&run(&[&"inspect", &dir.path()], 2));
    assert!(text.contains("not a snapshot"), "{text}");
    std::fs::create_dir_all(dir.path().join("chk-3")).unwrap();
    let text = stderr(&run(&[&"inspect", &dir.path().join("chk-3")], 2));
    assert!(text.contains("without _metadata"), "{text}");
    // A storage root is not one snapshot.
    let text = stderr(&run(&[&"verify", &dir.path()], 2));
    assert!(text.contains("storage root"), "{text}");
    // Bad usage is exit 2 too (clap).
    run(&[&"dump", &dir.path()], 2);
}

#[test]
fn savepoints_of_both_formats_inspect_verify_dump_and_diff() {
    for (kind, format, expected) in [
        (
            Kind::Heap,
            SavepointFormat::Canonical,
            "canonical-savepoint",
        ),
        (
            Kind::RocksDb,
            SavepointFormat::Canonical,
            "canonical-savepoint",
        ),
        (Kind::RocksDb, SavepointFormat::Native, "native-savepoint"),
        // The heap backend's own format is the canonical stream.
        (Kind::Heap, SavepointFormat::Native, "canonical-savepoint"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        let job = Job::new(kind, &root, 1);
        for i in 0..30 {
            job.write_key(i);
        }
        job.checkpoint(1);
        let name = job.savepoint(format);
        let savepoint = root.join(&name);

        let report = json(&run(&[&"inspect", &savepoint, &"--count", &"--json"], 0));
        assert_eq!(report["kind"], expected, "{kind:?} {format:?}");
        assert_eq!(report["reused_bytes"], 0);
        assert_eq!(
            report["files_root"],
            savepoint.canonicalize().unwrap().display().to_string()
        );
        assert_eq!(report["operators"][0]["states"][0]["entries"], 30);
        let listing = json(&run(&[&"inspect", &root, &"--json"], 0));
        assert_eq!(listing["savepoints"][0]["dir"], name);
        assert_eq!(listing["savepoints"][0]["kind"], expected);

        let verified = json(&run(&[&"verify", &savepoint, &"--json"], 0));
        assert_eq!(verified["ok"], true);
        let one = json(&run(
            &[
                &"dump",
                &savepoint,
                &"--operator",
                &OPERATOR,
                &"--state",
                &"count",
                &"--key",
                &"key-7",
                &"--json",
            ],
            0,
        ));
        assert_eq!(one["entries"][0]["value"]["value"], "7");
        let diff = json(&run(
            &[
                &"diff",
                &root.join("chk-1"),
                &savepoint,
                &"--entries",
                &"--json",
            ],
            0,
        ));
        for state in diff["entries"].as_array().unwrap() {
            for field in ["added", "removed", "changed"] {
                assert_eq!(state[field], 0, "{kind:?} {format:?}: {state}");
            }
            assert_eq!(state["unchanged"], 30, "{state}");
        }

        // gc leaves savepoints alone.
        let before = tree(&savepoint);
        run(&[&"gc", &root], 0);
        assert_eq!(tree(&savepoint), before);
    }
}

/// The source operator beside the keyed one: three subtasks' operator state.
const SOURCE: &str = "source";

/// A source subtask `i` of three: offsets `[100 + 2i, 101 + 2i]` (list), partitions `[i]`
/// (union list), config `{batch: 64, linger: 5}` (broadcast).
fn source_state(i: u64) -> cairn::OperatorStateSnapshot {
    let s = cairn::OperatorStateStore::new();
    s.list_state::<u64>("offsets", BigEndian)
        .unwrap()
        .update(&[100 + 2 * i, 101 + 2 * i])
        .unwrap();
    s.union_list_state::<u64>("partitions", BigEndian)
        .unwrap()
        .update(&[i])
        .unwrap();
    let mut config = s
        .broadcast_state::<String, u64>("config", Utf8, BigEndian)
        .unwrap();
    config.put(&"batch".to_string(), &64).unwrap();
    config.put(&"linger".to_string(), &5).unwrap();
    s.snapshot()
}

/// What a restored source subtask reads: offsets, partitions, config.
type SourceShare = (Vec<u64>, Vec<u64>, Vec<(String, u64)>);

fn read_source(share: cairn::OperatorStateSnapshot) -> SourceShare {
    let s = cairn::OperatorStateStore::restore(share);
    let offsets = s.list_state::<u64>("offsets", BigEndian).unwrap().get();
    let partitions = s.union_list_state::<u64>("partitions", BigEndian).unwrap();
    let config = s.broadcast_state::<String, u64>("config", Utf8, BigEndian);
    (
        offsets.unwrap(),
        partitions.get().unwrap(),
        config.unwrap().entries().unwrap(),
    )
}

/// `two_checkpoints`' job, whose checkpoint 2 also holds a source's operator state (three
/// subtasks, no keyed state): checkpoint 2 of a RocksDB job reuses checkpoint 1's files.
fn checkpoint_with_a_source(kind: Kind) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("checkpoints");
    let job = Job::new(kind, &root, 2);
    for i in 0..40 {
        job.write_key(i);
    }
    job.checkpoint(1);
    for i in 0..10 {
        let key = format!("key-{i}");
        job.at(&key)
            .value_state(&count())
            .unwrap()
            .update(&key, &(i + 100))
            .unwrap();
    }
    for i in 40..50 {
        job.write_key(i);
    }
    job.at("key-39")
        .map_state(&by_hour())
        .unwrap()
        .remove(&"key-39".to_string(), &3)
        .unwrap();
    let mut pending = job.storage.begin(2).unwrap();
    for (i, s) in job.subtasks.iter().enumerate() {
        let handle = s
            .backend()
            .snapshot(pending.request())
            .unwrap()
            .run()
            .unwrap();
        pending
            .acknowledge(OPERATOR, PARALLELISM, job.max, i as u32, handle)
            .unwrap();
    }
    for i in 0..3u32 {
        pending
            .acknowledge_operator_state(SOURCE, 3, job.max, i, source_state(u64::from(i)))
            .unwrap();
    }
    job.storage.commit(pending).unwrap();
    (dir, root)
}

/// What key `key-<i>` holds in checkpoint 2: count, seen, by-hour, recent.
fn expected_in_checkpoint_2(i: u64) -> (u64, Vec<u32>, Vec<(u8, u64)>, u64) {
    let count = if i < 10 { i + 100 } else { i };
    let by_hour = if i == 39 {
        vec![]
    } else {
        vec![((i % 4) as u8, i * 10)]
    };
    (count, vec![i as u32], by_hour, i)
}

/// Restores the keyed operator of the savepoint in `dir` at its own parallelism (heap for
/// a canonical savepoint, RocksDB for a native one), and checks every key of checkpoint 2
/// on the subtask that owns it, and no other key anywhere.
fn check_converted_keyed_state(dir: &Path, parallelism: u32, canonical: bool) {
    let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(dir).unwrap());
    let snapshot = cairn::read_savepoint(store.as_ref()).unwrap();
    let op = snapshot.operator(OPERATOR).unwrap();
    let max = op.max_parallelism;
    assert_eq!(op.parallelism, parallelism);
    assert_eq!(op.subtasks.len(), parallelism as usize);
    let format = if canonical {
        cairn::SnapshotFormat::Canonical
    } else {
        cairn::SnapshotFormat::RocksDb
    };
    for handle in &op.subtasks {
        assert_eq!(handle.format, format);
        assert_eq!(handle.checkpoint_id, 2);
        for file in &handle.files {
            assert!(!file.is_shared(), "a savepoint is self-contained");
            assert!(dir.join(file.path.as_str()).is_file(), "{}", file.path);
        }
    }
    let scratch = tempfile::tempdir().unwrap();
    // The job's time: the TTL'd state was written now and has not expired.
    let clock = Arc::new(ManualClock::new(NOW));
    let stores: Vec<KeyedStateStore> = snapshot
        .restore_plan(OPERATOR, parallelism, max)
        .unwrap()
        .into_iter()
        .map(|plan| {
            assert_eq!(plan.handles.len(), 1, "each new subtask has its own handle");
            assert!(plan.is_same_range());
            if canonical {
                KeyedStateStore::new(
                    HeapBackend::restore(
                        max,
                        plan.key_groups,
                        clock.clone(),
                        store.as_ref(),
                        &plan.handles,
                    )
                    .unwrap(),
                )
            } else {
                KeyedStateStore::new(
                    RocksDbBackend::builder(
                        scratch.path().join(plan.subtask.to_string()),
                        max,
                        plan.key_groups,
                    )
                    .clock(clock.clone())
                    .restore_from(store.clone(), plan.handles)
                    .open()
                    .unwrap(),
                )
            }
        })
        .collect();
    for i in 0..50 {
        let key = format!("key-{i}");
        let owner = max
            .subtask_of(max.key_group_of(key.as_bytes()), parallelism)
            .unwrap();
        let s = &stores[owner as usize];
        let got = (
            s.value_state(&count()).unwrap().get(&key).unwrap(),
            s.list_state(&seen())
                .unwrap()
                .get(&key)
                .unwrap()
                .collect::<Vec<_>>(),
            s.map_state(&by_hour())
                .unwrap()
                .iter(&key)
                .unwrap()
                .map(|e| e.unwrap())
                .collect::<Vec<_>>(),
            s.value_state(&recent()).unwrap().get(&key).unwrap(),
        );
        let (count, seen, by_hour, recent) = expected_in_checkpoint_2(i);
        assert_eq!(
            got,
            (Some(count), seen, by_hour, Some(recent)),
            "{key} on subtask {owner} of {parallelism}"
        );
    }
    for (i, s) in stores.iter().enumerate() {
        let range = s.key_group_range();
        for key in s.value_state(&count()).unwrap().keys() {
            let key = key.unwrap();
            assert!(
                range.contains(max.key_group_of(key.as_bytes())),
                "subtask {i} ({range}) holds {key}"
            );
        }
    }
    let keys: usize = stores
        .iter()
        .map(|s| s.value_state(&recent()).unwrap().keys().count())
        .sum();
    assert_eq!(keys, 50, "every TTL'd entry carried over");
}

#[test]
fn convert_writes_savepoints_of_either_format_at_a_new_parallelism() {
    for kind in [Kind::RocksDb, Kind::Heap] {
        let (dir, root) = checkpoint_with_a_source(kind);
        let chk2 = root.join("chk-2");
        let before = tree(&root);
        let source_job = cairn::read_checkpoint(&LocalStore::new(&root).unwrap(), 2).unwrap();
        let max = source_job.operator(SOURCE).unwrap().max_parallelism;
        let config = vec![("batch".to_string(), 64), ("linger".to_string(), 5)];

        for (format, parallelism, expected_kind) in [
            ("canonical", 3, "canonical-savepoint"),
            ("native", 1, "native-savepoint"),
        ] {
            let out = dir.path().join(format!("converted-{format}"));
            let p = parallelism.to_string();
            let output = run(
                &[
                    &"convert",
                    &chk2,
                    &"--to",
                    &format,
                    &"--out",
                    &out,
                    &"--parallelism",
                    &p,
                    &"--json",
                ],
                0,
            );
            assert!(stderr(&output).is_empty(), "{}", stderr(&output));
            let report = json(&output);
            let savepoint = PathBuf::from(report["savepoint"].as_str().unwrap());
            assert_eq!(savepoint.parent().unwrap(), out.canonicalize().unwrap());
            let name = savepoint.file_name().unwrap().to_str().unwrap().to_string();
            assert!(name.starts_with("savepoint-2-"), "{name}");
            assert_eq!(report["id"], 2);
            assert_eq!(report["source_kind"], "checkpoint");
            assert_eq!(report["format"], format);
            assert_eq!(report["kind"], expected_kind, "{kind:?} -> {format}");
            let ops = report["operators"].as_array().unwrap();
            assert_eq!(ops.len(), 2, "{report}");
            for op in ops {
                assert_eq!(op["parallelism"], parallelism);
                let keyed = op["id"] == OPERATOR;
                assert_eq!(op["keyed_state"], keyed, "{op}");
                assert_eq!(op["operator_state"], !keyed, "{op}");
                assert_eq!(
                    op["source_parallelism"],
                    if keyed { PARALLELISM } else { 3 },
                    "{op}"
                );
            }

            // Every key, value and TTL stamp as the checkpoint held it, nothing else.
            check_converted_keyed_state(&savepoint, parallelism, format == "canonical");
            run(&[&"verify", &savepoint], 0);
            let diff = json(&run(
                &[&"diff", &chk2, &savepoint, &"--entries", &"--json"],
                0,
            ));
            let states = diff["entries"].as_array().unwrap();
            assert_eq!(states.len(), 4, "{diff}");
            for state in states {
                for field in ["added", "removed", "changed"] {
                    assert_eq!(state[field], 0, "{kind:?} -> {format}: {state}");
                }
            }
            assert_eq!(diff["files"]["shared"], 0);

            // The source's operator state restores, at any parallelism, as the checkpoint's.
            let converted = cairn::read_savepoint(&LocalStore::new(&savepoint).unwrap()).unwrap();
            let source = converted.operator(SOURCE).unwrap();
            assert!(source.subtasks.is_empty(), "no keyed state");
            assert_eq!(source.operator_state.len(), parallelism as usize);
            for p in 1..=5 {
                let shares = |job: &JobSnapshot| -> Vec<SourceShare> {
                    job.restore_plan(SOURCE, p, max)
                        .unwrap()
                        .into_iter()
                        .map(|plan| read_source(plan.operator_state))
                        .collect()
                };
                assert_eq!(
                    shares(&converted),
                    shares(&source_job),
                    "{format} at {parallelism}, restored at {p}"
                );
            }
            let restored: Vec<SourceShare> = converted
                .restore_plan(SOURCE, parallelism, max)
                .unwrap()
                .into_iter()
                .map(|plan| read_source(plan.operator_state))
                .collect();
            let expected: Vec<SourceShare> = match parallelism {
                // Offsets 100..106 dealt round-robin; each has the whole union and config.
                3 => vec![
                    (vec![100, 103], vec![0, 1, 2], config.clone()),
                    (vec![101, 104], vec![0, 1, 2], config.clone()),
                    (vec![102, 105], vec![0, 1, 2], config.clone()),
                ],
                _ => vec![((100..106).collect(), vec![0, 1, 2], config.clone())],
            };
            assert_eq!(restored, expected, "{kind:?} -> {format} at {parallelism}");

            // Converting again, savepoint to savepoint, at the operators' own parallelism.
            let again = dir.path().join(format!("again-{format}"));
            let text = stdout(&run(
                &[
                    &"convert",
                    &savepoint,
                    &"--to",
                    &"canonical",
                    &"--out",
                    &again,
                ],
                0,
            ));
            let written = PathBuf::from(text.lines().next().unwrap());
            assert!(written.starts_with(again.canonicalize().unwrap()), "{text}");
            assert!(text.contains(&format!("from {expected_kind} 2")), "{text}");
            check_converted_keyed_state(&written, parallelism, true);
        }
        assert_eq!(tree(&root), before, "the input is only read");
    }
}

#[test]
fn convert_refuses_a_parallelism_out_of_range_and_leaves_nothing() {
    let (dir, root) = checkpoint_with_a_source(Kind::RocksDb);
    let out = dir.path().join("out");
    let err = stderr(&run(
        &[
            &"convert",
            &root.join("chk-2"),
            &"--to",
            &"native",
            &"--out",
            &out,
            &"--parallelism",
            &"17",
        ],
        2,
    ));
    assert!(
        err.starts_with("cairn: ") && err.contains("max parallelism"),
        "{err}"
    );
    assert!(!out.exists());
    for args in [
        vec!["--to", "canonical", "--parallelism", "0"],
        vec!["--to", "sideways"],
        vec!["--parallelism", "2"],
    ] {
        let mut all: Vec<&dyn AsRef<OsStr>> = vec![&"convert", &root, &"--out", &out];
        all.extend(args.iter().map(|a| a as &dyn AsRef<OsStr>));
        run(&all, 2);
    }
    // A storage root is not one snapshot.
    let err = stderr(&run(
        &[&"convert", &root, &"--to", &"canonical", &"--out", &out],
        2,
    ));
    assert!(err.contains("storage root"), "{err}");
    assert!(!out.join("savepoint-2").exists());
    // A missing file of the input fails the conversion, and no savepoint is left behind.
    let (shared, _) = files_of(&root, 2);
    std::fs::remove_file(&shared[0]).unwrap();
    run(
        &[
            &"convert",
            &root.join("chk-2"),
            &"--to",
            &"canonical",
            &"--out",
            &out,
        ],
        2,
    );
    assert!(tree(&out).is_empty(), "{:?}", tree(&out));
}

#[test]
fn inspect_lists_operator_state_per_subtask() {
    let (_dir, root) = checkpoint_with_a_source(Kind::Heap);
    let chk = root.join("chk-2");
    let report = json(&run(&[&"inspect", &chk, &"--json"], 0));
    let source = report["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == SOURCE)
        .unwrap();
    let states = source["operator_state"].as_array().unwrap();
    let by_name = |name: &str| states.iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(by_name("offsets")["kind"], "list");
    assert_eq!(
        by_name("offsets")["items_per_subtask"],
        serde_json::json!([2, 2, 2])
    );
    assert_eq!(by_name("partitions")["kind"], "union-list");
    assert_eq!(by_name("config")["kind"], "broadcast");
    assert_eq!(by_name("config")["key_codec"], "utf8 v1");
    assert_eq!(
        by_name("config")["items_per_subtask"],
        serde_json::json!([2, 2, 2])
    );
    let text = stdout(&run(&[&"inspect", &chk], 0));
    assert!(
        text.contains(
            "operator state offsets (list, element u64-be v1): [2, 2, 2] items per subtask"
        ),
        "{text}"
    );
}

/// The golden snapshots of format version 2 hold timer services (tests/golden.rs).
fn golden_v2(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}-v2"))
}

#[test]
fn timers_are_inspected_verified_and_dumped() {
    for (name, snapshot) in [
        ("checkpoint", golden_v2("checkpoint").join("chk-1")),
        ("canonical-savepoint", golden_v2("canonical-savepoint")),
        ("native-savepoint", golden_v2("native-savepoint")),
    ] {
        let inspected = json(&run(&[&"inspect", &snapshot, &"--count", &"--json"], 0));
        assert_eq!(inspected["metadata_version"], 2, "{name}");
        for operator in inspected["operators"].as_array().unwrap() {
            if operator["id"] == "source" {
                continue;
            }
            let timers: Vec<&Value> = operator["states"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["kind"] == "timers")
                .collect();
            let summary: Vec<(String, u64)> = timers
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap().to_string(),
                        s["entries"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                summary,
                [
                    ("_cairn_timers/window-end/event".to_string(), 40),
                    ("_cairn_timers/window-end/processing".to_string(), 8)
                ],
                "{name}: {}",
                operator["id"]
            );
        }
        run(&[&"verify", &snapshot], 0);
        for operator in ["counts-rocksdb", "counts-heap"] {
            let dumped = json(&run(
                &[
                    &"dump",
                    &snapshot,
                    &"--operator",
                    &operator,
                    &"--state",
                    &"_cairn_timers/window-end/event",
                    &"--json",
                ],
                0,
            ));
            assert_eq!(dumped["count"], 40, "{name} {operator}");
            let word_5 = json(&run(
                &[
                    &"dump",
                    &snapshot,
                    &"--operator",
                    &operator,
                    &"--state",
                    &"_cairn_timers/window-end/event",
                    &"--key",
                    &"word-5",
                    &"--json",
                ],
                0,
            ));
            let entries = word_5["entries"].as_array().unwrap();
            assert_eq!(entries.len(), 1, "{name} {operator}");
            assert_eq!(entries[0]["key"], "word-5");
            assert_eq!(entries[0]["timestamp"], 1_005);
            assert_eq!(entries[0]["namespace_hex"], "01");
            let table = stdout(&run(
                &[
                    &"dump",
                    &snapshot,
                    &"--operator",
                    &operator,
                    &"--state",
                    &"_cairn_timers/window-end/event",
                    &"--key",
                    &"word-5",
                ],
                0,
            ));
            assert!(
                table.contains("TIMESTAMP") && table.contains("1005"),
                "{table}"
            );
        }
    }
}
