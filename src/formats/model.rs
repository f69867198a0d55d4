//! Any other ONNX model (an inference model, or a lone ORT training graph): inspectable only;
//! its analysis says why a rewrite is refused.

use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::{Adapter, Analysis, Format, Plan};
use crate::generated::onnx::ModelProto;
use crate::graph::names::NameGenerator;
use crate::graph::validate::Validated;
use crate::inject::ort::LAZY_RESET_GRAD;
use crate::io::model::ModelFile;
use crate::options::RewriteOptions;
use crate::record::RewriteRecord;
use crate::scheme::Scheme;

pub struct PlainModel {
    file: ModelFile,
    analysis: Analysis,
}

impl PlainModel {
    pub fn open(file: ModelFile) -> Self {
        let ort_training_graph = file
            .model
            .graph
            .as_ref()
            .is_some_and(|g| g.input.iter().any(|i| i.name() == LAZY_RESET_GRAD));
        let reason = if ort_training_graph {
            "this is an ONNX Runtime training graph; pass the whole artifacts directory"
        } else {
            "the model has no training_info (an inference model?)"
        };
        let analysis = Analysis {
            format: Format::Model,
            optimizer: None,
            optimizer_nodes: Vec::new(),
            parameters: Vec::new(),
            recorded: crate::record::recorded(&file.model),
            refusals: vec![Error::NoOptimizer {
                path: file.path.clone(),
                reason: reason.into(),
            }],
        };
        PlainModel { file, analysis }
    }

    fn refusal(&self) -> Error {
        Error::NoOptimizer {
            path: self.file.path.clone(),
            reason: "nothing to rewrite".into(),
        }
    }
}

impl Adapter for PlainModel {
    fn format(&self) -> Format {
        Format::Model
    }

    fn path(&self) -> &Path {
        &self.file.path
    }

    fn models(&self) -> Vec<(String, &ModelFile)> {
        vec![(String::new(), &self.file)]
    }

    fn analysis(&self) -> &Analysis {
        &self.analysis
    }

    fn analysis_mut(&mut self) -> &mut Analysis {
        &mut self.analysis
    }

    fn reserved_names(&self) -> NameGenerator {
        NameGenerator::for_model(&self.file.model)
    }

    fn plan(&self, _: &dyn Scheme, _: &RewriteOptions, _: &mut NameGenerator) -> Result<Plan> {
        Err(self.refusal())
    }

    fn write(
        &self,
        _: Validated<Vec<(String, ModelProto)>>,
        _: &Plan,
        _: &RewriteRecord,
        _: &Path,
        _: &RewriteOptions,
    ) -> Result<Vec<String>> {
        Err(self.refusal())
    }
}
