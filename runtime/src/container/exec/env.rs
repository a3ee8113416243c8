//! An exec's environment, as Docker builds it: PATH, HOSTNAME (and TERM with a tty), then the
//! container's `Env`, then the exec's `Env`, each replacing a variable of the same name in
//! place or appended. HOME is added from the user's passwd entry when still missing (at
//! launch, once the user is resolved).

use super::DEFAULT_PATH;

/// The environment of an exec in a container with `container_env` and `hostname`.
pub fn exec_env(
    container_env: &[String],
    exec_env: &[String],
    hostname: &str,
    tty: bool,
) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if tty {
        env.push("TERM=xterm".into());
    }
    replace_or_append(&mut env, container_env);
    replace_or_append(&mut env, exec_env);
    env
}

/// Docker's `ReplaceOrAppendEnvValues`: `KEY=value` replaces KEY, a bare `KEY` removes it.
fn replace_or_append(env: &mut Vec<String>, overrides: &[String]) {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    for o in overrides {
        let k = key(o);
        let existing = env.iter().position(|e| key(e) == k);
        match (existing, o.contains('=')) {
            (Some(i), true) => env[i] = o.clone(),
            (Some(i), false) => {
                env.remove(i);
            }
            (None, true) => env.push(o.clone()),
            (None, false) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exec_env_replaces_in_place_and_appends() {
        let env = exec_env(
            &strings(&["PATH=/c", "A=1", "B=2"]),
            &strings(&["B=3", "C=4", "A"]),
            "box",
            true,
        );
        assert_eq!(env, ["PATH=/c", "HOSTNAME=box", "TERM=xterm", "B=3", "C=4"]);
        let plain = exec_env(&[], &[], "h", false);
        assert_eq!(plain, [format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h".into()]);
    }
}
