//! ONNX external data (TensorProto.data_location = EXTERNAL): validation and carrying the data
//! files along when a model is written to another directory. Tensor bytes in external files are
//! never read into memory by this tool.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::generated::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, tensor_proto::DataLocation,
};

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

/// Validates every external reference of a model stored at `model_path` (relative, no `..`,
/// the file exists, the byte range lies inside it) and returns the set of data files used.
pub fn check_external_data(model_path: &Path, model: &ModelProto) -> Result<BTreeSet<String>> {
    let dir = model_path.parent().unwrap_or(Path::new("."));
    let mut files = BTreeSet::new();
    let mut first_error = None;
    for_each_tensor(model, &mut |tensor| {
        if first_error.is_some() {
            return;
        }
        let Some(reference) = external_ref(tensor) else {
            return;
        };
        let fail = |reason: String| Error::ExternalData {
            path: model_path.to_path_buf(),
            tensor: tensor.name().to_string(),
            reason,
        };
        let reference = match reference {
            Ok(r) => r,
            Err(reason) => {
                first_error = Some(fail(reason));
                return;
            }
        };
        let file = dir.join(&reference.location);
        match std::fs::metadata(&file) {
            Err(e) => first_error = Some(fail(format!("cannot read {}: {e}", file.display()))),
            Ok(meta) => {
                let end = reference.offset.checked_add(reference.length.unwrap_or(0));
                if end.is_none_or(|end| end > meta.len()) {
                    first_error = Some(fail(format!(
                        "byte range {}+{} is outside {} ({} bytes)",
                        reference.offset,
                        reference.length.unwrap_or(0),
                        file.display(),
                        meta.len()
                    )));
                } else {
                    files.insert(reference.location);
                }
            }
        }
    });
    match first_error {
        Some(e) => Err(e),
        None => Ok(files),
    }
}

/// External data files copied next to an output under temporary names: they appear under their
/// real names only on `commit`, after the model itself was written, and vanish if dropped.
pub struct StagedExternalFiles {
    files: Vec<(tempfile::NamedTempFile, PathBuf)>,
    overwrite: bool,
}

/// Copies the external data files a model uses from `from_dir` into temporary files in `to_dir`
/// (keeping relative paths). Nothing is copied when both directories are the same place. An
/// existing destination file is an error unless `overwrite`.
pub fn stage_external_files(
    files: &BTreeSet<String>,
    from_dir: &Path,
    to_dir: &Path,
    overwrite: bool,
) -> Result<StagedExternalFiles> {
    let mut staged = StagedExternalFiles {
        files: Vec::new(),
        overwrite,
    };
    let same = match (from_dir.canonicalize(), to_dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Ok(staged);
    }
    for location in files {
        let src = from_dir.join(location);
        let dst = to_dir.join(location);
        crate::io::atomic::check_destination(&dst, overwrite)?;
        let parent = dst.parent().unwrap_or(to_dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| Error::io("cannot create", &parent, e))?;
        let mut tmp = crate::io::atomic::builder_with_mode(0o666)
            .suffix(".tmp")
            .tempfile_in(&parent)
            .map_err(|e| Error::io("cannot create a temporary file in", &parent, e))?;
        let mut source =
            std::fs::File::open(&src).map_err(|e| Error::io("cannot open", &src, e))?;
        std::io::copy(&mut source, tmp.as_file_mut())
            .map_err(|e| Error::io("cannot copy external data", &src, e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("cannot sync", &dst, e))?;
        staged.files.push((tmp, dst));
    }
    Ok(staged)
}

impl StagedExternalFiles {
    /// Renames every staged file to its real name.
    pub fn commit(self) -> Result<()> {
        for (tmp, dst) in self.files {
            let persisted = if self.overwrite {
                tmp.persist(&dst).map(|_| ())
            } else {
                tmp.persist_noclobber(&dst).map(|_| ())
            };
            persisted.map_err(|e| Error::io("cannot rename into place", &dst, e.error))?;
        }
        Ok(())
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
