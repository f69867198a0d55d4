//! Fresh names: a generator that never returns a name used in any scope of the model, nor one
//! it returned before.

use std::collections::{HashMap, HashSet};

use crate::generated::onnx::ModelProto;
use crate::graph::scope::visit_all_names;

pub struct NameGenerator {
    used: HashSet<String>,
    /// Per base given to `fresh` that needed a counter: the counter to try next. Names are never
    /// released, so every counter below it is still taken (this keeps n calls with one base
    /// linear, not quadratic).
    next_counter: HashMap<String, u64>,
}

impl NameGenerator {
    /// Reserves every tensor and node name of every graph of the model (main graph, subgraphs,
    /// training_info graphs, functions) and its metadata-free identifiers.
    pub fn for_model(model: &ModelProto) -> Self {
        let mut names = NameGenerator::empty();
        names.reserve_model(model);
        names
    }

    /// Reserves every name of another model (several models share a runtime namespace).
    pub fn reserve_model(&mut self, model: &ModelProto) {
        let used = &mut self.used;
        let mut reserve = |name: &str| {
            // Most names repeat (every read of a tensor): allocate only for new ones.
            if !used.contains(name) {
                used.insert(name.to_string());
            }
        };
        if let Some(graph) = &model.graph {
            visit_all_names(graph, &mut reserve);
        }
        for info in &model.training_info {
            for graph in [&info.initialization, &info.algorithm]
                .into_iter()
                .flatten()
            {
                visit_all_names(graph, &mut reserve);
            }
        }
        for function in &model.functions {
            let names = function.input.iter().chain(&function.output);
            for name in names {
                reserve(name);
            }
            for node in &function.node {
                for name in node.output.iter().chain(&node.name) {
                    reserve(name);
                }
            }
        }
    }

    pub fn empty() -> Self {
        NameGenerator {
            used: HashSet::new(),
            next_counter: HashMap::new(),
        }
    }

    /// Marks more names as taken (e.g. names of other files that share a namespace at runtime).
    pub fn reserve<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, names: I) {
        self.used.extend(names.into_iter().map(Into::into));
    }

    /// The first used name (in sorted order) that starts with `prefix`.
    pub fn first_with_prefix(&self, prefix: &str) -> Option<&str> {
        self.used
            .iter()
            .filter(|n| n.starts_with(prefix))
            .min()
            .map(String::as_str)
    }

    /// `base` itself if free, else `base_1`, `base_2`, ...; the result is reserved.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut counter = self.next_counter.get(base).copied().unwrap_or(0);
        let mut candidate = if counter == 0 {
            base.to_string()
        } else {
            format!("{base}_{counter}")
        };
        while self.used.contains(&candidate) {
            counter += 1;
            candidate = format!("{base}_{counter}");
        }
        self.used.insert(candidate.clone());
        // A base used once needs no entry (the next call tries `base` first, then `base_1`).
        if counter > 0 {
            self.next_counter.insert(base.to_string(), counter + 1);
        }
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_avoid_used_and_previous() {
        let mut names = NameGenerator::empty();
        names.reserve(["x", "x_1"]);
        assert_eq!(names.fresh("x"), "x_2");
        assert_eq!(names.fresh("x"), "x_3");
        assert_eq!(names.fresh("y"), "y");
        assert_eq!(names.fresh("y"), "y_1");
    }

    #[test]
    fn fresh_names_skip_names_reserved_between_calls() {
        let mut names = NameGenerator::empty();
        assert_eq!(names.fresh("n"), "n");
        names.reserve(["n_1", "n_3"]);
        assert_eq!(names.fresh("n"), "n_2");
        assert_eq!(names.fresh("n"), "n_4");
        // Another base whose names look like the first one's numbered names.
        assert_eq!(names.fresh("n_4"), "n_4_1");
        names.reserve(["m"]);
        assert_eq!(names.fresh("m"), "m_1");
        let many: Vec<String> = (0..1000).map(|_| names.fresh("k")).collect();
        assert_eq!(many[0], "k");
        assert_eq!(many[999], "k_999");
    }

    #[test]
    fn first_with_prefix_is_the_smallest_match() {
        let mut names = NameGenerator::empty();
        assert_eq!(names.first_with_prefix("la__"), None);
        names.reserve(["la__z", "la_", "la__b", "a", "z", "la__c"]);
        assert_eq!(names.first_with_prefix("la__"), Some("la__b"));
    }
}
