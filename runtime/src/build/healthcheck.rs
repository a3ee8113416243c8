//! `HEALTHCHECK [--interval=D] [--timeout=D] [--start-period=D] [--start-interval=D]
//! [--retries=N] CMD command` and `HEALTHCHECK NONE`, into the image config's `Healthcheck`.

use serde_json::{json, Value};
use strata_core::{Error, Result};

use super::dockerfile::{exec_form, Instruction};

pub fn healthcheck(ins: &Instruction) -> Result<Value> {
    let bad = |why: String| Error::invalid(format!("{} (line {}): {why}", ins.original, ins.line));
    let args = ins.args.trim();
    if args.eq_ignore_ascii_case("NONE") {
        return Ok(json!({ "Test": ["NONE"] }));
    }
    let (kind, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
    if !kind.eq_ignore_ascii_case("CMD") || rest.trim().is_empty() {
        return Err(bad(
            "HEALTHCHECK takes NONE or CMD followed by a command".into()
        ));
    }
    let test: Vec<String> = match exec_form(rest) {
        Some(argv) => std::iter::once("CMD".to_string()).chain(argv).collect(),
        None => vec!["CMD-SHELL".into(), rest.trim().to_string()],
    };
    let mut out = json!({ "Test": test });
    for (flag, value) in &ins.flags {
        let key = match flag.as_str() {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| bad(format!("--retries={value} is not a number")))?;
                out["Retries"] = json!(n);
                continue;
            }
            other => return Err(bad(format!("unknown flag --{other}"))),
        };
        let ns = go_duration_ns(value)
            .ok_or_else(|| bad(format!("--{flag}={value} is not a duration")))?;
        out[key] = json!(ns);
    }
    Ok(out)
}

/// A Go duration string (`30s`, `1m30s`, `500ms`, `1.5h`) in nanoseconds.
fn go_duration_ns(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    (total <= i64::MAX as f64).then_some(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::dockerfile::parse;

    #[test]
    fn healthchecks_parse_as_dockers() {
        let ins =
            parse("FROM bb\nHEALTHCHECK --interval=1m30s --retries=2 CMD wget -q localhost\n")
                .unwrap();
        let h = healthcheck(&ins[1]).unwrap();
        assert_eq!(h["Test"], json!(["CMD-SHELL", "wget -q localhost"]));
        assert_eq!(h["Interval"], json!(90_000_000_000i64));
        assert_eq!(h["Retries"], json!(2));
        let ins = parse("FROM bb\nHEALTHCHECK CMD [\"true\"]\nHEALTHCHECK NONE\n").unwrap();
        assert_eq!(
            healthcheck(&ins[1]).unwrap()["Test"],
            json!(["CMD", "true"])
        );
        assert_eq!(healthcheck(&ins[2]).unwrap()["Test"], json!(["NONE"]));
        assert_eq!(go_duration_ns("500ms"), Some(500_000_000));
        assert_eq!(go_duration_ns("soon"), None);
    }
}
