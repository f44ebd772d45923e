//! Timer throughput: register and fire `N` timers (1,000,000 unless `CAIRN_BENCH_TIMERS`
//! says otherwise) on cairn's RocksDB and heap backends, against a raw RocksDB baseline doing
//! the nearest thing by hand, in one process. `cargo bench --bench timers`.
//!
//! The workload: one subtask owning all 128 key groups; timer `i` is an event-time timer of
//! key `i` (a `u64`, so timers spread over every key group) in the empty namespace, at a
//! pseudo-random timestamp below 10^9, registered in order of `i`, so timestamps arrive in
//! random order. Per round (`CAIRN_BENCH_ROUNDS`, 3):
//!
//! - **register**: `register_event_time_timer` of every timer into a new backend;
//! - **rebuild** (RocksDB): the backend closed and opened again on its directory, then the
//!   first `next_event_time`, which builds the queue from the column family (what a restore
//!   costs on top of its files);
//! - **fire**: the watermark advanced past every timer and `poll_event_time` until `None`:
//!   every timer removed and returned in timestamp order across key groups (checked);
//! - **raw put**: the same timer keys (`[kg][ts][key][namespace]`) put into a column family
//!   configured as cairn configures a timer set's, WAL off;
//! - **raw scan+delete**: that column family read in key order with an iterator, deleting
//!   each key as it goes. It returns timers in (key group, timestamp) order, not in
//!   timestamp order across key groups, and keeps no index: the least a by-hand timer store
//!   on RocksDB does to fire everything.
//!
//! Throughputs are timers per second, medians over the rounds; the ratios are cairn's median
//! over raw RocksDB's. The machine is shared and noisy: read the ratios, not the absolutes.
//! `CAIRN_BENCH_DIR` puts the RocksDB directories somewhere else than the temporary directory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn::layout::write_timer_key;
use cairn::{
    BigEndian, HeapBackend, KeyGroupRange, KeyedStateStore, MaxParallelism, RocksDbBackend,
};
use rocksdb::{ReadOptions, WriteOptions};

#[expect(
    dead_code,
    reason = "only the raw baseline's DB is used here, not the ratio harness"
)]
#[path = "compare.rs"]
mod compare;

use compare::{env_or, median, RawDb};

const SERVICE: &str = "bench";

/// Timer `i`'s timestamp: a 64-bit mix of `i`, below 10^9.
fn timestamp(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) % 1_000_000_000
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// Registers timers `0..n` on `store`; the time it took.
fn register(store: &KeyedStateStore, n: u64) -> Duration {
    let mut service = store
        .timer_service(SERVICE, BigEndian)
        .expect("timer service");
    let started = Instant::now();
    for i in 0..n {
        service
            .register_event_time_timer(&i, b"", timestamp(i))
            .expect("register a timer");
    }
    started.elapsed()
}

/// Fires every timer of `store`, checking their order and count; the time it took.
fn fire(store: &KeyedStateStore, n: u64) -> Duration {
    let mut service = store
        .timer_service::<u64>(SERVICE, BigEndian)
        .expect("timer service");
    let started = Instant::now();
    service.advance_watermark(u64::MAX);
    let (mut count, mut last) = (0u64, 0u64);
    while let Some(timer) = service.poll_event_time().expect("poll a timer") {
        assert!(timer.timestamp >= last, "timers out of order");
        last = timer.timestamp;
        count += 1;
    }
    let elapsed = started.elapsed();
    assert_eq!(count, n, "every timer fires once");
    elapsed
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("CAIRN_BENCH_DIR") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).expect("CAIRN_BENCH_DIR");
            tempfile::tempdir_in(dir).expect("a directory in CAIRN_BENCH_DIR")
        }
        None => tempfile::tempdir().expect("a temporary directory"),
    }
}

fn open_rocksdb(dir: &PathBuf) -> KeyedStateStore {
    let max = MaxParallelism::DEFAULT;
    KeyedStateStore::new(
        RocksDbBackend::builder(dir, max, KeyGroupRange::all(max))
            .open()
            .expect("open cairn's RocksDB backend"),
    )
}

/// One round on cairn's RocksDB backend: register, rebuild, fire.
fn cairn_rocksdb(n: u64) -> (Duration, Duration, Duration) {
    let dir = bench_dir();
    let path = dir.path().join("cairn");
    let store = open_rocksdb(&path);
    let register = register(&store, n);
    store.close().expect("close");
    drop(store);
    let store = open_rocksdb(&path);
    let service = store
        .timer_service::<u64>(SERVICE, BigEndian)
        .expect("timer service");
    let started = Instant::now();
    assert!(service.next_event_time().expect("next timer").is_some());
    let rebuild = started.elapsed();
    let fire = fire(&store, n);
    (register, rebuild, fire)
}

/// One round on the heap backend: register, fire.
fn cairn_heap(n: u64) -> (Duration, Duration) {
    let max = MaxParallelism::DEFAULT;
    let store = KeyedStateStore::new(HeapBackend::new(max, KeyGroupRange::all(max)));
    let register = register(&store, n);
    let fire = fire(&store, n);
    (register, fire)
}

/// One round of the raw baseline: put every timer key, then scan and delete them all.
fn raw(n: u64) -> (Duration, Duration) {
    let max = MaxParallelism::DEFAULT;
    let raw_db = RawDb::open();
    let (db, cf) = raw_db.plain();
    let mut write = WriteOptions::default();
    write.disable_wal(true);
    let mut key = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let bytes = i.to_be_bytes();
        write_timer_key(
            &mut key,
            max.key_group_of(&bytes),
            timestamp(i),
            &bytes,
            b"",
        );
        db.put_cf_opt(cf, &key, [], &write).expect("raw put");
    }
    let put = started.elapsed();
    let started = Instant::now();
    let mut read = ReadOptions::default();
    read.set_total_order_seek(true);
    let mut it = db.raw_iterator_cf_opt(cf, read);
    it.seek_to_first();
    let mut count = 0u64;
    while let Some(key) = it.key() {
        db.delete_cf_opt(cf, key, &write).expect("raw delete");
        count += 1;
        it.next();
    }
    it.status().expect("raw scan");
    let scan_delete = started.elapsed();
    assert_eq!(count, n);
    (put, scan_delete)
}

fn main() {
    let n = env_or("CAIRN_BENCH_TIMERS", 1_000_000).max(1);
    let rounds = env_or("CAIRN_BENCH_ROUNDS", 3).max(1);
    println!("timers: {n} event-time timers of {n} keys over 128 key groups, {rounds} rounds");
    let mut figures: [Vec<f64>; 7] = Default::default();
    for round in 1..=rounds {
        let (put, scan_delete) = raw(n);
        let (register, rebuild, fire) = cairn_rocksdb(n);
        let (heap_register, heap_fire) = cairn_heap(n);
        println!(
            "round {round}: rocksdb register {:.2} s, rebuild {:.1} ms, fire {:.2} s; heap \
             register {:.2} s, fire {:.2} s; raw put {:.2} s, scan+delete {:.2} s",
            register.as_secs_f64(),
            rebuild.as_secs_f64() * 1e3,
            fire.as_secs_f64(),
            heap_register.as_secs_f64(),
            heap_fire.as_secs_f64(),
            put.as_secs_f64(),
            scan_delete.as_secs_f64()
        );
        for (slot, value) in figures.iter_mut().zip([
            per_sec(n, register),
            per_sec(n, fire),
            per_sec(n, heap_register),
            per_sec(n, heap_fire),
            per_sec(n, put),
            per_sec(n, scan_delete),
            rebuild.as_secs_f64() * 1e3,
        ]) {
            slot.push(value);
        }
    }
    let [register, fire, heap_register, heap_fire, put, scan_delete, rebuild] =
        figures.map(|mut v| median(&mut v));
    println!();
    println!("medians over {rounds} rounds (timers/s; ratio = cairn / raw RocksDB):");
    println!("{:<34} {:>14} {:>10}", "", "timers/s", "ratio");
    let row = |name: &str, value: f64, raw: Option<f64>| {
        let ratio = raw.map_or_else(|| "-".to_string(), |raw| format!("{:.2}", value / raw));
        println!("{name:<34} {value:>14.0} {ratio:>10}");
    };
    row("raw RocksDB put", put, None);
    row("cairn RocksDB register", register, Some(put));
    row("cairn heap register", heap_register, Some(put));
    row("raw RocksDB scan+delete", scan_delete, None);
    row(
        "cairn RocksDB fire (poll in order)",
        fire,
        Some(scan_delete),
    );
    row(
        "cairn heap fire (poll in order)",
        heap_fire,
        Some(scan_delete),
    );
    println!("cairn RocksDB queue rebuild after reopen: {rebuild:.1} ms (median)");
}
