//! Moving files between a backend's directory and a [`SnapshotStore`], with their CRC32s.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::snapshot::SnapshotFile;
use crate::storage::{CrcWriter, SnapshotStore, StoragePath};

/// Copies the local file `source` to `path` in `store`; returns its size and CRC32.
pub(crate) fn upload(
    store: &dyn SnapshotStore,
    source: &Path,
    name: &str,
    path: StoragePath,
) -> Result<SnapshotFile> {
    let mut input = File::open(source).map_err(|e| local_error("read", source, e))?;
    let writer = store.create(&path)?;
    let mut out = CrcWriter::new(writer);
    copy(&mut input, &mut out).map_err(|source| Error::Storage {
        op: "upload",
        location: store.location(),
        path: path.to_string(),
        source,
    })?;
    let crc32 = out.crc.finalize();
    let size = out.inner.finish()?;
    Ok(SnapshotFile {
        name: name.to_string(),
        path,
        size,
        crc32,
    })
}

/// Copies `file` from `store` to the local path `target`, checking its size and CRC32; a
/// file that does not match is removed and reported as corrupted.
pub(crate) fn download(
    store: &dyn SnapshotStore,
    file: &SnapshotFile,
    target: &Path,
) -> Result<()> {
    let input = store.open(&file.path)?;
    let output = File::create(target).map_err(|e| local_error("create", target, e))?;
    let mut out = CrcWriter::new(output);
    // One byte more than expected tells a longer file from an exact one.
    let copied = copy(&mut input.take(file.size.saturating_add(1)), &mut out);
    let flushed = copied.and_then(|n| out.flush().map(|()| n));
    let result = match flushed {
        Err(source) => Err(Error::Storage {
            op: "download",
            location: store.location(),
            path: file.path.to_string(),
            source,
        }),
        Ok(n) => check(file, n, out.crc.finalize()),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(target);
    }
    result
}

/// The size of the buffer files are copied through: large reads and writes, few calls.
const COPY_BUFFER: usize = 1 << 20;

/// Copies `input` to `output` through one large buffer; the bytes copied.
fn copy(input: &mut impl Read, output: &mut impl Write) -> io::Result<u64> {
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut copied = 0u64;
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        output.write_all(&buffer[..n])?;
        copied += n as u64;
    }
}

fn check(file: &SnapshotFile, size: u64, crc32: u32) -> Result<()> {
    let detail = if size != file.size {
        format!("{size} bytes where the snapshot records {}", file.size)
    } else if crc32 != file.crc32 {
        format!(
            "CRC32 {crc32:08x} where the snapshot records {:08x}",
            file.crc32
        )
    } else {
        return Ok(());
    };
    Err(Error::Corrupted {
        what: "snapshot file",
        path: file.path.as_str().into(),
        detail,
    })
}

fn local_error(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// How many threads a restore cuts and writes key-group slices on.
pub(crate) const TRANSFER_THREADS: usize = 4;

/// Runs `work` on every item on up to `threads` threads (at least one); the results in the
/// order of `items`, or the first error. Transfers pass their store's
/// [`transfer_concurrency`](SnapshotStore::transfer_concurrency).
pub(crate) fn in_parallel<T: Sync, R: Send>(
    threads: usize,
    items: &[T],
    work: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new(std::iter::repeat_with(|| None).take(items.len()).collect());
    let threads = threads.max(1).min(items.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(index) else { break };
                let result = work(item);
                let failed = result.is_err();
                results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(result);
                if failed {
                    // Stop handing out work; the others finish the file they are on.
                    next.store(items.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(results.len());
    let mut skipped = false;
    for result in results {
        match result {
            Some(Ok(r)) => out.push(r),
            Some(Err(e)) => return Err(e),
            None => skipped = true,
        }
    }
    debug_assert!(!skipped, "work is skipped only after an error");
    Ok(out)
}
