//! Where a store is: a local directory or an object store URL, and opening the store.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::storage::{BucketStore, LocalStore, ObjectStoreOptions, SnapshotStore};

/// Where a storage root, a snapshot or one of its files is: a local path, or an object
/// store URL (`s3://bucket/prefix`, `gs://…`, `az://…`, `memory://…`).
///
/// `file:///…` URLs are local paths. A URL is kept without a trailing slash.
///
/// # Examples
/// ```
/// use cairn::Location;
/// let chk = Location::parse("s3://bucket/jobs/word-count/chk-7")?;
/// assert_eq!(chk.file_name(), Some("chk-7"));
/// assert_eq!(chk.parent(), Some(Location::parse("s3://bucket/jobs/word-count")?));
/// assert_eq!(chk.join("_metadata").to_string(), "s3://bucket/jobs/word-count/chk-7/_metadata");
/// assert_eq!(Location::parse("file:///data/checkpoints")?, Location::Local("/data/checkpoints".into()));
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A path on the local file system (or a mounted one).
    Local(PathBuf),
    /// An object store URL, without a trailing slash.
    Url(String),
}

impl Location {
    /// Reads a path or URL: text that starts with `<scheme>://` is a URL (`file://` ones
    /// are local paths), anything else a local path.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a `file://` URL that is not an absolute local path.
    pub fn parse(text: &str) -> Result<Self> {
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(text)));
        };
        let is_scheme = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !is_scheme {
            return Ok(Location::Local(PathBuf::from(text)));
        }
        if scheme.eq_ignore_ascii_case("file") {
            let url = url::Url::parse(text).map_err(|e| invalid_url(text, e.to_string()))?;
            let path = url
                .to_file_path()
                .map_err(|()| invalid_url(text, "not an absolute local path".into()))?;
            return Ok(Location::Local(path));
        }
        Ok(Location::Url(text.trim_end_matches('/').to_string()))
    }

    /// `name` (one or more `/`-separated components) under this location.
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(path) => Location::Local(path.join(name)),
            Location::Url(url) => Location::Url(format!("{url}/{name}")),
        }
    }

    /// The directory this location is in; `None` at a file system's root or a bucket's.
    pub fn parent(&self) -> Option<Location> {
        match self {
            Location::Local(path) => path.parent().map(|p| Location::Local(p.to_path_buf())),
            Location::Url(url) => {
                let (_, rest) = url.split_once("://")?;
                let (_, path) = rest.split_once('/')?;
                let cut = url.len() - path.len() - 1;
                let parent = match path.rsplit_once('/') {
                    Some((dirs, _)) => format!("{}/{dirs}", &url[..cut]),
                    None => url[..cut].to_string(),
                };
                Some(Location::Url(parent))
            }
        }
    }

    /// The last component: a file or directory name, or a URL's last path segment (`None`
    /// for a bare bucket).
    pub fn file_name(&self) -> Option<&str> {
        match self {
            Location::Local(path) => path.file_name().and_then(|n| n.to_str()),
            Location::Url(url) => {
                let (_, rest) = url.split_once("://")?;
                let (_, path) = rest.split_once('/')?;
                path.rsplit('/').next().filter(|n| !n.is_empty())
            }
        }
    }

    /// The local path, for a local location.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(path) => Some(path),
            Location::Url(_) => None,
        }
    }

    /// Opens the store rooted here: a [`LocalStore`] (the directory is created if missing)
    /// or a [`BucketStore`] with `options`.
    ///
    /// # Errors
    /// [`Error::Io`] if a local directory cannot be created; [`Error::InvalidConfig`] for
    /// a URL no object store takes.
    pub fn open(&self, options: &ObjectStoreOptions) -> Result<Arc<dyn SnapshotStore>> {
        Ok(match self {
            Location::Local(path) => Arc::new(LocalStore::new(path)?),
            Location::Url(url) => Arc::new(BucketStore::open(url, options)?),
        })
    }
}

fn invalid_url(text: &str, detail: String) -> Error {
    Error::InvalidConfig {
        what: "storage location",
        detail: format!("{text}: {detail}"),
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Url(url) => f.write_str(url),
        }
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Self {
        Location::Local(path.to_path_buf())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Location::Local(path)
    }
}

/// Opens the store at `location`, a directory or an object store URL (see
/// [`Location::parse`]), with the [`ObjectStoreOptions`] of the environment
/// ([`ObjectStoreOptions::from_env`]) for a URL.
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("checkpoints");
/// # let path = path.to_str().unwrap();
/// let local = cairn::open_store(path)?;                        // a LocalStore
/// let memory = cairn::open_store("memory://test/checkpoints")?;  // a BucketStore
/// assert_eq!(memory.location(), "memory://test/checkpoints");
/// // s3://bucket/prefix, gs://bucket/prefix, az://container/prefix: credentials and
/// // endpoint from AWS_*, GOOGLE_*, AZURE_* environment variables.
/// # Ok::<(), cairn::Error>(())
/// ```
///
/// # Errors
/// As [`Location::parse`] and [`Location::open`]; [`Error::InvalidConfig`] for a
/// `CAIRN_OBJECT_STORE_*` variable that is not a number.
pub fn open_store(location: &str) -> Result<Arc<dyn SnapshotStore>> {
    let location = Location::parse(location)?;
    let options = match location {
        Location::Local(_) => ObjectStoreOptions::default(),
        Location::Url(_) => ObjectStoreOptions::from_env()?,
    };
    location.open(&options)
}

/// Opens the store at `location` with `options` for an object store.
///
/// # Errors
/// As [`open_store`].
pub fn open_store_with(
    location: &str,
    options: &ObjectStoreOptions,
) -> Result<Arc<dyn SnapshotStore>> {
    Location::parse(location)?.open(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls() {
        let url = Location::parse("s3://bucket/a/b/").unwrap();
        assert_eq!(url, Location::Url("s3://bucket/a/b".into()));
        assert_eq!(url.file_name(), Some("b"));
        let a = url.parent().unwrap();
        assert_eq!(a.to_string(), "s3://bucket/a");
        let bucket = a.parent().unwrap();
        assert_eq!(bucket.to_string(), "s3://bucket");
        assert_eq!(bucket.parent(), None);
        assert_eq!(bucket.file_name(), None);
        assert_eq!(bucket.join("chk-1").to_string(), "s3://bucket/chk-1");
        assert_eq!(
            Location::parse("relative/dir").unwrap(),
            Location::Local("relative/dir".into())
        );
        assert_eq!(
            Location::parse("file:///tmp/x%20y").unwrap(),
            Location::Local("/tmp/x y".into())
        );
        assert!(Location::parse("file://host/x").is_err());
    }
}
