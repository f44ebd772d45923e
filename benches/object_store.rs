//! The object store benchmark: a checkpoint's upload and a restore's download through
//! cairn's [`BucketStore`], against the `object_store` crate's own put and get of the same
//! bytes, on a local S3-compatible server (moto's, started on 127.0.0.1 as the tests start
//! it), in the same run.
//!
//! **The job.** One operator at parallelism 2 (max parallelism 128), two RocksDB subtasks
//! holding `CAIRN_BENCH_MB` (128 by default) of value state between them: `u64` keys with
//! 100-byte values that do not compress. The checkpoint is then a few large SST files (the
//! memtables flushed, up to 64 MiB each) and RocksDB's small private files, as a real
//! state's is.
//!
//! **What is measured, per round** (`CAIRN_BENCH_ROUNDS`, 3), each round into a new bucket
//! so every file is uploaded again:
//! 1. *cairn upload*: the asynchronous phases of a checkpoint of both subtasks, at once as
//!    in a job (`PendingSnapshot::spawn`), each moving its files
//!    [`ObjectStoreOptions::concurrency`] (8) at a time, with multipart uploads for files
//!    above the part size (8 MiB): reading the staged files, CRC32 on the way, the PUTs.
//! 2. *raw get*: every file of that checkpoint fetched whole into memory with
//!    `ObjectStore::get`, 16 at a time (the two subtasks' 8 each).
//! 3. *raw put*: those bytes put into another bucket with `ObjectStore::put` (a file up to
//!    the part size) or a multipart upload in 8 MiB parts with 2 in flight (a larger one),
//!    16 files at a time: the same requests cairn makes, without cairn.
//! 4. *cairn restore*: both subtasks restored at parallelism 2 into empty directories, at
//!    once as in a job (`RocksDbBackendBuilder::restore_from(..).open()`): a HEAD per file
//!    to check it, the download (8 at a time per subtask) to disk with its CRC32 checked,
//!    and RocksDB opening the files; every restore is checked on 1,000 keys.
//!
//! **How to read it.** Medians over the rounds, in MB/s of checkpoint bytes, and the ratio
//! of cairn's throughput to the raw one (target ≥ 0.8×: cairn's synchronous wrapper, CRC32
//! and file handling cost at most a fifth of what the transfer itself costs). The server
//! is Python and on the same 2 cores as the benchmark, so the MB/s are this machine's, not
//! S3's: compare ratios. Progress goes to stderr, the table to stdout.

#[path = "../tests/common/s3.rs"]
#[expect(
    dead_code,
    reason = "the benchmark uses only part of the tests' server helper"
)]
mod s3;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cairn::{
    BigEndian, BucketStore, Bytes, CheckpointStorage, JobSnapshot, KeyedStateStore, MaxParallelism,
    ObjectStoreOptions, Retention, RocksDbBackend, SnapshotStore, StateDescriptor,
};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

const OPERATOR: &str = "keyed-state";
const PARALLELISM: u32 = 2;
const VALUE_BYTES: usize = 100;
const CHECKED_KEYS: u64 = 1_000;
const PART_SIZE: usize = 8 << 20;
/// Transfers at once: each of the 2 subtasks moves 8 files at a time, so the raw client
/// moves 16.
const CONCURRENCY: usize = 16;

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?} is not a count: {e}")),
        Err(_) => default,
    }
}

fn progress(message: impl std::fmt::Display) {
    eprintln!("[object_store bench] {message}");
}

/// 100 bytes of `key`'s value: a SplitMix64 stream, so they do not compress.
fn value_of(key: u64) -> Vec<u8> {
    let mut state = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(VALUE_BYTES);
    while out.len() < VALUE_BYTES {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_be_bytes());
    }
    out.truncate(VALUE_BYTES);
    out
}

fn values() -> StateDescriptor<u64, Vec<u8>> {
    StateDescriptor::new("values", BigEndian, Bytes)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The raw `object_store` client of a bucket of the server.
fn raw_bucket(server: &s3::S3Server, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(&server.endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("cairn-test")
            .with_secret_access_key("cairn-test")
            .build()
            .expect("a raw S3 client"),
    )
}

struct Round {
    upload_s: f64,
    raw_put_s: f64,
    restore_s: f64,
    raw_get_s: f64,
    bytes: u64,
    files: usize,
}

fn main() {
    let megabytes = env_or("CAIRN_BENCH_MB", 128);
    let rounds = env_or("CAIRN_BENCH_ROUNDS", 3).max(1);
    let keys = megabytes * 1_000_000 / (VALUE_BYTES as u64 + 20);
    let server = s3::server();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the raw client");
    let dirs = tempfile::tempdir().expect("a temporary directory");
    let max = MaxParallelism::new(128).expect("max parallelism");

    progress(format_args!(
        "loading {keys} keys into {PARALLELISM} RocksDB subtasks"
    ));
    let subtasks: Vec<KeyedStateStore> = (0..PARALLELISM)
        .map(|i| {
            let backend = RocksDbBackend::builder(
                dirs.path().join(format!("subtask-{i}")),
                max,
                max.subtask_range(i, PARALLELISM).expect("a range"),
            )
            .open()
            .expect("open a subtask");
            KeyedStateStore::new(backend)
        })
        .collect();
    for key in 0..keys {
        let kg = max.key_group_of(&key.to_be_bytes());
        let owner = max.subtask_of(kg, PARALLELISM).expect("an owner") as usize;
        subtasks[owner]
            .value_state(&values())
            .expect("the value state")
            .update(&key, &value_of(key))
            .expect("load a key");
    }

    let options = ObjectStoreOptions {
        config: server.options().config,
        ..ObjectStoreOptions::default()
    };
    let mut results = Vec::new();
    for round in 1..=rounds {
        let bucket = server.bucket("bench-cairn");
        let raw_target = server.bucket("bench-raw");
        let store: Arc<dyn SnapshotStore> = Arc::new(
            BucketStore::open(&format!("s3://{bucket}/checkpoints"), &options)
                .expect("open the bucket"),
        );
        let storage = CheckpointStorage::open(store.clone(), Retention::default())
            .expect("checkpoint storage");

        // 1. cairn upload: both subtasks' asynchronous phases at once, as in a job.
        let mut pending = storage.begin(round).expect("begin");
        let snapshots: Vec<_> = subtasks
            .iter()
            .map(|s| {
                s.backend()
                    .snapshot(pending.request())
                    .expect("the synchronous phase")
            })
            .collect();
        let started = Instant::now();
        let tasks: Vec<_> = snapshots
            .into_iter()
            .map(|p| p.spawn().expect("start an upload"))
            .collect();
        let handles: Vec<_> = tasks
            .into_iter()
            .map(|t| t.wait().expect("upload"))
            .collect();
        let upload_s = started.elapsed().as_secs_f64();
        for (i, handle) in handles.into_iter().enumerate() {
            pending
                .acknowledge(OPERATOR, PARALLELISM, max, i as u32, handle)
                .expect("acknowledge");
        }
        let job: Arc<JobSnapshot> = storage.commit(pending).expect("commit");
        let files: Vec<(ObjectPath, u64)> = job
            .files()
            .map(|f| (ObjectPath::from(format!("checkpoints/{}", f.path)), f.size))
            .collect();
        let bytes: u64 = files.iter().map(|(_, size)| size).sum();

        // 2. raw get of the same objects, into memory.
        let raw_source = raw_bucket(server, &bucket);
        let started = Instant::now();
        let fetched: Vec<(ObjectPath, bytes::Bytes)> = runtime.block_on(async {
            stream::iter(files.iter().cloned())
                .map(|(path, _)| {
                    let store = raw_source.clone();
                    async move {
                        let bytes = store.get(&path).await?.bytes().await?;
                        Ok::<_, object_store::Error>((path, bytes))
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect()
                .await
                .expect("raw get")
        });
        let raw_get_s = started.elapsed().as_secs_f64();
        assert_eq!(
            fetched.iter().map(|(_, b)| b.len() as u64).sum::<u64>(),
            bytes
        );

        // 3. raw put of those bytes into another bucket.
        let raw = raw_bucket(server, &raw_target);
        let started = Instant::now();
        runtime.block_on(async {
            stream::iter(fetched)
                .map(|(path, body)| {
                    let store = raw.clone();
                    async move {
                        if body.len() <= PART_SIZE {
                            store.put(&path, PutPayload::from(body)).await?;
                        } else {
                            let upload = store.put_multipart(&path).await?;
                            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                            for chunk in body.chunks(PART_SIZE) {
                                writer.wait_for_capacity(2).await?;
                                writer.put(body.slice_ref(chunk));
                            }
                            writer.finish().await?;
                        }
                        Ok::<_, object_store::Error>(())
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await
                .expect("raw put")
        });
        let raw_put_s = started.elapsed().as_secs_f64();

        // 4. cairn restore at the same parallelism, both subtasks at once, as in a job.
        let restore_dir = dirs.path().join(format!("restore-{round}"));
        let plans = job
            .restore_plan(OPERATOR, PARALLELISM, max)
            .expect("a restore plan");
        let started = Instant::now();
        let restored: Vec<KeyedStateStore> = std::thread::scope(|scope| {
            let threads: Vec<_> = plans
                .into_iter()
                .map(|plan| {
                    let store = store.clone();
                    let dir = restore_dir.join(plan.subtask.to_string());
                    scope.spawn(move || {
                        RocksDbBackend::builder(dir, max, plan.key_groups)
                            .restore_from(store, plan.handles)
                            .open()
                            .expect("restore")
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| KeyedStateStore::new(t.join().expect("a restore thread")))
                .collect()
        });
        let restore_s = started.elapsed().as_secs_f64();
        check(&restored, max, keys, &restore_dir);
        for s in restored {
            s.close().expect("close a restored subtask");
        }
        progress(format_args!(
            "round {round}: {} files, {:.1} MB: upload {upload_s:.2} s, raw put {raw_put_s:.2} s, \
             restore {restore_s:.2} s, raw get {raw_get_s:.2} s",
            files.len(),
            bytes as f64 / 1e6
        ));
        results.push(Round {
            upload_s,
            raw_put_s,
            restore_s,
            raw_get_s,
            bytes,
            files: files.len(),
        });
    }
    report(&results);
}

/// Panics unless the restored job holds the value of 1,000 keys spread over all of them.
fn check(restored: &[KeyedStateStore], max: MaxParallelism, keys: u64, dir: &Path) {
    for i in 0..CHECKED_KEYS {
        let key = i * keys / CHECKED_KEYS;
        let owner = max
            .subtask_of(max.key_group_of(&key.to_be_bytes()), PARALLELISM)
            .expect("an owner") as usize;
        let got = restored[owner]
            .value_state(&values())
            .expect("the value state")
            .get(&key)
            .expect("read a restored key");
        assert_eq!(
            got,
            Some(value_of(key)),
            "key {key} restored in {}",
            dir.display()
        );
    }
}

fn report(results: &[Round]) {
    let mb = |r: &Round| r.bytes as f64 / 1e6;
    let bytes = median(&mut results.iter().map(mb).collect::<Vec<_>>());
    let files = results[0].files;
    let mut rows = Vec::new();
    for (what, cairn_s, raw_s, raw_name) in [
        (
            "checkpoint upload",
            results.iter().map(|r| r.upload_s).collect::<Vec<_>>(),
            results.iter().map(|r| r.raw_put_s).collect::<Vec<_>>(),
            "raw put",
        ),
        (
            "restore download",
            results.iter().map(|r| r.restore_s).collect(),
            results.iter().map(|r| r.raw_get_s).collect(),
            "raw get",
        ),
    ] {
        let cairn_rates: Vec<f64> = results
            .iter()
            .zip(&cairn_s)
            .map(|(r, s)| mb(r) / s)
            .collect();
        let raw_rates: Vec<f64> = results.iter().zip(&raw_s).map(|(r, s)| mb(r) / s).collect();
        let ratios: Vec<f64> = cairn_rates
            .iter()
            .zip(&raw_rates)
            .map(|(c, r)| c / r)
            .collect();
        let ratio = median(&mut ratios.clone());
        rows.push(format!(
            "{what:<18} {:>8.2} s {:>8.1} MB/s   {raw_name:<8} {:>8.2} s {:>8.1} MB/s   {:>5.2}x  {}",
            median(&mut cairn_s.clone()),
            median(&mut cairn_rates.clone()),
            median(&mut raw_s.clone()),
            median(&mut raw_rates.clone()),
            ratio,
            if ratio >= 0.8 { "ok (target >= 0.80x)" } else { "MISSED (target >= 0.80x)" }
        ));
        let per_round: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
        rows.push(format!("{:<18} per round: {}", "", per_round.join(", ")));
    }
    println!(
        "\nobject store: a checkpoint of 2 RocksDB subtasks, {bytes:.1} MB in {files} files, \
         to a moto S3 server on 127.0.0.1; {CONCURRENCY} transfers at once (8 per subtask), \
         {} MiB parts; \
         medians of {} rounds\n",
        PART_SIZE >> 20,
        results.len()
    );
    println!(
        "{:<18} {:>10} {:>13}   {:<8} {:>10} {:>13}   {:>6}",
        "", "cairn", "", "", "raw", "", "ratio"
    );
    for row in rows {
        println!("{row}");
    }
}
