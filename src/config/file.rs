//! The config file and its `config.yaml.d` drop-ins, turned into `--key=value` arguments
//! with k3s's merge rules.

use super::{validate, ConfigError};
use clap::ArgAction;
use std::path::{Path, PathBuf};

/// The flags a subcommand accepts, as config-file keys.
pub(super) struct FlagSpec {
    /// (key, canonical long name or short, is list) for every flag.
    flags: Vec<(String, FlagTarget, bool)>,
}

#[derive(Clone, Debug)]
enum FlagTarget {
    Long(String),
    Short(char),
}

impl FlagSpec {
    fn lookup(&self, key: &str) -> Option<(&FlagTarget, bool)> {
        self.flags
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, t, list)| (t, *list))
    }
}

pub(super) fn flag_spec(root: &clap::Command, sub: &str) -> FlagSpec {
    let mut flags = Vec::new();
    if let Some(cmd) = root.get_subcommands().find(|c| c.get_name() == sub) {
        for arg in cmd.get_arguments() {
            if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) {
                continue;
            }
            let list = matches!(arg.get_action(), ArgAction::Append);
            match (arg.get_long(), arg.get_short()) {
                (Some(long), short) => {
                    flags.push((long.to_string(), FlagTarget::Long(long.into()), list));
                    if let Some(s) = short {
                        flags.push((s.to_string(), FlagTarget::Long(long.into()), list));
                    }
                }
                (None, Some(s)) => flags.push((s.to_string(), FlagTarget::Short(s), list)),
                (None, None) => {}
            }
        }
    }
    FlagSpec { flags }
}

/// Reads the config file and its drop-ins into `--key=value` arguments (k3s semantics: keys
/// in first-seen order, a later file replaces a key unless it is written `key+`, which
/// appends). Returns the arguments and the files read.
pub(super) fn load_config_files(
    path: &Path,
    explicit: bool,
    spec: &FlagSpec,
) -> Result<(Vec<String>, Vec<PathBuf>), ConfigError> {
    let mut files = Vec::new();
    match std::fs::metadata(path) {
        Ok(_) => files.push(path.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
        Err(e) => {
            return Err(ConfigError::File {
                path: path.to_path_buf(),
                line: None,
                message: format!("cannot read config file: {e}"),
            })
        }
    }
    files.extend(drop_in_files(path)?);

    // key -> (target, values); order of first appearance.
    let mut merged: Vec<(String, FlagTarget, Vec<String>)> = Vec::new();
    for file in &files {
        for (key, append, values) in read_one_file(file)? {
            let file_err = |message: String| ConfigError::File {
                path: file.clone(),
                line: None,
                message,
            };
            let Some((target, list)) = spec.lookup(&key) else {
                return Err(file_err(format!("unknown key \"{key}\"")));
            };
            if key == "config" || key == "c" {
                return Err(file_err(format!(
                    "key \"{key}\" cannot be set in a config file"
                )));
            }
            if !list && (append || values.len() != 1) {
                let what = if append {
                    format!("\"{key}+\" appends, but {key} takes a single value")
                } else {
                    format!("{key} takes a single value, not a list")
                };
                return Err(file_err(what));
            }
            let canonical = match target {
                FlagTarget::Long(l) => l.clone(),
                FlagTarget::Short(s) => s.to_string(),
            };
            for v in &values {
                if let Err(reason) = validate(&canonical, v) {
                    return Err(file_err(format!(
                        "invalid value \"{v}\" for {key}: {reason}"
                    )));
                }
            }
            match merged.iter_mut().find(|(k, _, _)| *k == canonical) {
                Some((_, _, old)) if append => old.extend(values),
                Some((_, _, old)) => *old = values,
                None => merged.push((canonical, target.clone(), values)),
            }
        }
    }

    let mut args = Vec::new();
    for (_, target, values) in merged {
        for v in values {
            match &target {
                FlagTarget::Long(l) => args.push(format!("--{l}={v}")),
                FlagTarget::Short(s) => {
                    args.push(format!("-{s}"));
                    args.push(v);
                }
            }
        }
    }
    Ok((args, files))
}

/// `<config>.d/*.yaml|*.yml`, in name order.
fn drop_in_files(config: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut dir = config.as_os_str().to_owned();
    dir.push(".d");
    let dir = PathBuf::from(dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError::File {
                path: dir,
                line: None,
                message: format!("cannot read config directory: {e}"),
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ConfigError::File {
            path: dir.clone(),
            line: None,
            message: format!("cannot read config directory: {e}"),
        })?;
        let name = entry.file_name().to_string_lossy().to_lowercase();
        let is_file = entry.file_type().map(|t| !t.is_dir()).unwrap_or(false);
        if is_file && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// One file's `(key without +, appends?, values)` entries, in file order.
fn read_one_file(path: &Path) -> Result<Vec<(String, bool, Vec<String>)>, ConfigError> {
    let err = |line: Option<usize>, message: String| ConfigError::File {
        path: path.to_path_buf(),
        line,
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(None, format!("cannot read config file: {e}")))?;
    let doc: serde_yaml_ng::Value = match serde_yaml_ng::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let line = e.location().map(|l| l.line());
            let mut msg = e.to_string();
            // The library appends " at line L column C"; the line is already in the prefix.
            if let Some(i) = msg.find(" at line ") {
                msg.truncate(i);
            }
            return Err(err(line, format!("invalid YAML: {msg}")));
        }
    };
    let map = match doc {
        serde_yaml_ng::Value::Null => return Ok(Vec::new()),
        serde_yaml_ng::Value::Mapping(m) => m,
        _ => {
            return Err(err(
                None,
                "expected a mapping of flag names to values".into(),
            ))
        }
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let key = match scalar_string(&k) {
            Some(k) => k,
            None => return Err(err(None, "keys must be flag names".into())),
        };
        let (key, append) = match key.strip_suffix('+') {
            Some(k) => (k.to_string(), true),
            None => (key, false),
        };
        let values = match &v {
            serde_yaml_ng::Value::Null => continue,
            serde_yaml_ng::Value::Sequence(items) => {
                let mut vals = Vec::new();
                for item in items {
                    match scalar_string(item) {
                        Some(s) => vals.push(s),
                        None => {
                            return Err(err(None, format!("{key}: list items must be scalars")))
                        }
                    }
                }
                vals
            }
            other => match scalar_string(other) {
                Some(s) => vec![s],
                None => return Err(err(None, format!("{key}: expected a value, not a mapping"))),
            },
        };
        out.push((key, append, values));
    }
    Ok(out)
}

fn scalar_string(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Tagged(t) => scalar_string(&t.value),
        _ => None,
    }
}
