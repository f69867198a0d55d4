//! The writer this crate had before the streamed one, kept as a reference for tests: the model
//! serialized with the `flatbuffers` crate's builder (back to front, in memory), using the same
//! placements. Both outputs must decode to the same model with the same optional fields present.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use super::super::model::*;
use super::super::write::{Placement, Plan};
use crate::generated::ort_checkpoint::onnxruntime::fbs;

/// Serializes the model with the plan's placements.
pub(super) fn build_flatbuffer(checkpoint: &Checkpoint, plan: &Plan) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let mut writer = Writer {
        builder: &mut builder,
        plan,
    };
    let root = writer.checkpoint(checkpoint);
    fbs::finish_checkpoint_buffer(&mut builder, root);
    builder.finished_data().to_vec()
}

type TableVector<'b, T> = WIPOffset<Vector<'b, ForwardsUOffset<T>>>;

struct Writer<'w, 'b> {
    builder: &'w mut FlatBufferBuilder<'b>,
    plan: &'w Plan,
}

impl<'b> Writer<'_, 'b> {
    /// A vector of tables, or nothing when it is empty and was not present empty in the source.
    fn tables<T, U>(
        &mut self,
        items: &[T],
        write_empty: bool,
        mut write: impl FnMut(&mut Self, &T) -> WIPOffset<U>,
    ) -> Option<TableVector<'b, U>> {
        if items.is_empty() && !write_empty {
            return None;
        }
        let offsets: Vec<WIPOffset<U>> = items.iter().map(|item| write(self, item)).collect();
        Some(self.builder.create_vector(&offsets))
    }

    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> WIPOffset<fbs::Checkpoint<'b>> {
        let module_state = checkpoint
            .module_state
            .as_ref()
            .map(|module| self.module_state(module));
        let optimizer_groups = self.tables(
            &checkpoint.optimizer_groups,
            checkpoint.empty_present.has(OPTIMIZER_GROUPS_BIT),
            |w, group| w.optimizer_group(group),
        );
        let bag = &checkpoint.property_bag;
        let property_bag = (!bag.is_empty() || checkpoint.empty_present.has(PROPERTY_BAG_BIT))
            .then(|| self.property_bag(bag));
        fbs::Checkpoint::create(
            self.builder,
            &fbs::CheckpointArgs {
                version: checkpoint.version,
                module_state,
                optimizer_groups,
                property_bag,
            },
        )
    }

    fn module_state(&mut self, module: &ModuleState) -> WIPOffset<fbs::ModuleState<'b>> {
        let requires_grad_params = self.tables(
            &module.requires_grad_params,
            module.empty_present.has(REQUIRES_GRAD_BIT),
            |w, t| w.tensor(t),
        );
        let frozen_params = self.tables(
            &module.frozen_params,
            module.empty_present.has(FROZEN_BIT),
            |w, t| w.tensor(t),
        );
        fbs::ModuleState::create(
            self.builder,
            &fbs::ModuleStateArgs {
                requires_grad_params,
                frozen_params,
                is_nominal_state: module.is_nominal_state,
                has_external_data: self.plan.has_external_data(),
            },
        )
    }

    fn optimizer_group(&mut self, group: &OptimizerGroup) -> WIPOffset<fbs::OptimizerGroup<'b>> {
        let optimizer_states = self.tables(
            &group.optimizer_states,
            group.empty_present.has(OPTIMIZER_STATES_BIT),
            |w, state| {
                let momentums = w.tables(
                    &state.momentums,
                    state.empty_present.has(MOMENTUMS_BIT),
                    |w, t| w.tensor(t),
                );
                let param_name = w.builder.create_string(&state.param_name);
                fbs::ParameterOptimizerState::create(
                    w.builder,
                    &fbs::ParameterOptimizerStateArgs {
                        param_name: Some(param_name),
                        momentums,
                    },
                )
            },
        );
        let group_name = self.builder.create_string(&group.group_name);
        fbs::OptimizerGroup::create(
            self.builder,
            &fbs::OptimizerGroupArgs {
                group_name: Some(group_name),
                step: group.step,
                initial_learning_rate: group.initial_learning_rate,
                optimizer_states,
            },
        )
    }

    fn property_bag(&mut self, bag: &PropertyBag) -> WIPOffset<fbs::PropertyBag<'b>> {
        let ints = self.tables(&bag.ints, bag.empty_present.has(INTS_BIT), |w, p| {
            let name = w.builder.create_string(&p.name);
            fbs::IntProperty::create(
                w.builder,
                &fbs::IntPropertyArgs {
                    name: Some(name),
                    value: p.value,
                },
            )
        });
        let floats = self.tables(&bag.floats, bag.empty_present.has(FLOATS_BIT), |w, p| {
            let name = w.builder.create_string(&p.name);
            fbs::FloatProperty::create(
                w.builder,
                &fbs::FloatPropertyArgs {
                    name: Some(name),
                    value: p.value,
                },
            )
        });
        let strings = self.tables(&bag.strings, bag.empty_present.has(STRINGS_BIT), |w, p| {
            let name = w.builder.create_string(&p.name);
            let value = w.builder.create_string(&p.value);
            fbs::StringProperty::create(
                w.builder,
                &fbs::StringPropertyArgs {
                    name: Some(name),
                    value: Some(value),
                },
            )
        });
        fbs::PropertyBag::create(
            self.builder,
            &fbs::PropertyBagArgs {
                ints,
                floats,
                strings,
            },
        )
    }

    fn tensor(&mut self, tensor: &CheckpointTensor) -> WIPOffset<fbs::Tensor<'b>> {
        let name = self.builder.create_string(&tensor.name);
        let doc_string = tensor
            .doc_string
            .as_deref()
            .map(|doc| self.builder.create_string(doc));
        let dims = (!tensor.dims.is_empty() || tensor.empty_present.has(DIMS_BIT))
            .then(|| self.builder.create_vector(&tensor.dims));
        let (raw_data, external_data_offset) = match self.plan.placement(tensor) {
            Some(Placement::Inline(bytes)) => {
                (Some(self.builder.create_vector_direct(&bytes[..])), -1)
            }
            Some(Placement::External(offset)) => (None, *offset as i64),
            Some(Placement::Absent) | None => (None, -1),
        };
        let string_data = (!tensor.string_data.is_empty()
            || tensor.empty_present.has(STRING_DATA_BIT))
        .then(|| {
            let strings: Vec<&str> = tensor.string_data.iter().map(String::as_str).collect();
            self.builder.create_vector_of_strings(&strings)
        });
        fbs::Tensor::create(
            self.builder,
            &fbs::TensorArgs {
                name: Some(name),
                doc_string,
                dims,
                data_type: fbs::TensorDataType(tensor.data_type),
                raw_data,
                string_data,
                external_data_offset,
            },
        )
    }
}
