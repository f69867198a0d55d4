//! What a rewrite records in every model it changes (`metadata_props`), so that `inspect` and
//! `finalize` recognise a rewrite from what it wrote down, not from the shape of its nodes: the
//! scheme and its settings, how it was wired (mode, eval weights), the wrapped parameters and
//! their state, the counters, and how to undo every edit of that model.
//!
//! Keys: `onnx_lookahead.record` (this record as JSON) and, for people and older readers,
//! `onnx_lookahead.version`, `onnx_lookahead.k`, `onnx_lookahead.alpha`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::generated::onnx::{ModelProto, StringStringEntryProto};
use crate::scheme::EvalWeights;

pub const META_RECORD: &str = "onnx_lookahead.record";
pub const META_VERSION: &str = "onnx_lookahead.version";
pub const META_K: &str = "onnx_lookahead.k";
pub const META_ALPHA: &str = "onnx_lookahead.alpha";
/// Every metadata key the tool writes starts with this.
pub const META_PREFIX: &str = "onnx_lookahead.";

pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the scheme was wired into the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// ORT artifacts, readers of a parameter wait for the sync through one PassThrough.
    Passthrough,
    /// ORT artifacts, one Reshape per parameter (runs under ORT_PARALLEL).
    Reshape,
    /// A training_info model: the algorithm extended, bindings rebound.
    TrainingInfo,
}

impl Mode {
    pub fn id(self) -> &'static str {
        match self {
            Mode::Passthrough => "passthrough",
            Mode::Reshape => "reshape",
            Mode::TrainingInfo => "training-info",
        }
    }
}

/// A parameter with the scheme's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WrappedParameter {
    pub name: String,
    /// The state tensors, in the scheme's slot order (Lookahead: the slow weight).
    pub state: Vec<String>,
}

/// How to take one model back to what it was (see `graph::patch::Undo`).
pub use crate::graph::patch::Undo;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewriteRecord {
    /// The onnx-lookahead version that rewrote the model.
    pub version: String,
    pub scheme: String,
    pub settings: Map<String, Value>,
    pub mode: Mode,
    #[serde(default)]
    pub eval_weights: EvalWeights,
    pub parameters: Vec<WrappedParameter>,
    /// The step counters (one per ORT model set, one per training_info entry).
    pub counters: Vec<String>,
    /// The scheme's set-wide state (SWA: the sample count), per counter in the scheme's
    /// `shared_slots` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<String>,
    #[serde(default)]
    pub undo: Undo,
}

impl RewriteRecord {
    /// The scheme the record names, with its settings.
    pub fn scheme(&self) -> crate::error::Result<Box<dyn crate::scheme::Scheme>> {
        crate::scheme::registry::from_record(&self.scheme, &self.settings)
    }

    /// Where a saved step counter puts training. Err: for a value training never writes, what
    /// it would be.
    pub fn position(&self, value: f64) -> Result<crate::scheme::Position, String> {
        let schedule = self.scheme().map_err(|e| e.to_string())?.schedule();
        match self.mode {
            Mode::TrainingInfo => schedule.counted_position(value),
            Mode::Passthrough | Mode::Reshape => schedule.ort_position(value),
        }
    }

    /// Every state tensor and counter the rewrite added.
    pub fn state_names(&self) -> Vec<String> {
        self.parameters
            .iter()
            .flat_map(|p| p.state.iter().cloned())
            .chain(self.counters.iter().cloned())
            .chain(self.shared.iter().cloned())
            .collect()
    }

    /// The metadata entries that record this rewrite.
    pub fn metadata(&self) -> Vec<(String, String)> {
        let mut entries = vec![(META_VERSION.to_string(), self.version.clone())];
        for (key, meta) in [("k", META_K), ("alpha", META_ALPHA)] {
            if let Some(value) = self.settings.get(key) {
                entries.push((meta.to_string(), value.to_string()));
            }
        }
        // Serialising plain data with string keys cannot fail.
        entries.push((
            META_RECORD.to_string(),
            serde_json::to_string(self).unwrap_or_default(),
        ));
        entries
    }
}

/// What a model's metadata says about a rewrite by this tool.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Not rewritten by this tool.
    None,
    /// Rewritten, with the full record.
    Record(Box<RewriteRecord>),
    /// Marked as rewritten (version, k, alpha) but without a readable record (an older version
    /// of the tool, or an edited model).
    MarkerOnly {
        version: String,
        k: String,
        alpha: String,
    },
}

fn get<'m>(props: &'m [StringStringEntryProto], key: &str) -> Option<&'m str> {
    props.iter().find(|p| p.key() == key).map(|p| p.value())
}

/// Reads the record of a model.
pub fn recorded(model: &ModelProto) -> Recorded {
    let props = &model.metadata_props;
    if let Some(record) = get(props, META_RECORD).and_then(|json| serde_json::from_str(json).ok()) {
        return Recorded::Record(Box::new(record));
    }
    match get(props, META_VERSION) {
        None => Recorded::None,
        Some(version) => Recorded::MarkerOnly {
            version: version.to_string(),
            k: get(props, META_K).unwrap_or_default().to_string(),
            alpha: get(props, META_ALPHA).unwrap_or_default().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_metadata() {
        let mut settings = Map::new();
        settings.insert("k".into(), 5.into());
        settings.insert("alpha".into(), 0.5.into());
        let record = RewriteRecord {
            version: TOOL_VERSION.into(),
            scheme: "lookahead".into(),
            settings,
            mode: Mode::Passthrough,
            eval_weights: EvalWeights::Averaged,
            parameters: vec![WrappedParameter {
                name: "W".into(),
                state: vec!["lookahead__slow__W".into()],
            }],
            counters: vec!["lookahead__step".into()],
            shared: Vec::new(),
            undo: Undo {
                reads: vec![("lookahead__after_sync__W".into(), "W".into())],
                ..Undo::default()
            },
        };
        let model = ModelProto {
            metadata_props: record
                .metadata()
                .into_iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: Some(k),
                    value: Some(v),
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(recorded(&model), Recorded::Record(Box::new(record.clone())));
        assert_eq!(
            record.scheme().unwrap().describe(),
            "Lookahead k=5 alpha=0.5"
        );
        assert_eq!(recorded(&ModelProto::default()), Recorded::None);
    }
}
