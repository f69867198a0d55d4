//! ONNX external data (TensorProto.data_location = EXTERNAL): validation and carrying the data
//! files along when a model is written to another directory. Tensor bytes in external files are
//! never read into memory by this tool.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::generated::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, tensor_proto::DataLocation,
};
use crate::io::dtype::tensor_byte_length;

/// Where a tensor's bytes live when they are external.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef {
    pub location: String,
    pub offset: u64,
    pub length: Option<u64>,
}

/// The external reference of a tensor, None for inline tensors, Err for malformed entries.
pub fn external_ref(tensor: &TensorProto) -> Option<Result<ExternalRef, String>> {
    if tensor.data_location != Some(DataLocation::External as i32) {
        return None;
    }
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for entry in &tensor.external_data {
        let value = entry.value();
        let parse = |what: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{what} {value:?} is not a number"))
        };
        match entry.key() {
            "location" => location = Some(value.to_string()),
            "offset" => match parse("offset") {
                Ok(v) => offset = v,
                Err(e) => return Some(Err(e)),
            },
            "length" => match parse("length") {
                Ok(v) => length = Some(v),
                Err(e) => return Some(Err(e)),
            },
            _ => {}
        }
    }
    Some(match location {
        None => Err("no location".into()),
        Some(location) => validate_location(&location).map(|()| ExternalRef {
            location,
            offset,
            length,
        }),
    })
}

/// A location must be a relative path that stays inside the model's directory.
pub fn validate_location(location: &str) -> Result<(), String> {
    if location.is_empty() {
        return Err("empty location".into());
    }
    let path = Path::new(location);
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(format!("location {location:?} contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("location {location:?} is absolute"));
            }
        }
    }
    if location.contains('\\') {
        return Err(format!("location {location:?} is not a POSIX path"));
    }
    Ok(())
}

/// Calls `visit` on every TensorProto of the model: initializers, sparse initializers, tensor
/// attributes, in every subgraph, training_info graph and function.
pub fn for_each_tensor<'m>(model: &'m ModelProto, visit: &mut dyn FnMut(&'m TensorProto)) {
    if let Some(graph) = &model.graph {
        graph_tensors(graph, visit);
    }
    for info in &model.training_info {
        for graph in [&info.initialization, &info.algorithm]
            .into_iter()
            .flatten()
        {
            graph_tensors(graph, visit);
        }
    }
    for function in &model.functions {
        nodes_tensors(&function.node, visit);
    }
}

fn graph_tensors<'m>(graph: &'m GraphProto, visit: &mut dyn FnMut(&'m TensorProto)) {
    graph.initializer.iter().for_each(&mut *visit);
    for sparse in &graph.sparse_initializer {
        sparse
            .values
            .iter()
            .chain(sparse.indices.iter())
            .for_each(&mut *visit);
    }
    nodes_tensors(&graph.node, visit);
}

fn nodes_tensors<'m>(nodes: &'m [NodeProto], visit: &mut dyn FnMut(&'m TensorProto)) {
    for node in nodes {
        for attr in &node.attribute {
            attribute_tensors(attr, visit);
        }
    }
}

fn attribute_tensors<'m>(attr: &'m AttributeProto, visit: &mut dyn FnMut(&'m TensorProto)) {
    attr.t
        .iter()
        .chain(attr.tensors.iter())
        .for_each(&mut *visit);
    for sparse in attr.sparse_tensor.iter().chain(attr.sparse_tensors.iter()) {
        sparse
            .values
            .iter()
            .chain(sparse.indices.iter())
            .for_each(&mut *visit);
    }
    for graph in attr.g.iter().chain(attr.graphs.iter()) {
        graph_tensors(graph, visit);
    }
}

/// A data file a model references: its location as written in the model (normalised), the
/// resolved file, and how many of its leading bytes the model uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub location: PathBuf,
    pub resolved: PathBuf,
    pub needed: u64,
}

/// Validates every external reference of a model stored at `model_path`: a relative location
/// without `..` that, symlinks resolved, stays inside the model's folder and is a regular file; a
/// `length`, when given, equal to what the tensor's dims and type need; the byte range inside the
/// file. Returns the data files used, each once.
pub fn check_external_data(model_path: &Path, model: &ModelProto) -> Result<Vec<DataFile>> {
    let dir = match model_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut files: BTreeMap<PathBuf, (DataFile, u64)> = BTreeMap::new();
    let mut first_error = None;
    for_each_tensor(model, &mut |tensor| {
        if first_error.is_some() {
            return;
        }
        let Some(reference) = external_ref(tensor) else {
            return;
        };
        let result = reference.and_then(|r| {
            let needed = tensor_byte_length(&tensor.dims, tensor.data_type()).ok_or_else(|| {
                format!(
                    "dims {:?} of type {} cannot be sized",
                    tensor.dims,
                    crate::io::dtype::name(tensor.data_type())
                )
            })?;
            if let Some(length) = r.length
                && length != needed
            {
                return Err(format!(
                    "length {length} does not match dims {:?} of type {} ({needed} bytes)",
                    tensor.dims,
                    crate::io::dtype::name(tensor.data_type())
                ));
            }
            let end = r
                .offset
                .checked_add(needed)
                .ok_or_else(|| format!("offset {} overflows", r.offset))?;
            let location: PathBuf = Path::new(&r.location)
                .components()
                .filter(|c| !matches!(c, Component::CurDir))
                .collect();
            if !files.contains_key(&location) {
                let (resolved, size) = resolve_data_file(dir, &r.location)?;
                let file = DataFile {
                    location: location.clone(),
                    resolved,
                    needed: 0,
                };
                files.insert(location.clone(), (file, size));
            }
            let Some((file, size)) = files.get_mut(&location) else {
                return Err("internal: data file not recorded".into());
            };
            if end > *size {
                return Err(format!(
                    "byte range {}+{needed} is outside {} ({size} bytes)",
                    r.offset,
                    file.resolved.display()
                ));
            }
            file.needed = file.needed.max(end);
            Ok(())
        });
        if let Err(reason) = result {
            first_error = Some(Error::ExternalData {
                path: model_path.to_path_buf(),
                tensor: tensor.name().to_string(),
                reason,
            });
        }
    });
    match first_error {
        Some(e) => Err(e),
        None => Ok(files.into_values().map(|(file, _)| file).collect()),
    }
}

/// Resolves a (syntactically valid) location against the model's folder: symlinks followed, the
/// result inside the folder, a regular file. Returns it and its size.
fn resolve_data_file(dir: &Path, location: &str) -> std::result::Result<(PathBuf, u64), String> {
    let folder = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the model's folder {}: {e}", dir.display()))?;
    let path = dir.join(location);
    let resolved = path
        .canonicalize()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !resolved.starts_with(&folder) {
        return Err(format!(
            "location {location:?} resolves to {}, outside the model's folder",
            resolved.display()
        ));
    }
    let (_, size) = crate::io::fs::open_regular(&resolved).map_err(|e| e.to_string())?;
    Ok((resolved, size))
}

/// External data files copied next to an output under temporary names. Nothing is visible under
/// a real name before `commit_with`; dropping the value removes every temporary file and every
/// folder it created.
pub struct StagedExternalFiles {
    files: Vec<(tempfile::NamedTempFile, PathBuf)>,
    created_dirs: Vec<PathBuf>,
}

impl Drop for StagedExternalFiles {
    fn drop(&mut self) {
        self.files.clear();
        for dir in self.created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Copies the data files a model uses from `from_dir` into temporary files in `to_dir`, keeping
/// their relative locations and only the bytes the model references. Nothing is copied when both
/// folders are the same place. A data file already at the destination is kept when it starts with
/// the same bytes and refused otherwise (with or without --force: it may belong to another model).
pub fn stage_external_files(
    files: &[DataFile],
    from_dir: &Path,
    to_dir: &Path,
) -> Result<StagedExternalFiles> {
    let mut staged = StagedExternalFiles {
        files: Vec::new(),
        created_dirs: Vec::new(),
    };
    let same = match (from_dir.canonicalize(), to_dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Ok(staged);
    }
    // Everything that can be refused, before anything is created.
    let mut to_copy = Vec::new();
    for file in files {
        let dst = to_dir.join(&file.location);
        refuse_non_folder_on_the_way(to_dir, &file.location)?;
        if std::fs::symlink_metadata(&dst).is_ok() {
            if !starts_with_same_bytes(&dst, &file.resolved, file.needed)? {
                return Err(Error::OutputRefused {
                    path: dst,
                    reason: "an external data file with other content is there; move it away or \
                             write to another folder"
                        .into(),
                });
            }
            continue; // already there, byte for byte
        }
        to_copy.push((file, dst));
    }
    for (file, dst) in to_copy {
        let parent = dst.parent().unwrap_or(to_dir).to_path_buf();
        staged.create_dirs(&parent)?;
        let mut tmp = crate::io::atomic::builder_with_mode(0o666)
            .suffix(".tmp")
            .tempfile_in(&parent)
            .map_err(|e| Error::io("cannot create a temporary file in", &parent, e))?;
        crate::io::fs::copy_prefix(&file.resolved, file.needed, tmp.as_file_mut(), &dst)?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("cannot write", &dst, e))?;
        staged.files.push((tmp, dst));
    }
    Ok(staged)
}

/// Every existing component between `to_dir` and the data file's folder must be a folder.
fn refuse_non_folder_on_the_way(to_dir: &Path, location: &Path) -> Result<()> {
    let mut path = to_dir.to_path_buf();
    let mut components: Vec<_> = location.components().collect();
    components.pop();
    for component in components {
        path.push(component);
        if let Ok(meta) = std::fs::metadata(&path)
            && !meta.is_dir()
        {
            return Err(Error::OutputRefused {
                path: path.clone(),
                reason: "an external data file goes below it, but it is not a folder".into(),
            });
        }
    }
    Ok(())
}

/// Whether `existing` is a regular file whose first `length` bytes equal those of `source`.
fn starts_with_same_bytes(existing: &Path, source: &Path, length: u64) -> Result<bool> {
    let Ok(meta) = std::fs::metadata(existing) else {
        return Ok(false);
    };
    if !meta.is_file() || meta.len() < length {
        return Ok(false);
    }
    let (a, _) = crate::io::fs::open_regular(existing)?;
    let (b, _) = crate::io::fs::open_regular(source)?;
    let (mut a, mut b) = (a.take(length), b.take(length));
    let (mut buf_a, mut buf_b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a
            .read(&mut buf_a)
            .map_err(|e| Error::io("cannot read", existing, e))?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut buf_b[..n])
            .map_err(|e| Error::io("cannot read", source, e))?;
        if buf_a[..n] != buf_b[..n] {
            return Ok(false);
        }
    }
}

impl StagedExternalFiles {
    /// Creates `dir` and its missing ancestors, remembering each for removal on failure.
    fn create_dirs(&mut self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dirs(parent)?;
        }
        std::fs::create_dir(dir).map_err(|e| Error::io("cannot create", dir, e))?;
        self.created_dirs.push(dir.to_path_buf());
        Ok(())
    }

    /// Gives every staged file its real name, then runs `then` (writing the model that refers to
    /// them). If either fails, the files and folders created here are removed again.
    pub fn commit_with(mut self, then: impl FnOnce() -> Result<()>) -> Result<()> {
        let mut placed: Vec<PathBuf> = Vec::new();
        let mut result = Ok(());
        for (tmp, dst) in std::mem::take(&mut self.files) {
            if let Err(e) = crate::io::interrupt::check() {
                result = Err(Error::io("cannot write", &dst, e));
                break;
            }
            match tmp.persist_noclobber(&dst) {
                Ok(_) => placed.push(dst),
                Err(e) => {
                    result = Err(Error::io("cannot rename into place", &dst, e.error));
                    break;
                }
            }
        }
        let result = result.and_then(|()| then());
        if result.is_err() {
            for file in placed {
                let _ = std::fs::remove_file(file);
            }
        } else {
            self.created_dirs.clear();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_validated() {
        assert!(validate_location("weights.bin").is_ok());
        assert!(validate_location("data/weights.bin").is_ok());
        assert!(validate_location("../weights.bin").is_err());
        assert!(validate_location("a/../../b").is_err());
        assert!(validate_location("/etc/passwd").is_err());
        assert!(validate_location("").is_err());
    }
}
