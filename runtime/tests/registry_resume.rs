//! An interrupted pull resumes (issue 20): a proxy between stratad and the test registry cuts
//! the first download of each large blob half way. The pull fails; the next pull asks for
//! the rest with a `Range` request from where the first stopped, and the image is whole
//! (the blob's digest covers the kept bytes and the rest). On a89d5c7 the second pull
//! downloaded the blob again from its first byte.

#[path = "common/stratad.rs"]
mod stratad;
#[path = "common/test_registry.rs"]
mod test_registry;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stratad::Stratad;
use test_registry::{RegistrySetup, TestRegistry};

/// Blobs larger than this are cut on their first download.
const CUT_ABOVE: u64 = 1 << 20;

/// A plain HTTP proxy to the registry that records each request line with its Range header
/// and cuts the first answer for each large blob after half its body.
struct CuttingProxy {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(upstream: u16) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cut_once = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (r, c) = (r.clone(), cut_once.clone());
                        std::thread::spawn(move || serve(conn, upstream, &r, &c));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        CuttingProxy {
            port,
            requests,
            stop,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one HTTP head (request or response); None at end of stream.
fn read_head(r: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            return Some(lines);
        }
        lines.push(line);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Serves one client connection, one upstream connection per request (the registry's
/// answers carry a length, so the client's connection stays usable).
fn serve(
    client: TcpStream,
    upstream: u16,
    requests: &Mutex<Vec<String>>,
    cut_once: &Mutex<BTreeSet<String>>,
) {
    let mut from_client = BufReader::new(client.try_clone().unwrap());
    let mut to_client = client;
    while let Some(head) = read_head(&mut from_client) {
        let request_line = head[0].clone();
        let range = header(&head, "range").unwrap_or("-").to_string();
        requests
            .lock()
            .unwrap()
            .push(format!("{request_line} range={range}"));
        let mut up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
        for line in &head {
            if !line.to_ascii_lowercase().starts_with("connection:") {
                write!(up, "{line}\r\n").unwrap();
            }
        }
        write!(up, "Connection: close\r\n\r\n").unwrap();
        let mut from_up = BufReader::new(up);
        let Some(answer) = read_head(&mut from_up) else {
            return;
        };
        let len: u64 = header(&answer, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let is_get = request_line.starts_with("GET ");
        let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let cut = is_get
            && path.contains("/blobs/")
            && len > CUT_ABOVE
            && cut_once.lock().unwrap().insert(path);
        for line in &answer {
            write!(to_client, "{line}\r\n").unwrap();
        }
        write!(to_client, "\r\n").unwrap();
        let body = if is_get { len } else { 0 };
        let send = if cut { body / 2 } else { body };
        let copied = std::io::copy(&mut (&mut from_up).take(send), &mut to_client).unwrap();
        assert_eq!(copied, send, "the registry's answer ended early");
        to_client.flush().unwrap();
        if cut {
            let _ = to_client.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// A tar of one 4 MiB file of random bytes (it does not compress, so the pushed blob is big).
fn big_layer_tar() -> Vec<u8> {
    let mut data = vec![0u8; 4 << 20];
    let mut rng = fastrand::Rng::with_seed(7);
    rng.fill(&mut data);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("big").unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn an_interrupted_pull_resumes_with_a_range_request() {
    let registry = TestRegistry::start(RegistrySetup::default());
    let d = Stratad::start(Some("overlay2"));
    let pushed = format!("{}/resume/big:1", registry.host());
    d.import(&pushed, &big_layer_tar());
    let id = d.ok(&["image", "inspect", "-f", "{{.Id}}", &pushed]);
    d.ok(&["push", &pushed]);
    d.ok(&["rmi", &pushed]);

    let proxy = CuttingProxy::start(registry.port);
    let via_proxy = format!("127.0.0.1:{}/resume/big:1", proxy.port);
    let first = d.docker(&["pull", &via_proxy]);
    assert!(
        !first.status.success(),
        "the cut download should fail the first pull"
    );
    let partials = d.data_root().join("tmp/blobs");
    let kept: u64 = std::fs::read_dir(&partials)
        .unwrap_or_else(|e| panic!("no partial blobs in {}: {e}", partials.display()))
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(kept > 0, "nothing of the cut download was kept");

    d.ok(&["pull", &via_proxy]);
    assert_eq!(d.ok(&["image", "inspect", "-f", "{{.Id}}", &via_proxy]), id);
    let blob_gets: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .collect();
    let resumed = blob_gets
        .iter()
        .any(|r| r.contains("range=bytes=") && !r.contains("range=bytes=0-"));
    assert!(
        resumed,
        "the second pull did not resume with a Range request: {blob_gets:#?}"
    );
    // Applied: the partial file is gone.
    let left = std::fs::read_dir(&partials).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "a partial blob was left after the pull completed");
}
