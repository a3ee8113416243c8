//! The conformance suite as tests: one test per (driver, case), named `DRIVER::CASE`
//! (`vfs::create_base`, `local::tmpfs_volume`), runnable with cargo nextest or cargo test.
//!
//! Drivers are registered in ONE place: `conformance-tests/src/builtin.rs`
//! (`layer_factories()` / `volume_factories()`); add a line there, not here.
//!
//! Cases a driver cannot support (by its `capabilities()`) are listed as ignored tests; run
//! with `--ignored` they report "ignored, <reason>". To know which, each driver whose tests
//! are selected is opened once in a throwaway environment at start-up; a driver that cannot
//! open gets all its cases run, and they fail with the reason.

use std::sync::Arc;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use strata_conformance::builtin::{layer_factories, volume_factories};
use strata_conformance::{
    layer_cases, probe_capabilities, run_layer_case, run_volume_case, volume_cases, Case,
    DriverFactory, Outcome, VolumeCase, VolumeFactory,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn conclude(outcome: Outcome) -> Result<Completion, Failed> {
    match outcome {
        Outcome::Passed => Ok(Completion::Completed),
        Outcome::Failed(why) => Err(why.into()),
        Outcome::NotApplicable(why) => {
            Ok(Completion::ignored_with(format!("not applicable: {why}")))
        }
    }
}

/// Whether libtest-mimic will keep `name` with these arguments (ignoring skips, which only
/// makes us probe a driver we did not need to).
fn selected(args: &Arguments, name: &str) -> bool {
    match &args.filter {
        None => true,
        Some(f) if args.exact => name == f,
        Some(f) => name.contains(f.as_str()),
    }
}

fn layer_trials(args: &Arguments, factory: Arc<dyn DriverFactory>) -> Vec<Trial> {
    let cases = layer_cases();
    let any_selected = cases
        .iter()
        .any(|c| selected(args, &format!("{}::{}", factory.name(), c.name)));
    let caps = any_selected.then(|| runtime().block_on(probe_capabilities(&factory)));
    if let Some(Err(why)) = &caps {
        eprintln!(
            "conformance: {} cannot be opened, all its cases will fail: {why}",
            factory.name()
        );
    }
    cases
        .into_iter()
        .map(|case: Case| {
            let name = format!("{}::{}", factory.name(), case.name);
            let not_applicable = match &caps {
                Some(Ok(caps)) => case.needs.unmet(caps),
                _ => None,
            };
            if let Some(why) = &not_applicable {
                if !args.list && selected(args, &name) {
                    eprintln!("conformance: {name} is NOT APPLICABLE: {why}");
                }
            }
            let factory = factory.clone();
            Trial::ignorable_test(name, move || {
                conclude(runtime().block_on(run_layer_case(factory, &case)))
            })
            .with_ignored_flag(not_applicable.is_some())
        })
        .collect()
}

fn volume_trials(args: &Arguments, factory: Arc<dyn VolumeFactory>) -> Vec<Trial> {
    volume_cases()
        .into_iter()
        .map(|case: VolumeCase| {
            let name = format!("{}::{}", factory.name(), case.name);
            let not_applicable = case.needs.unmet(factory.as_ref());
            if let Some(why) = &not_applicable {
                if !args.list && selected(args, &name) {
                    eprintln!("conformance: {name} is NOT APPLICABLE: {why}");
                }
            }
            let factory = factory.clone();
            Trial::ignorable_test(name, move || {
                conclude(runtime().block_on(run_volume_case(factory, &case)))
            })
            .with_ignored_flag(not_applicable.is_some())
        })
        .collect()
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for factory in layer_factories() {
        trials.extend(layer_trials(&args, factory));
    }
    for factory in volume_factories() {
        trials.extend(volume_trials(&args, factory));
    }
    libtest_mimic::run(&args, trials).exit();
}
