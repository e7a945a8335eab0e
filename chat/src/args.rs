//! A tiny flag parser: `--flag value` and `--switch`, nothing clever.

use std::collections::HashMap;

/// Parsed flags of one command.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
    switches: Vec<String>,
}

impl Args {
    /// Parses `argv` given which flags take a value and which are switches.
    pub fn parse(argv: &[String], with_value: &[&str], switches: &[&str]) -> Result<Args, String> {
        let mut out = Args::default();
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            let name = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {a:?}"))?;
            if with_value.contains(&name) {
                let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                out.values.insert(name.to_string(), v.clone());
            } else if switches.contains(&name) {
                out.switches.push(name.to_string());
            } else {
                return Err(format!("unknown flag --{name}; see --help"));
            }
        }
        Ok(out)
    }

    /// The value of `--name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether `--name` was given.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }
}
