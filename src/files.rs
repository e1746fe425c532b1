//! Reading the files the proxy trusts: the config file, `accounts_dir`'s account files,
//! private keys, PIN and client secret files, certificates, CA bundles.
//!
//! Every one must be a regular file once symlinks are followed (a Kubernetes Secret or
//! ConfigMap mount makes every file a symlink into `..data`), and at most [`MAX_FILE_BYTES`]:
//! a path pointing at `/dev/zero`, a pipe or a 200 MB file must fail at once, not allocate
//! its size.
//!
//! Private keys follow one rule, the one PostgreSQL applies to its server key: never
//! readable by others; readable by the group only when that group is one the proxy runs
//! with (its effective group or a supplementary group, such as a pod's `fsGroup`), so a
//! Secret mounted `0440` works without an init container copying it.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest file the proxy reads (1 MiB), whatever it holds: no config, account, key,
/// PIN, secret, certificate or bundle file comes near it.
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A path as a person needs to see it in an error: absolute, and saying so when it was
/// resolved against the working directory.
#[derive(Debug, Clone)]
pub struct Shown(PathBuf);

impl From<&Path> for Shown {
    fn from(path: &Path) -> Self {
        Shown(path.to_path_buf())
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_absolute() {
            return write!(f, "{}", self.0.display());
        }
        match std::path::absolute(&self.0) {
            Ok(absolute) => write!(
                f,
                "{} (relative paths are resolved against the working directory)",
                absolute.display()
            ),
            Err(_) => write!(f, "{}", self.0.display()),
        }
    }
}

/// Why a trusted file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// It could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: Shown,
        /// Why.
        source: std::io::Error,
    },
    /// It is a directory, a device, a pipe or a socket.
    #[error("{path} is not a regular file ({kind})")]
    NotRegular {
        /// The file.
        path: Shown,
        /// What it is instead.
        kind: &'static str,
    },
    /// It is larger than any file the proxy reads.
    #[error("{path} is larger than 1 MiB ({MAX_FILE_BYTES} bytes), the most the proxy reads from any file")]
    TooLarge {
        /// The file.
        path: Shown,
    },
    /// A path names `${CREDENTIALS_DIRECTORY}` but systemd did not set it.
    #[error("{0} names ${{CREDENTIALS_DIRECTORY}}, which is not set: run the proxy under systemd with LoadCredential= for it")]
    NoCredentialsDirectory(Shown),
    /// A private key others may read.
    #[error("{path} is readable by others (mode {mode:04o}): run chmod 600 on it (or 640 for a group the proxy runs with; in Kubernetes, defaultMode: 0440)")]
    ReadableByOthers {
        /// The file.
        path: Shown,
        /// Its permission bits.
        mode: u32,
    },
    /// A public key or certificate where a private key belongs: the other half of the pair.
    #[error("{path} holds a {found}, not a private key: name the private half of the pair here (pkcv-proxy keygen writes it as NAME-private.pem)")]
    NotPrivate {
        /// The file.
        path: Shown,
        /// What it holds: "public key" or "certificate".
        found: &'static str,
    },
    /// A private key a group the proxy is not in may read.
    #[error("{path} is readable by group {gid}, which the proxy does not run with (mode {mode:04o}): run chmod 600 on it, or give it the proxy's group (in Kubernetes, the pod's fsGroup)")]
    ReadableByForeignGroup {
        /// The file.
        path: Shown,
        /// Its permission bits.
        mode: u32,
        /// Its group.
        gid: u32,
    },
}

/// `${CREDENTIALS_DIRECTORY}` in a path setting, as systemd's `LoadCredential=` provides it:
/// expanded from the environment, and an error when it is unset (a unit that forgot
/// `LoadCredential=` must not fall back to a path relative to the working directory).
pub(crate) fn expand_credentials(path: &Path) -> Result<PathBuf, FileError> {
    const VARIABLE: &str = "${CREDENTIALS_DIRECTORY}";
    let Some(text) = path.to_str().filter(|text| text.contains(VARIABLE)) else {
        return Ok(path.to_path_buf());
    };
    let directory = std::env::var("CREDENTIALS_DIRECTORY")
        .ok()
        .filter(|value| !value.is_empty())
        .ok_or_else(|| FileError::NoCredentialsDirectory(path.into()))?;
    Ok(PathBuf::from(text.replace(VARIABLE, &directory)))
}

/// Reads a file that is not a secret (config, account file, certificate, bundle): a
/// regular file of at most [`MAX_FILE_BYTES`].
pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>, FileError> {
    read_stamped(path).map(|(contents, _)| contents)
}

/// What tells one version of a file from the next without reading it: its size,
/// modification time and inode (a rename into place, as the CLI and Kubernetes do, changes
/// the inode even within one mtime tick). Equal stamps: the same file, as far as a poller
/// can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    /// Size in bytes.
    pub len: u64,
    /// Last modification, if the platform has it.
    pub modified: Option<std::time::SystemTime>,
    /// Device and inode (0 where the platform has none).
    pub inode: (u64, u64),
}

impl FileStamp {
    fn of(metadata: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            (metadata.dev(), metadata.ino())
        };
        #[cfg(not(unix))]
        let inode = (0, 0);
        FileStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode,
        }
    }
}

/// The stamp of the file `path` names (symlinks followed), without reading it.
pub(crate) fn stamp(path: &Path) -> Result<FileStamp, FileError> {
    regular_file(path).map(|metadata| FileStamp::of(&metadata))
}

/// As [`read_bounded`], with the stamp of the file that was read (taken before reading: a
/// file replaced meanwhile shows a different stamp next time, so it is read again).
pub(crate) fn read_stamped(path: &Path) -> Result<(Vec<u8>, FileStamp), FileError> {
    let metadata = regular_file(path)?;
    let contents = read_limited(path, &metadata)?;
    Ok((contents, FileStamp::of(&metadata)))
}

/// Reads a private key: as [`read_bounded`], and only if no one but the proxy's user and
/// groups can read it.
pub(crate) fn read_private(path: &Path) -> Result<Vec<u8>, FileError> {
    let metadata = regular_file(path)?;
    check_private(path, &metadata)?;
    read_limited(path, &metadata)
}

fn regular_file(path: &Path) -> Result<std::fs::Metadata, FileError> {
    let metadata = std::fs::metadata(path).map_err(|source| FileError::Read {
        path: path.into(),
        source,
    })?;
    let file_type = metadata.file_type();
    if file_type.is_file() {
        return Ok(metadata);
    }
    Err(FileError::NotRegular {
        path: path.into(),
        kind: kind_of(&file_type),
    })
}

fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_char_device() || file_type.is_block_device() {
            return "a device";
        }
        if file_type.is_fifo() {
            return "a pipe";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

fn read_limited(path: &Path, metadata: &std::fs::Metadata) -> Result<Vec<u8>, FileError> {
    let too_large = || FileError::TooLarge { path: path.into() };
    if metadata.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let read_error = |source| FileError::Read {
        path: path.into(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut contents = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // The size can change between the check and the read (a file being written): the
    // limit holds whatever happens.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(read_error)?;
    if contents.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(contents)
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &std::fs::Metadata) -> Result<(), FileError> {
    use std::os::unix::fs::MetadataExt;
    let mode = metadata.mode() & 0o7777;
    // A public half is readable by all, as it should be: "chmod 600" would be the wrong advice.
    if mode & 0o077 != 0 {
        if let Some(found) = public_pem(path) {
            return Err(FileError::NotPrivate {
                path: path.into(),
                found,
            });
        }
    }
    if mode & 0o007 != 0 {
        return Err(FileError::ReadableByOthers {
            path: path.into(),
            mode,
        });
    }
    if mode & 0o070 != 0 && !runs_with_group(metadata.gid()) {
        return Err(FileError::ReadableByForeignGroup {
            path: path.into(),
            mode,
            gid: metadata.gid(),
        });
    }
    Ok(())
}

/// What a PEM file that is not private holds, from its first line only (the label): a
/// private key's body is never read here.
#[cfg(unix)]
fn public_pem(path: &Path) -> Option<&'static str> {
    let mut start = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(40).read_to_end(&mut start))
        .ok()?;
    let start = start.trim_ascii_start();
    if start.starts_with(b"-----BEGIN PUBLIC KEY-----")
        || start.starts_with(b"-----BEGIN RSA PUBLIC KEY-----")
    {
        Some("public key")
    } else if start.starts_with(b"-----BEGIN CERTIFICATE-----") {
        Some("certificate")
    } else {
        None
    }
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &std::fs::Metadata) -> Result<(), FileError> {
    Ok(())
}

/// Whether the process has `gid` as its effective or a supplementary group.
#[cfg(unix)]
fn runs_with_group(gid: u32) -> bool {
    use rustix::process::{getegid, getgroups};
    getegid().as_raw() == gid
        || getgroups().is_ok_and(|groups| groups.iter().any(|group| group.as_raw() == gid))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn with_mode(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn private_keys_follow_one_permission_rule() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_private(&with_mode(dir.path(), "owner", 0o600)).is_ok());
        assert!(read_private(&with_mode(dir.path(), "owner-ro", 0o400)).is_ok());
        // The file's group is the creator's effective group, which the proxy runs with.
        assert!(read_private(&with_mode(dir.path(), "group", 0o640)).is_ok());
        assert!(read_private(&with_mode(dir.path(), "k8s", 0o440)).is_ok());
        let err = read_private(&with_mode(dir.path(), "world", 0o644)).unwrap_err();
        assert!(
            matches!(err, FileError::ReadableByOthers { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(err.to_string().contains("defaultMode: 0440"), "{err}");
    }

    #[test]
    fn a_public_key_named_as_a_private_key_is_called_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkcv-public.pem");
        std::fs::write(&path, b"-----BEGIN PUBLIC KEY-----\nMIIB\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private(&path).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotPrivate {
                    found: "public key",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("chmod"), "{err}");
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let err = read_bounded(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: "a device",
                    ..
                }
            ),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = read_bounded(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: "a directory",
                    ..
                }
            ),
            "{err}"
        );
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        let err = read_bounded(&big).unwrap_err();
        assert!(matches!(err, FileError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string().contains("big.pem is larger than 1 MiB"),
            "{err}"
        );
        // A symlink to a regular file is followed (Kubernetes mounts are all symlinks).
        let target = with_mode(dir.path(), "real", 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_private(&link).is_ok());
        let missing = read_bounded(Path::new("nope/key.pem")).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("resolved against the working directory"),
            "{missing}"
        );
    }
}
