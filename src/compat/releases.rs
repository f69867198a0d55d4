//! The ONNX Runtime releases that train artifacts, and what each loads: the tables in data/,
//! written by docs/experiments/ort_releases/make_tables.sh from loads tried in each release.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// One ONNX Runtime training release (the Python package; onnxruntime-web of the same number
/// is built from the same sources).
#[derive(Debug)]
pub struct Release {
    /// "1.19": what `--target-ort` takes.
    pub id: &'static str,
    /// The exact release probed ("1.19.2").
    pub version: String,
    /// The only checkpoint format version it reads (and writes).
    pub checkpoint_format: i32,
    /// The highest model IR version it loads.
    pub max_ir: i64,
    /// Per operator domain it checks imports of, the highest opset it loads ("" for ai.onnx).
    /// An import of a domain not listed loads at any version.
    opsets: HashMap<String, i64>,
    /// Operators it registers in its own domains (com.microsoft, ...): (domain, operator).
    contrib: HashSet<(String, String)>,
    /// ONNX schema versions it has no CPU kernel for: (domain, operator, since_version).
    no_kernel: HashSet<(String, String, i64)>,
}

impl Release {
    /// The highest opset of `domain` this release loads; None when it loads any version (a
    /// domain it does not check, such as a custom one).
    pub fn max_opset(&self, domain: &str) -> Option<i64> {
        self.opsets.get(domain_key(domain)).copied()
    }

    /// Whether `domain` is one this release defines its own operators in.
    pub fn owns_domain(&self, domain: &str) -> bool {
        CONTRIB_DOMAINS.contains(&domain_key(domain))
    }

    /// Whether the release registers `op` in one of its own domains.
    pub fn has_contrib(&self, domain: &str, op: &str) -> bool {
        self.contrib
            .contains(&(domain_key(domain).to_string(), op.to_string()))
    }

    /// Whether the release has a CPU kernel for this ONNX schema version (as far as probed: only
    /// versions it reported none for are known to be missing).
    pub fn has_kernel(&self, domain: &str, op: &str, since: i64) -> bool {
        !self
            .no_kernel
            .contains(&(domain_key(domain).to_string(), op.to_string(), since))
    }

    /// How messages name the release.
    pub fn name(&self) -> String {
        format!("ONNX Runtime {}", self.id)
    }
}

/// The domains ONNX Runtime defines operators in itself (probed for their operators).
const CONTRIB_DOMAINS: [&str; 4] = [
    "com.microsoft",
    "com.microsoft.experimental",
    "org.pytorch.aten",
    "com.microsoft.nchwc",
];

/// ai.onnx spelled as models may spell it ("" or "ai.onnx") maps to "".
pub fn domain_key(domain: &str) -> &str {
    if domain == "ai.onnx" { "" } else { domain }
}

/// How a domain is shown: "ai.onnx" for the default domain.
pub fn domain_name(domain: &str) -> &str {
    if domain.is_empty() { "ai.onnx" } else { domain }
}

const TABLES: [(&str, &str); 4] = [
    ("1.16", include_str!("data/ort-1.16.txt")),
    ("1.17", include_str!("data/ort-1.17.txt")),
    ("1.18", include_str!("data/ort-1.18.txt")),
    ("1.19", include_str!("data/ort-1.19.txt")),
];

/// Every ONNX Runtime training release, oldest first.
pub fn releases() -> &'static [Release] {
    static RELEASES: OnceLock<Vec<Release>> = OnceLock::new();
    RELEASES.get_or_init(|| TABLES.iter().map(|(id, text)| parse(id, text)).collect())
}

/// The release `--target-ort` names: "1.19" or "1.19.2" (any patch release of 1.19).
pub fn release(name: &str) -> Option<&'static Release> {
    let name = name.trim();
    releases().iter().find(|r| {
        name == r.id
            || name
                .strip_prefix(r.id)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|patch| !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The ids of every release, for messages ("1.16, 1.17, 1.18, 1.19").
pub fn release_ids() -> String {
    releases()
        .iter()
        .map(|r| r.id)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table of data/ (generated; a malformed line is a build defect, caught by the unit tests).
fn parse(id: &'static str, text: &str) -> Release {
    let mut release = Release {
        id,
        version: String::new(),
        checkpoint_format: 0,
        max_ir: 0,
        opsets: HashMap::new(),
        contrib: HashSet::new(),
        no_kernel: HashSet::new(),
    };
    for line in text.lines().map(str::trim) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let domain = |i: usize| domain_key(fields.get(i).copied().unwrap_or("")).to_string();
        let text = |i: usize| fields.get(i).copied().unwrap_or("").to_string();
        match fields.first().copied() {
            Some("release") => release.version = text(1),
            Some("checkpoint_format") => release.checkpoint_format = number(1) as i32,
            Some("max_ir") => release.max_ir = number(1),
            Some("opset") => {
                release.opsets.insert(domain(1), number(2));
            }
            Some("contrib") => {
                release.contrib.insert((domain(1), text(2)));
            }
            Some("no_kernel") => {
                release.no_kernel.insert((domain(1), text(2), number(3)));
            }
            _ => {}
        }
    }
    release
}

/// The opset versions at which each ONNX operator's schema changed (data/onnx-schemas.txt, from
/// the newest onnx): what resolving a node to its schema version needs.
pub struct SchemaHistory {
    /// (domain, operator) -> ascending (since_version, deprecated).
    versions: HashMap<(String, String), Vec<(i64, bool)>>,
    /// The newest opset of each domain the table knows.
    newest: HashMap<String, i64>,
}

/// A node's schema, resolved at an opset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// The schema version the node runs as.
    Since(i64),
    /// The operator was deprecated at this version (no longer exists at the opset).
    Deprecated(i64),
    /// The domain has no such operator at this opset.
    Unknown,
    /// The opset is newer than the table (the newest onnx this tool was built with).
    TooNew,
}

impl SchemaHistory {
    pub fn get() -> &'static SchemaHistory {
        static HISTORY: OnceLock<SchemaHistory> = OnceLock::new();
        HISTORY.get_or_init(|| {
            let mut versions: HashMap<(String, String), Vec<(i64, bool)>> = HashMap::new();
            let mut newest: HashMap<String, i64> = HashMap::new();
            for line in include_str!("data/onnx-schemas.txt").lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if line.starts_with('#') || fields.len() < 3 {
                    continue;
                }
                let domain = domain_key(fields[0]).to_string();
                let list: Vec<(i64, bool)> = fields[2..]
                    .iter()
                    .filter_map(|v| match v.strip_prefix('!') {
                        Some(v) => v.parse().ok().map(|v| (v, true)),
                        None => v.parse().ok().map(|v| (v, false)),
                    })
                    .collect();
                let top = list.iter().map(|(v, _)| *v).max().unwrap_or(0);
                let entry = newest.entry(domain.clone()).or_insert(0);
                *entry = (*entry).max(top);
                versions.insert((domain, fields[1].to_string()), list);
            }
            SchemaHistory { versions, newest }
        })
    }

    /// Whether the table covers this domain (ai.onnx, ai.onnx.ml, ai.onnx.preview.training).
    pub fn covers(&self, domain: &str) -> bool {
        self.newest.contains_key(domain_key(domain))
    }

    /// The schema version a node of `op` runs as in a model importing `domain` at `opset`.
    pub fn resolve(&self, domain: &str, op: &str, opset: i64) -> Resolved {
        let domain = domain_key(domain);
        if opset > self.newest.get(domain).copied().unwrap_or(0) {
            return Resolved::TooNew;
        }
        let Some(list) = self.versions.get(&(domain.to_string(), op.to_string())) else {
            return Resolved::Unknown;
        };
        match list.iter().rev().find(|(since, _)| *since <= opset) {
            Some((since, true)) => Resolved::Deprecated(*since),
            Some((since, false)) => Resolved::Since(*since),
            None => Resolved::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_parses_with_its_facts() {
        let ids: Vec<&str> = releases().iter().map(|r| r.id).collect();
        assert_eq!(ids, ["1.16", "1.17", "1.18", "1.19"]);
        let facts = [(1, 9, 19, 3), (1, 9, 20, 4), (2, 10, 21, 5), (2, 10, 21, 5)];
        for (release, (format, ir, onnx, ml)) in releases().iter().zip(facts) {
            assert!(
                release.version.starts_with(release.id),
                "{}",
                release.version
            );
            assert_eq!(release.checkpoint_format, format, "{}", release.id);
            assert_eq!(release.max_ir, ir, "{}", release.id);
            assert_eq!(release.max_opset(""), Some(onnx), "{}", release.id);
            assert_eq!(release.max_opset("ai.onnx"), Some(onnx), "{}", release.id);
            assert_eq!(release.max_opset("ai.onnx.ml"), Some(ml), "{}", release.id);
            assert_eq!(
                release.max_opset("com.microsoft"),
                Some(1),
                "{}",
                release.id
            );
            assert_eq!(release.max_opset("my.custom.domain"), None);
            for op in [
                "AdamWOptimizer",
                "SGDOptimizerV2",
                "InPlaceAccumulatorV2",
                "PassThrough",
            ] {
                assert!(
                    release.has_contrib("com.microsoft", op),
                    "{} {op}",
                    release.id
                );
            }
            assert!(!release.has_contrib("com.microsoft", "NoSuchOperator"));
            assert!(release.has_kernel("", "Add", 14));
            assert!(!release.has_kernel("", "DeformConv", 19), "{}", release.id);
        }
    }

    #[test]
    fn release_names() {
        assert_eq!(release("1.17").map(|r| r.id), Some("1.17"));
        assert_eq!(release("1.17.3").map(|r| r.id), Some("1.17"));
        assert_eq!(release(" 1.19.0 ").map(|r| r.id), Some("1.19"));
        for bad in ["1.1", "1.170", "1.17.", "1.17.x", "1.20", "", "1", "v1.17"] {
            assert!(release(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn schemas_resolve_at_an_opset() {
        let history = SchemaHistory::get();
        assert_eq!(history.resolve("", "Add", 17), Resolved::Since(14));
        assert_eq!(history.resolve("ai.onnx", "Add", 13), Resolved::Since(13));
        assert_eq!(history.resolve("", "If", 17), Resolved::Since(16));
        assert_eq!(
            history.resolve("", "Upsample", 11),
            Resolved::Deprecated(10)
        );
        assert_eq!(history.resolve("", "NoSuchOperator", 17), Resolved::Unknown);
        assert_eq!(history.resolve("", "Gelu", 17), Resolved::Unknown);
        assert_eq!(history.resolve("", "Add", 999), Resolved::TooNew);
        assert!(history.covers("ai.onnx.ml") && !history.covers("com.microsoft"));
    }
}
