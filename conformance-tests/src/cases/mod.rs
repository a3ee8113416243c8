//! The layer cases, registered in [`layer_cases`]. Each module holds cases about one subject.

mod basic;
mod chain;
mod cow;
mod diff;
mod hostile;
mod lifecycle;
mod names;
mod restart;
mod usage;

use std::io;
use std::path::Path;

use strata_core::{Error, LayerId};

use crate::case::{Case, Requirement};
use crate::ctx::{on_dir, snapshot_of, Ctx};
use crate::failure::{CaseResult, Failure, Step};
use crate::tree::Snapshot;

macro_rules! case {
    ($module:ident :: $name:ident) => {
        case!($module::$name, Requirement::Nothing)
    };
    ($module:ident :: $name:ident, $needs:expr) => {
        Case {
            name: stringify!($name),
            needs: $needs,
            run: |ctx| Box::pin($module::$name(ctx)),
        }
    };
}

/// Every layer case, in the order they are listed and run.
pub fn layer_cases() -> Vec<Case> {
    vec![
        case!(basic::create_empty),
        case!(basic::create_base),
        case!(basic::create_snapshot),
        case!(basic::create_errors),
        case!(basic::reuse_removed_id),
        case!(basic::bad_ids),
        case!(cow::cow_isolation),
        case!(cow::delete_from_lower),
        case!(cow::deleted_stays_deleted),
        case!(cow::remove_dir_in_lower_then_recreate),
        case!(cow::rename_file_and_dir_from_lower),
        case!(cow::replace_file_with_dir_and_dir_with_file),
        case!(cow::chown_copy_up),
        case!(cow::dir_permissions_on_commit),
        case!(cow::move_file_from_lower_via_hardlink),
        case!(cow::hardlink_to_unmodified_lower),
        case!(cow::unix_socket_in_layer),
        case!(chain::deep_chain_128),
        case!(chain::image_chain_32),
        case!(chain::same_size_rewrite),
        case!(diff::changes_exact),
        case!(diff::changes_at_every_depth),
        case!(diff::diff_apply_roundtrip),
        case!(diff::large_and_sparse),
        case!(names::long_and_odd_names),
        case!(lifecycle::mount_refcount),
        case!(lifecycle::remove_busy),
        case!(lifecycle::remove_intermediate_refused),
        case!(lifecycle::concurrent),
        case!(hostile::malicious_tars),
        case!(usage::usage_accounting),
        case!(restart::restart_recovery),
        case!(usage::quota, Requirement::Quota),
    ]
}

/// One step of a layered scenario: tree operations applied to a layer and to the reference.
pub(crate) type StepOps = fn(&Path) -> io::Result<()>;

/// Builds `steps` as a chain of read-write layers (the first on no parent), applying each step
/// to the layer's mount and to a flat reference directory. Checks every layer against the
/// reference as it was after that step, both through its mount and rebuilt from its diff, and
/// at the end checks every layer again (later layers must not have changed earlier ones).
pub(crate) async fn stack(
    ctx: &Ctx,
    label: &str,
    steps: &[StepOps],
) -> CaseResult<Vec<(LayerId, Snapshot)>> {
    let reference = ctx.reference(label).await?;
    let mut layers: Vec<(LayerId, Snapshot)> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let parent = layers.last().map(|(id, _)| id.clone());
        let id = ctx
            .build_rw(&format!("{label}{i}"), parent.as_ref(), *step)
            .await?;
        on_dir(&reference, *step)
            .await
            .step("applying the step to the reference")?;
        let expected = snapshot_of(&reference).await?;
        ctx.expect_tree_both_ways(
            &id,
            parent.as_ref(),
            &expected,
            &format!("{label}: layer {i}"),
        )
        .await?;
        layers.push((id, expected));
    }
    for (i, (id, expected)) in layers.iter().enumerate() {
        ctx.expect_tree(
            id,
            expected,
            &format!("{label}: layer {i} after the layers above it were built"),
        )
        .await?;
    }
    Ok(layers)
}

/// Fails unless `result` is an error `is_expected` accepts; `what` says what was attempted.
pub(crate) fn expect_error<T: std::fmt::Debug>(
    result: strata_core::Result<T>,
    is_expected: fn(&Error) -> bool,
    expected: &str,
    what: &str,
) -> CaseResult<()> {
    match result {
        Err(e) if is_expected(&e) => Ok(()),
        Err(e) => Err(Failure::new(format!(
            "{what}: expected {expected}, got a different error: {e} ({e:?})"
        ))),
        Ok(v) => Err(Failure::new(format!(
            "{what}: expected {expected}, but it succeeded ({v:?})"
        ))),
    }
}

pub(crate) fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::NotFound(_))
}

pub(crate) fn is_busy(e: &Error) -> bool {
    matches!(e, Error::Busy(_))
}

pub(crate) fn is_already_exists(e: &Error) -> bool {
    matches!(e, Error::AlreadyExists(_))
}
