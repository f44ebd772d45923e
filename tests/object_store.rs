//! Checkpoints and savepoints on a real S3-compatible server (moto's, started on 127.0.0.1
//! by `common::s3`): restores at another parallelism equal the model, retention and garbage
//! collection keep exactly the retained files (by listing prefixes), large files go up in
//! parts and appear whole, transient errors are retried and a permanent one names the
//! object and the store.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn::{
    BucketStore, CheckpointStorage, Error, MaxParallelism, ObjectStoreOptions, Retention,
    SavepointFormat, SnapshotStore, StoragePath,
};
use common::job::{Job, Model, Rng};
use common::listing;
use common::s3::{server, url};
use common::{Kind, KINDS};

fn path(p: &str) -> StoragePath {
    StoragePath::new(p).unwrap()
}

#[test]
fn checkpoints_on_s3_restore_at_another_parallelism_and_keep_exactly_the_retained_files() {
    let s3 = server();
    for kind in KINDS {
        eprintln!("-- on the {kind:?} backend");
        let bucket = s3.bucket("checkpoints");
        let store = s3.store(&bucket, "jobs/word-count");
        let storage = CheckpointStorage::open(store.clone(), Retention::new(2).unwrap()).unwrap();
        let max = MaxParallelism::new(16).unwrap();
        let job = Job::new(kind, max, 2);
        let (mut model, mut rng) = (Model::default(), Rng(11));
        for id in 1..=3 {
            job.write(&mut model, &mut rng, 300, 600);
            job.checkpoint(&storage, id).unwrap();
        }

        // A checkpoint whose process crashed after uploading: files, no _metadata.
        job.write(&mut model, &mut rng, 300, 100);
        let crashed = storage.begin(4).unwrap();
        for subtask in &job.subtasks {
            subtask
                .backend()
                .snapshot(crashed.request())
                .unwrap()
                .run()
                .unwrap();
        }
        drop(crashed);
        assert!(listing(store.as_ref())
            .iter()
            .any(|p| p.starts_with("chk-4/")));
        let restarted = CheckpointStorage::open(store.clone(), Retention::new(2).unwrap()).unwrap();
        assert_eq!(restarted.completed(), vec![2, 3], "chk-4 never completed");
        assert!(
            restarted.begin(4).is_err(),
            "ids go on above the crashed one"
        );

        for id in 5..=6 {
            job.write(&mut model, &mut rng, 300, 600);
            job.checkpoint(&restarted, id).unwrap();
        }
        assert_eq!(restarted.completed(), vec![5, 6]);
        let mut expected = BTreeSet::new();
        for id in [5, 6] {
            expected.insert(format!("chk-{id}/_metadata"));
            expected.extend(
                restarted
                    .get(id)
                    .unwrap()
                    .files()
                    .map(|f| f.path.to_string()),
            );
        }
        assert_eq!(
            listing(store.as_ref()),
            expected,
            "{kind:?}: the crashed checkpoint and the subsumed ones are collected"
        );
        let bucket_root = s3.store(&bucket, "");
        assert!(
            listing(bucket_root.as_ref())
                .iter()
                .all(|p| p.starts_with("jobs/word-count/")),
            "everything is under the prefix"
        );

        // After a crash: the latest completed checkpoint, at another parallelism, in a
        // store opened anew from the URL.
        let reopened = s3.store(&bucket, "jobs/word-count");
        let latest = cairn::latest_checkpoint(reopened.as_ref())
            .unwrap()
            .unwrap();
        assert_eq!(latest.checkpoint_id, 6);
        for parallelism in [3, 1] {
            Job::restore(kind, &reopened, &latest, max, parallelism)
                .unwrap()
                .check(&model);
        }
    }
}

#[test]
fn savepoints_on_s3_restore_into_either_backend_at_another_parallelism() {
    let s3 = server();
    let bucket = s3.bucket("savepoints");
    let root = s3.store(&bucket, "savepoints");
    let max = MaxParallelism::new(32).unwrap();
    let job = Job::new(Kind::RocksDb, max, 2);
    let (mut model, mut rng) = (Model::default(), Rng(5));
    job.write(&mut model, &mut rng, 500, 1500);
    let (canonical, _) = job.savepoint(&root, 7, SavepointFormat::Canonical).unwrap();
    let (native, _) = job.savepoint(&root, 8, SavepointFormat::Native).unwrap();
    assert_eq!(
        cairn::list_savepoints(root.as_ref()).unwrap(),
        vec![canonical.clone(), native.clone()]
    );
    for (dir, kind) in [
        (&canonical, Kind::Heap),
        (&canonical, Kind::RocksDb),
        (&native, Kind::RocksDb),
    ] {
        // A savepoint is self-contained: opened at its own URL, it restores.
        let store = Arc::new(
            BucketStore::open(
                &format!("{}/{dir}", url(&bucket, "savepoints")),
                &s3.options(),
            )
            .unwrap(),
        ) as Arc<dyn SnapshotStore>;
        let savepoint = cairn::read_savepoint(store.as_ref()).unwrap();
        Job::restore(kind, &store, &savepoint, max, 3)
            .unwrap()
            .check(&model);
    }
}

#[test]
fn a_large_file_goes_up_in_parts_and_appears_only_whole() {
    let s3 = server();
    let bucket = s3.bucket("parts");
    let options = ObjectStoreOptions {
        part_size: 5 << 20,
        ..s3.options()
    };
    let store = BucketStore::open(&url(&bucket, "root"), &options).unwrap();
    let bytes: Vec<u8> = (0..(12u32 << 20) + 17).map(|i| (i % 253) as u8).collect();
    let target = path("shared/1-ab-000042.sst");
    let mut writer = store.create(&target).unwrap();
    writer.write_all(&bytes[..11 << 20]).unwrap();
    assert!(
        !store.exists(&target).unwrap(),
        "two parts are up, and nothing is visible"
    );
    writer.write_all(&bytes[11 << 20..]).unwrap();
    assert_eq!(writer.finish().unwrap(), bytes.len() as u64);
    assert_eq!(store.size(&target).unwrap(), Some(bytes.len() as u64));
    assert!(store.get(&target, u64::MAX).unwrap() == bytes);
    let mut middle = Vec::new();
    let from = (5u64 << 20) - 3;
    store
        .read_range(&target, from, 10)
        .unwrap()
        .read_to_end(&mut middle)
        .unwrap();
    assert_eq!(middle, &bytes[from as usize..from as usize + 10]);

    let mut dropped = store.create(&path("shared/1-ab-000043.sst")).unwrap();
    dropped.write_all(&bytes).unwrap();
    drop(dropped);
    assert_eq!(
        store.list(None).unwrap(),
        vec![target],
        "a writer dropped after sending parts publishes nothing"
    );
}

/// An HTTP server on 127.0.0.1 that answers `503 Service Unavailable` to its first
/// `failures` requests and `404 Not Found` to the others, one request per connection, and
/// counts them. It answers at most 50 requests.
fn flaky_server(failures: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(50) {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let status = if n < failures {
                "503 Service Unavailable"
            } else {
                "404 Not Found"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (endpoint, count)
}

fn flaky_store(endpoint: &str, max_retries: usize) -> BucketStore {
    let mut options = ObjectStoreOptions {
        max_retries,
        initial_backoff_ms: 1,
        max_backoff_ms: 10,
        ..ObjectStoreOptions::default()
    };
    for (key, value) in [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ] {
        options.config.insert(key.into(), value.into());
    }
    BucketStore::open("s3://flaky/jobs", &options).unwrap()
}

#[test]
fn transient_errors_are_retried_and_a_permanent_one_names_the_object_and_the_store() {
    // Two 503s, then an answer: the store retries and gets it.
    let (endpoint, requests) = flaky_server(2);
    let store = flaky_store(&endpoint, 3);
    assert_eq!(store.size(&path("chk-1/_metadata")).unwrap(), None);
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "two retries, then the answer"
    );

    // 503s for ever: the store gives up after its retries, and says where.
    let (endpoint, requests) = flaky_server(usize::MAX);
    let store = flaky_store(&endpoint, 2);
    let e = store.size(&path("chk-1/_metadata")).unwrap_err();
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );
    let message = e.to_string();
    assert!(matches!(e, Error::Storage { .. }), "{e:?}");
    assert!(
        message.contains("chk-1/_metadata") && message.contains("s3://flaky/jobs"),
        "{message}"
    );

    // On the real server: a bucket that does not exist, and an object that does not.
    let s3 = server();
    let missing = BucketStore::open(&url("no-such-bucket", "jobs"), &s3.options()).unwrap();
    let e = missing.put(&path("chk-1/_metadata"), b"x").unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("chk-1/_metadata") && message.contains("s3://no-such-bucket/jobs"),
        "{message}"
    );
    let bucket = s3.bucket("errors");
    let store = s3.store(&bucket, "jobs");
    let e = match store.open(&path("chk-9/_metadata")) {
        Err(e) => e,
        Ok(_) => panic!("a missing object opened"),
    };
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("chk-9/_metadata"), "{e}");
}
