//! Bounded fuzzing of the Dockerfile parser (see `crate::fuzz` for the knobs): near-valid
//! Dockerfiles (keywords in any case, flags, exec forms, continuations, comments, CRLF,
//! variables) and arbitrary text. No panic, a refusal is InvalidInput, and what parses is
//! consistent: known keywords, line numbers inside the file, substitution only where `$` is.

use proptest::prelude::*;

use super::*;
use crate::build::words::{expand, split_words};
use crate::fuzz::run;

const PIECES: &[&str] = &[
    "FROM",
    "from",
    "RuN",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "CMD",
    "ENTRYPOINT",
    "HEALTHCHECK",
    "ONBUILD",
    "FROBNICATE",
    " ",
    "\t",
    "\\",
    "\\\n",
    "\n",
    "\r\n",
    "#",
    "# escape=`",
    "--",
    "--chown=1:2",
    "--from=",
    "=",
    "[",
    "]",
    "[\"sh\", \"-c\"]",
    "[\"a\",",
    "\"",
    "$",
    "$A",
    "${",
    "${A}",
    "${A:-d}",
    "${B:+x}",
    "}",
    "\\$",
    "é",
    "\u{a0}",
    "\u{2028}",
    "\0",
    "a",
    "/x/",
];

fn dockerfile() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|p| p.concat()),
        1 => ".{0,80}",
        1 => "[A-Za-z \\\\\n#$\\[\\]\"{}:=-]{0,80}",
    ]
}

fn vars() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("[A-B_]{0,2}", ".{0,6}"), 0..3)
}

#[test]
fn fuzz_dockerfile_parser() {
    run(
        "dockerfile",
        2000,
        (dockerfile(), vars()),
        |(text, vars)| {
            let instructions = match parse(&text) {
                Ok(i) => i,
                Err(e) => return assert!(matches!(e, Error::InvalidInput(_)), "{e:?}"),
            };
            let lines = text.lines().count();
            for ins in &instructions {
                assert!(KNOWN.contains(&ins.keyword.as_str()), "{ins:?}");
                assert!((1..=lines).contains(&ins.line), "{ins:?} of {lines} lines");
                let _ = exec_form(&ins.args);
                let out = expand(&ins.args, &vars);
                if !ins.args.contains('$') {
                    assert_eq!(out.as_deref(), Ok(ins.args.as_str()));
                }
            }
        },
    );
}

#[test]
fn fuzz_substitute() {
    let text = prop_oneof![
        prop::collection::vec(prop::sample::select(PIECES), 0..30).prop_map(|p| p.concat()),
        ".{0,60}",
    ];
    run("substitute", 2000, (text, vars()), |(text, vars)| {
        let out = expand(&text, &vars);
        if !text.contains('$') {
            assert_eq!(out.as_deref(), Ok(text.as_str()));
        }
        let _ = split_words(&text, &vars);
    });
}
