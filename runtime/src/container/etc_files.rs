//! The container's /etc/hostname, /etc/hosts and /etc/resolv.conf: files in the container's
//! directory (Docker's `containers/<id>/{hostname,hosts,resolv.conf}`), bind-mounted in.

use std::path::{Path, PathBuf};

use strata_core::{IoContext, Result};

use super::spec::{ContainerSpec, Network};

const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n";

/// Docker's fallback when the host only has local nameservers, useless in another netns.
const DEFAULT_NAMESERVERS: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";

/// The three files as host paths, paired with where they go in the container. Plain writes,
/// no fsync: they are rewritten at every start, so a crash cannot leave a stale one in use.
fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).ctx("write", path)
}

pub(crate) fn write_all(spec: &ContainerSpec) -> Result<Vec<(PathBuf, &'static str)>> {
    let dir = &spec.container_dir;
    let hostname = dir.join("hostname");
    write(&hostname, format!("{}\n", spec.hostname).as_bytes())?;
    let hosts = dir.join("hosts");
    write(&hosts, hosts_content(spec).as_bytes())?;
    let resolv = dir.join("resolv.conf");
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    write(
        &resolv,
        resolv_content(&host_resolv, spec.network).as_bytes(),
    )?;
    Ok(vec![
        (hostname, "/etc/hostname"),
        (hosts, "/etc/hosts"),
        (resolv, "/etc/resolv.conf"),
    ])
}

fn hosts_content(spec: &ContainerSpec) -> String {
    let mut out = match spec.network {
        Network::Host => std::fs::read_to_string(Path::new("/etc/hosts"))
            .unwrap_or_else(|_| DEFAULT_HOSTS.to_string()),
        Network::None => DEFAULT_HOSTS.to_string(),
    };
    if !out.ends_with('\n') && !out.is_empty() {
        out.push('\n');
    }
    for line in &spec.extra_hosts {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Host networking sees the host's resolvers as they are; a private netns cannot reach
/// nameservers on the host's loopback, so those are dropped (and Google's put in when none is
/// left), as Docker does.
fn resolv_content(host: &str, network: Network) -> String {
    if network == Network::Host {
        return host.to_string();
    }
    let mut out = String::new();
    let mut nameservers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            nameservers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if nameservers == 0 {
        out.push_str(DEFAULT_NAMESERVERS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_resolvers_are_dropped_outside_the_host_network() {
        let host = "search example.com\nnameserver 127.0.0.53\noptions edns0\n";
        let none = resolv_content(host, Network::None);
        assert!(!none.contains("127.0.0.53"));
        assert!(none.contains("search example.com"));
        assert!(none.contains("nameserver 8.8.8.8"));
        assert_eq!(resolv_content(host, Network::Host), host);
        let real = "nameserver 10.0.0.1\n";
        assert_eq!(resolv_content(real, Network::None), real);
    }

    #[test]
    fn hosts_has_localhost_and_extra_hosts() {
        let mut spec = ContainerSpec::new("c", "/r".into(), "/d".into(), vec!["sh".into()]);
        spec.extra_hosts.push("10.1.2.3\tdb".into());
        let h = hosts_content(&spec);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.1.2.3\tdb\n"));
    }
}
