//! A [`SnapshotStore`] on an object store: S3 and S3-compatible servers, Google Cloud
//! Storage, Azure Blob Storage, or memory, through the `object_store` crate.
//!
//! The object store's API is async; the snapshot layer is not. Every store of a process
//! shares one small tokio runtime and blocks on it, so async stays inside this
//! file. Callers are plain threads (a snapshot's upload thread, a restore); a caller running
//! on an async runtime must call cairn from a blocking thread (tokio's `spawn_blocking`), as
//! for any blocking API.
//!
//! How the trait maps onto objects:
//! - [`create`](SnapshotStore::create) buffers up to one part. A file that fits is written
//!   by one PUT on [`finish`](SnapshotWrite::finish); a larger one becomes a multipart
//!   upload whose parts go out while the writer goes on (at most
//!   [`ObjectStoreOptions::parts_in_flight`] at once), completed on `finish`. Either way
//!   the object appears whole or not at all; a writer dropped unfinished aborts its
//!   multipart upload. This is what keeps `_metadata` (one small PUT) the commit point.
//! - [`open`](SnapshotStore::open) and [`read_range`](SnapshotStore::read_range) stream a
//!   GET (a ranged one for a range) chunk by chunk; nothing is read whole into memory.
//! - [`list`](SnapshotStore::list) lists a prefix, [`list_dir`](SnapshotStore::list_dir)
//!   one level of it (the common prefixes are the directories), [`size`](SnapshotStore::size)
//!   is a HEAD, [`delete_dir`](SnapshotStore::delete_dir) a bulk delete of a listing.
//!
//! Requests are retried with exponential backoff on transient errors (connection failures,
//! 5xx, 429, timeouts on idempotent requests) by the object store's own retry loop,
//! configured from [`ObjectStoreOptions`]; an error that remains is a cairn [`Error`]
//! naming the object and the store's URL.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, GetOptions, GetRange, MultipartUpload, ObjectStore, ObjectStoreExt,
    ObjectStoreScheme, PutPayload, RetryConfig,
};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::storage::{DirListing, SnapshotStore, SnapshotWrite, StoragePath};

/// How cairn uses an object store: plain data (loadable with serde); every field has a
/// default, and [`ObjectStoreOptions::from_env`] reads overrides from `CAIRN_OBJECT_STORE_*`
/// variables. Credentials, region and endpoint are not here: the object store reads them
/// from its own environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), and
/// [`config`](Self::config) can set any of its settings by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ObjectStoreOptions {
    /// Files a snapshot uploads, or a restore downloads, at once (default 8).
    pub concurrency: usize,
    /// A file larger than this is uploaded in parts of this many bytes (default 8 MiB; S3
    /// wants at least 5 MiB for every part but the last).
    pub part_size: usize,
    /// Parts of one file uploaded at once (default 2). A writer holds at most
    /// `part_size × (parts_in_flight + 1)` bytes.
    pub parts_in_flight: usize,
    /// Retries of a request that failed with a transient error (default 10; 0 turns
    /// retries off).
    pub max_retries: usize,
    /// No retry starts later than this after a request's first attempt, in milliseconds
    /// (default 180 000: three minutes).
    pub retry_timeout_ms: u64,
    /// The first backoff between retries, in milliseconds (default 100); it doubles on
    /// every retry, with jitter.
    pub initial_backoff_ms: u64,
    /// The longest backoff, in milliseconds (default 15 000).
    pub max_backoff_ms: u64,
    /// Settings of the object store by their `object_store` name, applied after its
    /// environment variables: `aws_endpoint`, `aws_allow_http`, `aws_region`,
    /// `google_service_account`, `azure_storage_account_name`, … (see the `object_store`
    /// crate's `AmazonS3ConfigKey`, `GoogleConfigKey` and `AzureConfigKey`).
    pub config: BTreeMap<String, String>,
}

impl Default for ObjectStoreOptions {
    fn default() -> Self {
        ObjectStoreOptions {
            concurrency: 8,
            part_size: 8 << 20,
            parts_in_flight: 2,
            max_retries: 10,
            retry_timeout_ms: 180_000,
            initial_backoff_ms: 100,
            max_backoff_ms: 15_000,
            config: BTreeMap::new(),
        }
    }
}

/// The environment variables [`ObjectStoreOptions::from_env`] reads, and the fields they set.
const ENV_OPTIONS: [(&str, &str); 5] = [
    ("CAIRN_OBJECT_STORE_CONCURRENCY", "concurrency"),
    ("CAIRN_OBJECT_STORE_PART_SIZE", "part_size"),
    ("CAIRN_OBJECT_STORE_PARTS_IN_FLIGHT", "parts_in_flight"),
    ("CAIRN_OBJECT_STORE_MAX_RETRIES", "max_retries"),
    ("CAIRN_OBJECT_STORE_RETRY_TIMEOUT_MS", "retry_timeout_ms"),
];

/// The smallest part an upload may be cut into.
const MIN_PART_SIZE: usize = 64 << 10;

impl ObjectStoreOptions {
    /// The defaults, with each `CAIRN_OBJECT_STORE_CONCURRENCY`, `_PART_SIZE`,
    /// `_PARTS_IN_FLIGHT`, `_MAX_RETRIES` and `_RETRY_TIMEOUT_MS` variable that is set
    /// replacing its field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a variable that is not a number, or options that
    /// [`check`](Self::check) refuses.
    pub fn from_env() -> Result<Self> {
        let mut options = ObjectStoreOptions::default();
        for (variable, field) in ENV_OPTIONS {
            let Ok(text) = std::env::var(variable) else {
                continue;
            };
            let value: u64 = text.trim().parse().map_err(|_| Error::InvalidConfig {
                what: "object store option",
                detail: format!("{variable}={text:?} is not a whole number"),
            })?;
            let as_usize = usize::try_from(value).unwrap_or(usize::MAX);
            match field {
                "concurrency" => options.concurrency = as_usize,
                "part_size" => options.part_size = as_usize,
                "parts_in_flight" => options.parts_in_flight = as_usize,
                "max_retries" => options.max_retries = as_usize,
                _ => options.retry_timeout_ms = value,
            }
        }
        options.check()?;
        Ok(options)
    }

    /// Checks that the options can work.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a concurrency or parts in flight of 0, or a part size
    /// below 64 KiB.
    pub fn check(&self) -> Result<()> {
        let invalid = |detail: String| {
            Err(Error::InvalidConfig {
                what: "object store option",
                detail,
            })
        };
        if self.concurrency == 0 {
            return invalid("concurrency must be at least 1".into());
        }
        if self.parts_in_flight == 0 {
            return invalid("parts_in_flight must be at least 1".into());
        }
        if self.part_size < MIN_PART_SIZE {
            return invalid(format!(
                "part_size {} is below the smallest part, {MIN_PART_SIZE} bytes (S3 wants 5 MiB)",
                self.part_size
            ));
        }
        Ok(())
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(self.initial_backoff_ms),
                max_backoff: Duration::from_millis(
                    self.max_backoff_ms.max(self.initial_backoff_ms),
                ),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: Duration::from_millis(self.retry_timeout_ms),
        }
    }
}

/// The tokio runtime every object store of the process runs its requests on: two worker
/// threads drive the connections, while the callers' threads block on their own requests.
fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cairn-object-store")
        .enable_all()
        .build()
        .map_err(|source| Error::Storage {
            op: "start the runtime of",
            location: "object stores".into(),
            path: String::new(),
            source,
        })?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// The in-memory stores of this process, by name: `memory://name` is the same store
/// wherever it is opened in the process, and gone when the process ends.
fn memory_store(name: &str) -> Arc<InMemory> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let stores = STORES.get_or_init(Mutex::default);
    stores
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

/// Snapshot storage under a prefix of an object store bucket (or of a memory store).
///
/// # Examples
/// ```
/// use cairn::{BucketStore, ObjectStoreOptions, SnapshotStore, StoragePath};
/// let store = BucketStore::open("memory://docs/checkpoints", &ObjectStoreOptions::default())?;
/// let path = StoragePath::new("chk-1/notes")?;
/// store.put(&path, b"hello")?;
/// assert_eq!(store.get(&path, 1024)?, b"hello");
/// assert_eq!(store.location(), "memory://docs/checkpoints");
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Clone)]
pub struct BucketStore {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    /// The prefix every path is under, without slashes at either end; empty for none.
    prefix: String,
    /// The URL, for messages.
    url: String,
    options: ObjectStoreOptions,
    runtime: &'static Runtime,
}

impl std::fmt::Debug for BucketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketStore")
            .field("url", &self.shared.url)
            .finish_non_exhaustive()
    }
}

impl BucketStore {
    /// Opens the store at `url`: `s3://bucket/prefix` (also `s3a://`), `gs://bucket/prefix`,
    /// `az://container/prefix` (also `abfs://`, `azure://`, `adl://`, and `https://` URLs of
    /// Azure and S3), or `memory://name/prefix` (a store of this process). Credentials,
    /// region and endpoint come from the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, …;
    /// `GOOGLE_SERVICE_ACCOUNT`, …; `AZURE_STORAGE_ACCOUNT_NAME`, …) and then from
    /// `options.config`. Nothing is sent before the first request.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a URL that is not one of these, a setting the store
    /// does not know, or options [`ObjectStoreOptions::check`] refuses.
    pub fn open(url: &str, options: &ObjectStoreOptions) -> Result<Self> {
        options.check()?;
        let invalid = |detail: String| Error::InvalidConfig {
            what: "object store URL",
            detail: format!("{url}: {detail}"),
        };
        let text = url.trim_end_matches('/');
        let parsed = url::Url::parse(text).map_err(|e| invalid(e.to_string()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = if parsed.scheme() == "memory" {
            let prefix =
                ObjectPath::from_url_path(parsed.path()).map_err(|e| invalid(e.to_string()))?;
            (
                memory_store(parsed.host_str().unwrap_or("")),
                prefix.to_string(),
            )
        } else {
            let (scheme, prefix) =
                ObjectStoreScheme::parse(&parsed).map_err(|e| invalid(e.to_string()))?;
            let built = |result: object_store::Result<Arc<dyn ObjectStore>>| {
                result.map_err(|e| invalid(e.to_string()))
            };
            let store =
                match scheme {
                    ObjectStoreScheme::AmazonS3 => {
                        let builder = AmazonS3Builder::from_env()
                            .with_url(text)
                            .with_retry(options.retry());
                        let builder =
                            configured(builder, &options.config, |b, k, v| b.with_config(k, v))
                                .map_err(|e| invalid(e.to_string()))?;
                        built(builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))?
                    }
                    ObjectStoreScheme::GoogleCloudStorage => {
                        let builder = GoogleCloudStorageBuilder::from_env()
                            .with_url(text)
                            .with_retry(options.retry());
                        let builder =
                            configured(builder, &options.config, |b, k, v| b.with_config(k, v))
                                .map_err(|e| invalid(e.to_string()))?;
                        built(builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))?
                    }
                    ObjectStoreScheme::MicrosoftAzure => {
                        let builder = MicrosoftAzureBuilder::from_env()
                            .with_url(text)
                            .with_retry(options.retry());
                        let builder =
                            configured(builder, &options.config, |b, k, v| b.with_config(k, v))
                                .map_err(|e| invalid(e.to_string()))?;
                        built(builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))?
                    }
                    _ => return Err(invalid(
                        "not an object store cairn opens: use s3://, gs://, az:// or memory:// \
                         (file:// and plain paths are local directories)"
                            .into(),
                    )),
                };
            (store, prefix.to_string())
        };
        Ok(BucketStore {
            shared: Arc::new(Shared {
                store,
                prefix,
                url: text.to_string(),
                options: options.clone(),
                runtime: runtime()?,
            }),
        })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &ObjectStoreOptions {
        &self.shared.options
    }
}

impl Shared {
    /// The object path of `path`.
    fn key(&self, path: &StoragePath) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(path.as_str())
        } else {
            ObjectPath::from(format!("{}/{}", self.prefix, path))
        }
    }

    /// The object path of a directory, or of the root for `None`.
    fn dir_key(&self, dir: Option<&StoragePath>) -> Option<ObjectPath> {
        match dir {
            Some(dir) => Some(self.key(dir)),
            None if self.prefix.is_empty() => None,
            None => Some(ObjectPath::from(self.prefix.as_str())),
        }
    }

    /// The storage path of an object listed under the prefix; `None` for a name the store
    /// could not have written.
    fn storage_path(&self, key: &ObjectPath) -> Option<StoragePath> {
        let key = key.as_ref();
        let relative = if self.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?
        };
        StoragePath::new(relative).ok()
    }

    /// The cairn error of a failed request: [`Error::NotFound`] for an object read that
    /// is not there, [`Error::Storage`] naming the object and the store otherwise (a
    /// missing bucket included).
    fn error(&self, op: &'static str, path: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } if op == "read" => Error::NotFound {
                what: "snapshot file",
                location: self.url.clone(),
                path: path.to_string(),
            },
            other => Error::Storage {
                op,
                location: self.url.clone(),
                path: path.to_string(),
                source: io::Error::other(other),
            },
        }
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn get(&self, path: &StoragePath, range: Option<GetRange>) -> Result<Box<dyn Read + Send>> {
        let key = self.key(path);
        let options = GetOptions {
            range,
            ..GetOptions::default()
        };
        let result = self
            .block_on(self.store.get_opts(&key, options))
            .map_err(|e| self.error("read", path.as_str(), e))?;
        Ok(Box::new(ObjectRead {
            runtime: self.runtime,
            stream: result.into_stream(),
            chunk: Bytes::new(),
        }))
    }
}

impl SnapshotStore for BucketStore {
    fn location(&self) -> String {
        self.shared.url.clone()
    }

    fn transfer_concurrency(&self) -> usize {
        self.shared.options.concurrency
    }

    fn create(&self, path: &StoragePath) -> Result<Box<dyn SnapshotWrite>> {
        Ok(Box::new(ObjectWrite {
            shared: self.shared.clone(),
            path: path.clone(),
            buffer: Vec::new(),
            upload: None,
            written: 0,
            finished: false,
        }))
    }

    fn open(&self, path: &StoragePath) -> Result<Box<dyn Read + Send>> {
        self.shared.get(path, None)
    }

    fn read_range(
        &self,
        path: &StoragePath,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn Read + Send>> {
        if len == 0 {
            return Ok(Box::new(io::empty()));
        }
        let range = GetRange::Bounded(offset..offset.saturating_add(len));
        match self.shared.get(path, Some(range)) {
            Ok(read) => Ok(read),
            // A range that starts at or past the end is refused by the server; the trait
            // reads it as no bytes, as a file would.
            Err(e) => match self.size(path)? {
                Some(size) if offset >= size => Ok(Box::new(io::empty())),
                _ => Err(e),
            },
        }
    }

    fn size(&self, path: &StoragePath) -> Result<Option<u64>> {
        let shared = &self.shared;
        match shared.block_on(shared.store.head(&shared.key(path))) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(shared.error("inspect", path.as_str(), e)),
        }
    }

    fn list(&self, dir: Option<&StoragePath>) -> Result<Vec<StoragePath>> {
        let shared = &self.shared;
        let prefix = shared.dir_key(dir);
        let objects: Vec<object_store::ObjectMeta> = shared
            .block_on(shared.store.list(prefix.as_ref()).try_collect())
            .map_err(|e| shared.error("list", dir.map_or("", StoragePath::as_str), e))?;
        Ok(objects
            .iter()
            .filter_map(|meta| shared.storage_path(&meta.location))
            .collect())
    }

    fn list_dir(&self, dir: Option<&StoragePath>) -> Result<DirListing> {
        let shared = &self.shared;
        let prefix = shared.dir_key(dir);
        let listing = shared
            .block_on(shared.store.list_with_delimiter(prefix.as_ref()))
            .map_err(|e| shared.error("list", dir.map_or("", StoragePath::as_str), e))?;
        let name = |key: &ObjectPath| {
            shared
                .storage_path(key)
                .map(|path| path.file_name().to_string())
        };
        Ok(DirListing {
            dirs: listing.common_prefixes.iter().filter_map(name).collect(),
            files: listing
                .objects
                .iter()
                .filter_map(|meta| Some((name(&meta.location)?, meta.size)))
                .collect(),
        })
    }

    fn delete(&self, path: &StoragePath) -> Result<()> {
        let shared = &self.shared;
        match shared.block_on(shared.store.delete(&shared.key(path))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(shared.error("delete", path.as_str(), e)),
        }
    }

    fn delete_dir(&self, dir: &StoragePath) -> Result<()> {
        let shared = &self.shared;
        let keys: Vec<ObjectPath> = self
            .list(Some(dir))?
            .iter()
            .map(|p| shared.key(p))
            .collect();
        let stream: BoxStream<'static, object_store::Result<ObjectPath>> =
            futures_util::stream::iter(keys.into_iter().map(Ok)).boxed();
        let results: Vec<object_store::Result<ObjectPath>> =
            shared.block_on(shared.store.delete_stream(stream).collect());
        for result in results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(shared.error("delete", dir.as_str(), e)),
            }
        }
        Ok(())
    }
}

/// A GET's body, read chunk by chunk as the caller reads.
struct ObjectRead {
    runtime: &'static Runtime,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for ObjectRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(bytes)) => self.chunk = bytes,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

/// A multipart upload in progress: its parts still in flight, oldest first.
struct Upload {
    multipart: Box<dyn MultipartUpload>,
    parts: VecDeque<JoinHandle<object_store::Result<()>>>,
}

/// A file being written: one PUT on `finish` if it fits in a part, a multipart upload
/// otherwise.
struct ObjectWrite {
    shared: Arc<Shared>,
    path: StoragePath,
    /// Bytes not yet handed to a request: less than one part.
    buffer: Vec<u8>,
    upload: Option<Upload>,
    written: u64,
    finished: bool,
}

impl ObjectWrite {
    /// Sends the buffer as the next part, starting the multipart upload on the first one,
    /// after waiting for the oldest part if too many are in flight.
    fn send_part(&mut self) -> object_store::Result<()> {
        let shared = self.shared.clone();
        if self.upload.is_none() {
            let multipart = shared.block_on(shared.store.put_multipart(&shared.key(&self.path)))?;
            self.upload = Some(Upload {
                multipart,
                parts: VecDeque::new(),
            });
        }
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        while upload.parts.len() >= shared.options.parts_in_flight {
            if let Some(part) = upload.parts.pop_front() {
                join(&shared, part)?;
            }
        }
        let capacity = shared.options.part_size;
        let part = std::mem::replace(&mut self.buffer, Vec::with_capacity(capacity));
        let request = upload.multipart.put_part(PutPayload::from(part));
        upload.parts.push_back(shared.runtime.spawn(request));
        Ok(())
    }

    fn complete(&mut self) -> object_store::Result<()> {
        let shared = self.shared.clone();
        if self.upload.is_none() {
            let body = PutPayload::from(std::mem::take(&mut self.buffer));
            return shared
                .block_on(shared.store.put(&shared.key(&self.path), body))
                .map(|_| ());
        }
        if !self.buffer.is_empty() {
            self.send_part()?;
        }
        let Some(mut upload) = self.upload.take() else {
            return Ok(());
        };
        let mut failure = None;
        while let Some(part) = upload.parts.pop_front() {
            if let Err(e) = join(&shared, part) {
                failure.get_or_insert(e);
            }
        }
        let result = match failure {
            Some(e) => Err(e),
            None => shared.block_on(upload.multipart.complete()).map(|_| ()),
        };
        if result.is_err() {
            let _ = shared.block_on(upload.multipart.abort());
        }
        result
    }
}

/// Waits for an uploading part.
fn join(shared: &Shared, part: JoinHandle<object_store::Result<()>>) -> object_store::Result<()> {
    shared
        .block_on(part)
        .unwrap_or_else(|e| Err(object_store::Error::JoinError { source: e }))
}

impl Write for ObjectWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.finished {
            return Err(io::Error::other("write after finish"));
        }
        let part_size = self.shared.options.part_size;
        let n = buf.len().min(part_size - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == part_size {
            self.send_part().map_err(io::Error::other)?;
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotWrite for ObjectWrite {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.finished = true;
        self.complete()
            .map_err(|e| self.shared.error("write", self.path.as_str(), e))?;
        Ok(self.written)
    }
}

impl Drop for ObjectWrite {
    fn drop(&mut self) {
        // Not finished: the parts sent are discarded; nothing was published.
        if let Some(mut upload) = self.upload.take() {
            for part in &upload.parts {
                part.abort();
            }
            self.shared.runtime.spawn(async move {
                let _ = upload.multipart.abort().await;
            });
        }
    }
}

/// Applies `config` (settings by their `object_store` names) to an object store builder
/// whose keys parse from those names.
fn configured<B, K>(
    mut builder: B,
    config: &BTreeMap<String, String>,
    with: impl Fn(B, K, &str) -> B,
) -> object_store::Result<B>
where
    K: std::str::FromStr<Err = object_store::Error>,
{
    for (key, value) in config {
        builder = with(builder, key.parse()?, value);
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str, part_size: usize) -> BucketStore {
        let options = ObjectStoreOptions {
            part_size,
            ..ObjectStoreOptions::default()
        };
        BucketStore::open(&format!("memory://{name}/root/dir"), &options).unwrap()
    }

    fn path(p: &str) -> StoragePath {
        StoragePath::new(p).unwrap()
    }

    #[test]
    fn a_file_appears_only_when_finished_even_in_many_parts() {
        let store = store("parts", MIN_PART_SIZE);
        let bytes: Vec<u8> = (0..5 * MIN_PART_SIZE + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let p = path("shared/1-ab-000001.sst");
        let mut w = store.create(&p).unwrap();
        for chunk in bytes.chunks(10_000) {
            w.write_all(chunk).unwrap();
        }
        assert!(!store.exists(&p).unwrap(), "parts sent, nothing visible");
        assert_eq!(w.finish().unwrap(), bytes.len() as u64);
        assert_eq!(store.get(&p, u64::MAX).unwrap(), bytes);

        let dropped = store.create(&path("shared/other")).unwrap();
        let mut dropped = dropped;
        dropped.write_all(&bytes).unwrap();
        drop(dropped);
        assert_eq!(
            store.list(None).unwrap(),
            vec![p.clone()],
            "a dropped writer leaves nothing"
        );
    }

    #[test]
    fn ranges_lists_and_deletes_under_the_prefix() {
        let store = store("ranges", MIN_PART_SIZE);
        store.put(&path("a/b/c"), b"0123456789").unwrap();
        store.put(&path("a/d"), b"x").unwrap();
        store.put(&path("e"), b"y").unwrap();
        let outside =
            BucketStore::open("memory://ranges/root", &ObjectStoreOptions::default()).unwrap();
        assert!(
            outside.exists(&path("dir/a/b/c")).unwrap(),
            "paths are under the prefix"
        );

        let mut range = Vec::new();
        store
            .read_range(&path("a/b/c"), 3, 4)
            .unwrap()
            .read_to_end(&mut range)
            .unwrap();
        assert_eq!(range, b"3456");
        let mut tail = Vec::new();
        store
            .read_range(&path("a/b/c"), 8, 100)
            .unwrap()
            .read_to_end(&mut tail)
            .unwrap();
        assert_eq!(tail, b"89", "a range past the end is cut short");
        let mut past = Vec::new();
        store
            .read_range(&path("a/b/c"), 10, 5)
            .unwrap()
            .read_to_end(&mut past)
            .unwrap();
        assert!(past.is_empty(), "a range after the end reads nothing");

        let mut under_a = store.list(Some(&path("a"))).unwrap();
        under_a.sort();
        assert_eq!(under_a, vec![path("a/b/c"), path("a/d")]);
        let top = store.list_dir(None).unwrap();
        assert_eq!(top.dirs, vec!["a".to_string()]);
        assert_eq!(top.files, vec![("e".to_string(), 1)]);
        store.delete_dir(&path("a")).unwrap();
        assert_eq!(store.list(None).unwrap(), vec![path("e")]);
        store.delete(&path("e")).unwrap();
        store.delete(&path("e")).unwrap();
        assert!(matches!(
            store.open(&path("e")),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(store.size(&path("e")).unwrap(), None);
    }

    #[test]
    fn urls_and_options_are_checked() {
        let options = ObjectStoreOptions::default();
        for bad in ["ftp://host/x", "not a url", "http://example.com/x"] {
            assert!(
                matches!(
                    BucketStore::open(bad, &options),
                    Err(Error::InvalidConfig { .. })
                ),
                "{bad}"
            );
        }
        let tiny = ObjectStoreOptions {
            part_size: 1,
            ..ObjectStoreOptions::default()
        };
        assert!(matches!(
            BucketStore::open("memory://x", &tiny),
            Err(Error::InvalidConfig { .. })
        ));
        let mut unknown = ObjectStoreOptions::default();
        unknown
            .config
            .insert("aws_no_such_setting".into(), "1".into());
        let e = BucketStore::open("s3://bucket/prefix", &unknown).unwrap_err();
        assert!(e.to_string().contains("aws_no_such_setting"), "{e}");
    }
}
