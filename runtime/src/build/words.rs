//! Docker's word rules for Dockerfile instructions and `--change` lines (the shell lexer of
//! moby/buildkit): `$VAR` and `${VAR}` with the `:-`, `-`, `:+`, `+`, `:?` and `?` modifiers,
//! single and double quotes, and `\` escapes. One implementation for the builder and for
//! `commit`/`import` changes, so a line means the same in both and fails the same way.

/// Why a line could not be expanded; the texts are Docker's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordError {
    #[error("missing '}}' in substitution")]
    UnclosedBrace,
    #[error("bad substitution: ${{{0}}}")]
    BadSubstitution(String),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("unexpected end of statement while looking for matching {0}")]
    UnclosedQuote(char),
}

type Vars = [(String, String)];

/// The value of `name`; a later entry wins, as a later `ENV`/`ARG` does.
fn lookup<'a>(vars: &'a Vars, name: &str) -> Option<&'a str> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Expands variables and `\$` only, keeping quotes as written: for the lines whose quoting a
/// later step reads (the builder's `COPY` words, JSON exec forms).
pub fn expand(s: &str, vars: &Vars) -> Result<String, WordError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if chars.get(i + 1) == Some(&'$') => {
                out.push('$');
                i += 2;
            }
            '$' => i = expand_dollar(&chars, i, vars, &mut out)?,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Splits into words as Docker does: whitespace separates words outside quotes, quotes are
/// removed, `\` escapes the next character (outside single quotes; inside double quotes only
/// `"`, `\` and `$`), and variables expand outside single quotes.
pub fn split_words(s: &str, vars: &Vars) -> Result<Vec<String>, WordError> {
    let chars: Vec<char> = s.chars().collect();
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut cur));
                in_word = false;
            }
            i += 1;
            continue;
        }
        in_word = true;
        i = match c {
            '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|c| *c == '\'')
                    .ok_or(WordError::UnclosedQuote('\''))?;
                cur.extend(&chars[i + 1..i + 1 + end]);
                i + end + 2
            }
            '"' => double_quoted(&chars, i + 1, vars, &mut cur)?,
            '\\' => {
                // A trailing backslash stays, as Docker keeps it.
                cur.push(*chars.get(i + 1).unwrap_or(&'\\'));
                i + 2
            }
            '$' => expand_dollar(&chars, i, vars, &mut cur)?,
            c => {
                cur.push(c);
                i + 1
            }
        };
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// The inside of a double-quoted string starting at `i`; returns the index after the quote.
fn double_quoted(
    chars: &[char],
    mut i: usize,
    vars: &Vars,
    out: &mut String,
) -> Result<usize, WordError> {
    loop {
        match chars.get(i) {
            None => return Err(WordError::UnclosedQuote('"')),
            Some('"') => return Ok(i + 1),
            Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\' | '$')) => {
                out.push(chars[i + 1]);
                i += 2;
            }
            Some('$') => i = expand_dollar(chars, i, vars, out)?,
            Some(c) => {
                out.push(*c);
                i += 1;
            }
        }
    }
}

/// Expands the variable at `chars[i] == '$'` into `out`; returns the index after it. A `$`
/// not followed by a name or `{` is a literal dollar.
fn expand_dollar(
    chars: &[char],
    i: usize,
    vars: &Vars,
    out: &mut String,
) -> Result<usize, WordError> {
    let is_name = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
    if chars.get(i + 1) != Some(&'{') {
        let len = chars[i + 1..].iter().take_while(|c| is_name(c)).count();
        if len == 0 {
            out.push('$');
            return Ok(i + 1);
        }
        let name: String = chars[i + 1..i + 1 + len].iter().collect();
        out.push_str(lookup(vars, &name).unwrap_or_default());
        return Ok(i + 1 + len);
    }
    let start = i + 2;
    let close = chars[start..]
        .iter()
        .position(|c| *c == '}')
        .ok_or(WordError::UnclosedBrace)?;
    let inner = &chars[start..start + close];
    let name_len = inner.iter().take_while(|c| is_name(c)).count();
    let name: String = inner[..name_len].iter().collect();
    if name.is_empty() {
        return Err(WordError::BadSubstitution(inner.iter().collect()));
    }
    let value = lookup(vars, &name);
    let rest = &inner[name_len..];
    let (colon, modifier, word) = match rest {
        [] => {
            out.push_str(value.unwrap_or_default());
            return Ok(start + close + 1);
        }
        [':', m, word @ ..] => (true, *m, word),
        [m, word @ ..] => (false, *m, word),
    };
    // With a colon an empty value counts as unset, as in the shell.
    let set = match value {
        Some(v) => !colon || !v.is_empty(),
        None => false,
    };
    // The word may itself hold variables (`${A:-$B}`); it is shorter than the line, so the
    // recursion ends.
    let word = || expand(&word.iter().collect::<String>(), vars);
    match modifier {
        '-' if set => out.push_str(value.unwrap_or_default()),
        '-' => out.push_str(&word()?),
        '+' if set => out.push_str(&word()?),
        '+' => {}
        '?' if set => out.push_str(value.unwrap_or_default()),
        '?' => {
            let message = word()?;
            return Err(WordError::Required {
                name,
                message: if message.is_empty() {
                    "is not allowed to be unset".into()
                } else {
                    message
                },
            });
        }
        _ => return Err(WordError::BadSubstitution(inner.iter().collect())),
    }
    Ok(start + close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, String)> {
        vec![
            ("A".into(), "1".into()),
            ("E".into(), String::new()),
            ("A".into(), "2".into()),
        ]
    }

    #[test]
    fn expands_like_docker() {
        let v = vars();
        assert_eq!(
            expand(
                "x$A ${A} ${B:-d} ${A:+y} \\$A $E. $ ${E-set} ${E:-empty}",
                &v
            )
            .unwrap(),
            "x2 2 d y $A . $  empty"
        );
        assert_eq!(expand("${B:-$A}", &v).unwrap(), "2");
        assert_eq!(expand("${A?} ${B+x}", &v).unwrap(), "2 ");
    }

    /// Guards one error rule for both users: the builder's expander kept an unclosed `${`
    /// as text while the `--change` expander refused it; Docker refuses it.
    #[test]
    fn malformed_substitutions_are_errors() {
        let v = vars();
        assert_eq!(expand("a ${A", &v), Err(WordError::UnclosedBrace));
        assert_eq!(split_words("a ${A", &v), Err(WordError::UnclosedBrace));
        assert!(matches!(
            expand("${}", &v),
            Err(WordError::BadSubstitution(_))
        ));
        assert!(matches!(
            expand("${A B}", &v),
            Err(WordError::BadSubstitution(_))
        ));
        assert_eq!(
            expand("${B:?must be set}", &v),
            Err(WordError::Required {
                name: "B".into(),
                message: "must be set".into()
            })
        );
        assert_eq!(split_words("'a", &v), Err(WordError::UnclosedQuote('\'')));
        assert_eq!(split_words("\"a", &v), Err(WordError::UnclosedQuote('"')));
    }

    #[test]
    fn splits_and_unquotes() {
        let v = vars();
        assert_eq!(
            split_words(r#"a\ b 'c $A' "d $A \"q\"" ${Y:-def} e\"#, &v).unwrap(),
            vec!["a b", "c $A", "d 2 \"q\"", "def", "e\\"]
        );
    }

    /// Guards the cost of a text full of unclosed `${`: it fails at the first one instead of
    /// rescanning the rest of the text for each.
    #[test]
    fn unclosed_braces_fail_fast() {
        let text = "${".repeat(100_000);
        let started = std::time::Instant::now();
        assert_eq!(expand(&text, &[]), Err(WordError::UnclosedBrace));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
