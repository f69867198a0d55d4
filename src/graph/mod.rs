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

/// A node found in a model: the graph it is in (as reports name graphs), its name and operator.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct NodeRef {
    pub graph: String,
    pub name: String,
    pub op_type: String,
}
