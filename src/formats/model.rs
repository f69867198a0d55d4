//! Any other ONNX model (an inference model, or a lone ORT training graph): inspectable only;
//! its analysis says why a rewrite is refused.

use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::unwind::{
    copy_values, final_values, initializers, required_record, reverted, set_raw, tensor_values,
};
use crate::formats::{Adapter, Analysis, Format, Unwound, only_model, write_model_file};
use crate::generated::onnx::ModelProto;
use crate::graph::names::NameGenerator;
use crate::graph::validate::Validated;
use crate::inject::ort::LAZY_RESET_GRAD;
use crate::io::external_data::check_external_data;
use crate::io::model::ModelFile;
use crate::options::FinalizeOptions;
use crate::scheme::EvalWeights;

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
}

impl Adapter for PlainModel {
    fn refusal(&self) -> Error {
        Error::NoOptimizer {
            path: self.file.path.clone(),
            reason: "nothing to rewrite".into(),
        }
    }

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

    /// An inference model exported (`export_model_for_inferencing`) from rewritten artifacts: the
    /// eval graph's injection reverted, the weights given their final values.
    fn unwind(&self, options: &FinalizeOptions) -> Result<Unwound> {
        let path = &self.file.path;
        let record = required_record(&self.analysis.recorded, path)?;
        let scheme = record.scheme()?;
        let inits = initializers(&self.file.model);
        let counter = record
            .counters
            .first()
            .and_then(|c| inits.get(c.as_str()))
            .ok_or_else(|| Error::NotRewritten {
                path: path.clone(),
                reason: "its step counter is not one of its initializers: finalize takes an inference model exported from rewritten artifacts (or the artifacts themselves)".into(),
            })?;
        let at_sync =
            tensor_values(counter, path)?.first().copied() == Some(scheme.schedule().first as f64);
        let shared = record
            .shared
            .iter()
            .map(|s| {
                let value = inits.get(s.as_str()).map(|t| tensor_values(t, path));
                match value {
                    Some(Ok(v)) if v.len() == 1 => Ok(v[0]),
                    _ => Err(Error::NotRewritten {
                        path: path.clone(),
                        reason: format!("its averaging state {s} is missing or not one value"),
                    }),
                }
            })
            .collect::<Result<Vec<f64>>>()?;
        let mut model = reverted(&self.file.model)?;
        let mut changed = Vec::new();
        let graph = model.graph.get_or_insert_with(Default::default);
        for p in &record.parameters {
            // The eval graph may not read every parameter (one only the loss's backward uses).
            let Some(fast) = inits.get(p.name.as_str()) else {
                continue;
            };
            let state = p
                .state
                .iter()
                .map(|s| {
                    inits
                        .get(s.as_str())
                        .copied()
                        .ok_or_else(|| Error::NotRewritten {
                            path: path.clone(),
                            reason: format!("the state tensor {s} of {} is missing", p.name),
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            let Some(weight) = graph.initializer.iter_mut().find(|t| t.name() == p.name) else {
                continue;
            };
            match (at_sync, options.weights.unwrap_or(record.eval_weights)) {
                (false, EvalWeights::Current) => continue,
                (false, EvalWeights::Averaged) => copy_values(weight, state[0]),
                (true, weights) => {
                    let values = state
                        .iter()
                        .map(|t| tensor_values(t, path))
                        .collect::<Result<Vec<_>>>()?;
                    let raw = final_values(
                        scheme.as_ref(),
                        &p.name,
                        fast.data_type(),
                        &tensor_values(fast, path)?,
                        &values,
                        &shared,
                        weights,
                    )?;
                    set_raw(weight, raw);
                }
            }
            changed.push(p.name.clone());
        }
        Ok(Unwound {
            models: vec![(String::new(), model)],
            changed,
            weights: options.weights.unwrap_or(record.eval_weights),
            ..Unwound::default()
        })
    }

    fn write_unwound(
        &self,
        models: Validated<Vec<(String, ModelProto)>>,
        _unwound: Unwound,
        output: &Path,
        options: &FinalizeOptions,
    ) -> Result<crate::formats::Written> {
        let model = only_model(models.get())?;
        let data_files = check_external_data(&self.file.path, model)?;
        write_model_file(&self.file, &data_files, model, output, options.force)?;
        Ok(crate::formats::Written::default())
    }
}
