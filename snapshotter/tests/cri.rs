//! The Kubernetes node path (issue 21): containerd's CRI plugin with a Strata driver as its
//! snapshotter, driven over the CRI gRPC API as a kubelet drives it: RunPodSandbox (host
//! network), CreateContainer, StartContainer, ContainerStatus, ExecSync, StopPodSandbox and
//! RemovePodSandbox. The pause image is made from the busybox fixture (its command changed to
//! a long sleep) and imported into the `k8s.io` namespace, as is busybox itself; nothing is
//! pulled. docs/kubernetes.md shows the same containerd configuration.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::{read, tail, Containerd, SnapshotterProcess};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use sha2::{Digest as _, Sha256};

const SNAPSHOTTER: &str = "strata-overlay2";
const PAUSE: &str = "strata.test/pause:1";
const WORKLOAD: &str = "docker.io/library/bb:latest";
/// CRI's own containerd namespace.
const K8S_NAMESPACE: &str = "k8s.io";

fn fixtures() -> PathBuf {
    std::env::var_os("STRATA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

/// containerd's config with the CRI plugin on and Strata's driver as its snapshotter: the
/// sandbox image is ours, the stream server on loopback, CNI pointed at empty directories
/// (host-network pods need no CNI).
fn cri_config(dir: &Path, socket: &Path, snapshotter: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[proxy_plugins]
  [proxy_plugins.{SNAPSHOTTER}]
    type = "snapshot"
    address = "{snap}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # A kubelet's pause container asks for oom_score_adj -998; without CAP_SYS_RESOURCE (this
  # machine's root lacks it) it may not go below containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{SNAPSHOTTER}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}/bin"
    conf_dir = "{cni}/conf"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = socket.display(),
        snap = snapshotter.display(),
        cni = dir.join("cni").display(),
    )
}

/// The busybox fixture (a `docker save` archive) with its config's command changed to a long
/// sleep and tagged as the pause image: a sandbox container that stays up.
fn pause_archive(out: &Path) {
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(fixtures().join("bb.tar")).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let layers: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let mut config: serde_json::Value =
        serde_json::from_slice(&files[manifest[0]["Config"].as_str().unwrap()]).unwrap();
    config["config"]["Cmd"] = serde_json::json!(["/bin/sleep", "2147483"]);
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
    let new_manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": [PAUSE], "Layers": layers,
    }]);
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    for l in &layers {
        add(l, &files[l]);
    }
    add(&config_name, &config);
    add("manifest.json", &serde_json::to_vec(&new_manifest).unwrap());
    b.finish().unwrap();
}

async fn runtime_client(socket: PathBuf) -> RuntimeServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            tokio::net::UnixStream::connect(socket.clone())
        }))
        .await
        .expect("connect to containerd's CRI");
    RuntimeServiceClient::new(channel)
}

fn pod_config(dir: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "strata-pod".into(),
            uid: "strata-pod-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        // As a kubelet does for a host-network pod: no hostname (the host's UTS is shared).
        log_directory: dir.join("pod-logs").display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_on_a_strata_snapshotter_through_cri() {
    let env = common::scratch("overlay2");
    let dir = env.path().to_path_buf();
    let snap_socket = dir.join("snapshotter.sock");
    let _snap = SnapshotterProcess::start(
        "overlay2",
        &dir.join("snap-root"),
        &snap_socket,
        &dir.join("snapshotter.log"),
    );
    for d in ["cni/bin", "cni/conf", "pod-logs"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let socket = dir.join("containerd.sock");
    let c = Containerd::start_with_config(
        &dir,
        &cri_config(&dir, &socket, &snap_socket),
        K8S_NAMESPACE,
    );
    let pause = dir.join("pause.tar");
    pause_archive(&pause);
    for archive in [pause.clone(), fixtures().join("bb.tar")] {
        c.ctr(&[
            "images",
            "import",
            "--snapshotter",
            SNAPSHOTTER,
            archive.to_str().unwrap(),
        ]);
    }
    let images = c.ctr(&["images", "ls", "-q"]);
    assert!(
        images.contains(PAUSE) && images.contains(WORKLOAD),
        "{images}"
    );

    let mut rt = runtime_client(socket.clone()).await;
    let version = rt
        .version(cri::VersionRequest::default())
        .await
        .unwrap_or_else(|e| panic!("CRI version: {e}\n{}", tail(&c.log)))
        .into_inner();
    assert_eq!(version.runtime_name, "containerd");

    let pod_config = pod_config(&dir);
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", tail(&c.log)))
        .into_inner()
        .pod_sandbox_id;
    let container = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "work".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: WORKLOAD.into(),
                    ..Default::default()
                }),
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo up > /state; sleep 300".into(),
                ],
                log_path: "work.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(pod_config),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", tail(&c.log)))
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", tail(&c.log)));
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: container.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .expect("a status");
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);

    // The container's root is a snapshot of ours: written through it, read back by exec.
    let mut out = cri::ExecSyncResponse::default();
    for _ in 0..50 {
        out = rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: container.clone(),
                cmd: vec!["cat".into(), "/state".into()],
                timeout: 10,
            })
            .await
            .unwrap_or_else(|e| panic!("ExecSync: {e}\n{}", tail(&c.log)))
            .into_inner();
        if out.exit_code == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"up\n");
    let ours = c.ctr(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"]);
    assert!(
        ours.contains(&container),
        "the container's snapshot is not on {SNAPSHOTTER}: {ours}"
    );

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", tail(&c.log)));
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", tail(&c.log)));
    let left = c.ctr(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"]);
    assert!(
        !left.contains(&container),
        "the container's snapshot outlived its pod: {left}\n{}",
        read(&dir.join("snapshotter.log"))
    );
}
