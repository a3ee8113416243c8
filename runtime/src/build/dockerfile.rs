//! Dockerfile parsing: line continuations, comments, the escape directive, instructions with
//! their flags (`--chown=`), exec (JSON) and shell forms, and `$VAR` substitution.

use strata_core::{Error, Result};

/// One instruction as written (after joining continuation lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper-cased keyword: FROM, RUN, COPY, ...
    pub keyword: String,
    /// `--name=value` flags before the arguments.
    pub flags: Vec<(String, String)>,
    /// The rest of the line, flags removed, untrimmed of inner spacing.
    pub args: String,
    /// The instruction as the user wrote it (for `Step i/n : ...`).
    pub original: String,
    pub line: usize,
}

const KNOWN: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

pub fn parse(text: &str) -> Result<Vec<Instruction>> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut start_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let trimmed = line.trim_start();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if !pending.is_empty() && trimmed.starts_with('#') {
            // Comment lines inside a continued instruction are dropped, as Docker does.
            continue;
        }
        if pending.is_empty() {
            start_line = i + 1;
        }
        if let Some(body) = line.strip_suffix('\\') {
            pending.push_str(body);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        out.push(instruction(&pending, start_line)?);
        pending.clear();
    }
    if !pending.trim().is_empty() {
        out.push(instruction(&pending, start_line)?);
    }
    if out.is_empty() {
        return Err(Error::invalid("the Dockerfile has no instructions"));
    }
    Ok(out)
}

fn instruction(text: &str, line: usize) -> Result<Instruction> {
    let text = text.trim();
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let keyword = word.to_ascii_uppercase();
    if !KNOWN.contains(&keyword.as_str()) {
        return Err(Error::invalid(format!(
            "Dockerfile parse error line {line}: unknown instruction: {word}"
        )));
    }
    let mut rest = rest.trim_start();
    let mut flags = Vec::new();
    while let Some(after) = rest.strip_prefix("--") {
        let (flag, tail) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
        flags.push((name.to_string(), value.to_string()));
        rest = tail.trim_start();
    }
    if rest.is_empty() && !matches!(keyword.as_str(), "HEALTHCHECK") {
        return Err(Error::invalid(format!(
            "Dockerfile parse error line {line}: {keyword} requires at least one argument"
        )));
    }
    Ok(Instruction {
        keyword,
        flags,
        args: rest.to_string(),
        original: format!(
            "{} {}",
            word.to_ascii_uppercase(),
            text[word.len()..].trim()
        ),
        line,
    })
}

/// `["a", "b"]` → Some([a, b]); anything else is shell form.
pub fn exec_form(args: &str) -> Option<Vec<String>> {
    let t = args.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

#[cfg(test)]
#[path = "dockerfile_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_continuations_comments_and_flags() {
        let df = "# comment\nFROM bb:latest\nRUN echo a \\\n  && echo b\n\nCOPY --chown=1:2 a.txt /x/\ncmd [\"sh\"]\n";
        let ins = parse(df).unwrap();
        assert_eq!(ins.len(), 4);
        assert_eq!(ins[1].keyword, "RUN");
        assert!(ins[1].args.contains("echo a") && ins[1].args.contains("&& echo b"));
        assert_eq!(ins[2].flags, vec![("chown".to_string(), "1:2".to_string())]);
        assert_eq!(ins[2].args, "a.txt /x/");
        assert_eq!(exec_form(&ins[3].args), Some(vec!["sh".to_string()]));
        assert!(parse("FROBNICATE x").is_err());
        assert!(parse("# nothing\n").is_err());
        assert!(parse("RUN").is_err());
    }
}
