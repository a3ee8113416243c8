//! Running a whole suite on one driver and printing the table of results.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::case::{run_layer_case, Outcome};
use crate::env::{DriverFactory, VolumeFactory};
use crate::volume_suite::run_volume_case;

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub test: String,
    pub outcome: Outcome,
    pub seconds: f64,
}

/// Runs every layer case on `factory`, one after another, calling `progress` after each.
pub async fn run_layer_suite(
    factory: Arc<dyn DriverFactory>,
    mut progress: impl FnMut(&Row),
) -> Vec<Row> {
    let mut rows = Vec::new();
    for case in crate::layer_cases() {
        let start = std::time::Instant::now();
        let outcome = run_layer_case(factory.clone(), &case).await;
        let row = Row {
            test: format!("{}::{}", factory.name(), case.name),
            outcome,
            seconds: start.elapsed().as_secs_f64(),
        };
        progress(&row);
        rows.push(row);
    }
    rows
}

/// Runs every volume case on `factory`.
pub async fn run_volume_suite(
    factory: Arc<dyn VolumeFactory>,
    mut progress: impl FnMut(&Row),
) -> Vec<Row> {
    let mut rows = Vec::new();
    for case in crate::volume_cases() {
        let start = std::time::Instant::now();
        let outcome = run_volume_case(factory.clone(), &case).await;
        let row = Row {
            test: format!("{}::{}", factory.name(), case.name),
            outcome,
            seconds: start.elapsed().as_secs_f64(),
        };
        progress(&row);
        rows.push(row);
    }
    rows
}

/// The table: one line per case, then the reasons for failures and not-applicable cases, then
/// the counts.
pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.test.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:width$}  {:14}  {:>7}\n", "case", "result", "seconds");
    for r in rows {
        let _ = writeln!(
            out,
            "{:width$}  {:14}  {:>7.2}",
            r.test,
            r.outcome.label(),
            r.seconds
        );
    }
    for r in rows {
        match &r.outcome {
            Outcome::Failed(why) => {
                let _ = write!(out, "\nFAIL {}:\n  {}\n", r.test, why.replace('\n', "\n  "));
            }
            Outcome::NotApplicable(why) => {
                let _ = write!(out, "\nNOT APPLICABLE {}: {}\n", r.test, why);
            }
            Outcome::Passed => {}
        }
    }
    let count = |f: fn(&Outcome) -> bool| rows.iter().filter(|r| f(&r.outcome)).count();
    let _ = write!(
        out,
        "\n{} passed, {} failed, {} not applicable\n",
        count(|o| matches!(o, Outcome::Passed)),
        count(|o| matches!(o, Outcome::Failed(_))),
        count(|o| matches!(o, Outcome::NotApplicable(_)))
    );
    out
}

/// Whether any row failed.
pub fn any_failed(rows: &[Row]) -> bool {
    rows.iter().any(|r| matches!(r.outcome, Outcome::Failed(_)))
}
