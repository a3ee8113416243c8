//! A resolved profile to a classic-BPF seccomp program, with libseccomp (the library runc,
//! crun and youki use: it knows every architecture's syscall numbers, multiplexed calls like
//! socketcall, and the arch checks). The program is exported here, in the parent, as an array
//! of `sock_filter`s; the child only hands it to seccomp(2), which allocates nothing.

use std::io::{Read, Seek};
use std::str::FromStr;

use libseccomp::ScmpSyscall;
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use strata_core::{Error, Result};

use super::profile::{Arg, Resolved, Rule};

fn seccomp_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("seccomp profile: {what}: {e}"))
}

fn action(name: &str, errno: Option<i32>, default_errno: i32) -> Result<ScmpAction> {
    match name {
        "SCMP_ACT_ERRNO" | "SCMP_ACT_TRACE" => {
            ScmpAction::from_str(name, Some(errno.unwrap_or(default_errno)))
        }
        // A notify action needs a listener agent, which Strata does not run.
        "SCMP_ACT_NOTIFY" => Err(Error::invalid(
            "seccomp profile: SCMP_ACT_NOTIFY is not supported",
        ))?,
        _ => ScmpAction::from_str(name, None),
    }
    .map_err(|e| seccomp_err("action", e))
}

fn compare(arg: &Arg) -> Result<ScmpArgCompare> {
    let op = match arg.op.as_str() {
        // Docker's masked form: (argument & value) == valueTwo.
        "SCMP_CMP_MASKED_EQ" => ScmpCompareOp::MaskedEqual(arg.value),
        other => ScmpCompareOp::from_str(other).map_err(|e| seccomp_err("op", e))?,
    };
    let datum = match op {
        ScmpCompareOp::MaskedEqual(_) => arg.value_two,
        _ => arg.value,
    };
    if arg.index > 5 {
        return Err(Error::invalid(format!(
            "seccomp profile: argument index {} is out of range",
            arg.index
        )));
    }
    Ok(ScmpArgCompare::new(arg.index, op, datum))
}

fn add_rule(
    ctx: &mut ScmpFilterContext,
    rule: &Rule,
    default: ScmpAction,
    default_errno: i32,
) -> Result<()> {
    let act = action(&rule.action, rule.errno, default_errno)?;
    if act == default {
        return Ok(());
    }
    let compares = rule.args.iter().map(compare).collect::<Result<Vec<_>>>()?;
    // As runc: several conditions on the same argument are alternatives (one rule each);
    // otherwise they all must hold (one rule).
    let same_index = compares.len() > 1 && rule.args.iter().all(|a| a.index == rule.args[0].index);
    for name in &rule.names {
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            // A name libseccomp does not know: a syscall newer than it, skipped as runc does.
            tracing::debug!("seccomp: unknown syscall {name} skipped");
            continue;
        };
        let result = if compares.is_empty() {
            ctx.add_rule(act, syscall)
        } else if same_index {
            compares
                .iter()
                .try_for_each(|c| ctx.add_rule_conditional(act, syscall, &[*c]).map(drop))
                .map(|()| &mut *ctx)
        } else {
            ctx.add_rule_conditional(act, syscall, &compares)
        };
        result.map_err(|e| seccomp_err(&format!("rule for {name}"), e))?;
    }
    Ok(())
}

/// Builds the BPF program of a resolved profile.
pub fn compile(profile: &Resolved) -> Result<Vec<libc::sock_filter>> {
    let default = action(
        &profile.default_action,
        Some(profile.default_errno),
        profile.default_errno,
    )?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| seccomp_err("init", e))?;
    for arch in &profile.architectures {
        let arch = ScmpArch::from_str(arch).map_err(|e| seccomp_err("architecture", e))?;
        if arch != ScmpArch::native() {
            ctx.add_arch(arch)
                .map_err(|e| seccomp_err("architecture", e))?;
        }
    }
    for rule in &profile.rules {
        add_rule(&mut ctx, rule, default, profile.default_errno)?;
    }
    export(&ctx)
}

/// libseccomp 2.5 exports to a file descriptor only: an anonymous temp file, read back.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    let mut file =
        tempfile::tempfile().map_err(|e| Error::Other(format!("seccomp export: {e}")))?;
    ctx.export_bpf(&file)
        .map_err(|e| seccomp_err("export", e))?;
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|()| file.read_to_end(&mut bytes))
        .map_err(|e| Error::Other(format!("seccomp export: {e}")))?;
    const SIZE: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % SIZE != 0 || bytes.len() / SIZE > u16::MAX as usize {
        return Err(Error::Other(format!(
            "seccomp export: a program of {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(SIZE)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::profile::{Host, Profile, DEFAULT_PROFILE};
    use super::*;

    #[test]
    fn default_profile_compiles() {
        let p = Profile::parse(DEFAULT_PROFILE).unwrap();
        let r = p
            .resolve(&Host::detect(), crate::container::caps::default_mask())
            .unwrap();
        let prog = compile(&r).unwrap();
        assert!(prog.len() > 100, "{} instructions", prog.len());
    }

    #[test]
    fn bad_actions_and_ops_are_refused() {
        let bad = |json: &str| {
            let r = Profile::parse(json)
                .unwrap()
                .resolve(&Host::detect(), 0)
                .unwrap();
            compile(&r).unwrap_err().to_string()
        };
        assert!(bad(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#).contains("action"));
        assert!(bad(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_XX"}]}]}"#
        )
        .contains("op"));
    }
}
