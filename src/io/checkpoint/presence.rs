//! Which optional fields a checkpoint file holds: FlatBuffers readers see an absent field and a
//! default one alike, but a rewrite that keeps the input "as it came" must keep absent fields
//! absent. Tests compare this between the input and our output, and between our writer and the
//! `flatbuffers` crate's builder.

use super::read::verifier_options;
use crate::generated::ort_checkpoint::onnxruntime::fbs;

/// Every optional field of every table, present or not, in a fixed walk order; with the scalar
/// fields' raw presence (a default value written or left out is the same to readers, so those are
/// not compared).
pub fn optional_fields_present(bytes: &[u8]) -> Result<Vec<bool>, flatbuffers::InvalidFlatbuffer> {
    super::verify::flatbuffer::checkpoint(bytes, &verifier_options())?;
    // SAFETY: `verify::checkpoint` checked every table, vector and string read below.
    let root = unsafe { fbs::root_as_checkpoint_unchecked(bytes) };
    let mut seen = vec![
        root.module_state().is_some(),
        root.optimizer_groups().is_some(),
        root.property_bag().is_some(),
    ];
    let mut tensor = |t: fbs::Tensor| {
        seen.extend([
            t.name().is_some(),
            t.doc_string().is_some(),
            t.dims().is_some(),
            t.raw_data().is_some(),
            t.string_data().is_some(),
        ])
    };
    if let Some(module) = root.module_state() {
        for list in [module.requires_grad_params(), module.frozen_params()] {
            list.iter().flatten().for_each(&mut tensor);
        }
    }
    for group in root.optimizer_groups().iter().flatten() {
        for state in group.optimizer_states().iter().flatten() {
            state.momentums().iter().flatten().for_each(&mut tensor);
        }
    }
    if let Some(module) = root.module_state() {
        seen.extend([
            module.requires_grad_params().is_some(),
            module.frozen_params().is_some(),
        ]);
    }
    for group in root.optimizer_groups().iter().flatten() {
        seen.extend([
            group.group_name().is_some(),
            group.optimizer_states().is_some(),
        ]);
        for state in group.optimizer_states().iter().flatten() {
            seen.extend([state.param_name().is_some(), state.momentums().is_some()]);
        }
    }
    if let Some(bag) = root.property_bag() {
        seen.extend([
            bag.ints().is_some(),
            bag.floats().is_some(),
            bag.strings().is_some(),
        ]);
        for p in bag.strings().iter().flatten() {
            seen.extend([p.name().is_some(), p.value().is_some()]);
        }
    }
    Ok(seen)
}
