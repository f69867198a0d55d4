//! Pass 1 of writing: the checkpoint's FlatBuffer laid out front to back.
//!
//! Order of the file: root offset and identifier; then, depth first with every parent before its
//! children, the tables (each after its vtable, or sharing an identical earlier one), strings,
//! dims vectors and offset vectors: Checkpoint, ModuleState, its parameter vectors and tensors,
//! the optimizer groups, their states and momentums, the property bag. That region (the "head")
//! is small and built in memory. The non-empty `raw_data` byte vectors follow it, in tensor order,
//! each with its elements at a multiple of 16 (any element type is aligned, whatever ONNX Runtime
//! or a later reader does with the bytes); tensors whose bytes are the same memory (a slow weight
//! and its parameter) share one vector, as FlatBuffers allows. Pass 2 (`super::stream`) writes the
//! head and streams those vectors after it.

use std::collections::HashMap;

use bytes::Bytes;
use flatbuffers::VOffsetT;

use super::super::model::*;
use super::super::*;
use super::flatbuffer::{Field, ForwardBuilder, Hole, Scalar, byte_vector_position};
use super::{Placement, Plan};
use crate::generated::ort_checkpoint::onnxruntime::fbs;

/// Element alignment of the streamed `raw_data` vectors.
pub(in crate::io::checkpoint) const RAW_DATA_ALIGNMENT: u64 = 16;

/// A checkpoint file laid out: `head` is its first bytes, `vectors` follow in file order.
pub(in crate::io::checkpoint) struct Layout {
    pub(in crate::io::checkpoint) head: Vec<u8>,
    pub(in crate::io::checkpoint) vectors: Vec<ByteVector>,
    /// The exact size of the file.
    pub(in crate::io::checkpoint) size: u64,
    /// The size ONNX Runtime's writer would need for the same tensors (it stores every tensor's
    /// bytes separately): this file plus the bytes of every tensor sharing another's vector.
    pub(in crate::io::checkpoint) size_unshared: u64,
}

/// A `raw_data` vector after the head: its length prefix at `position`, then `bytes`.
pub(in crate::io::checkpoint) struct ByteVector {
    pub(in crate::io::checkpoint) position: u64,
    pub(in crate::io::checkpoint) bytes: Bytes,
}

impl Layout {
    /// Lays out `checkpoint` with the plan's placements, and patches every offset unless the file
    /// would be over `limit` bytes (then `size` says by how much; nothing else is meaningful).
    pub(in crate::io::checkpoint) fn new(
        checkpoint: &Checkpoint,
        plan: &Plan,
        limit: u64,
    ) -> Layout {
        let (builder, root) = ForwardBuilder::new(FILE_IDENTIFIER);
        let mut writer = HeadWriter {
            builder,
            plan,
            raw_data: Vec::new(),
        };
        let position = writer.checkpoint(checkpoint);
        writer.builder.patch(root, position as u64);

        // The byte vectors after the head, shared by tensors with the same bytes.
        let mut end = writer.builder.len() as u64;
        let mut vectors: Vec<ByteVector> = Vec::new();
        let mut shared: HashMap<(usize, usize), u64> = HashMap::new();
        let mut size_unshared = 0;
        let mut targets = Vec::with_capacity(writer.raw_data.len());
        for (hole, bytes) in std::mem::take(&mut writer.raw_data) {
            let key = (bytes.as_ptr() as usize, bytes.len());
            let position = match shared.get(&key) {
                Some(&position) => {
                    size_unshared += 4 + bytes.len() as u64 + RAW_DATA_ALIGNMENT;
                    position
                }
                None => {
                    let position = byte_vector_position(end, RAW_DATA_ALIGNMENT);
                    end = position + 4 + bytes.len() as u64;
                    shared.insert(key, position);
                    vectors.push(ByteVector { position, bytes });
                    position
                }
            };
            targets.push((hole, position));
        }
        if end <= limit {
            for (hole, position) in targets {
                writer.builder.patch(hole, position);
            }
        }
        Layout {
            head: writer.builder.finish(),
            vectors,
            size: end,
            size_unshared: end + size_unshared,
        }
    }
}

struct HeadWriter<'p> {
    builder: ForwardBuilder,
    plan: &'p Plan,
    /// `raw_data` fields waiting for their vector after the head, in tensor order.
    raw_data: Vec<(Hole, Bytes)>,
}

/// The fields of a table: scalars left out when they equal the schema default, offsets when the
/// child is absent.
#[derive(Default)]
struct Fields(Vec<(VOffsetT, Field)>);

impl Fields {
    fn offset(mut self, slot: VOffsetT, present: bool) -> Self {
        if present {
            self.0.push((slot, Field::Offset));
        }
        self
    }

    fn scalar(mut self, slot: VOffsetT, value: Scalar) -> Self {
        let default = match value {
            Scalar::Bool(value) => !value,
            Scalar::I32(value) => value == 0,
            // Bit for bit: -0.0 is kept.
            Scalar::F32(value) => value.to_bits() == 0,
            Scalar::I64(value) => value == 0,
        };
        if !default {
            self.0.push((slot, Field::Scalar(value)));
        }
        self
    }

    /// A scalar written even when it equals the default (for non-zero defaults).
    fn scalar_unless(mut self, slot: VOffsetT, value: Scalar, default: bool) -> Self {
        if !default {
            self.0.push((slot, Field::Scalar(value)));
        }
        self
    }
}

impl HeadWriter<'_> {
    fn table(&mut self, fields: Fields) -> (usize, super::flatbuffer::Holes) {
        self.builder.table(&fields.0)
    }

    fn patch(&mut self, hole: Hole, position: usize) {
        self.builder.patch(hole, position as u64);
    }

    /// A vector of tables written by `write`, or nothing when it is empty and was not present
    /// empty in the source.
    fn tables<T>(
        &mut self,
        hole: Option<Hole>,
        items: &[T],
        mut write: impl FnMut(&mut Self, &T) -> usize,
    ) {
        let Some(hole) = hole else { return };
        let (position, elements) = self.builder.offset_vector(items.len());
        self.patch(hole, position);
        for (item, element) in items.iter().zip(elements) {
            let table = write(self, item);
            self.patch(element, table);
        }
    }

    fn string(&mut self, hole: Hole, text: &str) {
        let position = self.builder.string(text);
        self.patch(hole, position);
    }

    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> usize {
        use fbs::Checkpoint as C;
        let groups = !checkpoint.optimizer_groups.is_empty()
            || checkpoint.empty_present.has(OPTIMIZER_GROUPS_BIT);
        let bag = &checkpoint.property_bag;
        let bag_present = !bag.is_empty() || checkpoint.empty_present.has(PROPERTY_BAG_BIT);
        let (table, holes) = self.table(
            Fields::default()
                .scalar(C::VT_VERSION, Scalar::I32(checkpoint.version))
                .offset(C::VT_MODULE_STATE, checkpoint.module_state.is_some())
                .offset(C::VT_OPTIMIZER_GROUPS, groups)
                .offset(C::VT_PROPERTY_BAG, bag_present),
        );
        if let Some(module) = &checkpoint.module_state {
            let position = self.module_state(module);
            self.patch(holes.of(C::VT_MODULE_STATE), position);
        }
        let hole = groups.then(|| holes.of(C::VT_OPTIMIZER_GROUPS));
        self.tables(hole, &checkpoint.optimizer_groups, Self::optimizer_group);
        if bag_present {
            let position = self.property_bag(bag);
            self.patch(holes.of(C::VT_PROPERTY_BAG), position);
        }
        table
    }

    fn module_state(&mut self, module: &ModuleState) -> usize {
        use fbs::ModuleState as M;
        let trainable =
            !module.requires_grad_params.is_empty() || module.empty_present.has(REQUIRES_GRAD_BIT);
        let frozen = !module.frozen_params.is_empty() || module.empty_present.has(FROZEN_BIT);
        let (table, holes) = self.table(
            Fields::default()
                .offset(M::VT_REQUIRES_GRAD_PARAMS, trainable)
                .offset(M::VT_FROZEN_PARAMS, frozen)
                .scalar(
                    M::VT_IS_NOMINAL_STATE,
                    Scalar::Bool(module.is_nominal_state),
                )
                .scalar(
                    M::VT_HAS_EXTERNAL_DATA,
                    Scalar::Bool(self.plan.has_external_data()),
                ),
        );
        let hole = trainable.then(|| holes.of(M::VT_REQUIRES_GRAD_PARAMS));
        self.tables(hole, &module.requires_grad_params, Self::tensor);
        let hole = frozen.then(|| holes.of(M::VT_FROZEN_PARAMS));
        self.tables(hole, &module.frozen_params, Self::tensor);
        table
    }

    fn optimizer_group(&mut self, group: &OptimizerGroup) -> usize {
        use fbs::OptimizerGroup as G;
        let states =
            !group.optimizer_states.is_empty() || group.empty_present.has(OPTIMIZER_STATES_BIT);
        let (table, holes) = self.table(
            Fields::default()
                .offset(G::VT_GROUP_NAME, true)
                .scalar(G::VT_STEP, Scalar::I64(group.step))
                .scalar(
                    G::VT_INITIAL_LEARNING_RATE,
                    Scalar::F32(group.initial_learning_rate),
                )
                .offset(G::VT_OPTIMIZER_STATES, states),
        );
        self.string(holes.of(G::VT_GROUP_NAME), &group.group_name);
        let hole = states.then(|| holes.of(G::VT_OPTIMIZER_STATES));
        self.tables(hole, &group.optimizer_states, Self::parameter_state);
        table
    }

    fn parameter_state(&mut self, state: &ParameterOptimizerState) -> usize {
        use fbs::ParameterOptimizerState as P;
        let momentums = !state.momentums.is_empty() || state.empty_present.has(MOMENTUMS_BIT);
        let (table, holes) = self.table(
            Fields::default()
                .offset(P::VT_PARAM_NAME, true)
                .offset(P::VT_MOMENTUMS, momentums),
        );
        self.string(holes.of(P::VT_PARAM_NAME), &state.param_name);
        let hole = momentums.then(|| holes.of(P::VT_MOMENTUMS));
        self.tables(hole, &state.momentums, Self::tensor);
        table
    }

    fn property_bag(&mut self, bag: &PropertyBag) -> usize {
        use fbs::PropertyBag as B;
        let ints = !bag.ints.is_empty() || bag.empty_present.has(INTS_BIT);
        let floats = !bag.floats.is_empty() || bag.empty_present.has(FLOATS_BIT);
        let strings = !bag.strings.is_empty() || bag.empty_present.has(STRINGS_BIT);
        let (table, holes) = self.table(
            Fields::default()
                .offset(B::VT_INTS, ints)
                .offset(B::VT_FLOATS, floats)
                .offset(B::VT_STRINGS, strings),
        );
        self.tables(ints.then(|| holes.of(B::VT_INTS)), &bag.ints, |w, p| {
            use fbs::IntProperty as I;
            let (table, holes) = w.table(
                Fields::default()
                    .offset(I::VT_NAME, true)
                    .scalar(I::VT_VALUE, Scalar::I64(p.value)),
            );
            w.string(holes.of(I::VT_NAME), &p.name);
            table
        });
        self.tables(
            floats.then(|| holes.of(B::VT_FLOATS)),
            &bag.floats,
            |w, p| {
                use fbs::FloatProperty as F;
                let (table, holes) = w.table(
                    Fields::default()
                        .offset(F::VT_NAME, true)
                        .scalar(F::VT_VALUE, Scalar::F32(p.value)),
                );
                w.string(holes.of(F::VT_NAME), &p.name);
                table
            },
        );
        self.tables(
            strings.then(|| holes.of(B::VT_STRINGS)),
            &bag.strings,
            |w, p| {
                use fbs::StringProperty as S;
                let (table, holes) = w.table(
                    Fields::default()
                        .offset(S::VT_NAME, true)
                        .offset(S::VT_VALUE, true),
                );
                w.string(holes.of(S::VT_NAME), &p.name);
                w.string(holes.of(S::VT_VALUE), &p.value);
                table
            },
        );
        table
    }

    fn tensor(&mut self, tensor: &CheckpointTensor) -> usize {
        use fbs::Tensor as T;
        let dims = !tensor.dims.is_empty() || tensor.empty_present.has(DIMS_BIT);
        let strings = !tensor.string_data.is_empty() || tensor.empty_present.has(STRING_DATA_BIT);
        // Plan::new placed every tensor of the model being written.
        let (raw_data, external_offset) = match self.plan.placement(tensor) {
            Some(Placement::Inline(bytes)) => (Some(bytes.clone()), -1),
            Some(Placement::External(offset)) => (None, *offset as i64),
            Some(Placement::Absent) | None => (None, -1),
        };
        let (table, holes) = self.table(
            Fields::default()
                .offset(T::VT_NAME, true)
                .offset(T::VT_DOC_STRING, tensor.doc_string.is_some())
                .offset(T::VT_DIMS, dims)
                .scalar(T::VT_DATA_TYPE, Scalar::I32(tensor.data_type))
                .offset(T::VT_RAW_DATA, raw_data.is_some())
                .offset(T::VT_STRING_DATA, strings)
                .scalar_unless(
                    T::VT_EXTERNAL_DATA_OFFSET,
                    Scalar::I64(external_offset),
                    external_offset == -1,
                ),
        );
        self.string(holes.of(T::VT_NAME), &tensor.name);
        if let Some(doc) = &tensor.doc_string {
            self.string(holes.of(T::VT_DOC_STRING), doc);
        }
        if dims {
            let position = self.builder.int64_vector(&tensor.dims);
            self.patch(holes.of(T::VT_DIMS), position);
        }
        if strings {
            let (position, elements) = self.builder.offset_vector(tensor.string_data.len());
            self.patch(holes.of(T::VT_STRING_DATA), position);
            for (text, element) in tensor.string_data.iter().zip(elements) {
                self.string(element, text);
            }
        }
        match raw_data {
            // Empty (a nominal checkpoint's tensors): in the head, nothing to stream.
            Some(bytes) if bytes.is_empty() => {
                let position = self.builder.byte_vector(&[]);
                self.patch(holes.of(T::VT_RAW_DATA), position);
            }
            Some(bytes) => self.raw_data.push((holes.of(T::VT_RAW_DATA), bytes)),
            None => {}
        }
        table
    }
}

#[cfg(test)]
impl Layout {
    /// The whole file in memory: what pass 2 streams, for tests.
    pub(in crate::io::checkpoint) fn to_vec(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        for vector in &self.vectors {
            out.resize(vector.position as usize, 0);
            out.extend_from_slice(&(vector.bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&vector.bytes);
        }
        assert_eq!(out.len() as u64, self.size);
        out
    }
}
