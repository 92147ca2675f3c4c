//! The config dir a JobManager or TaskManager starts from: flat `key: value` lines in the file
//! the version reads (2.x: `config.yaml` only; 1.x: `flink-conf.yaml`), plus the
//! distribution's logging configs, which the launch scripts look for in the same dir.

use super::Flink;
use std::fs;
use std::io;
use std::path::Path;

/// Settings in the order they are written; a later `set` of a key replaces the earlier value
/// in place, so the caller's extra settings win over the test bed's.
#[derive(Debug, Clone, Default)]
pub(super) struct Settings {
    entries: Vec<(String, String)>,
}

impl Settings {
    pub(super) fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// The file text for Flink `major`. 2.x parses it as standard YAML, which takes flat
    /// dotted keys as they are; 1.x splits each line at the first `": "` and takes the rest
    /// verbatim, so values must not be quoted there.
    pub(super) fn render(&self, major: u32) -> io::Result<String> {
        let mut text = String::from("# Written by the flink-ha-sidecars test bed.\n");
        for (key, value) in &self.entries {
            let unsafe_text = |s: &str| s.contains(['\n', '\r']) || s.trim() != s;
            if key.is_empty() || key.contains([':', ' ', '#']) || unsafe_text(key) {
                return Err(invalid(format!("not a Flink config key: {key:?}")));
            }
            if major >= 2 {
                text.push_str(&format!("{key}: {}\n", yaml_scalar(value)));
            } else if unsafe_text(value) || value.is_empty() {
                return Err(invalid(format!(
                    "flink-conf.yaml cannot hold the value of {key}: {value:?}"
                )));
            } else {
                text.push_str(&format!("{key}: {value}\n"));
            }
        }
        Ok(text)
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// `value` as a YAML plain scalar when it reads back as the same text (what a person would
/// write), else double-quoted. Numbers and booleans stay plain: Flink converts them back.
fn yaml_scalar(value: &str) -> String {
    let plain = !value.is_empty()
        && value.trim() == value
        && !value.contains(": ")
        && !value.contains(" #")
        && !value.ends_with(':')
        && !value
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\'')
        && !value.starts_with([
            '!', '&', '*', '[', ']', '{', '}', '|', '>', '%', '@', '`', '#', ',', '?', ':',
        ])
        && value != "-"
        && !value.starts_with("- ")
        && !["~", "null", "Null", "NULL"].contains(&value);
    if plain {
        return value.to_owned();
    }
    let mut quoted = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The JVM options the distribution's own default config passes to every Flink JVM: on Java
/// 17 these are the `--add-opens`/`--add-exports` Flink needs. Writing a config file from
/// scratch would drop them.
pub(super) fn default_java_options(flink: &Flink) -> io::Result<String> {
    let conf = flink.home().join("conf");
    for file in ["config.yaml", "flink-conf.yaml"] {
        let path = conf.join(file);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        let document: serde_norway::Value = serde_norway::from_str(&text).map_err(|error| {
            io::Error::other(format!("cannot parse {}: {error}", path.display()))
        })?;
        let mut flat = Vec::new();
        flatten("", &document, &mut flat);
        for key in ["env.java.opts.all", "env.java.opts"] {
            if let Some((_, value)) = flat.iter().find(|(k, _)| k == key) {
                return Ok(value.clone());
            }
        }
        return Ok(String::new());
    }
    Ok(String::new())
}

/// Nested YAML mappings as Flink reads them: `a: {b: 1}` is the key `a.b`.
fn flatten(prefix: &str, value: &serde_norway::Value, out: &mut Vec<(String, String)>) {
    use serde_norway::Value;
    let scalar = match value {
        Value::Mapping(mapping) => {
            for (key, nested) in mapping {
                let key = match key {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => continue,
                };
                let key = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, nested, out);
            }
            return;
        }
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return,
    };
    out.push((prefix.to_owned(), scalar));
}

/// Copies the distribution's logging configs (the scripts pass
/// `-Dlog4j.configurationFile=$FLINK_CONF_DIR/log4j-console.properties`) and writes the
/// settings into the file the version reads.
pub(super) fn write_config_dir(flink: &Flink, settings: &Settings, conf: &Path) -> io::Result<()> {
    fs::create_dir_all(conf)?;
    for entry in fs::read_dir(flink.home().join("conf"))? {
        let path = entry?.path();
        let is_logging = path
            .extension()
            .is_some_and(|extension| extension == "properties" || extension == "xml");
        if is_logging && let Some(name) = path.file_name() {
            fs::copy(&path, conf.join(name))?;
        }
    }
    let file = if flink.major_version() >= 2 {
        "config.yaml"
    } else {
        "flink-conf.yaml"
    };
    fs::write(conf.join(file), settings.render(flink.major_version())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_settings_replace_earlier_ones_in_place() {
        let mut settings = Settings::default();
        settings.set("rest.port", "8081");
        settings.set("blob.server.port", "0");
        settings.set("rest.port", "18081");
        assert_eq!(
            settings.render(2).unwrap(),
            "# Written by the flink-ha-sidecars test bed.\nrest.port: 18081\nblob.server.port: 0\n"
        );
    }

    #[test]
    fn values_that_yaml_would_misread_are_quoted_for_flink_2_only() {
        for plain in [
            "zookeeper",
            "127.0.0.1:2181,127.0.0.1:2182",
            "file:///tmp/ha",
            "768m",
            "--add-opens=java.base/java.lang=ALL-UNNAMED -Dx=y",
            "-XX:TieredStopAtLevel=1",
        ] {
            assert_eq!(yaml_scalar(plain), plain);
        }
        assert_eq!(yaml_scalar("a: b"), "\"a: b\"");
        assert_eq!(yaml_scalar(""), "\"\"");
        assert_eq!(yaml_scalar("*star"), "\"*star\"");
        assert_eq!(yaml_scalar("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(yaml_scalar("null"), "\"null\"");

        let mut settings = Settings::default();
        settings.set("k", "a: b");
        assert!(settings.render(2).unwrap().ends_with("k: \"a: b\"\n"));
        assert!(settings.render(1).unwrap().ends_with("k: a: b\n"));
        settings.set("k", "two\nlines");
        assert!(settings.render(1).is_err());
        settings.set("bad key", "v");
        assert!(settings.render(2).is_err());
    }

    #[test]
    fn nested_yaml_flattens_to_dotted_keys() {
        let document: serde_norway::Value = serde_norway::from_str(
            "env:\n  java:\n    opts:\n      all: --add-opens=x\njobmanager:\n  rpc:\n    port: 6123\n",
        )
        .unwrap();
        let mut flat = Vec::new();
        flatten("", &document, &mut flat);
        assert_eq!(
            flat,
            [
                ("env.java.opts.all".to_owned(), "--add-opens=x".to_owned()),
                ("jobmanager.rpc.port".to_owned(), "6123".to_owned()),
            ]
        );
    }
}
