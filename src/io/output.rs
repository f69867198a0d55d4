//! Where an output may go and what it may replace, decided before anything is created.
//!
//! - The output never is, contains, or lies inside an input: every path the tool reads is
//!   compared, after resolving symlinks and `..`, with the output entry and with what it points to.
//! - An existing output is replaced only with `--force`, and only when it is an earlier output of
//!   the same kind (the caller's `replaceable` test: an ONNX model for a model file, an artifacts
//!   set and nothing else for a directory). Anything else is left alone, with or without `--force`.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Canonical paths of everything the tool reads for one run.
#[derive(Debug, Default, Clone)]
pub struct InputPaths {
    paths: Vec<PathBuf>,
}

impl InputPaths {
    pub fn new() -> Self {
        InputPaths::default()
    }

    /// Adds `path` (resolved). A path that cannot be resolved is not read either: the read fails
    /// with its own message.
    pub fn add(&mut self, path: &Path) {
        if let Ok(canonical) = path.canonicalize()
            && !self.paths.contains(&canonical)
        {
            self.paths.push(canonical);
        }
    }

    /// Adds a directory and, resolved, every entry below it (an entry may be a link to a file
    /// elsewhere, which is then an input too). Links to directories are not descended.
    pub fn add_tree(&mut self, dir: &Path) {
        self.add(dir);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => self.add_tree(&path),
                _ => self.add(&path),
            }
        }
    }
}

/// The output entry (its folder resolved, its own name kept) and, if it exists, what it resolves
/// to (different when it is a symlink).
#[derive(Debug, Clone)]
pub struct Destination {
    pub entry: PathBuf,
    pub target: Option<PathBuf>,
}

/// Resolves `output` without requiring it to exist. Paths that do not end in a name (`.`, `..`,
/// `/`) are refused: they cannot be created by rename.
pub fn resolve(output: &Path) -> Result<Destination> {
    let name = match output.components().next_back() {
        Some(Component::Normal(name)) => name,
        _ => {
            return Err(Error::BadOutputPath {
                path: output.to_path_buf(),
                reason: "the path must end in a file or folder name".into(),
            });
        }
    };
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let folder = parent.canonicalize().map_err(|e| Error::BadOutputPath {
        path: output.to_path_buf(),
        reason: format!("its folder {}: {e}", parent.display()),
    })?;
    if !folder.is_dir() {
        return Err(Error::BadOutputPath {
            path: output.to_path_buf(),
            reason: format!("{} is not a folder", parent.display()),
        });
    }
    let entry = folder.join(name);
    let target = std::fs::symlink_metadata(&entry)
        .ok()
        .and_then(|_| entry.canonicalize().ok());
    Ok(Destination { entry, target })
}

/// Refuses an output that is, contains or lies inside one of `inputs`.
pub fn refuse_overlap(output: &Path, dest: &Destination, inputs: &InputPaths) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::OutputIsInput {
            path: output.to_path_buf(),
            reason,
        })
    };
    let places: Vec<&PathBuf> = std::iter::once(&dest.entry)
        .chain(dest.target.as_ref())
        .collect();
    for input in &inputs.paths {
        for place in &places {
            if *place == input {
                return refuse(format!("it is the input {}", input.display()));
            }
            if input.starts_with(place) {
                return refuse(format!("it contains the input {}", input.display()));
            }
            if input.is_dir() && place.starts_with(input) {
                return refuse(format!("it lies inside the input {}", input.display()));
            }
        }
    }
    Ok(())
}

/// Checks an output destination before anything is written: not overlapping an input, and, if
/// something is there, replaceable (`overwrite` given and `replaceable` accepts it; `replaceable`
/// returns why not otherwise).
pub fn check_output(
    output: &Path,
    inputs: &InputPaths,
    overwrite: bool,
    replaceable: &dyn Fn(&Path) -> std::result::Result<(), String>,
) -> Result<Destination> {
    let dest = resolve(output)?;
    refuse_overlap(output, &dest, inputs)?;
    if std::fs::symlink_metadata(&dest.entry).is_ok() {
        if !overwrite {
            return Err(Error::OutputExists {
                path: output.to_path_buf(),
            });
        }
        replaceable(&dest.entry).map_err(|reason| Error::OutputRefused {
            path: output.to_path_buf(),
            reason: format!("--force replaces only an earlier output, and {reason}"),
        })?;
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_are_refused_through_links_and_dots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/art")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        let mut inputs = InputPaths::new();
        inputs.add_tree(&root.join("a/art"));
        for output in [
            root.join("a"),
            root.join("a/art"),
            root.join("a/art/x"),
            root.join("link"),
            root.join("a/art/../../a"),
            root.join("link/art/out"),
        ] {
            let dest = resolve(&output).unwrap();
            assert!(
                refuse_overlap(&output, &dest, &inputs).is_err(),
                "{}",
                output.display()
            );
        }
        assert!(resolve(&root.join("a/art/..")).is_err());
        let fine = root.join("b");
        let dest = resolve(&fine).unwrap();
        refuse_overlap(&fine, &dest, &inputs).unwrap();
    }
}
