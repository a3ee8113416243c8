"""Docker's Python SDK (the `docker` package) as a second client of stratad: every endpoint
Strata serves, called the way the SDK calls it, with the results checked. Run by
runtime/tests/python_sdk.rs with DOCKER_HOST pointing at a daemon that has `bb` loaded
(busybox, from the fixtures). Prints one line per check and exits 1 if any failed.

API_VERSION selects the version the client pins ("auto" negotiates)."""

import io
import os
import sys
import tarfile
import time
import traceback

import docker

API_VERSION = os.environ.get("API_VERSION", "auto")
client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], version=API_VERSION, timeout=60)
api = client.api
results = []


def check(fn):
    """Runs one check; a failure is recorded with its traceback, the run goes on."""
    name = fn.__name__
    try:
        fn()
        results.append((name, None))
        print(f"ok   {name}", flush=True)
    except Exception:  # noqa: BLE001 - every failure is reported
        results.append((name, traceback.format_exc()))
        print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
    return fn


def cleanup_container(name):
    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


@check
def system():
    assert client.ping() is True
    v = client.version()
    assert v["ApiVersion"] and v["Os"] == "linux", v
    info = client.info()
    assert info["Driver"], info
    assert "Images" in info and "Containers" in info
    df = client.df()
    assert any(i["RepoTags"] and "bb:latest" in i["RepoTags"] for i in df["Images"]), df["Images"]
    assert isinstance(df["Volumes"], list)


@check
def images():
    bb = client.images.get("bb")
    assert bb.id.startswith("sha256:")
    assert "bb:latest" in bb.tags
    assert bb.attrs["Os"] == "linux"
    bb.tag("sdk-tag", "v1")
    assert "sdk-tag:v1" in client.images.get("bb").tags
    assert any("sdk-tag:v1" in i.tags for i in client.images.list())
    assert client.images.list(name="sdk-tag")
    assert client.images.list(filters={"reference": "sdk-*"})
    hist = bb.history()
    assert hist and "Id" in hist[0] and "CreatedBy" in hist[0]
    data = b"".join(bb.save(named=True))
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert "manifest.json" in names, names
    client.images.remove("sdk-tag:v1")
    assert "sdk-tag:v1" not in client.images.get("bb").tags
    loaded = client.images.load(data)
    assert loaded and loaded[0].id == bb.id
    with_prune = client.images.prune(filters={"dangling": True})
    assert "SpaceReclaimed" in with_prune
    try:
        client.images.get("no-such-image:here")
        raise AssertionError("a missing image was found")
    except docker.errors.ImageNotFound:
        pass


@check
def container_lifecycle():
    cleanup_container("sdk-life")
    c = client.containers.create(
        "bb", ["sh", "-c", "echo out; echo err >&2; sleep 30"], name="sdk-life",
        environment={"A": "1"}, labels={"k": "v"}, working_dir="/tmp",
    )
    assert c.status == "created"
    c.start()
    c.reload()
    assert c.status == "running", c.status
    assert c.attrs["Config"]["Env"][0].startswith("A=1") or "A=1" in c.attrs["Config"]["Env"]
    assert c.labels == {"k": "v"}
    assert any(x.id == c.id for x in client.containers.list())
    assert any(x.id == c.id for x in client.containers.list(filters={"label": "k=v"}))
    top = c.top()
    assert top["Titles"] and top["Processes"], top
    stats = c.stats(stream=False)
    assert "memory_stats" in stats and "cpu_stats" in stats, stats.keys()
    c.pause()
    c.reload()
    assert c.status == "paused", c.status
    c.unpause()
    c.rename("sdk-life2")
    c.reload()
    assert c.name == "sdk-life2"
    c.stop(timeout=1)
    c.reload()
    assert c.status == "exited"
    logs = c.logs(stdout=True, stderr=True)
    assert b"out" in logs and b"err" in logs, logs
    only_out = c.logs(stdout=True, stderr=False)
    assert b"err" not in only_out
    c.restart(timeout=1)
    c.reload()
    assert c.status == "running"
    c.kill()
    res = c.wait(timeout=30)
    assert res["StatusCode"] == 137, res
    c.remove()
    try:
        client.containers.get("sdk-life2")
        raise AssertionError("a removed container was found")
    except docker.errors.NotFound:
        pass


@check
def run_and_exit_codes():
    out = client.containers.run("bb", ["echo", "hello"], remove=True)
    assert out == b"hello\n", out
    try:
        client.containers.run("bb", ["sh", "-c", "exit 3"], remove=True)
        raise AssertionError("a failing command did not raise")
    except docker.errors.ContainerError as e:
        assert e.exit_status == 3
    c = client.containers.run("bb", ["sh", "-c", "exit 5"], detach=True)
    assert c.wait()["StatusCode"] == 5
    c.remove()


@check
def files_and_changes():
    cleanup_container("sdk-files")
    c = client.containers.create("bb", ["sh", "-c", "echo hi > /made; sleep 30"], name="sdk-files")
    c.start()
    for _ in range(50):
        if any(ch["Path"] == "/made" for ch in (c.diff() or [])):
            break
        time.sleep(0.1)
    kinds = {ch["Path"]: ch["Kind"] for ch in c.diff()}
    assert kinds.get("/made") == 1, kinds
    stream, stat = c.get_archive("/made")
    assert stat["name"] == "made" and stat["size"] == 3, stat
    member = tarfile.open(fileobj=io.BytesIO(b"".join(stream))).extractfile("made")
    assert member.read() == b"hi\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("put.txt")
        info.size = 4
        t.addfile(info, io.BytesIO(b"data"))
    assert c.put_archive("/tmp", buf.getvalue())
    stream, _ = c.get_archive("/tmp/put.txt")
    got = tarfile.open(fileobj=io.BytesIO(b"".join(stream))).extractfile("put.txt").read()
    assert got == b"data"
    exported = b"".join(c.export())
    names = tarfile.open(fileobj=io.BytesIO(exported)).getnames()
    assert "made" in names or "./made" in names, names[:10]
    c.remove(force=True)


@check
def volumes():
    v = client.volumes.create("sdk-vol", labels={"a": "b"})
    assert v.name == "sdk-vol" and v.attrs["Labels"] == {"a": "b"}
    assert any(x.name == "sdk-vol" for x in client.volumes.list())
    assert client.volumes.list(filters={"label": "a=b"})
    out = client.containers.run(
        "bb", ["sh", "-c", "echo kept > /v/f && cat /v/f"], volumes={"sdk-vol": {"bind": "/v"}},
        remove=True,
    )
    assert out == b"kept\n"
    out = client.containers.run("bb", ["cat", "/v/f"], volumes=["sdk-vol:/v:ro"], remove=True)
    assert out == b"kept\n"
    client.volumes.get("sdk-vol").remove()
    pruned = client.volumes.prune()
    assert "VolumesDeleted" in pruned


@check
def commit_and_build():
    c = client.containers.run("bb", ["sh", "-c", "echo c > /committed"], detach=True)
    c.wait()
    img = c.commit("sdk-commit", "v1", changes=["ENV X=1"], message="m")
    assert "X=1" in img.attrs["Config"]["Env"]
    c.remove()
    dockerfile = b"FROM bb\nRUN echo built > /built\nLABEL sdk=yes\nCMD [\"cat\", \"/built\"]\n"
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as t:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        t.addfile(info, io.BytesIO(dockerfile))
    ctx.seek(0)
    image, logs = client.images.build(fileobj=ctx, custom_context=True, tag="sdk-built", rm=True)
    assert image.labels.get("sdk") == "yes", image.labels
    assert any("stream" in line for line in logs)
    assert client.containers.run("sdk-built", remove=True) == b"built\n"
    client.images.remove("sdk-built")
    client.images.remove("sdk-commit:v1")


@check
def attach_and_stdin():
    c = client.containers.create("bb", ["cat"], stdin_open=True, name="sdk-attach")
    sock = c.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
    c.start()
    raw = getattr(sock, "_sock", sock)
    raw.sendall(b"through stdin\n")
    time.sleep(0.5)
    raw.shutdown(1)  # close our write side: cat sees EOF
    c.wait(timeout=30)
    assert b"through stdin" in c.logs()
    sock.close()
    c.remove()


@check
def exec_calls():
    c = client.containers.run("bb", ["sleep", "60"], detach=True, name="sdk-exec")
    try:
        code, out = c.exec_run(["sh", "-c", "echo $A in $(pwd) as $(id -u)"],
                               environment={"A": "x"}, workdir="/tmp", user="1000")
        assert code == 0 and out == b"x in /tmp as 1000\n", (code, out)
        code, (out, err) = c.exec_run(["sh", "-c", "echo o; echo e >&2; exit 3"], demux=True)
        assert code == 3 and out == b"o\n" and err == b"e\n", (code, out, err)
        exec_id = api.exec_create(c.id, ["sh", "-c", "sleep 0.3; exit 4"])["Id"]
        api.exec_start(exec_id, detach=True)
        for _ in range(100):
            info = api.exec_inspect(exec_id)
            if not info["Running"]:
                break
            time.sleep(0.1)
        assert info["ExitCode"] == 4 and info["ContainerID"] == c.id, info
        tty_id = api.exec_create(c.id, ["tty"], tty=True)["Id"]
        out = api.exec_start(tty_id, tty=True)
        assert out.startswith(b"/dev/pts/"), out
        streamed = b"".join(api.exec_start(api.exec_create(c.id, ["echo", "s"])["Id"], stream=True))
        assert streamed == b"s\n", streamed
    finally:
        c.remove(force=True)
    stopped = client.containers.create("bb", ["true"])
    try:
        api.exec_create(stopped.id, ["true"])
        raise AssertionError("exec into a stopped container was accepted")
    except docker.errors.APIError as e:
        assert e.status_code == 409, e
    finally:
        stopped.remove()


@check
def events():
    since = int(time.time()) - 1
    c = client.containers.run("bb", ["true"], detach=True, name="sdk-events")
    c.wait()
    c.remove()
    seen = [
        (e["Type"], e["Action"], e["Actor"]["Attributes"].get("name"))
        for e in client.events(since=since, until=int(time.time()) + 1, decode=True,
                               filters={"type": "container"})
    ]
    actions = [a for (_, a, n) in seen if n == "sdk-events"]
    assert actions == ["create", "start", "die", "destroy"], seen


@check
def networks_and_prunes():
    names = sorted(n.name for n in client.networks.list())
    assert "none" in names and "host" in names, names
    assert client.networks.get("none").attrs["Driver"] == "null"
    out = client.containers.run("bb", ["true"], network_mode="none", remove=True)
    assert out == b""
    assert "ContainersDeleted" in client.containers.prune()
    assert "NetworksDeleted" in client.networks.prune()
    assert "CachesDeleted" in api.prune_builds()


@check
def errors_clients_match_on():
    c = client.containers.run("bb", ["sleep", "30"], detach=True)
    try:
        c.remove()
        raise AssertionError("removing a running container succeeded")
    except docker.errors.APIError as e:
        assert e.status_code == 409, e.status_code
        assert "cannot remove a running container" in str(e).lower(), str(e)
    c.remove(force=True)
    try:
        client.containers.create("bb", ["true"], name="sdk-dup")
        client.containers.create("bb", ["true"], name="sdk-dup")
        raise AssertionError("a duplicate name was accepted")
    except docker.errors.APIError as e:
        assert e.status_code == 409
    finally:
        cleanup_container("sdk-dup")


failed = [name for name, tb in results if tb]
print(f"{len(results) - len(failed)} of {len(results)} checks passed (API {API_VERSION})")
if failed:
    print("failed: " + ", ".join(failed))
    sys.exit(1)
