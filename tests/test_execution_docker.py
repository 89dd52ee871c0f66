"""The Docker backend: warm hardened containers running the fork-per-program worker, the offline runner image,
and agreement with the embedded backend. Skips, loudly, only when no Docker engine can start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from stepcoder.execution import make_executor
from stepcoder.problems import TestSpec

REPO = Path(__file__).resolve().parents[1]
MBPP = REPO / "data" / "mbpp" / "mbpp.jsonl"
SIGN = "def sign(x):\n    if x > 0:\n        return 1\n    else:\n        return -1\n"
ASSERT_SIGN = TestSpec(kind="assert", asserts=("assert sign(1) == 1", "assert sign(-2) == -1"))


def docker_or_skip():
    from stepcoder.execution.docker_sandbox import DockerUnavailable, docker_client

    try:
        return docker_client(timeout_s=10)
    except DockerUnavailable as first:
        reason = str(first)
    starter = REPO / "infra" / "docker" / "start-dockerd.sh"
    if os.geteuid() == 0 and shutil.which("dockerd"):  # installed but not running: start it
        subprocess.run([str(starter)], timeout=120, check=False)
        try:
            return docker_client(timeout_s=10)
        except DockerUnavailable as e:
            reason = str(e)
    pytest.skip(f"!!! DOCKER BACKEND NOT TESTED: no Docker engine could start ({reason}). "
                f"Run {starter.relative_to(REPO)} as root first.")


@pytest.fixture(scope="module")
def client():
    c = docker_or_skip()
    yield c
    c.close()


@pytest.fixture(scope="module")
def dex(client):
    with make_executor("docker", timeout_s=1.0, budget_s=4.0, workers=2, auto_build=True) as executor:
        yield executor


def running(pool, future) -> list:
    """The pool's worker slots running ``future``'s job, once it has started (a moment after assignment)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        slots = [s for s in list(pool._slots.values()) if s.task is not None and s.task.future is future]
        if slots:
            time.sleep(0.1)
            return slots
        time.sleep(0.01)
    raise AssertionError("the job never started")


def pool_containers(client, executor):
    return client.containers.list(all=True, filters={"label": f"stepcoder.pool={executor._pool_id}"})


def test_containers_are_hardened(client, dex):
    containers = pool_containers(client, dex)
    assert len(containers) == 2
    for c in containers:
        c.reload()
        hc, cfg = c.attrs["HostConfig"], c.attrs["Config"]
        assert hc["NetworkMode"] == "none" and cfg.get("NetworkDisabled")
        assert hc["ReadonlyRootfs"] is True
        assert hc["CapDrop"] == ["ALL"] and not hc.get("CapAdd")
        assert "no-new-privileges" in hc["SecurityOpt"]
        assert cfg["User"] == "65534:65534"
        assert hc["Memory"] > 0 and hc["MemorySwap"] == hc["Memory"] and hc["PidsLimit"] > 0
        assert "/tmp" in hc["Tmpfs"] and "size=" in hc["Tmpfs"]["/tmp"]
        assert hc["ShmSize"] == 64 << 20 and hc["IpcMode"] == "private" and hc["CgroupnsMode"] == "private"
        assert not hc.get("Binds") and not hc.get("Mounts") and hc["Privileged"] is False
    info = dex.runner_info
    assert info["backend"] == "docker" and info["missing"] == []


def test_warm_pool_no_docker_run_per_program(client, dex):
    before = sorted(c.id for c in pool_containers(client, dex))
    jobs = [(SIGN + f"# {i}\n", ASSERT_SIGN) for i in range(40)]
    t0 = time.perf_counter()
    results = dex.run(jobs)
    seconds = time.perf_counter() - t0
    assert [r.outcome for r in results] == ["pass"] * 40
    assert sorted(c.id for c in pool_containers(client, dex)) == before  # the same two containers ran all 40
    assert seconds < 40 * 0.43 / 2  # faster than a `docker run` (~430 ms here) per program on 2 workers


def test_docker_agrees_with_embedded(dex):
    jobs = []
    for line in MBPP.open():
        d = json.loads(line)
        if 700 <= d["task_id"] < 730:
            jobs.append((d["code"].replace("\r\n", "\n"),
                         TestSpec(kind="assert", asserts=tuple(d["test_list"]), setup=d["test_setup_code"])))
    jobs += [("x = int(input())\nif x:\n    print(x)\nelse:\n    print(0)\n",
              TestSpec(kind="stdio", inputs=("5", "0"), outputs=("5", "1"))),
             ("def f(a):\n    return a[::-1]\n",
              TestSpec(kind="call", fn_name="f", inputs=([[1, 2]],), outputs=([2, 1],))),
             ("def f(:\n", ASSERT_SIGN), ("raise ValueError(3)\n", ASSERT_SIGN)]
    with make_executor("embedded", timeout_s=1.0, budget_s=4.0, workers=2) as emb:
        expected = emb.run(jobs)
    got = dex.run(jobs)
    assert [r.outcome for r in got] == [r.outcome for r in expected]
    assert [[t.status for t in r.tests] for r in got] == [[t.status for t in r.tests] for r in expected]
    assert [r.executed_lines for r in got] == [r.executed_lines for r in expected]


def test_a_program_over_the_container_memory_limit_is_reported_out_of_memory(client):
    """RLIMIT_AS binds each process; the container's cgroup binds them together. The worker reads the cgroup's
    OOM kill count, so a program the kernel killed for memory is reported as such, not as a crash."""
    program = textwrap.dedent("""
        import os, time
        def hog(mb):
            b = bytearray(mb << 20)
            b[::4096] = b"x" * len(b[::4096])  # touch every page
            return b
        for _ in range(3):
            if os.fork() == 0:
                kept = hog(90)
                time.sleep(30)
        time.sleep(1)
        kept = [hog(10) for _ in range(40)]  # each process stays under RLIMIT_AS; together they pass the limit
        print("survived")
        """)
    with make_executor("docker", workers=1, memory_mb=256, timeout_s=10.0, budget_s=20.0, cache=False) as ex:
        result = ex.run([(program, TestSpec(kind="stdio", inputs=("",), outputs=("survived",)))])[0]
        assert result.outcome == "runtime_error" and "out of memory" in result.error, result
        assert [r.outcome for r in ex.run([(SIGN, ASSERT_SIGN)])] == ["pass"]


def test_a_dead_container_is_replaced(client, dex):
    restarts = dex._pool.restarts
    future = dex.submit("import time\ntime.sleep(30)\n", ASSERT_SIGN)
    for slot in running(dex._pool, future):
        client.api.kill(slot.transport.cid)
    result = future.result(timeout=60)
    assert result.outcome == "runtime_error" and "sandbox worker died" in result.error
    deadline = time.monotonic() + 60
    while dex._pool.restarts == restarts and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [r.outcome for r in dex.run([(SIGN + f"# after {i}\n", ASSERT_SIGN) for i in range(4)])] == ["pass"] * 4


def test_containers_are_removed_on_close(client):
    executor = make_executor("docker", workers=1)
    assert len(pool_containers(client, executor)) == 1
    executor.close()
    assert pool_containers(client, executor) == []


def test_runner_rootfs_is_minimal(tmp_path):
    from stepcoder.execution.runner_image import write_rootfs
    from stepcoder.execution.interpreters import runner_candidates

    info = write_rootfs(runner_candidates()[0], tmp_path / "rootfs.tar")
    with tarfile.open(tmp_path / "rootfs.tar") as tar:
        names = set(tar.getnames())
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert info["executable"].lstrip("/") in names and "tmp" in names and "etc/passwd" in names
    assert any(n.endswith("/os.py") for n in names) and any("libc.so" in n for n in names)
    assert not {"bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/bash", "usr/bin/apt"} & names  # no shell, no apt
    assert not [n for n in names if n.split("/")[-1] == "site-packages"]
    assert not any(mode & 0o6000 for mode in modes.values())  # no setuid/setgid files
    assert modes["tmp"] == 0o1777
