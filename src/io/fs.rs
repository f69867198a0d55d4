//! The file-system rules every reader and copier of the tool follows (README "Safety"):
//!
//! - Only regular files are read. Opening happens with `O_NONBLOCK`, so a FIFO cannot block the
//!   open, and the file type is checked on the open descriptor before any read: FIFOs, sockets and
//!   devices (a symlink to `/dev/zero` included) are refused instead of hanging or streaming without
//!   end.
//! - Copies are bounded: a file is copied up to the length it had when it was opened (or the
//!   byte range a model references), never "until EOF".
//! - Directory trees are copied as `cp -R` does: directories recursively, regular files bounded,
//!   symbolic links as links (never followed, so a link cannot pull in files from elsewhere or loop).
//!
//! Inputs are memory-mapped read-only; outputs are never written through a writable mapping (a full
//! disk would arrive as SIGBUS): they are streamed with ordinary writes (`io::sink`), and bytes
//! that are a slice of a mapped input ([`MappedFile`]) are copied from its file by the kernel
//! ([`copy_range`]), so a big input's pages are not faulted into the process to be written out.

use std::fs::{File, FileType, Metadata};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};

/// A human name for a file type, for messages.
pub fn kind_name(file_type: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "FIFO";
        }
        if file_type.is_socket() {
            return "socket";
        }
        if file_type.is_char_device() {
            return "character device";
        }
        if file_type.is_block_device() {
            return "block device";
        }
    }
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else if file_type.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

fn not_regular(path: &Path, file_type: FileType) -> Error {
    Error::NotRegularFile {
        path: path.to_path_buf(),
        kind: kind_name(file_type),
    }
}

/// Opens `path` (following symlinks) for reading if it is a regular file; returns the file and
/// its length at open time. Never blocks on a FIFO.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting; on a
        // regular file the flag has no effect. O_NOCTTY: a terminal never becomes ours.
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options
        .open(path)
        .map_err(|e| Error::io("cannot open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, meta.file_type()));
    }
    Ok((file, meta.len()))
}

/// Maps a whole regular file read-only. Empty files give empty `Bytes` (an empty mapping is an
/// error on Linux).
pub fn map_regular(path: &Path) -> Result<Bytes> {
    MappedFile::open(path).map(|mapped| mapped.bytes)
}

/// A regular file mapped read-only, together with the descriptor it was mapped from, so that
/// slices of the mapping can be copied to an output by the kernel ([`copy_range`]) without their
/// pages ever being mapped into (or counted against) this process.
#[derive(Clone)]
pub struct MappedFile {
    path: PathBuf,
    file: Arc<File>,
    bytes: Bytes,
}

impl MappedFile {
    /// Opens (see [`open_regular`]) and maps the whole file.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, length) = open_regular(path)?;
        let bytes = if length == 0 {
            Bytes::new()
        } else {
            // SAFETY: the mapping is read-only and the tool never writes its inputs; like every
            // memory-mapped reader, this relies on nobody truncating the file while it is in use
            // (ONNX tools replace files by rename rather than rewriting them in place).
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| Error::io("cannot map", path, e))?;
            Bytes::from_owner(map)
        };
        Ok(MappedFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole mapping; slices of it (`Bytes::slice_ref`) keep it alive.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The offset in the file of `slice`, when it is a non-empty part of this mapping.
    pub fn offset_of(&self, slice: &[u8]) -> Option<u64> {
        let base = self.bytes.as_ptr() as usize;
        let start = slice.as_ptr() as usize;
        let end = start.checked_add(slice.len())?;
        (!slice.is_empty() && start >= base && end <= base + self.bytes.len())
            .then(|| (start - base) as u64)
    }
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.path.display(), self.bytes.len())
    }
}

/// Why [`copy_range`] stopped before copying everything.
#[derive(Debug)]
pub enum CopyRangeError {
    /// The kernel cannot copy between these two files (another file system type, an old
    /// kernel, another OS) after `copied` bytes; the caller writes the rest itself.
    Unsupported { copied: u64 },
    /// A read or write failed (a full disk, a file-size limit), or a signal asked to stop.
    Io(std::io::Error),
}

/// Appends `length` bytes of `from`, starting at `offset`, to `to` at its current position, with
/// `copy_file_range`: the kernel moves the bytes between the page caches (or shares extents), so
/// they are never read into, or mapped by, this process. `from`'s own position is not used or
/// changed. Checks for interruption between chunks of at most 64 MiB.
pub fn copy_range(from: &File, offset: u64, length: u64, to: &File) -> Result<(), CopyRangeError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        const CHUNK: u64 = 64 << 20;
        let mut copied = 0u64;
        while copied < length {
            crate::io::interrupt::check().map_err(CopyRangeError::Io)?;
            let Ok(mut at) = libc::loff_t::try_from(offset + copied) else {
                return Err(CopyRangeError::Unsupported { copied });
            };
            let want = (length - copied).min(CHUNK) as usize;
            // SAFETY: both descriptors are open for the duration of the call; `at` is a valid
            // loff_t the kernel updates; a null output offset means "the file position".
            let n = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    &mut at,
                    to.as_raw_fd(),
                    std::ptr::null_mut(),
                    want,
                    0,
                )
            };
            if n < 0 {
                let error = std::io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // Not possible between these files (as std::io::copy decides).
                    Some(libc::ENOSYS | libc::EXDEV | libc::EOPNOTSUPP | libc::EPERM) => {
                        return Err(CopyRangeError::Unsupported { copied });
                    }
                    Some(libc::EINVAL | libc::EBADF) if copied == 0 => {
                        return Err(CopyRangeError::Unsupported { copied });
                    }
                    _ => return Err(CopyRangeError::Io(error)),
                }
            }
            if n == 0 {
                return Err(CopyRangeError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the input file ended at byte {} while {length} bytes from {offset} were copied",
                        offset + copied
                    ),
                )));
            }
            copied += n as u64;
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (from, offset, length, to);
        Err(CopyRangeError::Unsupported { copied: 0 })
    }
}

/// The type of the entry at `path` itself (a symlink is reported as a symlink).
pub fn entry_metadata(path: &Path) -> Option<Metadata> {
    std::fs::symlink_metadata(path).ok()
}

/// Copies the first `length` bytes of the regular file `from` to `to` (already open for
/// writing). Fails if the file is shorter than that.
pub fn copy_prefix(from: &Path, length: u64, to: &mut impl Write, to_path: &Path) -> Result<()> {
    let (file, size) = open_regular(from)?;
    if size < length {
        return Err(Error::io(
            "cannot copy",
            from,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file has {size} bytes, {length} are needed"),
            ),
        ));
    }
    let copied =
        std::io::copy(&mut file.take(length), to).map_err(|e| classify(e, from, to_path))?;
    if copied != length {
        return Err(Error::io(
            "cannot copy",
            from,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file shrank while it was copied ({copied} of {length} bytes)"),
            ),
        ));
    }
    Ok(())
}

/// `std::io::copy` reports read and write errors alike; name the destination for write-side
/// errors (a full disk is the usual one).
fn classify(error: std::io::Error, from: &Path, to: &Path) -> Error {
    match error.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) | Some(libc::EROFS) => {
            Error::io("cannot write", to, error)
        }
        _ => Error::io("cannot copy", from, error),
    }
}

/// Copies the directory tree `from` into the new directory `to` (which must not exist), as
/// `cp -R` would: directories recursively, regular files up to their length at open time,
/// symbolic links as links with the same target. FIFOs, sockets and devices are refused.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir(to).map_err(|e| Error::io("cannot create", to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| Error::io("cannot list", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot list", from, e))?;
        copy_entry(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

/// Copies one directory entry (file, link or directory tree) to the new path `to`.
pub fn copy_entry(from: &Path, to: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(from).map_err(|e| Error::io("cannot read", from, e))?;
    let file_type = meta.file_type();
    if file_type.is_dir() {
        copy_tree(from, to)
    } else if file_type.is_symlink() {
        let target = std::fs::read_link(from).map_err(|e| Error::io("cannot read", from, e))?;
        make_symlink(&target, to)
    } else if file_type.is_file() {
        let mut out = create_new_file(to)?;
        copy_prefix(from, meta.len(), &mut out, to)?;
        out.sync_all().map_err(|e| Error::io("cannot write", to, e))
    } else {
        Err(not_regular(from, file_type))
    }
}

#[cfg(unix)]
fn make_symlink(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link).map_err(|e| Error::io("cannot create", link, e))
}

#[cfg(not(unix))]
fn make_symlink(_target: &Path, link: &Path) -> Result<()> {
    Err(Error::io(
        "cannot create",
        link,
        std::io::Error::other("symbolic links are not supported here"),
    ))
}

/// Creates a new file (failing if anything exists at `path`) with the usual mode of new files.
pub fn create_new_file(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("cannot create", path, e))
}

/// Whether two directory trees hold the same entries: same names and types, regular files with
/// the same bytes, links with the same targets. Special files are never equal.
pub fn same_tree(a: &Path, b: &Path) -> Result<bool> {
    let (Some(meta_a), Some(meta_b)) = (entry_metadata(a), entry_metadata(b)) else {
        return Ok(false);
    };
    let (type_a, type_b) = (meta_a.file_type(), meta_b.file_type());
    if type_a.is_symlink() || type_b.is_symlink() {
        return Ok(type_a.is_symlink()
            && type_b.is_symlink()
            && std::fs::read_link(a).ok() == std::fs::read_link(b).ok());
    }
    if type_a.is_file() && type_b.is_file() {
        return same_file_bytes(a, b, meta_a.len(), meta_b.len());
    }
    if !(type_a.is_dir() && type_b.is_dir()) {
        return Ok(false);
    }
    let names = |dir: &Path| -> Result<Vec<std::ffi::OsString>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))? {
            names.push(
                entry
                    .map_err(|e| Error::io("cannot list", dir, e))?
                    .file_name(),
            );
        }
        names.sort();
        Ok(names)
    };
    let (names_a, names_b) = (names(a)?, names(b)?);
    if names_a != names_b {
        return Ok(false);
    }
    for name in names_a {
        if !same_tree(&a.join(&name), &b.join(&name))? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn same_file_bytes(a: &Path, b: &Path, len_a: u64, len_b: u64) -> Result<bool> {
    if len_a != len_b {
        return Ok(false);
    }
    let (mut file_a, _) = open_regular(a)?;
    let (mut file_b, _) = open_regular(b)?;
    let mut buf_a = vec![0u8; 1 << 16];
    let mut buf_b = vec![0u8; 1 << 16];
    let mut left = len_a;
    while left > 0 {
        let n = left.min(buf_a.len() as u64) as usize;
        file_a
            .read_exact(&mut buf_a[..n])
            .map_err(|e| Error::io("cannot read", a, e))?;
        file_b
            .read_exact(&mut buf_b[..n])
            .map_err(|e| Error::io("cannot read", b, e))?;
        if buf_a[..n] != buf_b[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let err = open_regular(&fifo).unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");
        let err = open_regular(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("character device"), "{err}");
    }

    #[test]
    fn trees_copy_links_as_links_and_compare() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir_all(a.join("sub")).unwrap();
        std::fs::write(a.join("f"), b"bytes").unwrap();
        std::os::unix::fs::symlink("..", a.join("sub/up")).unwrap();
        let b = dir.path().join("b");
        copy_tree(&a, &b).unwrap();
        assert_eq!(
            std::fs::read_link(b.join("sub/up")).unwrap(),
            Path::new("..")
        );
        assert!(same_tree(&a, &b).unwrap());
        std::fs::write(b.join("f"), b"other").unwrap();
        assert!(!same_tree(&a, &b).unwrap());
    }
}
