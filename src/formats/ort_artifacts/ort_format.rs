//! ORT-format copies of an output set (`<model>.ort`, `<model>.required_operators.config`, and one
//! operator list of the whole set): either every model's copies are written anew by a converter
//! (`--ort-format`, the Python package) in the staged folder before it is renamed into place, or
//! none is written and a copy the input held goes only with a model written as it was (the
//! others are left out, with a note naming the command that regenerates them). Either way no
//! output holds a copy that describes other graphs than its model's.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::{ArtifactFiles, ArtifactSet};
use crate::error::{Error, Result};
use crate::options::{OrtConversion, OrtConverter, OrtFormat, OrtFormatMode};

/// What happens to the ORT format of one output set, decided before anything is written.
pub(super) struct Conversion {
    converter: Option<Arc<dyn OrtConverter>>,
    /// Why the input's copies are not regenerated although a converter was given (it cannot
    /// run here).
    unavailable: Option<String>,
    /// The names in the input folder (UTF-8 ones: every name derived from a model is).
    input_entries: Vec<String>,
}

impl Conversion {
    pub(super) fn decide(set: &ArtifactSet, ort: &OrtFormat) -> Result<Self> {
        let listed =
            std::fs::read_dir(&set.dir).map_err(|e| Error::io("cannot list", &set.dir, e))?;
        let mut input_entries = Vec::new();
        for entry in listed {
            let entry = entry.map_err(|e| Error::io("cannot list", &set.dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                input_entries.push(name.to_string());
            }
        }
        // Sorted: the notes list them.
        input_entries.sort();
        let held = input_entries.iter().any(|name| {
            name.ends_with(".ort")
                && set
                    .files
                    .models()
                    .iter()
                    .any(|model| ArtifactFiles::is_ort_format_copy(model, name))
        });
        let mut conversion = Conversion {
            converter: None,
            unavailable: None,
            input_entries,
        };
        match (ort.mode, &ort.converter) {
            (OrtFormatMode::Never, _) => {}
            (OrtFormatMode::Always, _) => conversion.converter = Some(required_converter(ort)?),
            (OrtFormatMode::Auto, Some(converter)) if held => match converter.available() {
                Ok(()) => conversion.converter = Some(converter.clone()),
                Err(reason) => conversion.unavailable = Some(reason),
            },
            (OrtFormatMode::Auto, _) => {}
        }
        Ok(conversion)
    }

    /// The input entries not to copy: with a conversion every ORT-format file of the set (all
    /// are written anew); without one those of the models written anew (`changed`), and the
    /// set's operator lists, which list the operators of every model.
    pub(super) fn left_out(&self, files: &ArtifactFiles, changed: &[&str]) -> Vec<String> {
        self.input_entries
            .iter()
            .filter(|name| {
                if self.converter.is_some() {
                    files.is_derived(name)
                } else {
                    (!changed.is_empty() && files.is_set_config(name))
                        || changed
                            .iter()
                            .any(|model| ArtifactFiles::is_ort_format_copy(model, name))
                }
            })
            .cloned()
            .collect()
    }

    /// Converts the models in the staged `folder` (renamed to `destination` afterwards); returns
    /// the names of the files written. Errors name `output`.
    pub(super) fn run(
        &self,
        folder: &Path,
        destination: &Path,
        files: &ArtifactFiles,
        output: &Path,
    ) -> Result<Vec<String>> {
        let Some(converter) = &self.converter else {
            return Ok(Vec::new());
        };
        let failed = |reason: String| Error::OrtFormat {
            path: output.to_path_buf(),
            reason: unstaged(&reason, folder, destination),
        };
        let before = listing(folder)?;
        let models: Vec<String> = files
            .models()
            .into_iter()
            .filter(|model| before.contains(model))
            .collect();
        let merged_config = files.merged_config();
        let request = OrtConversion {
            folder,
            destination,
            models: &models,
            merged_config: &merged_config,
        };
        let mut written = converter.convert(&request).map_err(failed)?;
        written.sort();
        check_written(folder, &before, &written, &models, files).map_err(failed)?;
        // Durable like every file the tool writes itself, before the folder is renamed.
        for name in &written {
            let path = folder.join(name);
            std::fs::File::open(&path)
                .and_then(|file| file.sync_all())
                .map_err(|e| Error::io("cannot write", &path, e))?;
        }
        Ok(written)
    }

    /// Notes for the user: the copies the input held that were left out, and why they were not
    /// written anew.
    pub(super) fn notes(
        &self,
        files: &ArtifactFiles,
        changed: &[&str],
        output: &Path,
    ) -> Vec<String> {
        if self.converter.is_some() {
            return Vec::new();
        }
        let left_out = self.left_out(files, changed);
        let mut notes: Vec<String> = self
            .unavailable
            .iter()
            .filter(|_| !left_out.is_empty())
            .map(|reason| format!("ORT-format copies not written: {reason}"))
            .collect();
        let out = shell_word(&output.display().to_string());
        for model in changed {
            let held: Vec<String> = left_out
                .iter()
                .filter(|name| ArtifactFiles::is_ort_format_copy(model, name))
                .cloned()
                .collect();
            if held.is_empty() {
                continue;
            }
            notes.push(format!(
                "{} not carried over: {} the input's {model}, not the output's; to regenerate (onnxruntime-training): python -m onnxruntime.tools.convert_onnx_models_to_ort --optimization_style Fixed --output_dir {out} {}",
                listed(&held),
                if held.len() == 1 { "it describes" } else { "they describe" },
                shell_word(&output.join(model).display().to_string())
            ));
        }
        let configs: Vec<String> = left_out
            .iter()
            .filter(|name| files.is_set_config(name))
            .cloned()
            .collect();
        if !configs.is_empty() {
            notes.push(format!(
                "{} not carried over: {} the operators of the input's models, not the output's; converting the output folder writes the output's list (required_operators.config) with every model's .ort: {}",
                listed(&configs),
                if configs.len() == 1 { "it lists" } else { "they list" },
                convert_command(output)
            ));
        }
        notes
    }
}

/// The converter `--ort-format` needs, or why there is none that can run.
pub(crate) fn required_converter(ort: &OrtFormat) -> Result<Arc<dyn OrtConverter>> {
    let Some(converter) = &ort.converter else {
        return Err(Error::InvalidOption(
            "--ort-format needs a converter to ONNX Runtime's ORT format, which only the Python package has (onnx_lookahead.rewrite/finalize and its console script, with onnxruntime-training)".into(),
        ));
    };
    converter.available().map_err(Error::InvalidOption)?;
    Ok(converter.clone())
}

/// The command that writes the ORT format of every model in the artifacts folder `output` and
/// the folder's operator list (`required_operators.config`), shell-quoted.
pub fn convert_command(output: &Path) -> String {
    format!(
        "python -m onnxruntime.tools.convert_onnx_models_to_ort --optimization_style Fixed {}",
        shell_word(&output.display().to_string())
    )
}

/// "a", "a and b", "a, b and c".
fn listed(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// A word as a POSIX shell reads it back: as it is when it holds only safe characters, else in
/// single quotes.
pub(crate) fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The converter's message with the staging folder named as the destination: the staging folder
/// is gone once the error is reported.
fn unstaged(reason: &str, folder: &Path, destination: &Path) -> String {
    let mut reason = reason.to_string();
    let destination = destination.display().to_string();
    let canonical = folder.canonicalize().ok();
    for staged in canonical.iter().map(|p| p.as_path()).chain([folder]) {
        let staged = staged.display().to_string();
        if !staged.is_empty() {
            reason = reason.replace(&staged, &destination);
        }
    }
    reason
}

fn listing(folder: &Path) -> Result<BTreeSet<String>> {
    let entries = std::fs::read_dir(folder).map_err(|e| Error::io("cannot list", folder, e))?;
    let mut names = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot list", folder, e))?;
        names.insert(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// That the converter wrote what was asked and nothing else: a new regular file named after a
/// model of the set (so that `--force` and later operations know it) or the set's operator list,
/// an ORT-format copy of every model and the set's list among them, no file changed or left
/// unreported.
fn check_written(
    folder: &Path,
    before: &BTreeSet<String>,
    written: &[String],
    models: &[String],
    files: &ArtifactFiles,
) -> std::result::Result<(), String> {
    let after = listing(folder).map_err(|e| e.to_string())?;
    if let Some(gone) = before.difference(&after).next() {
        return Err(format!("the converter removed {gone}"));
    }
    for name in written {
        if before.contains(name) || !after.contains(name) {
            return Err(format!(
                "the converter reported {name:?}, which is not a file it added"
            ));
        }
        let regular = std::fs::symlink_metadata(folder.join(name)).is_ok_and(|m| m.is_file());
        if !regular || !files.is_derived(name) {
            return Err(format!(
                "the converter wrote {name:?}, which is not an ORT-format file of a model of the set"
            ));
        }
    }
    if let Some(extra) = after
        .difference(before)
        .find(|name| !written.contains(name))
    {
        return Err(format!("the converter left {extra:?} without reporting it"));
    }
    for model in models {
        let converted = written
            .iter()
            .any(|name| name.ends_with(".ort") && ArtifactFiles::is_ort_format_copy(model, name));
        if !converted {
            return Err(format!("the converter wrote no ORT-format copy of {model}"));
        }
    }
    if !written.iter().any(|name| files.is_set_config(name)) {
        return Err(format!(
            "the converter wrote no operator list of the set ({})",
            files.merged_config()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staged folder holding `before`, then the files a converter wrote; what the check says.
    fn check(written: &[&str], unreported: &[&str], removed: &[&str]) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let models = ["training_model.onnx", "optimizer_model.onnx"].map(String::from);
        for model in &models {
            std::fs::write(dir.path().join(model), "model").unwrap();
        }
        let before = listing(dir.path()).unwrap();
        for name in written.iter().chain(unreported) {
            std::fs::write(dir.path().join(name), "written").unwrap();
        }
        for name in removed {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        let written: Vec<String> = written.iter().map(|s| s.to_string()).collect();
        let files = ArtifactFiles {
            prefix: String::new(),
        };
        check_written(dir.path(), &before, &written, &models, &files)
    }

    const COMPLETE: [&str; 5] = [
        "training_model.ort",
        "training_model.required_operators.config",
        "optimizer_model.ort",
        "optimizer_model.required_operators.config",
        "required_operators.config",
    ];

    #[test]
    fn what_the_converter_wrote_is_checked() {
        check(&COMPLETE, &[], &[]).unwrap();
        check(
            &[
                "training_model.basic.ort",
                "optimizer_model.basic.ort",
                "required_operators.basic.config",
            ],
            &[],
            &[],
        )
        .unwrap();
        let refused = [
            (
                check(&COMPLETE[1..], &[], &[]),
                "no ORT-format copy of training_model.onnx",
            ),
            (
                check(&COMPLETE[..4], &[], &[]),
                "no operator list of the set",
            ),
            (
                check(&COMPLETE, &["model.ort.tmp"], &[]),
                "left \"model.ort.tmp\"",
            ),
            (
                check(&[&COMPLETE[..], &["notes.txt"]].concat(), &[], &[]),
                "\"notes.txt\", which is not",
            ),
            (
                check(&COMPLETE, &[], &["optimizer_model.onnx"]),
                "removed optimizer_model.onnx",
            ),
        ];
        for (result, expected) in refused {
            let reason = result.unwrap_err();
            assert!(reason.contains(expected), "{reason}");
        }
        let reported_twice = check(
            &[&COMPLETE[..], &["training_model.onnx"]].concat(),
            &[],
            &[],
        );
        assert!(reported_twice.unwrap_err().contains("not a file it added"));
    }
}
