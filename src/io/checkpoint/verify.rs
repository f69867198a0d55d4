//! Verification of a checkpoint buffer.

/// FlatBuffers verification of a checkpoint, field by field as the generated verifier does it,
/// with one relaxation: the elements of `Tensor.dims` need 4-byte alignment instead of 8.
///
/// ONNX Runtime's C++ builder skips alignment padding for EMPTY vectors, so the empty `dims` of a
/// scalar, or of every tensor of a nominal checkpoint, may start 4 bytes off an 8-byte boundary;
/// the Rust verifier of flatbuffers 2.1 rejects that, the C++ one (which ONNX Runtime uses) does
/// not. Reading an int64 element copies its bytes (no aligned load), so the relaxation is safe;
/// `Vector::safe_slice` must never be called on `dims`.
pub(super) mod flatbuffer {
    use flatbuffers::{
        ForwardsUOffset, InvalidFlatbuffer, SimpleToVerifyInSlice, Vector, Verifiable, Verifier,
        VerifierOptions,
    };

    use crate::generated::ort_checkpoint::onnxruntime::fbs;

    /// An int64 vector element as the verifier sees it: 8 bytes at a 4-byte boundary.
    #[allow(dead_code)] // only its size and alignment matter
    struct Int64At4([u32; 2]);
    impl SimpleToVerifyInSlice for Int64At4 {}

    type Tables<'a, T> = ForwardsUOffset<Vector<'a, ForwardsUOffset<T>>>;
    type Text<'a> = ForwardsUOffset<&'a str>;

    struct Tensor;
    struct ModuleState;
    struct ParameterOptimizerState;
    struct OptimizerGroup;
    struct Checkpoint;

    impl Verifiable for Tensor {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            use fbs::Tensor as T;
            v.visit_table(pos)?
                .visit_field::<Text>("name", T::VT_NAME, false)?
                .visit_field::<Text>("doc_string", T::VT_DOC_STRING, false)?
                .visit_field::<ForwardsUOffset<Vector<Int64At4>>>("dims", T::VT_DIMS, false)?
                .visit_field::<fbs::TensorDataType>("data_type", T::VT_DATA_TYPE, false)?
                .visit_field::<ForwardsUOffset<Vector<u8>>>("raw_data", T::VT_RAW_DATA, false)?
                .visit_field::<ForwardsUOffset<Vector<Text>>>(
                    "string_data",
                    T::VT_STRING_DATA,
                    false,
                )?
                .visit_field::<i64>("external_data_offset", T::VT_EXTERNAL_DATA_OFFSET, false)?
                .finish();
            Ok(())
        }
    }

    impl Verifiable for ModuleState {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            use fbs::ModuleState as M;
            v.visit_table(pos)?
                .visit_field::<Tables<Tensor>>(
                    "requires_grad_params",
                    M::VT_REQUIRES_GRAD_PARAMS,
                    false,
                )?
                .visit_field::<Tables<Tensor>>("frozen_params", M::VT_FROZEN_PARAMS, false)?
                .visit_field::<bool>("is_nominal_state", M::VT_IS_NOMINAL_STATE, false)?
                .visit_field::<bool>("has_external_data", M::VT_HAS_EXTERNAL_DATA, false)?
                .finish();
            Ok(())
        }
    }

    impl Verifiable for ParameterOptimizerState {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            use fbs::ParameterOptimizerState as P;
            v.visit_table(pos)?
                .visit_field::<Text>("param_name", P::VT_PARAM_NAME, false)?
                .visit_field::<Tables<Tensor>>("momentums", P::VT_MOMENTUMS, false)?
                .finish();
            Ok(())
        }
    }

    impl Verifiable for OptimizerGroup {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            use fbs::OptimizerGroup as G;
            v.visit_table(pos)?
                .visit_field::<Text>("group_name", G::VT_GROUP_NAME, false)?
                .visit_field::<i64>("step", G::VT_STEP, false)?
                .visit_field::<f32>("initial_learning_rate", G::VT_INITIAL_LEARNING_RATE, false)?
                .visit_field::<Tables<ParameterOptimizerState>>(
                    "optimizer_states",
                    G::VT_OPTIMIZER_STATES,
                    false,
                )?
                .finish();
            Ok(())
        }
    }

    impl Verifiable for Checkpoint {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            use fbs::Checkpoint as C;
            v.visit_table(pos)?
                .visit_field::<i32>("version", C::VT_VERSION, false)?
                .visit_field::<ForwardsUOffset<ModuleState>>(
                    "module_state",
                    C::VT_MODULE_STATE,
                    false,
                )?
                .visit_field::<Tables<OptimizerGroup>>(
                    "optimizer_groups",
                    C::VT_OPTIMIZER_GROUPS,
                    false,
                )?
                // The property tables hold no int64 vectors: their generated verifier applies.
                .visit_field::<ForwardsUOffset<fbs::PropertyBag>>(
                    "property_bag",
                    C::VT_PROPERTY_BAG,
                    false,
                )?
                .finish();
            Ok(())
        }
    }

    /// Verifies a whole checkpoint buffer, starting from its root offset.
    pub(in crate::io::checkpoint) fn checkpoint(
        buffer: &[u8],
        options: &VerifierOptions,
    ) -> Result<(), InvalidFlatbuffer> {
        let mut verifier = Verifier::new(options, buffer);
        <ForwardsUOffset<Checkpoint>>::run_verifier(&mut verifier, 0)
    }
}

use std::collections::HashSet;
use std::path::Path;

use super::model::{Checkpoint, CheckpointTensor, TensorData};
use crate::io::dtype;
use crate::{Error, Result};

/// Checkpoint format versions ONNX Runtime training releases write: 1 (1.16-1.17) and 2
/// (1.18-1.19). Each release reads only its own; a rewrite keeps the input's version.
pub const SUPPORTED_VERSIONS: [i32; 2] = [1, 2];

impl Checkpoint {
    /// The content rules ONNX Runtime's loader relies on, checked on every checkpoint read so that
    /// nothing the runtime would refuse is carried into an output: a known format version;
    /// parameters with non-empty, distinct names, bytes that match their dims and type (or no
    /// bytes at all in a nominal checkpoint), floating-point trainable parameters; optimizer
    /// states naming a parameter, with momentums that match their dims and type.
    pub(super) fn verify_content(&self, path: &Path) -> Result<()> {
        let invalid = |reason: String| Error::InvalidCheckpoint {
            path: path.to_path_buf(),
            reason,
        };
        if !SUPPORTED_VERSIONS.contains(&self.version) {
            return Err(invalid(format!(
                "format version {} is not one ONNX Runtime training writes ({SUPPORTED_VERSIONS:?})",
                self.version
            )));
        }
        if let Some(module) = &self.module_state {
            let mut names = HashSet::new();
            let params = module.requires_grad_params.iter().map(|t| (t, true));
            for (tensor, trainable) in params.chain(module.frozen_params.iter().map(|t| (t, false)))
            {
                if tensor.name.is_empty() {
                    return Err(invalid("a parameter has an empty name".into()));
                }
                if !names.insert(tensor.name.as_str()) {
                    return Err(invalid(format!(
                        "parameter {:?} appears twice",
                        tensor.name
                    )));
                }
                if trainable && !dtype::is_float(tensor.data_type) {
                    return Err(invalid(format!(
                        "trainable parameter {:?} has type {}; only floating-point parameters are trained",
                        tensor.name,
                        dtype::name(tensor.data_type)
                    )));
                }
                // A nominal checkpoint records names and types only (ONNX Runtime writes its
                // tensors with empty dims and no bytes).
                if !module.is_nominal_state {
                    self.verify_tensor(tensor, true, path)?;
                }
            }
        }
        for group in &self.optimizer_groups {
            if group.step < 0 {
                return Err(invalid(format!(
                    "optimizer group {:?} has step {}; training counts steps from 0",
                    group.group_name, group.step
                )));
            }
            for state in &group.optimizer_states {
                if state.param_name.is_empty() {
                    return Err(invalid(format!(
                        "optimizer group {:?} has a state with an empty parameter name",
                        group.group_name
                    )));
                }
                for momentum in &state.momentums {
                    self.verify_tensor(momentum, true, path)?;
                }
            }
        }
        Ok(())
    }

    /// A tensor's bytes (inline or in the data file) match its dims and type; STRING tensors hold
    /// one string per element and no bytes. `needs_values`: an empty tensor body is an error.
    fn verify_tensor(
        &self,
        tensor: &CheckpointTensor,
        needs_values: bool,
        path: &Path,
    ) -> Result<()> {
        let invalid = |reason: String| Error::InvalidCheckpoint {
            path: path.to_path_buf(),
            reason: format!("tensor {:?} {reason}", tensor.name),
        };
        let count = dtype::element_count(&tensor.dims).ok_or_else(|| {
            invalid(format!(
                "has dims {:?}: negative, or their product overflows",
                tensor.dims
            ))
        })?;
        if tensor.data_type == dtype::code::STRING {
            if !matches!(tensor.data, TensorData::Absent) {
                return Err(invalid("is a STRING tensor with raw bytes".into()));
            }
            if (needs_values || !tensor.string_data.is_empty())
                && tensor.string_data.len() as u64 != count
            {
                return Err(invalid(format!(
                    "holds {} strings, but dims {:?} need {count}",
                    tensor.string_data.len(),
                    tensor.dims
                )));
            }
            return Ok(());
        }
        if !tensor.string_data.is_empty() {
            return Err(invalid(format!(
                "has type {} but holds strings",
                dtype::name(tensor.data_type)
            )));
        }
        if dtype::element_bits(tensor.data_type).is_none() {
            return Err(invalid(format!(
                "has the unknown data type {}",
                tensor.data_type
            )));
        }
        match tensor.data {
            TensorData::Absent if needs_values && count > 0 => {
                Err(invalid(format!("has dims {:?} but no values", tensor.dims)))
            }
            TensorData::Absent => Ok(()),
            _ => self.check_tensor_data(tensor),
        }
    }
}
