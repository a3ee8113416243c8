//! `--change` for import and commit: Dockerfile instructions that edit an image's container
//! config (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL), in both
//! JSON (exec) and shell forms, with `$VAR` / `${VAR}` / `${VAR:-x}` / `${VAR:+x}` expansion
//! from the config's environment where Docker expands.

use serde_json::{Map, Value};
use strata_core::{Error, Result};

use crate::build::words::split_words;

/// Docker's empty container config, field order as Docker writes it.
pub fn empty_container_config() -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in [
        ("Hostname", Value::from("")),
        ("Domainname", Value::from("")),
        ("User", Value::from("")),
        ("AttachStdin", Value::from(false)),
        ("AttachStdout", Value::from(false)),
        ("AttachStderr", Value::from(false)),
        ("Tty", Value::from(false)),
        ("OpenStdin", Value::from(false)),
        ("StdinOnce", Value::from(false)),
        ("Env", Value::Null),
        ("Cmd", Value::Null),
        ("Image", Value::from("")),
        ("Volumes", Value::Null),
        ("WorkingDir", Value::from("")),
        ("Entrypoint", Value::Null),
        ("OnBuild", Value::Null),
        ("Labels", Value::Null),
    ] {
        m.insert(k.to_string(), v);
    }
    m
}

/// Applies each `--change` line to `config` (a container config object).
pub fn apply_changes(config: &mut Map<String, Value>, changes: &[String]) -> Result<()> {
    apply_changes_with_args(config, changes, &[])
}

/// As [`apply_changes`], with build arguments visible to the expansion beneath the config's
/// environment (an `ENV` of the same name wins, as in Docker's builder).
pub fn apply_changes_with_args(
    config: &mut Map<String, Value>,
    changes: &[String],
    args: &[(String, String)],
) -> Result<()> {
    for change in changes {
        // The API may pass several instructions in one value, one per line.
        for line in change.lines().map(str::trim).filter(|l| !l.is_empty()) {
            apply_one(config, line, args)?;
        }
    }
    Ok(())
}

fn apply_one(config: &mut Map<String, Value>, line: &str, args: &[(String, String)]) -> Result<()> {
    let (word, rest) = match line.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    let instruction = word.to_ascii_uppercase();
    let bad = |why: &str| Error::invalid(format!("--change {line:?}: {why}"));
    if rest.is_empty() {
        return Err(bad(&format!("{instruction} requires an argument")));
    }
    let env: Vec<(String, String)> = args.iter().cloned().chain(env_of(config)).collect();
    match instruction.as_str() {
        "CMD" | "ENTRYPOINT" => {
            let cmd = match exec_form(rest) {
                Some(v) => v,
                None => shell_form(config, rest),
            };
            let key = if instruction == "CMD" {
                "Cmd"
            } else {
                "Entrypoint"
            };
            config.insert(key.into(), strings(cmd));
        }
        "ENV" => {
            for (k, v) in name_values(rest, &env, true).map_err(|e| bad(&e.to_string()))? {
                set_env(config, &k, &v);
            }
        }
        "LABEL" => {
            let pairs = name_values(rest, &env, false).map_err(|e| bad(&e.to_string()))?;
            let labels = object_field(config, "Labels");
            for (k, v) in pairs {
                labels.insert(k, Value::from(v));
            }
        }
        "WORKDIR" => {
            let dir = split_words(rest, &env)
                .map_err(|e| bad(&e.to_string()))?
                .join(" ");
            let current = config
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let joined = if dir.starts_with('/') || current.is_empty() {
                if dir.starts_with('/') {
                    dir
                } else {
                    format!("/{dir}")
                }
            } else {
                format!("{}/{dir}", current.trim_end_matches('/'))
            };
            config.insert("WorkingDir".into(), Value::from(joined));
        }
        "USER" => {
            let user = split_words(rest, &env)
                .map_err(|e| bad(&e.to_string()))?
                .join(" ");
            config.insert("User".into(), Value::from(user));
        }
        "EXPOSE" => {
            let ports = object_field(config, "ExposedPorts");
            for p in split_words(rest, &env).map_err(|e| bad(&e.to_string()))? {
                let p = if p.contains('/') {
                    p
                } else {
                    format!("{p}/tcp")
                };
                ports.insert(p, Value::Object(Map::new()));
            }
        }
        "VOLUME" => {
            let vols = match exec_form(rest) {
                Some(v) => v,
                None => split_words(rest, &env).map_err(|e| bad(&e.to_string()))?,
            };
            let volumes = object_field(config, "Volumes");
            for v in vols {
                volumes.insert(v, Value::Object(Map::new()));
            }
        }
        "STOPSIGNAL" => {
            config.insert("StopSignal".into(), Value::from(rest.to_string()));
        }
        other => {
            return Err(bad(&format!(
                "{other} cannot be used with --change (supported: CMD, ENTRYPOINT, ENV, \
                 EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)"
            )))
        }
    }
    Ok(())
}

fn strings(v: Vec<String>) -> Value {
    Value::Array(v.into_iter().map(Value::from).collect())
}

/// `["a", "b"]` (the exec form), if the text is a JSON array of strings.
fn exec_form(rest: &str) -> Option<Vec<String>> {
    if !rest.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(rest).ok()
}

/// The shell form: the config's Shell (default `/bin/sh -c`) plus the text.
fn shell_form(config: &Map<String, Value>, rest: &str) -> Vec<String> {
    let mut shell: Vec<String> = config
        .get("Shell")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .filter(|v: &Vec<String>| !v.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
    shell.push(rest.to_string());
    shell
}

fn object_field<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = config.entry(key.to_string()).or_insert(Value::Null);
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

fn env_of(config: &Map<String, Value>) -> Vec<(String, String)> {
    config
        .get("Env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv.to_string(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn set_env(config: &mut Map<String, Value>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    let slot = config.entry("Env".to_string()).or_insert(Value::Null);
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    if let Value::Array(list) = slot {
        let prefix = format!("{key}=");
        match list.iter_mut().find(|v| {
            v.as_str()
                .is_some_and(|s| s.starts_with(&prefix) || s == key)
        }) {
            Some(existing) => *existing = Value::from(entry),
            None => list.push(Value::from(entry)),
        }
    }
}

/// `k=v k2="v 2"` pairs, or for ENV the legacy `key value with spaces` form.
fn name_values(
    rest: &str,
    env: &[(String, String)],
    legacy_allowed: bool,
) -> std::result::Result<Vec<(String, String)>, String> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        if !legacy_allowed {
            return Err("expected key=value pairs".into());
        }
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or("ENV needs a value (ENV key=value or ENV key value)")?;
        let v = split_words(v.trim(), env)
            .map_err(|e| e.to_string())?
            .join(" ");
        return Ok(vec![(k.to_string(), v)]);
    }
    let mut out = Vec::new();
    let mut scope: Vec<(String, String)> = env.to_vec();
    for word in split_words(rest, env).map_err(|e| e.to_string())? {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not of the form key=value"))?;
        if k.is_empty() {
            return Err(format!("{word:?} has an empty key"));
        }
        scope.push((k.to_string(), v.to_string()));
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(changes: &[&str]) -> Map<String, Value> {
        let mut c = empty_container_config();
        apply_changes(
            &mut c,
            &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        c
    }

    #[test]
    fn cmd_and_entrypoint_in_both_forms() {
        let c = apply(&[r#"CMD ["echo", "hi there"]"#, "ENTRYPOINT /bin/run --x"]);
        assert_eq!(c["Cmd"], serde_json::json!(["echo", "hi there"]));
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!(["/bin/sh", "-c", "/bin/run --x"])
        );
    }

    #[test]
    fn env_label_workdir_user() {
        let c = apply(&[
            "ENV A=1 B=\"two words\"",
            "ENV LEGACY some value",
            "ENV A=3",
            "LABEL com.x=\"y z\" k=v",
            "WORKDIR /app",
            "WORKDIR sub",
            "USER nobody",
            "ENV P=${A}-$B",
        ]);
        assert_eq!(
            c["Env"],
            serde_json::json!(["A=3", "B=two words", "LEGACY=some value", "P=3-two words"])
        );
        assert_eq!(c["Labels"], serde_json::json!({"com.x": "y z", "k": "v"}));
        assert_eq!(c["WorkingDir"], "/app/sub");
        assert_eq!(c["User"], "nobody");
    }

    /// Guards the builder's one expansion: it used to expand a line once itself (inside single
    /// quotes too) and once more here, so `ENV A='$B'` got B's value instead of `$B`.
    #[test]
    fn build_args_sit_beneath_the_environment_and_quotes_hold() {
        let mut c = empty_container_config();
        let args = [
            ("B".to_string(), "arg".to_string()),
            ("C".to_string(), "c".to_string()),
        ];
        let lines = ["ENV C=env".to_string(), "ENV A='$B' D=$B E=$C".to_string()];
        apply_changes_with_args(&mut c, &lines, &args).unwrap();
        assert_eq!(
            c["Env"],
            serde_json::json!(["C=env", "A=$B", "D=arg", "E=env"])
        );
    }

    #[test]
    fn expose_volume_and_refusals() {
        let c = apply(&["EXPOSE 80 53/udp", r#"VOLUME ["/data"]"#]);
        assert_eq!(
            c["ExposedPorts"],
            serde_json::json!({"80/tcp": {}, "53/udp": {}})
        );
        assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
        let mut c = empty_container_config();
        for bad in ["RUN echo", "CMD", "LABEL novalue", "ENV A=\"open"] {
            assert!(
                apply_changes(&mut c, &[bad.to_string()]).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn words_quote_and_escape() {
        let env = vec![("X".to_string(), "1".to_string())];
        assert_eq!(
            split_words(r#"a\ b 'c $X' "d $X" ${Y:-def}"#, &env).unwrap(),
            vec!["a b", "c $X", "d 1", "def"]
        );
    }
}
