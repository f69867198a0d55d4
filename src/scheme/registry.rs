//! The one place that names the averaging schemes: each scheme file contributes an entry (its
//! name, the options it takes, how it is built from them and from a record's settings), and
//! everything else (CLI, Python, records, reports) goes through here.

use serde_json::{Map, Value};

use super::{InnerState, Scheme};
use crate::error::{Error, Result};

/// A scheme built from what a caller asked for, or from a record's settings.
pub type Built = Result<Box<dyn Scheme>>;

/// A scheme as the registry knows it.
pub struct SchemeEntry {
    /// The name users pass (`--scheme`) and records hold.
    pub name: &'static str,
    /// The options it takes (`OptionId`s), for the refusal of the others.
    pub options: &'static [OptionId],
    pub from_options: fn(&SchemeOptions) -> Built,
    pub from_settings: fn(&Map<String, Value>) -> Built,
}

/// Every scheme; the first is the default.
pub const SCHEMES: &[&SchemeEntry] = &[
    &super::lookahead::ENTRY,
    &super::ema::ENTRY,
    &super::swa::ENTRY,
];

/// An option of some scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionId {
    K,
    Alpha,
    InnerState,
    Decay,
    Every,
    SwaStart,
}

impl OptionId {
    /// How the CLI spells it, with the Python keyword.
    pub fn label(self) -> &'static str {
        match self {
            OptionId::K => "--sync-period (k)",
            OptionId::Alpha => "--alpha",
            OptionId::InnerState => "--inner-state",
            OptionId::Decay => "--decay",
            OptionId::Every => "--every",
            OptionId::SwaStart => "--swa-start",
        }
    }
}

/// What a caller asked for: the scheme's name (None: the default, Lookahead) and the options
/// given, each None when not given (the scheme's default applies).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchemeOptions {
    pub scheme: Option<String>,
    pub k: Option<u64>,
    pub alpha: Option<f64>,
    pub inner_state: Option<InnerState>,
    pub decay: Option<f64>,
    pub every: Option<u64>,
    pub swa_start: Option<u64>,
}

impl SchemeOptions {
    fn given(&self) -> Vec<OptionId> {
        let flags = [
            (self.k.is_some(), OptionId::K),
            (self.alpha.is_some(), OptionId::Alpha),
            (self.inner_state.is_some(), OptionId::InnerState),
            (self.decay.is_some(), OptionId::Decay),
            (self.every.is_some(), OptionId::Every),
            (self.swa_start.is_some(), OptionId::SwaStart),
        ];
        flags
            .into_iter()
            .filter(|(given, _)| *given)
            .map(|(_, id)| id)
            .collect()
    }

    /// The scheme asked for, built and checked.
    pub fn build(&self) -> Result<Box<dyn Scheme>> {
        let entry = match &self.scheme {
            None => SCHEMES[0],
            Some(name) => entry(name)?,
        };
        if let Some(other) = self
            .given()
            .into_iter()
            .find(|o| !entry.options.contains(o))
        {
            let own: Vec<&str> = entry.options.iter().map(|o| o.label()).collect();
            return Err(Error::InvalidOption(format!(
                "{} does not apply to the {} scheme (its options: {})",
                other.label(),
                entry.name,
                own.join(", ")
            )));
        }
        (entry.from_options)(self)
    }
}

/// The entry of a scheme by name.
pub fn entry(name: &str) -> Result<&'static SchemeEntry> {
    SCHEMES
        .iter()
        .copied()
        .find(|e| e.name == name)
        .ok_or_else(|| {
            Error::InvalidOption(format!(
                "unknown averaging scheme {name:?} (known: {})",
                names().join(", ")
            ))
        })
}

/// The names of all schemes, the default first.
pub fn names() -> Vec<&'static str> {
    SCHEMES.iter().map(|e| e.name).collect()
}

/// The scheme a rewrite recorded, with its settings.
pub fn from_record(scheme: &str, settings: &Map<String, Value>) -> Result<Box<dyn Scheme>> {
    let entry = SCHEMES.iter().find(|e| e.name == scheme).ok_or_else(|| {
        Error::InvalidOption(format!(
            "the rewrite used the averaging scheme {scheme:?}, which this version does not know"
        ))
    })?;
    (entry.from_settings)(settings)
}

/// A recorded setting that must be there.
pub(crate) fn setting<T>(
    settings: &Map<String, Value>,
    key: &str,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<T> {
    settings.get(key).and_then(read).ok_or_else(|| {
        Error::InvalidOption(format!("the record of the rewrite has no valid {key}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_round_trips_through_its_settings() {
        let cases = [
            SchemeOptions::default(),
            SchemeOptions {
                scheme: Some("ema".into()),
                decay: Some(0.99),
                every: Some(3),
                ..Default::default()
            },
            SchemeOptions {
                scheme: Some("swa".into()),
                swa_start: Some(7),
                every: Some(2),
                ..Default::default()
            },
        ];
        for options in cases {
            let built = options.build().unwrap();
            let again = from_record(built.name(), &built.settings()).unwrap();
            assert_eq!(built.settings(), again.settings());
            assert_eq!(built.schedule(), again.schedule());
        }
    }

    #[test]
    fn options_of_another_scheme_are_refused() {
        let err = SchemeOptions {
            scheme: Some("ema".into()),
            decay: Some(0.9),
            alpha: Some(0.5),
            ..Default::default()
        }
        .build()
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .contains("--alpha does not apply to the ema scheme"),
            "{err}"
        );
        let err = SchemeOptions {
            decay: Some(0.9),
            ..Default::default()
        }
        .build()
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .contains("--decay does not apply to the lookahead scheme"),
            "{err}"
        );
        let err = SchemeOptions {
            scheme: Some("polyak".into()),
            ..Default::default()
        }
        .build()
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("unknown averaging scheme"),
            "{err}"
        );
        assert!(from_record("polyak", &Map::new()).is_err());
    }
}
