//! A [`SnapshotStore`] that fails, delays or truncates writes and reads on command, and can
//! run out of space, in front of any other store.
//!
//! Faults are injected per path: every file whose path contains a given text (`".sst"`,
//! `"_metadata"`, `"MANIFEST"`, `"keyed-state"`) gets the fault, always or for the next `n`
//! files. A full disk is one budget of bytes shared by every write: once spent, writes
//! fail with [`std::io::ErrorKind::StorageFull`], as a local file system does.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::{Error, SnapshotStore, SnapshotWrite, StoragePath};

/// What goes wrong with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `create` fails.
    FailCreate,
    /// A write fails once `after` bytes of the file were written.
    FailWrite { after: u64 },
    /// `finish` fails; the file is not published.
    FailFinish,
    /// `create` and every write of the file sleep this long first.
    Delay(Duration),
    /// The file is published with only its first `keep` bytes, and `finish` reports every
    /// byte written: a store that silently loses a file's tail.
    Truncate { keep: u64 },
    /// `open` and `read_range` fail.
    FailOpen,
    /// A read fails once `after` bytes were read (from the start of the file or range).
    FailRead { after: u64 },
}

impl Fault {
    fn is_write(&self) -> bool {
        matches!(
            self,
            Fault::FailCreate
                | Fault::FailWrite { .. }
                | Fault::FailFinish
                | Fault::Delay(_)
                | Fault::Truncate { .. }
        )
    }
}

/// The message of every injected error, so that tests can tell them from real ones.
pub const INJECTED: &str = "injected fault";

struct Rule {
    matching: String,
    fault: Fault,
    /// How many more files it applies to; `None`: every one.
    times: Option<usize>,
}

struct Shared {
    rules: Mutex<Vec<Rule>>,
    /// Bytes that can still be written; `None`: unlimited.
    space: Mutex<Option<u64>>,
    fired: AtomicUsize,
}

impl Shared {
    /// The faults for a file at `path` of the kind `write` says, consuming one use of each.
    fn faults(&self, path: &StoragePath, write: bool) -> Vec<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let mut out = Vec::new();
        for rule in rules.iter_mut() {
            if rule.fault.is_write() != write || !path.as_str().contains(&rule.matching) {
                continue;
            }
            match &mut rule.times {
                Some(0) => continue,
                Some(n) => *n -= 1,
                None => {}
            }
            out.push(rule.fault.clone());
        }
        if !out.is_empty() {
            self.fired.fetch_add(1, Ordering::SeqCst);
        }
        out
    }
}

/// A store in front of `inner` that misbehaves on command.
#[derive(Clone)]
pub struct FaultyStore {
    inner: Arc<dyn SnapshotStore>,
    shared: Arc<Shared>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn SnapshotStore>) -> Self {
        FaultyStore {
            inner,
            shared: Arc::new(Shared {
                rules: Mutex::new(Vec::new()),
                space: Mutex::new(None),
                fired: AtomicUsize::new(0),
            }),
        }
    }

    /// Every file whose path contains `matching` gets `fault`, until [`clear`](Self::clear).
    pub fn inject(&self, matching: &str, fault: Fault) {
        self.add(matching, fault, None);
    }

    /// The next `times` files whose path contains `matching` get `fault`.
    pub fn inject_times(&self, matching: &str, fault: Fault, times: usize) {
        self.add(matching, fault, Some(times));
    }

    fn add(&self, matching: &str, fault: Fault, times: Option<usize>) {
        self.shared.rules.lock().unwrap().push(Rule {
            matching: matching.to_string(),
            fault,
            times,
        });
    }

    /// Writes fail with `StorageFull` once `bytes` more bytes were written.
    pub fn disk_full_after(&self, bytes: u64) {
        *self.shared.space.lock().unwrap() = Some(bytes);
    }

    /// No more faults, and space without limit.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
        *self.shared.space.lock().unwrap() = None;
    }

    /// How many files got a fault so far.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    fn injected(&self, op: &'static str, path: &StoragePath) -> Error {
        Error::Storage {
            op,
            location: self.inner.location(),
            path: path.to_string(),
            source: io::Error::other(INJECTED),
        }
    }

    fn wrap_read(
        &self,
        path: &StoragePath,
        open: impl FnOnce() -> cairn::Result<Box<dyn Read + Send>>,
    ) -> cairn::Result<Box<dyn Read + Send>> {
        let faults = self.shared.faults(path, false);
        if faults.contains(&Fault::FailOpen) {
            return Err(self.injected("open", path));
        }
        let inner = open()?;
        let fail_after = faults.iter().find_map(|f| match f {
            Fault::FailRead { after } => Some(*after),
            _ => None,
        });
        Ok(match fail_after {
            Some(after) => Box::new(FaultyRead { inner, left: after }),
            None => inner,
        })
    }
}

impl SnapshotStore for FaultyStore {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self, path: &StoragePath) -> cairn::Result<Box<dyn SnapshotWrite>> {
        let faults = self.shared.faults(path, true);
        let delay = faults.iter().find_map(|f| match f {
            Fault::Delay(d) => Some(*d),
            _ => None,
        });
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        if faults.contains(&Fault::FailCreate) {
            return Err(self.injected("create", path));
        }
        Ok(Box::new(FaultyWrite {
            inner: self.inner.create(path)?,
            shared: self.shared.clone(),
            written: 0,
            delay,
            fail_after: faults.iter().find_map(|f| match f {
                Fault::FailWrite { after } => Some(*after),
                _ => None,
            }),
            fail_finish: faults.contains(&Fault::FailFinish),
            keep: faults.iter().find_map(|f| match f {
                Fault::Truncate { keep } => Some(*keep),
                _ => None,
            }),
            path: path.clone(),
            location: self.inner.location(),
        }))
    }

    fn open(&self, path: &StoragePath) -> cairn::Result<Box<dyn Read + Send>> {
        self.wrap_read(path, || self.inner.open(path))
    }

    fn read_range(
        &self,
        path: &StoragePath,
        offset: u64,
        len: u64,
    ) -> cairn::Result<Box<dyn Read + Send>> {
        self.wrap_read(path, || self.inner.read_range(path, offset, len))
    }

    fn size(&self, path: &StoragePath) -> cairn::Result<Option<u64>> {
        self.inner.size(path)
    }

    fn list(&self, dir: Option<&StoragePath>) -> cairn::Result<Vec<StoragePath>> {
        self.inner.list(dir)
    }

    fn delete(&self, path: &StoragePath) -> cairn::Result<()> {
        self.inner.delete(path)
    }

    fn delete_dir(&self, dir: &StoragePath) -> cairn::Result<()> {
        self.inner.delete_dir(dir)
    }
}

struct FaultyWrite {
    inner: Box<dyn SnapshotWrite>,
    shared: Arc<Shared>,
    written: u64,
    delay: Option<Duration>,
    fail_after: Option<u64>,
    fail_finish: bool,
    keep: Option<u64>,
    path: StoragePath,
    location: String,
}

impl Write for FaultyWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(delay) = self.delay {
            std::thread::sleep(delay);
        }
        let mut len = buf.len();
        if let Some(after) = self.fail_after {
            let left = after.saturating_sub(self.written);
            if left == 0 && len > 0 {
                return Err(io::Error::other(INJECTED));
            }
            len = len.min(left as usize);
        }
        {
            let mut space = self.shared.space.lock().unwrap();
            if let Some(left) = space.as_mut() {
                if *left == 0 && len > 0 {
                    self.shared.fired.fetch_add(1, Ordering::SeqCst);
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        "no space left on device (injected)",
                    ));
                }
                len = len.min(*left as usize);
                *left -= len as u64;
            }
        }
        // A truncating store takes every byte and keeps only the first `keep`.
        let kept = match self.keep {
            Some(keep) => (keep.saturating_sub(self.written) as usize).min(len),
            None => len,
        };
        self.inner.write_all(&buf[..kept])?;
        self.written += len as u64;
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl SnapshotWrite for FaultyWrite {
    fn finish(self: Box<Self>) -> cairn::Result<u64> {
        if self.fail_finish {
            // Dropping the inner writer discards the file.
            return Err(Error::Storage {
                op: "finish",
                location: self.location,
                path: self.path.to_string(),
                source: io::Error::other(INJECTED),
            });
        }
        let written = self.written;
        let published = self.inner.finish()?;
        Ok(if self.keep.is_some() {
            written
        } else {
            published
        })
    }
}

struct FaultyRead {
    inner: Box<dyn Read + Send>,
    left: u64,
}

impl Read for FaultyRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            return Err(io::Error::other(INJECTED));
        }
        let len = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..len])?;
        self.left -= n as u64;
        Ok(n)
    }
}
