//! `docker top`: the host's `ps` with the client's arguments, its lines filtered to the
//! container's processes (those in its cgroup), as Docker does it.

use serde::Serialize;
use strata_core::{Error, Result};

use super::Container;

/// Docker's `ContainerTopOKBody`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Top {
    #[serde(rename = "Titles")]
    pub titles: Vec<String>,
    #[serde(rename = "Processes")]
    pub processes: Vec<Vec<String>>,
}

pub async fn top(c: &Container, ps_args: &str) -> Result<Top> {
    let running = c
        .running()
        .ok_or_else(|| Error::busy(format!("Container {} is not running", c.record().id)))?;
    let pids = running.cgroup().processes()?;
    let args: Vec<String> = ps_args.split_whitespace().map(str::to_string).collect();
    let pid_list = pids
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // `-q pids` narrows ps to our processes; some options (such as `f`) refuse it, so try
    // again without it, as Docker does.
    let mut out = run_ps(&args, Some(&pid_list)).await?;
    if !out.status.success() {
        out = run_ps(&args, None).await?;
    }
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "ps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_ps(&String::from_utf8_lossy(&out.stdout), &pids)
}

async fn run_ps(args: &[String], pids: Option<&str>) -> Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new("ps");
    cmd.args(args);
    if let Some(p) = pids {
        cmd.arg("-q").arg(p);
    }
    cmd.stdin(std::process::Stdio::null());
    cmd.output().await.map_err(|e| Error::io("run", "ps", e))
}

/// Keeps the lines whose PID column is one of `pids`; the last column takes the rest of the
/// line (the command and its arguments).
fn parse_ps(output: &str, pids: &[i32]) -> Result<Top> {
    let mut lines = output.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| Error::invalid("Couldn't find PID field in ps output"))?;
    let mut processes = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = fields.get(pid_col).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        let n = titles.len().min(fields.len());
        let mut row: Vec<String> = fields[..n - 1].iter().map(|s| s.to_string()).collect();
        row.push(fields[n - 1..].join(" "));
        processes.push(row);
    }
    Ok(Top { titles, processes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_to_the_container_and_keeps_the_command_whole() {
        let out = "UID PID PPID C STIME TTY TIME CMD\n\
                   root 1 0 0 10:00 ? 00:00:01 /sbin/init\n\
                   root 42 1 0 10:01 ? 00:00:00 sleep 1000 now\n";
        let top = parse_ps(out, &[42]).unwrap();
        assert_eq!(top.titles.len(), 8);
        assert_eq!(
            top.processes,
            vec![vec![
                "root",
                "42",
                "1",
                "0",
                "10:01",
                "?",
                "00:00:00",
                "sleep 1000 now"
            ]]
        );
        assert!(parse_ps("USER CMD\nroot x\n", &[1]).is_err());
    }
}
