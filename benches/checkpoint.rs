//! The checkpoint benchmark: incremental checkpoints and restores of cairn's RocksDB backend,
//! per state size, printed as tables of medians and ratios.
//!
//! **The job.** One operator at parallelism 2 (max parallelism 128): two [`RocksDbBackend`]
//! subtasks, each with its own default memory budget, each key written through
//! [`KeyedStateStore`] to the subtask that owns its key group (`max.key_group_of`). The state
//! is the keyed-state workload of `benches/compare.rs`: per `u64` key one value, a list of one
//! element and [`MAP_ENTRIES`] map entries. A state size of `CAIRN_BENCH_SIZES`
//! (`10MB,100MB,1GB` by default; decimal units, `KiB`/`MiB`/`GiB` accepted) becomes a key
//! count through [`BYTES_PER_KEY`], measured on this workload; the tables print the size the
//! checkpoint actually had.
//!
//! **What is measured, per size.**
//! 1. The load (not a claim, only reported).
//! 2. The first checkpoint: the *synchronous phase*, i.e. the `KeyedStateBackend::snapshot`
//!    call of each subtask (one after the other; the slower one is reported, as in a job they
//!    run at the same time on their own threads), which for RocksDB flushes the memtables and
//!    hard-links the SST files; the *asynchronous phase*, i.e. both subtasks'
//!    `PendingSnapshot::spawn().wait()` running at once (wall time), which copies the files
//!    into the checkpoint storage (a [`LocalStore`] in a directory on the same disk); and its
//!    bytes. It is committed through [`CheckpointStorage`] (retention 1) and every backend is
//!    told with `notify_checkpoint_complete`.
//! 3. `CAIRN_BENCH_ROUNDS` rounds (3) of: update a pseudo-random 1% of the keys (a value update
//!    and one map put each; another 1% every round), take an incremental checkpoint (sync,
//!    async, bytes written by it and their share of its total), then `cp -r` the checkpoint
//!    storage directory to a fresh directory, restore the job at parallelism 2 (2 → 2) and at
//!    parallelism 3 (2 → 3), and `cp -r` again. A restore is the time of
//!    `RocksDbBackend::builder(..).restore_from(store, plan.handles).open()` of every
//!    subtask, one after the other, summed. With retention 1 the storage directory holds
//!    exactly the latest checkpoint (its files and its `_metadata`, which the benchmark
//!    checks), so `cp -r` copies the same bytes a same-parallelism restore reads. Nothing is
//!    dropped from the page cache, for either.
//! 4. Every restored job is checked on 1,000 keys (half of them updated in the last round)
//!    and a few keys that were never loaded, against the expected values (the workload is
//!    deterministic), so a fast restore of the wrong state fails the run.
//!
//! **How to read the tables.** Medians over the rounds. `written %` is an incremental
//! checkpoint's own bytes over its total (target ≤ 0.5%; Flink wrote 0.27%): for the 2nd
//! checkpoint (round 1, the one Flink's figure compares to), and the median over the rounds,
//! which also pays for the SST files compactions rewrote in between. `÷ cp` is a
//! restore's median over the median `cp -r` of the same bytes in the same run (target
//! ≤ 1.5×); a 2 → 3 restore reads every handle that overlaps a new subtask, so it reads more
//! bytes than one copy of the checkpoint (`2→3 reads` column), and it also rewrites the entries of
//! the key groups that change hands into new SST files. The sync phases should stay flat as
//! the state grows: they cost the memtables' size, bounded by the write buffers, not the
//! state's. The Flink figures come from Flink 2.3 with 1M keys of this workload (a 251 MB
//! checkpoint), measured elsewhere, not in this run: compare ratios, not
//! milliseconds, and mind the sizes. Progress goes to stderr, the tables to stdout.
//!
//! Everything lives in a temporary directory under `CAIRN_BENCH_DIR` (the system's temporary
//! directory by default), deleted at the end: about 4× the largest state at once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cairn::{
    BigEndian, CheckpointStorage, JobSnapshot, KeyedStateStore, ListState, LocalStore, MapState,
    MapStateDescriptor, MaxParallelism, Retention, RocksDbBackend, SnapshotStore, StateDescriptor,
    ValueState,
};

#[expect(
    dead_code,
    reason = "only the workload's constants and helpers are used, not the ratio harness"
)]
#[path = "compare.rs"]
mod compare;

use compare::{env_or, median, SplitMix64, MAP_ENTRIES};

/// Checkpoint bytes per key of the workload, measured with this benchmark: the first
/// checkpoint of 5.6M keys was 471 MB (84 bytes/key), most of it compacted to the bottom level
/// (Zstd). Right after the load a small state is still in L0 files (LZ4) and checkpoints at up
/// to 145 bytes/key, so the 10MB and 100MB states come out bigger than asked until compaction
/// catches up; the tables print the real sizes. (Flink's checkpoint of 1M keys was 251 MB.)
const BYTES_PER_KEY: u64 = 84;

/// The operator's id in the checkpoints.
const OPERATOR: &str = "keyed-state";

/// The job's parallelism, and the one it is rescaled to.
const PARALLELISM: u32 = 2;
const RESCALED: u32 = 3;

/// Keys read back from every restored job.
const CHECKED_KEYS: u64 = 1_000;

/// Flink 2.3's figures with 1M keys of this workload, measured elsewhere, not in this run.
mod flink {
    /// Bytes of the checkpoint of 1M keys.
    pub const CHECKPOINT_BYTES: f64 = 251e6;
    /// The synchronous phase of the first checkpoint, right after the load, in ms.
    pub const FIRST_SYNC_MS: f64 = 1_453.0;
    /// The synchronous phase after updating 1% of the keys, in ms.
    pub const INCREMENTAL_SYNC_MS: f64 = 26.0;
    /// Bytes written by that incremental checkpoint, in % of the full checkpoint.
    pub const WRITTEN_PERCENT: f64 = 0.27;
    /// Restore of the whole 251 MB checkpoint, in ms.
    pub const RESTORE_MS: f64 = 213.0;
    /// Restore of half of it, in ms.
    pub const HALF_RESTORE_MS: f64 = 179.0;
}

/// Prints a progress line to stderr, with the time since the benchmark started.
fn progress(message: impl std::fmt::Display) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("[{:>7.1} s] {message}", start.elapsed().as_secs_f64());
}

/// A state size asked for: its label as given and its bytes.
#[derive(Debug, Clone)]
struct Size {
    label: String,
    bytes: u64,
}

impl Size {
    /// `10MB`, `1GB`, `512MiB`, ... (decimal `KB`/`MB`/`GB`, binary `KiB`/`MiB`/`GiB`).
    fn parse(text: &str) -> Self {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .unwrap_or_else(|e| panic!("size {text:?}: {e}; write e.g. 10MB, 1GB"));
        let unit_bytes: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            other => panic!("size {text:?}: unknown unit {other:?}; write e.g. 10MB, 1GB"),
        };
        Size {
            label: text.to_string(),
            bytes: number * unit_bytes,
        }
    }

    /// The number of keys whose checkpoint has about this size.
    fn keys(&self) -> u64 {
        (self.bytes / BYTES_PER_KEY).max(CHECKED_KEYS)
    }
}

/// The sizes of `CAIRN_BENCH_SIZES`.
fn sizes() -> Vec<Size> {
    let text = std::env::var("CAIRN_BENCH_SIZES").unwrap_or_else(|_| "10MB,100MB,1GB".into());
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Size::parse)
        .collect()
}

/// The change round `round` makes to `key`, if any: a pseudo-random 1% of the keys per
/// round, each getting a new value and one map entry (the user key returned) put.
fn update_of(key: u64, round: u64) -> Option<u64> {
    let hash = SplitMix64::new(key ^ (round << 56)).next_u64();
    hash.is_multiple_of(100)
        .then_some((hash >> 32) % MAP_ENTRIES)
}

/// The value an update of `key` in `round` writes (to the value and to one map entry).
fn updated(key: u64, round: u64) -> u64 {
    key ^ (round << 48)
}

/// What `key` holds after the load and the updates of rounds `1..=rounds`: its value and its
/// map (its list is always `[key]`).
fn expected(key: u64, rounds: u64) -> (u64, Vec<(u64, u64)>) {
    let mut value = key;
    let mut map: Vec<(u64, u64)> = (0..MAP_ENTRIES).map(|uk| (uk, key ^ uk)).collect();
    for round in 1..=rounds {
        if let Some(user_key) = update_of(key, round) {
            value = updated(key, round);
            map[user_key as usize].1 = updated(key, round);
        }
    }
    (value, map)
}

/// The keys a restore is checked on: half of them updated in round `rounds`, half uniformly
/// random, all below `keys`.
fn sample_keys(keys: u64, rounds: u64) -> Vec<u64> {
    let mut rng = SplitMix64::new(rounds ^ 0x5EED);
    let half = CHECKED_KEYS / 2;
    let mut sample: Vec<u64> = (0..half).map(|_| rng.below(keys)).collect();
    let start = rng.below(keys);
    sample.extend(
        (0..keys)
            .map(|i| (start + i) % keys)
            .filter(|&key| rounds == 0 || update_of(key, rounds).is_some())
            .take(half as usize),
    );
    sample
}

/// One subtask: its store and the typed states of the workload.
struct Subtask {
    store: KeyedStateStore,
    value: ValueState<u64, u64>,
    list: ListState<u64, u64>,
    map: MapState<u64, u64, u64>,
}

impl Subtask {
    fn on(store: KeyedStateStore) -> Self {
        Subtask {
            value: store
                .value_state(&StateDescriptor::new("value", BigEndian, BigEndian))
                .expect("register the value state"),
            list: store
                .list_state(&StateDescriptor::new("list", BigEndian, BigEndian))
                .expect("register the list state"),
            map: store
                .map_state(&MapStateDescriptor::new(
                    "map", BigEndian, BigEndian, BigEndian,
                ))
                .expect("register the map state"),
            store,
        }
    }

    /// Loads `key` as `benches/compare.rs` does: value `key`, list `[key]`, map
    /// `user key -> key ^ user key`.
    fn load(&mut self, key: u64) {
        self.value.update(&key, &key).expect("load a value");
        self.list.update(&key, &[key]).expect("load a list");
        for user_key in 0..MAP_ENTRIES {
            self.map
                .put(&key, &user_key, &(key ^ user_key))
                .expect("load a map entry");
        }
    }

    /// Panics unless `key` holds what it should after `rounds` rounds of updates.
    fn check(&mut self, key: u64, rounds: u64, what: &str) {
        let (value, map) = expected(key, rounds);
        let got_value = self.value.get(&key).expect("read a restored value");
        let got_list: Vec<u64> = self.list.get(&key).expect("read a restored list").collect();
        let got_map: Vec<(u64, u64)> = self
            .map
            .iter(&key)
            .expect("read a restored map")
            .collect::<cairn::Result<_>>()
            .expect("read a restored map entry");
        assert_eq!(
            (got_value, got_list, got_map),
            (Some(value), vec![key], map),
            "{what}: key {key} does not hold what the checkpoint after round {rounds} held"
        );
    }

    /// Panics unless `key` holds nothing.
    fn check_absent(&mut self, key: u64, what: &str) {
        let value = self.value.get(&key).expect("read a restored value");
        let list = self.list.get(&key).expect("read a restored list").len();
        let map = self.map.iter(&key).expect("read a restored map").count();
        assert_eq!(
            (value, list, map),
            (None, 0, 0),
            "{what}: key {key} was never loaded but is there"
        );
    }
}

/// A checkpoint taken by a job, with its timings.
struct Taken {
    snapshot: Arc<JobSnapshot>,
    /// The slowest subtask's synchronous phase.
    sync: Duration,
    /// Both subtasks' asynchronous phases, running at once.
    async_phase: Duration,
}

impl Taken {
    fn total_bytes(&self) -> u64 {
        self.snapshot.files().map(|f| f.size).sum()
    }

    /// The bytes of the files private to this checkpoint (MANIFEST, CURRENT), which every
    /// checkpoint writes whatever changed.
    fn private_bytes(&self) -> u64 {
        self.snapshot
            .files()
            .filter(|f| !f.is_shared())
            .map(|f| f.size)
            .sum()
    }

    fn written_bytes(&self) -> u64 {
        self.snapshot
            .operators
            .iter()
            .flat_map(|o| &o.subtasks)
            .map(|h| h.written_bytes())
            .sum()
    }
}

/// One operator's subtasks, and the directory their DBs live in.
struct Job {
    max: MaxParallelism,
    subtasks: Vec<Subtask>,
    dir: PathBuf,
}

impl Job {
    /// A new, empty job at [`PARALLELISM`] in `dir`.
    fn open(dir: &Path) -> Self {
        let max = MaxParallelism::DEFAULT;
        let subtasks = (0..PARALLELISM)
            .map(|i| {
                let range = max.subtask_range(i, PARALLELISM).expect("a subtask range");
                let backend = RocksDbBackend::builder(dir.join(format!("subtask-{i}")), max, range)
                    .open()
                    .expect("open a subtask's RocksDB backend");
                Subtask::on(KeyedStateStore::new(backend))
            })
            .collect();
        Job {
            max,
            subtasks,
            dir: dir.to_path_buf(),
        }
    }

    /// Restores the job from `snapshot` at `parallelism` into `dir`, one subtask after the
    /// other; returns it and the time each subtask's restore took.
    fn restore(
        dir: &Path,
        store: &Arc<dyn SnapshotStore>,
        snapshot: &JobSnapshot,
        parallelism: u32,
    ) -> (Self, Vec<Duration>) {
        let max = MaxParallelism::DEFAULT;
        let plans = snapshot
            .restore_plan(OPERATOR, parallelism, max)
            .expect("plan the restore");
        let mut elapsed = Vec::new();
        let mut subtasks = Vec::new();
        for plan in plans {
            let subtask_dir = dir.join(format!("subtask-{}", plan.subtask));
            let started = Instant::now();
            let backend = RocksDbBackend::builder(subtask_dir, max, plan.key_groups)
                .restore_from(store.clone(), plan.handles)
                .open()
                .expect("restore a subtask");
            elapsed.push(started.elapsed());
            subtasks.push(Subtask::on(KeyedStateStore::new(backend)));
        }
        let job = Job {
            max,
            subtasks,
            dir: dir.to_path_buf(),
        };
        (job, elapsed)
    }

    fn subtask(&mut self, key: u64) -> &mut Subtask {
        let key_group = self.max.key_group_of(&key.to_be_bytes());
        let index = self
            .max
            .subtask_of(key_group, self.subtasks.len() as u32)
            .expect("a key's subtask");
        &mut self.subtasks[index as usize]
    }

    /// Loads keys `0..keys`, reporting progress; returns how long it took.
    fn load(&mut self, keys: u64) -> Duration {
        let started = Instant::now();
        let step = (keys / 10).max(1);
        for key in 0..keys {
            self.subtask(key).load(key);
            if (key + 1).is_multiple_of(step) {
                progress(format_args!(
                    "  loaded {}/{keys} keys ({:.0} keys/s)",
                    key + 1,
                    (key + 1) as f64 / started.elapsed().as_secs_f64()
                ));
            }
        }
        started.elapsed()
    }

    /// Applies round `round`'s updates to keys `0..keys`; returns how many keys changed.
    fn update(&mut self, keys: u64, round: u64) -> u64 {
        let mut changed = 0;
        for key in 0..keys {
            let Some(user_key) = update_of(key, round) else {
                continue;
            };
            let value = updated(key, round);
            let subtask = self.subtask(key);
            subtask.value.update(&key, &value).expect("update a value");
            subtask
                .map
                .put(&key, &user_key, &value)
                .expect("update a map entry");
            changed += 1;
        }
        changed
    }

    /// Takes checkpoint `id` of every subtask: the synchronous phases one after the other,
    /// then the asynchronous ones at once; commits it and tells the backends.
    fn checkpoint(&self, storage: &CheckpointStorage, id: u64) -> Taken {
        let mut pending = storage.begin(id).expect("begin a checkpoint");
        let mut sync = Duration::ZERO;
        let mut snapshots = Vec::new();
        for subtask in &self.subtasks {
            let started = Instant::now();
            let snapshot = subtask
                .store
                .backend()
                .snapshot(pending.request())
                .expect("the synchronous phase of a snapshot");
            sync = sync.max(started.elapsed());
            snapshots.push(snapshot);
        }
        let started = Instant::now();
        let tasks: Vec<_> = snapshots
            .into_iter()
            .map(|s| s.spawn().expect("start an asynchronous phase"))
            .collect();
        let handles: Vec<_> = tasks
            .into_iter()
            .map(|t| t.wait().expect("the asynchronous phase of a snapshot"))
            .collect();
        let async_phase = started.elapsed();
        let parallelism = self.subtasks.len() as u32;
        for (index, handle) in handles.into_iter().enumerate() {
            pending
                .acknowledge(OPERATOR, parallelism, self.max, index as u32, handle)
                .expect("acknowledge a subtask's snapshot");
        }
        let snapshot = storage.commit(pending).expect("commit a checkpoint");
        for subtask in &self.subtasks {
            subtask.store.backend().notify_checkpoint_complete(id);
        }
        Taken {
            snapshot,
            sync,
            async_phase,
        }
    }

    /// Panics unless the job holds the state after `rounds` rounds of updates of `keys` keys,
    /// checked on [`sample_keys`] and on a few keys never loaded.
    fn check(&mut self, keys: u64, rounds: u64, what: &str) {
        for key in sample_keys(keys, rounds) {
            self.subtask(key).check(key, rounds, what);
        }
        for key in keys..keys + 10 {
            self.subtask(key).check_absent(key, what);
        }
    }

    /// Closes every subtask and deletes the job's directory.
    fn discard(self) {
        for subtask in &self.subtasks {
            subtask.store.close().expect("close a subtask");
        }
        drop(self.subtasks);
        std::fs::remove_dir_all(&self.dir).expect("delete a job's directory");
    }
}

/// Panics unless `store` holds exactly the files of `snapshot` and its `_metadata`: then a
/// copy of the storage directory copies the bytes a restore of it reads.
fn check_holds_only(store: &dyn SnapshotStore, snapshot: &JobSnapshot) {
    let stored: BTreeSet<String> = store
        .list(None)
        .expect("list the checkpoint storage")
        .iter()
        .map(|p| p.to_string())
        .collect();
    let mut referenced: BTreeSet<String> = snapshot.files().map(|f| f.path.to_string()).collect();
    referenced.insert(format!(
        "chk-{}/{}",
        snapshot.checkpoint_id,
        cairn::METADATA_FILE
    ));
    assert_eq!(
        stored, referenced,
        "with retention 1 the checkpoint storage should hold only checkpoint {}",
        snapshot.checkpoint_id
    );
}

/// Copies `from` to the new directory `to` with `cp -r`; returns how long it took, and
/// deletes the copy.
fn cp_r(from: &Path, to: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp -r");
    let elapsed = started.elapsed();
    assert!(
        status.success(),
        "cp -r {} {}: {status}",
        from.display(),
        to.display()
    );
    std::fs::remove_dir_all(to).expect("delete the copy");
    elapsed
}

/// The bytes a restore at `parallelism` reads: every handle of every new subtask's plan.
fn restore_read_bytes(snapshot: &JobSnapshot, parallelism: u32) -> u64 {
    snapshot
        .restore_plan(OPERATOR, parallelism, MaxParallelism::DEFAULT)
        .expect("plan the restore")
        .iter()
        .flat_map(|plan| &plan.handles)
        .map(|h| h.total_bytes())
        .sum()
}

/// What one state size measured; times in ms, one entry per round for the incremental parts.
struct Measured {
    size: Size,
    keys: u64,
    load: Duration,
    first_sync: f64,
    first_async: f64,
    first_bytes: u64,
    sync: Vec<f64>,
    async_phase: Vec<f64>,
    total: Vec<f64>,
    written: Vec<f64>,
    written_percent: Vec<f64>,
    private: Vec<f64>,
    cp: Vec<f64>,
    same: Vec<f64>,
    rescaled: Vec<f64>,
    rescaled_read: u64,
    elapsed: Duration,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// One round for the job in `dir`: 1% updates, an incremental checkpoint, `cp -r` of the
/// checkpoint storage, restores at the same and at the rescaled parallelism, checked, and
/// `cp -r` again; adds what it measured to `measured`.
fn run_round(
    job: &mut Job,
    storage: &CheckpointStorage,
    dir: &Path,
    round: u64,
    measured: &mut Measured,
) {
    let label = &measured.size.label;
    let changed = job.update(measured.keys, round);
    let taken = job.checkpoint(storage, round + 1);
    let (total, written, private) = (
        taken.total_bytes(),
        taken.written_bytes(),
        taken.private_bytes(),
    );
    let percent = 100.0 * written as f64 / total as f64;
    progress(format_args!(
        "{label} round {round}: updated {changed} keys; checkpoint {}: sync {:.0} ms, async {:.0} ms, \
         wrote {:.2} MB of {:.1} MB ({percent:.2}%; {:.0} KB of it MANIFEST/CURRENT)",
        round + 1,
        ms(taken.sync),
        ms(taken.async_phase),
        written as f64 / 1e6,
        total as f64 / 1e6,
        private as f64 / 1e3,
    ));
    measured.sync.push(ms(taken.sync));
    measured.async_phase.push(ms(taken.async_phase));
    measured.total.push(total as f64);
    measured.written.push(written as f64);
    measured.written_percent.push(percent);
    measured.private.push(private as f64);

    let store = storage.store();
    check_holds_only(store.as_ref(), &taken.snapshot);
    measured.rescaled_read = restore_read_bytes(&taken.snapshot, RESCALED);
    let storage_dir = dir.join("checkpoints");
    let before = cp_r(&storage_dir, &dir.join(format!("cp-{round}-before")));
    for parallelism in [PARALLELISM, RESCALED] {
        let restore_dir = dir.join(format!("restore-{round}-{parallelism}"));
        let (mut restored, subtasks) =
            Job::restore(&restore_dir, store, &taken.snapshot, parallelism);
        let what = format!("{label} round {round}, restore 2 -> {parallelism}");
        restored.check(measured.keys, round, &what);
        restored.discard();
        let elapsed: Duration = subtasks.iter().sum();
        let each: Vec<String> = subtasks.iter().map(|d| format!("{:.0}", ms(*d))).collect();
        progress(format_args!(
            "{what}: {:.0} ms (subtasks {} ms), checked",
            ms(elapsed),
            each.join(" + ")
        ));
        if parallelism == PARALLELISM {
            measured.same.push(ms(elapsed));
        } else {
            measured.rescaled.push(ms(elapsed));
        }
    }
    let after = cp_r(&storage_dir, &dir.join(format!("cp-{round}-after")));
    progress(format_args!(
        "{label} round {round}: cp -r {:.0} ms before, {:.0} ms after",
        ms(before),
        ms(after)
    ));
    measured.cp.extend([ms(before), ms(after)]);
}

/// Runs everything for one state size in a new directory under `root`.
fn measure(size: &Size, rounds: u64, root: &Path) -> Measured {
    let started = Instant::now();
    let dir = root.join(&size.label);
    let keys = size.keys();
    progress(format_args!(
        "{}: loading {keys} keys into 2 subtasks",
        size.label
    ));
    let mut job = Job::open(&dir.join("job"));
    let load = job.load(keys);

    // Retention 1: after each commit the storage directory holds exactly one checkpoint.
    let local: Arc<dyn SnapshotStore> =
        Arc::new(LocalStore::new(dir.join("checkpoints")).expect("create the checkpoint storage"));
    let storage =
        CheckpointStorage::open(local, Retention::default()).expect("open the checkpoint storage");
    let first = job.checkpoint(&storage, 1);
    let mut measured = Measured {
        size: size.clone(),
        keys,
        load,
        first_sync: ms(first.sync),
        first_async: ms(first.async_phase),
        first_bytes: first.total_bytes(),
        sync: Vec::new(),
        async_phase: Vec::new(),
        total: Vec::new(),
        written: Vec::new(),
        written_percent: Vec::new(),
        private: Vec::new(),
        cp: Vec::new(),
        same: Vec::new(),
        rescaled: Vec::new(),
        rescaled_read: 0,
        elapsed: Duration::ZERO,
    };
    progress(format_args!(
        "{}: first checkpoint {:.1} MB ({:.0} bytes/key): sync {:.0} ms, async {:.0} ms",
        size.label,
        first.total_bytes() as f64 / 1e6,
        first.total_bytes() as f64 / keys as f64,
        measured.first_sync,
        measured.first_async
    ));

    for round in 1..=rounds {
        run_round(&mut job, &storage, &dir, round, &mut measured);
    }
    job.discard();
    drop(storage);
    std::fs::remove_dir_all(&dir).expect("delete the size's directory");
    measured.elapsed = started.elapsed();
    progress(format_args!(
        "{}: done in {:.1} s",
        size.label,
        measured.elapsed.as_secs_f64()
    ));
    measured
}

/// The median of `values`, leaving them in place.
fn med(values: &[f64]) -> f64 {
    median(&mut values.to_vec())
}

/// `12.3 MB`.
fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

/// `met` if `value` is at most `target`, `MISSED` otherwise.
fn verdict(value: f64, target: f64) -> &'static str {
    if value <= target {
        "met"
    } else {
        "MISSED"
    }
}

fn print_checkpoints(results: &[Measured]) {
    println!();
    println!("Checkpoints (sync = the slower subtask's synchronous phase, async = both asynchronous phases at once)");
    println!("| state  |      keys | 1st checkpoint | bytes/key | load s | 1st sync ms | 1st async ms | incr sync ms | incr async ms | incr written | written % 2nd | written % median [min-max] | ≤ 0.5% (2nd/median) |");
    println!("|--------|----------:|---------------:|----------:|-------:|------------:|-------------:|-------------:|--------------:|-------------:|--------------:|---------------------------:|--------------------:|");
    for m in results {
        let second = m.written_percent.first().copied().unwrap_or(0.0);
        let percent = med(&m.written_percent);
        let (low, high) = min_max(&m.written_percent);
        println!(
            "| {:<6} | {:>9} | {:>14} | {:>9.0} | {:>6.1} | {:>11.0} | {:>12.0} | {:>12.1} | {:>13.0} | {:>12} | {:>12.3}% | {:>26} | {:>19} |",
            m.size.label,
            m.keys,
            mb(m.first_bytes as f64),
            m.first_bytes as f64 / m.keys as f64,
            m.load.as_secs_f64(),
            m.first_sync,
            m.first_async,
            med(&m.sync),
            med(&m.async_phase),
            mb(med(&m.written)),
            second,
            format!("{percent:.3}% [{low:.2}-{high:.2}]"),
            format!("{}/{}", verdict(second, 0.5), verdict(percent, 0.5))
        );
    }
    println!("incr = the incremental checkpoints after each round's 1% updates, medians over the rounds. The 2nd");
    println!("checkpoint (round 1, right after the first) is the one Flink's 0.27% compares to. Later rounds also");
    println!("upload every SST file RocksDB's compactions rewrote since the last checkpoint (the load's backlog,");
    println!("then L0 -> L1 compactions of the update flushes), which an incremental checkpoint cannot avoid.");
}

/// The smallest and largest of `values`.
fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
            (low.min(*v), high.max(*v))
        })
}

fn print_restores(results: &[Measured]) {
    println!();
    println!("Restores from the latest incremental checkpoint (medians over the rounds; subtasks one after the other, summed)");
    println!("| state  | checkpoint | cp -r ms | restore 2→2 ms |   ÷ cp | restore 2→3 ms | 2→3 reads |   ÷ cp | ≤ 1.5× (2→2/2→3) |");
    println!("|--------|-----------:|---------:|---------------:|-------:|---------------:|----------:|-------:|-----------------:|");
    for m in results {
        let cp = med(&m.cp);
        let (same, rescaled) = (med(&m.same), med(&m.rescaled));
        let verdicts = format!(
            "{}/{}",
            verdict(same / cp, 1.5),
            verdict(rescaled / cp, 1.5)
        );
        println!(
            "| {:<6} | {:>10} | {:>8.0} | {:>14.0} | {:>5.2}x | {:>14.0} | {:>9} | {:>5.2}x | {:>16} |",
            m.size.label,
            mb(med(&m.total)),
            cp,
            same,
            same / cp,
            rescaled,
            mb(m.rescaled_read as f64),
            rescaled / cp,
            verdicts
        );
    }
    println!("cp -r copies the whole checkpoint storage directory, which holds exactly the restored checkpoint");
    println!("(its files and its _metadata; checked every round), to a new directory on the same disk, once");
    println!("right before and once right after the restores of each round. Restores check every file's CRC32.");
}

fn print_growth(results: &[Measured]) {
    let Some(first) = results.first() else {
        return;
    };
    let base_first = first.first_sync;
    let base_incr = med(&first.sync);
    println!();
    println!("Synchronous phase as the state grows (target: flat)");
    println!(
        "| state  | checkpoint | 1st sync ms | × {:<6} | incr sync ms | × {:<6} |",
        first.size.label, first.size.label
    );
    println!("|--------|-----------:|------------:|---------:|-------------:|---------:|");
    for m in results {
        let incr = med(&m.sync);
        println!(
            "| {:<6} | {:>10} | {:>11.0} | {:>7.2}x | {:>12.1} | {:>7.2}x |",
            m.size.label,
            mb(m.first_bytes as f64),
            m.first_sync,
            m.first_sync / base_first,
            incr,
            incr / base_incr
        );
    }
}

fn print_flink(results: &[Measured]) {
    println!();
    println!(
        "Flink 2.3, measured elsewhere, not in this run (1M keys of this workload, a {} checkpoint)",
        mb(flink::CHECKPOINT_BYTES)
    );
    let mut header = String::from("| figure                          | Flink 2.3     |");
    let mut rule = String::from("|---------------------------------|--------------:|");
    for m in results {
        header.push_str(&format!(" cairn {:<14} |", m.size.label));
        rule.push_str("---------------------:|");
    }
    println!("{header}");
    println!("{rule}");
    let row = |figure: &str, flink: String, cells: &dyn Fn(&Measured) -> String| {
        let mut line = format!("| {figure:<31} | {flink:>13} |");
        for m in results {
            line.push_str(&format!(" {:>20} |", cells(m)));
        }
        println!("{line}");
    };
    row("checkpoint size", mb(flink::CHECKPOINT_BYTES), &|m| {
        mb(m.first_bytes as f64)
    });
    row(
        "first sync phase ms",
        format!("{:.0}", flink::FIRST_SYNC_MS),
        &|m| {
            format!(
                "{:.0} ({:.2}x)",
                m.first_sync,
                m.first_sync / flink::FIRST_SYNC_MS
            )
        },
    );
    row(
        "sync phase after 1% updates ms",
        format!("{:.0}", flink::INCREMENTAL_SYNC_MS),
        &|m| {
            let sync = m.sync.first().copied().unwrap_or(0.0);
            format!("{sync:.1} ({:.2}x)", sync / flink::INCREMENTAL_SYNC_MS)
        },
    );
    row(
        "written after 1% updates",
        format!("{:.2}%", flink::WRITTEN_PERCENT),
        &|m| {
            let percent = m.written_percent.first().copied().unwrap_or(0.0);
            format!("{percent:.3}% ({:.2}x)", percent / flink::WRITTEN_PERCENT)
        },
    );
    let flink_rate = flink::CHECKPOINT_BYTES / 1e6 / (flink::RESTORE_MS / 1e3);
    row(
        "restore, same parallelism MB/s",
        format!("{flink_rate:.0}"),
        &|m| {
            let rate = med(&m.total) / 1e6 / (med(&m.same) / 1e3);
            format!("{rate:.0} ({:.2}x)", rate / flink_rate)
        },
    );
    let flink_half = flink::CHECKPOINT_BYTES / 2e6 / (flink::HALF_RESTORE_MS / 1e3);
    row(
        "restore, half of it MB/s",
        format!("{flink_half:.0}"),
        &|m| {
            let rate = med(&m.total) / 1e6 / (med(&m.rescaled) / 1e3);
            format!("{rate:.0} 2→3 ({:.2}x)", rate / flink_half)
        },
    );
    println!("Ratios are cairn / Flink: below 1 is faster for times, above 1 is faster for MB/s; the written share is better below 1.");
    println!("As Flink's, cairn's figures after 1% updates are those of the 2nd checkpoint (round 1); restores are medians.");
    println!("cairn's 2→3 rate is the whole checkpoint over the whole rescaled restore (3 subtasks, one after the other).");
}

fn print_rounds(results: &[Measured]) {
    let list = |values: &[f64], digits: usize| {
        values
            .iter()
            .map(|v| format!("{v:.digits$}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!();
    println!("Per round:");
    for m in results {
        println!(
            "  {}: incr sync ms [{}], async ms [{}], written % [{}], of which MANIFEST/CURRENT KB [{}], cp -r ms (before/after) [{}], restore 2→2 ms [{}], 2→3 ms [{}]",
            m.size.label,
            list(&m.sync, 1),
            list(&m.async_phase, 0),
            list(&m.written_percent, 3),
            list(&m.private.iter().map(|b| b / 1e3).collect::<Vec<_>>(), 0),
            list(&m.cp, 0),
            list(&m.same, 0),
            list(&m.rescaled, 0)
        );
    }
}

fn main() {
    progress("checkpoint benchmark starting");
    let sizes = sizes();
    let rounds = env_or("CAIRN_BENCH_ROUNDS", 3).max(1);
    let root_parent = std::env::var_os("CAIRN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let root = tempfile::tempdir_in(&root_parent).expect("a temporary directory for the benchmark");
    println!(
        "cairn checkpoints and restores: RocksDB backend, 1 operator, parallelism {PARALLELISM} (max parallelism 128), restored at {PARALLELISM} and {RESCALED}"
    );
    println!(
        "workload: per u64 key 1 value + 1 list element + {MAP_ENTRIES} map entries; {BYTES_PER_KEY} checkpoint bytes/key assumed to size it; {rounds} rounds of 1% updates"
    );
    println!(
        "directory: {} (checkpoints, backends and copies all on this disk)",
        root.path().display()
    );

    let started = Instant::now();
    let results: Vec<Measured> = sizes
        .iter()
        .map(|size| measure(size, rounds, root.path()))
        .collect();

    print_checkpoints(&results);
    print_restores(&results);
    print_growth(&results);
    print_flink(&results);
    print_rounds(&results);
    println!();
    println!(
        "total {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        results
            .iter()
            .map(|m| format!("{} {:.1} s", m.size.label, m.elapsed.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "The machine is shared and noisy: read ratios measured in this run, not absolute times."
    );
}
