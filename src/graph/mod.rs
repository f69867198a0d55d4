//! The dataflow view of ONNX graphs and the structural tools passes use: scopes, fresh names,
//! order-preserving sort, validation, node/tensor builders, a text dump for review.

pub mod build;
pub mod dataflow;
pub mod dump;
pub mod emit;
pub mod names;
pub mod order;
pub mod patch;
pub mod revert;
pub mod scope;
pub mod validate;
