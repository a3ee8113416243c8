//! The typed models write the JSON stratad wrote before they existed (with `json!` and the
//! create body kept as given): field names, `null` against absent, defaults.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strata_api_types::container::{
    ContainerSummary, MountPoint, NetworkSettings, StrataContainerSizes, SummaryHostConfig,
    WaitError, WaitResponse,
};
use strata_api_types::ContainerCreateRequest;

/// What the docker CLI 28 sends for `docker run --rm bb echo hi` (captured from the CLI).
const CLI_28_CREATE: &str = r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":true,"AttachStderr":true,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["echo","hi"],"Image":"bb","Volumes":{},"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{},"HostConfig":{"Binds":null,"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":true,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":null,"CapDrop":null,"CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":-1,"OomKillDisable":false,"PidsLimit":0,"Ulimits":[],"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{"default":{"IPAMConfig":null,"Links":null,"Aliases":null,"MacAddress":"","DriverOpts":null,"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}}}"#;

/// Inspect showed the CLI's `Config` and `HostConfig` as sent; typed, they must come back
/// byte for byte the same JSON (as values: key order aside).
#[test]
fn docker_cli_create_body_round_trips() {
    let body: Value = serde_json::from_str(CLI_28_CREATE).unwrap();
    let req: ContainerCreateRequest = serde_json::from_str(CLI_28_CREATE).unwrap();
    let mut config = body.clone();
    let obj = config.as_object_mut().unwrap();
    obj.remove("HostConfig");
    obj.remove("NetworkingConfig");
    assert_eq!(serde_json::to_value(&req.config).unwrap(), config);
    assert_eq!(
        serde_json::to_value(req.host_config.as_ref().unwrap()).unwrap(),
        body["HostConfig"]
    );
}

/// `--mount` entries: Go's `omitempty` everywhere, so only what was set is written.
#[test]
fn mounts_round_trip() {
    let mounts = json!([
        {"Type": "bind", "Source": "/src", "Target": "/dst", "ReadOnly": true,
         "BindOptions": {"Propagation": "rshared", "CreateMountpoint": true}},
        {"Type": "volume", "Target": "/v", "VolumeOptions": {"NoCopy": true,
         "DriverConfig": {"Name": "local", "Options": {"o": "x"}}}},
        {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024, "Mode": 511}}
    ]);
    let typed: Vec<strata_api_types::Mount> = serde_json::from_value(mounts.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), mounts);
}

/// The `ps` entry the old `json!` code built for a running container with one volume, with
/// and without `size=1`.
#[test]
fn container_summary_matches_the_old_json() {
    let mut summary = ContainerSummary {
        id: "abc".into(),
        names: vec!["/web".into()],
        image: "bb".into(),
        image_id: "sha256:aa".into(),
        command: "sh -c 'sleep 1'".into(),
        created: 1_700_000_000,
        ports: Vec::new(),
        labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
        state: "running".into(),
        status: "Up 2 seconds".into(),
        host_config: SummaryHostConfig {
            network_mode: "none".into(),
        },
        network_settings: NetworkSettings::unconfigured("none"),
        mounts: vec![MountPoint {
            kind: "volume".into(),
            name: Some("data".into()),
            source: "/var/lib/strata/volumes/data/_data".into(),
            destination: "/data".into(),
            driver: Some("local".into()),
            mode: "z".into(),
            rw: true,
            propagation: String::new(),
        }],
        ..Default::default()
    };
    let old = json!({
        "Id": "abc",
        "Names": ["/web"],
        "Image": "bb",
        "ImageID": "sha256:aa",
        "Command": "sh -c 'sleep 1'",
        "Created": 1_700_000_000,
        "Ports": [],
        "Labels": {"k": "v"},
        "State": "running",
        "Status": "Up 2 seconds",
        "HostConfig": { "NetworkMode": "none" },
        "NetworkSettings": {
            "Networks": {
                "none": {
                    "IPAMConfig": null, "Links": null, "Aliases": null, "NetworkID": "",
                    "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                    "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                    "MacAddress": "", "DriverOpts": null
                }
            }
        },
        "Mounts": [{
            "Type": "volume", "Name": "data", "Source": "/var/lib/strata/volumes/data/_data",
            "Destination": "/data", "Driver": "local", "Mode": "z", "RW": true,
            "Propagation": ""
        }],
    });
    assert_eq!(serde_json::to_value(&summary).unwrap(), old);
    summary.size_rw = Some(10);
    summary.size_root_fs = Some(20);
    summary.strata = Some(StrataContainerSizes {
        on_disk: 10,
        changed_content_bytes: 3,
    });
    let mut sized = old;
    sized["SizeRw"] = json!(10);
    sized["SizeRootFs"] = json!(20);
    sized["Strata"] = json!({ "OnDisk": 10, "ChangedContentBytes": 3 });
    assert_eq!(serde_json::to_value(&summary).unwrap(), sized);
}

/// A bind mount had `null` for `Name` and `Driver`; wait's `Error` was `null` or a message.
#[test]
fn nulls_stay_null() {
    let bind = MountPoint {
        kind: "bind".into(),
        source: "/h".into(),
        destination: "/c".into(),
        rw: true,
        propagation: "rprivate".into(),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&bind).unwrap(),
        json!({"Type": "bind", "Name": null, "Source": "/h", "Destination": "/c",
               "Driver": null, "Mode": "", "RW": true, "Propagation": "rprivate"})
    );
    let ok = WaitResponse {
        status_code: 0,
        error: None,
    };
    assert_eq!(
        serde_json::to_value(&ok).unwrap(),
        json!({"StatusCode": 0, "Error": null})
    );
    let failed = WaitResponse {
        status_code: 127,
        error: Some(WaitError {
            message: "exec failed".into(),
        }),
    };
    assert_eq!(
        serde_json::to_value(&failed).unwrap(),
        json!({"StatusCode": 127, "Error": {"Message": "exec failed"}})
    );
}

/// A volume as the runtime's own `VolumeView` wrote it (now this type): optional fields
/// absent when unset, a driver's status kept as any JSON.
#[test]
fn volume_round_trips() {
    type Volume = strata_api_types::volume::Volume<Value>;
    let local = json!({"Name": "v", "Driver": "local", "Mountpoint": "/r/volumes/v/_data",
        "CreatedAt": "2026-12-07T20:00:00Z", "Labels": {}, "Scope": "local", "Options": {}});
    let typed: Volume = serde_json::from_value(local.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), local);
    let plugin = json!({"Name": "p", "Driver": "x", "Mountpoint": "/m", "Labels": {"a": "b"},
        "Scope": "global", "Options": {"o": "1"}, "Status": {"n": 1, "s": ["t"]},
        "UsageData": {"Size": -1, "RefCount": 2}});
    let typed: Volume = serde_json::from_value(plugin.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), plugin);
}
