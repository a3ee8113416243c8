//! Dockerfile parsing: comments, `\` continuations, one instruction per logical line.

use strata_core::{Error, Result};

/// One instruction: the keyword upper-cased, its arguments as written, and the original text
/// for `Step n/m : ...` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
    pub original: String,
}

pub fn parse(text: &str) -> Result<Vec<Instruction>> {
    let mut out = Vec::new();
    let mut logical = String::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        let trimmed = line.trim_start();
        // Comment lines (also inside continuations) are dropped, as Docker does.
        if trimmed.starts_with('#') {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            logical.push_str(body);
            continue;
        }
        logical.push_str(line);
        let full = std::mem::take(&mut logical);
        if let Some(i) = instruction(&full)? {
            out.push(i);
        }
    }
    if let Some(i) = instruction(&logical)? {
        out.push(i);
    }
    if !out.iter().any(|i| i.keyword == "FROM") {
        return Err(Error::invalid("the Dockerfile has no FROM instruction"));
    }
    Ok(out)
}

fn instruction(line: &str) -> Result<Option<Instruction>> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let (word, rest) = match line.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    let keyword = word.to_ascii_uppercase();
    if rest.is_empty() && keyword != "RUN" {
        return Err(Error::invalid(format!(
            "Dockerfile: {keyword} requires at least one argument"
        )));
    }
    Ok(Some(Instruction {
        original: format!("{keyword} {rest}"),
        keyword,
        args: rest.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_continuations_and_comments() {
        let d = parse(
            "# syntax\nFROM bb:latest\nRUN mkdir -p /a \\\n  && echo hi \\\n# inner comment\n  > /a/x\n\ncmd [\"sh\"]\n",
        )
        .unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].keyword, "RUN");
        assert_eq!(d[1].args, "mkdir -p /a   && echo hi   > /a/x");
        assert_eq!(d[2].original, "CMD [\"sh\"]");
        assert!(parse("RUN x").is_err());
        assert!(parse("FROM\n").is_err());
    }
}
