//! The bounded fuzz runner the crate's fuzz tests share (proptest on stable, as ordinary
//! tests): `STRATA_FUZZ_CASES` overrides each target's case count, `STRATA_FUZZ_SEED` the
//! seed (default fixed, so CI is reproducible). A failure panics with the shrunk input.

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

/// Runs `test` on `default_cases` generated inputs (or `STRATA_FUZZ_CASES`). A panic inside
/// `test` is a finding: proptest shrinks the input and this panics with it.
pub(crate) fn run<S: Strategy>(
    target: &str,
    default_cases: u64,
    strategy: S,
    test: impl Fn(S::Value),
) {
    let config = Config {
        cases: env_u64("STRATA_FUZZ_CASES", default_cases) as u32,
        failure_persistence: None,
        ..Config::default()
    };
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&env_u64("STRATA_FUZZ_SEED", 0x5712_a7a5).to_le_bytes());
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let result = runner.run(&strategy, |input| {
        test(input);
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz target {target} failed: {e}");
    }
}

/// JSON values of every shape, nested a few levels, with keys from `keys` (so objects hit the
/// fields a decoder knows) or arbitrary.
pub(crate) fn json_value(
    keys: &'static [&'static str],
) -> impl Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
    let key = prop_oneof![
        4 => prop::sample::select(keys).prop_map(str::to_string),
        1 => ".{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(SPECIAL_STRINGS).prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Strings that decoders split, trim or index into: separators, paths, numbers at the edges,
/// multi-byte characters where byte offsets would cut them.
pub(crate) const SPECIAL_STRINGS: &[&str] = &[
    "",
    "/",
    "/a",
    "/a/../b",
    "a:/b:ro",
    "/h:/c:rw,z",
    ":::",
    "=",
    "a=b",
    "1",
    "-1",
    "1.5",
    "9223372036854775808",
    "1.12345678é",
    "é",
    "\u{0}",
    "true",
    "none",
    "host",
    "tmpfs",
    "volume",
    "bind",
    "size=1g,mode=1777",
];
