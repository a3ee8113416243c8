//! Bounded fuzzing of Engine API request decoding (see `crate::fuzz` for the knobs): query
//! strings through axum's `Query` and our parameter helpers, the `filters` JSON, and the
//! container create body through `create::prepare` and the mount syntaxes. Whatever a client
//! sends: no panic, and a refusal is a 400 (or the core's InvalidInput), never anything else.

use std::collections::{BTreeMap, HashMap};

use axum::extract::Query;
use axum::http::{StatusCode, Uri};
use proptest::prelude::*;
use serde_json::Value;

use super::containers::{int_param, param, parse_time};
use super::error::ApiError;
use super::filters::{truthy, Filters};
use super::version::{split_version, ApiVersion};
use crate::daemon::containers::{create, mounts};
use crate::fuzz::{json_value, run, SPECIAL_STRINGS};

const QUERY_KEYS: &[&str] = &[
    "since",
    "until",
    "tail",
    "t",
    "h",
    "w",
    "filters",
    "name",
    "signal",
    "all",
    "force",
    "v",
    "follow",
    "timestamps",
    "condition",
    "changes",
    "names",
];

fn is_bad_request(e: &ApiError) -> bool {
    e.status == StatusCode::BAD_REQUEST
}

/// A query value: a special string or arbitrary text, percent-encoded byte by byte sometimes.
fn query_value() -> impl Strategy<Value = String> {
    let text = prop_oneof![
        prop::sample::select(SPECIAL_STRINGS).prop_map(str::to_string),
        ".{0,16}",
        "[0-9.-]{0,24}",
    ];
    (text, any::<bool>()).prop_map(|(t, encode)| {
        if !encode {
            return t;
        }
        t.bytes().map(|b| format!("%{b:02X}")).collect()
    })
}

fn query_string() -> impl Strategy<Value = String> {
    let pair = (
        prop::sample::select(QUERY_KEYS),
        query_value(),
        prop::sample::select(&["=", "", "=="][..]),
    )
        .prop_map(|(k, v, eq)| format!("{k}{eq}{v}"));
    prop_oneof![
        3 => prop::collection::vec(pair, 0..6).prop_map(|p| p.join("&")),
        1 => "[ -~]{0,40}",
    ]
}

/// Everything a handler does with the query before it reaches the daemon.
fn decode_query(raw: &str) {
    let Ok(uri) = format!("/containers/json?{raw}").parse::<Uri>() else {
        return; // hyper refuses such a request line before any handler runs
    };
    let raw = uri.query().map(str::to_string);
    for key in QUERY_KEYS {
        let _ = super::query::all_values(raw.as_deref(), key);
    }
    let Ok(Query(q)) = Query::<HashMap<String, String>>::try_from_uri(&uri) else {
        return; // axum answers 400 itself
    };
    for key in QUERY_KEYS {
        if let Err(e) = int_param(&q, key) {
            assert!(is_bad_request(&e), "{key}: {e:?}");
        }
        let _ = truthy(param(&q, key));
    }
    for key in ["since", "until"] {
        if let Err(e) = parse_time(param(&q, key)) {
            assert!(is_bad_request(&e), "{key}: {e:?}");
        }
    }
    exercise_filters(param(&q, "filters"));
}

fn exercise_filters(raw: Option<&str>) {
    let f = match Filters::parse(raw) {
        Ok(f) => f,
        Err(e) => return assert!(is_bad_request(&e), "{e:?}"),
    };
    let labels: BTreeMap<String, String> = [("a".into(), "b".into())].into();
    let _ = f.matches_labels(&labels);
    for key in ["dangling", "label", "status", "name", "id", "until", ""] {
        let _ = f.matches(key, |v| v.is_empty());
        if let Err(e) = f.bool(key) {
            assert!(is_bad_request(&e), "{e:?}");
        }
    }
}

#[test]
fn fuzz_query_strings() {
    run("query strings", 1000, query_string(), |raw| {
        decode_query(&raw)
    });
}

/// Found by `fuzz_query_strings` (its shrunk input): `logs?since=1.12345678é` sliced the
/// zero-padded fraction at byte 9, inside the `é`, and panicked the handler. Failed on HEAD
/// 3af0184 with "byte index 9 is not a char boundary".
#[test]
fn since_with_a_multibyte_fraction_does_not_panic() {
    decode_query("since=1.12345678é");
    let t = parse_time(Some("1.12345678é")).unwrap().unwrap();
    assert_eq!(t.timestamp(), 1);
    let t = parse_time(Some("7.5")).unwrap().unwrap();
    assert_eq!(
        (t.timestamp(), t.timestamp_subsec_nanos()),
        (7, 500_000_000)
    );
}

#[test]
fn fuzz_versioned_paths() {
    let path = prop_oneof!["/v[0-9.]{0,6}(/[a-z]{0,6}){0,2}", "[ -~]{0,24}", ".{0,12}"];
    run("versioned paths", 500, path, |path| {
        let (version, rest) = split_version(&path);
        assert!(rest.starts_with('/') || version.is_none(), "{path:?}");
        let _ = version.and_then(ApiVersion::parse);
    });
}

const FILTER_KEYS: &[&str] = &[
    "dangling", "label", "status", "name", "id", "until", "before",
];

#[test]
fn fuzz_filters_json() {
    let raw = prop_oneof![
        3 => json_value(FILTER_KEYS).prop_map(|v| v.to_string()),
        1 => ".{0,30}",
    ];
    run("filters", 1000, raw, |raw| exercise_filters(Some(&raw)));
}

/// Field names of Docker's create body (Config, HostConfig, Mounts) that `prepare` reads.
const CREATE_KEYS: &[&str] = &[
    "Image",
    "Cmd",
    "Entrypoint",
    "Env",
    "User",
    "WorkingDir",
    "Labels",
    "Volumes",
    "StopSignal",
    "StopTimeout",
    "Hostname",
    "Tty",
    "OpenStdin",
    "HostConfig",
    "Binds",
    "Mounts",
    "Tmpfs",
    "NetworkMode",
    "AutoRemove",
    "ReadonlyRootfs",
    "Init",
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "CpuQuota",
    "CpuPeriod",
    "CpuShares",
    "PidsLimit",
    "ExtraHosts",
    "CgroupParent",
    "Type",
    "Source",
    "Target",
    "ReadOnly",
    "SizeBytes",
    "Mode",
];

/// A create body: an object whose fields have the right names and any shape, a HostConfig of
/// the same kind, and string lists where `prepare` expects them (so mounts get parsed).
fn create_body() -> impl Strategy<Value = Value> {
    let strings = prop::collection::vec(
        prop_oneof![
            prop::sample::select(SPECIAL_STRINGS).prop_map(str::to_string),
            ".{0,12}"
        ],
        0..4,
    );
    let object = || {
        prop::collection::btree_map(
            prop::sample::select(CREATE_KEYS),
            json_value(CREATE_KEYS),
            0..8,
        )
    };
    (object(), object(), strings.clone(), strings, any::<bool>()).prop_map(
        |(mut top, mut host, binds, cmd, typed)| {
            if typed {
                host.insert("Binds", Value::from(binds));
                top.insert("Cmd", Value::from(cmd));
            }
            top.insert(
                "HostConfig",
                Value::Object(host.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
            );
            Value::Object(top.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        },
    )
}

fn assert_invalid_input(r: strata_core::Result<impl std::fmt::Debug>) {
    if let Err(e) = r {
        assert!(matches!(e, strata_core::Error::InvalidInput(_)), "{e:?}");
    }
}

#[test]
fn fuzz_create_body() {
    let image = prop::option::of(json_value(CREATE_KEYS));
    run(
        "create body",
        1000,
        (create_body(), image),
        |(body, image)| {
            assert_invalid_input(create::prepare_json(&body, image.as_ref()));
        },
    );
}

#[test]
fn fuzz_mount_syntaxes() {
    let spec = prop_oneof![
        prop::collection::vec(prop::sample::select(SPECIAL_STRINGS), 1..4)
            .prop_map(|p| p.join(":")),
        ".{0,24}",
    ];
    let options = prop::collection::vec(prop::sample::select(SPECIAL_STRINGS), 0..3)
        .prop_map(|p| p.join(","));
    run(
        "mount syntaxes",
        1000,
        (spec, options),
        |(spec, options)| {
            assert_invalid_input(mounts::parse_bind(&spec));
            assert_invalid_input(mounts::parse_tmpfs(&spec, &options));
        },
    );
}
