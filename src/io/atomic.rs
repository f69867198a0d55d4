//! Atomic output: everything is written to a temporary sibling of the destination and renamed
//! into place only when complete, so a failure (or a kill) never leaves a partial output, and an
//! existing output is replaced only when asked.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Temporary files are private (0600) by default; outputs are ordinary files, so they are
/// created with the usual mode and the process umask applies, as for any file a tool writes.
pub(crate) fn builder_with_mode<'a>(mode: u32) -> tempfile::Builder<'a, 'a> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".onnx-lookahead-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    builder
}

/// Refuses an existing destination unless `overwrite` is set.
pub fn check_destination(path: &Path, overwrite: bool) -> Result<()> {
    if !overwrite && std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::OutputExists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Creates `path` by letting `fill` write a temporary file in the destination directory, then
/// renaming it over `path`.
pub fn write_file_with(
    path: &Path,
    overwrite: bool,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    check_destination(path, overwrite)?;
    let mut staged = StagedFile::new(path)?;
    staged.fill(fill)?;
    staged.commit(overwrite)
}

/// A file being written as a temporary sibling of its destination (`.onnx-lookahead-*.tmp`, with
/// the usual mode of new files under the umask); `commit` renames it into place. Dropping it
/// without commit removes it.
pub struct StagedFile {
    tmp: tempfile::NamedTempFile,
    destination: PathBuf,
}

impl StagedFile {
    pub fn new(destination: &Path) -> Result<Self> {
        let dir = parent_dir(destination);
        let tmp = builder_with_mode(0o666)
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| Error::io("cannot create a temporary file in", &dir, e))?;
        Ok(StagedFile {
            tmp,
            destination: destination.to_path_buf(),
        })
    }

    /// Lets `fill` write the file, then flushes it to disk. Errors name the destination: the
    /// temporary file is an implementation detail, removed when this is dropped.
    pub fn fill(&mut self, fill: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
        fill(self.tmp.as_file_mut())
            .and_then(|()| self.tmp.as_file().sync_all())
            .map_err(|e| Error::io("cannot write", &self.destination, e))
    }

    /// Renames the file over its destination (only if there is none, unless `overwrite`) and
    /// makes the rename durable.
    pub fn commit(self, overwrite: bool) -> Result<()> {
        crate::io::interrupt::check()
            .map_err(|e| Error::io("cannot write", &self.destination, e))?;
        let persisted = if overwrite {
            self.tmp.persist(&self.destination).map(drop)
        } else {
            self.tmp.persist_noclobber(&self.destination).map(drop)
        };
        persisted.map_err(|e| Error::io("cannot rename into place", &self.destination, e.error))?;
        sync_dir(&parent_dir(&self.destination));
        Ok(())
    }
}

/// A directory being assembled next to its destination; `commit` renames it into place.
/// Dropping it without commit removes everything written so far.
pub struct StagedDir {
    staging: Option<tempfile::TempDir>,
    destination: PathBuf,
    overwrite: bool,
}

impl StagedDir {
    pub fn new(destination: &Path, overwrite: bool) -> Result<Self> {
        check_destination(destination, overwrite)?;
        let dir = parent_dir(destination);
        let staging = builder_with_mode(0o777)
            .tempdir_in(&dir)
            .map_err(|e| Error::io("cannot create a temporary directory in", &dir, e))?;
        Ok(StagedDir {
            staging: Some(staging),
            destination: destination.to_path_buf(),
            overwrite,
        })
    }

    /// Where files go while the directory is assembled.
    pub fn path(&self) -> &Path {
        match &self.staging {
            Some(dir) => dir.path(),
            None => &self.destination,
        }
    }

    /// The error with a staged path replaced by the path it will have in the destination: the
    /// staging folder is an implementation detail (and gone once the error is reported).
    pub fn blame(&self, error: Error) -> Error {
        match error {
            Error::Io {
                action,
                path,
                source,
            } => {
                let path = match path.strip_prefix(self.path()) {
                    Ok(rest) => self.destination.join(rest),
                    Err(_) => path,
                };
                Error::Io {
                    action,
                    path,
                    source,
                }
            }
            other => other,
        }
    }

    /// Moves the finished directory to its destination. An existing destination (allowed by
    /// `overwrite`, and checked to be an earlier output by the caller) is first moved aside and
    /// removed only after the new one is in place.
    pub fn commit(mut self) -> Result<()> {
        let Some(staging) = self.staging.take() else {
            return Ok(());
        };
        if let Err(e) = crate::io::interrupt::check() {
            return Err(Error::io("cannot write", &self.destination, e)); // staging dropped: removed
        }
        let staged = staging.keep();
        let dest = self.destination.clone();
        let cleanup_on_error = |e: Error| {
            let _ = std::fs::remove_dir_all(&staged);
            e
        };
        let mut displaced = None;
        if std::fs::symlink_metadata(&dest).is_ok() {
            if !self.overwrite {
                return Err(cleanup_on_error(Error::OutputExists { path: dest }));
            }
            let aside = unused_sibling(&dest, "old");
            std::fs::rename(&dest, &aside)
                .map_err(|e| cleanup_on_error(Error::io("cannot move aside", &dest, e)))?;
            displaced = Some(aside);
        }
        if let Err(e) = std::fs::rename(&staged, &dest) {
            if let Some(aside) = &displaced {
                let _ = std::fs::rename(aside, &dest);
            }
            return Err(cleanup_on_error(Error::io(
                "cannot rename into place",
                &dest,
                e,
            )));
        }
        sync_dir(&parent_dir(&dest));
        if let Some(aside) = displaced {
            // The entry itself: a link is removed, never what it points to.
            let is_dir = std::fs::symlink_metadata(&aside).is_ok_and(|m| m.is_dir());
            let removed = if is_dir {
                std::fs::remove_dir_all(&aside)
            } else {
                std::fs::remove_file(&aside)
            };
            removed.map_err(|e| Error::io("cannot remove the replaced output", &aside, e))?;
        }
        Ok(())
    }
}

/// A name next to `path` that is not in use: `.onnx-lookahead-<what>-<pid>-<n>`.
fn unused_sibling(path: &Path, what: &str) -> PathBuf {
    let dir = parent_dir(path);
    (0u32..)
        .map(|n| dir.join(format!(".onnx-lookahead-{what}-{}-{n}", std::process::id())))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| dir.join(format!(".onnx-lookahead-{what}")))
}

/// Makes a rename in `dir` durable (best effort: not every file system supports it).
pub fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}
