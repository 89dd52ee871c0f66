"""Per-worker cgroups, v1 and v2 (``stepcoder/execution/cgroups.py``).

The delegation test runs on the real kernel: a fresh v2 cgroup holding a live process, where enabling a controller
for children is refused (the no-internal-process rule), and ``v2_delegate`` must move the process into a leaf and
enable it. It uses whichever controllers the v2 hierarchy offers here (this VM: only hugetlb, because memory and
pids are bound to v1; a current host: memory and pids too). Where memory or pids are delegated, it also checks the
limit holds. The sandbox's end-to-end limits (fork and memory bombs) are in test_security.py, on whatever version
this host gives each controller.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from stepcoder.execution import cgroups
from stepcoder.execution.cgroups import LEAF, WorkerCgroups, own_v2_path, v2_delegate, v2_home, v2_mount_dir

HYBRID_MOUNTINFO = """\
31 24 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PURE_V2_MOUNTINFO = "801 799 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate\n"
HOST_NS_DOCKER_MOUNTINFO = "801 799 0:30 /docker/4f2a /sys/fs/cgroup rw,relatime - cgroup2 cgroup rw\n"


FORKS = """\
import os, sys, time
for procs in sys.argv[1:]:  # join the cgroup(s) first: every fork below is counted there
    open(procs, "w").write(str(os.getpid()))
kids = []
try:
    for _ in range(50):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
except BlockingIOError:
    pass
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(len(kids))
"""


def forks_allowed(*procs_files) -> int:
    """How many children a process in these cgroups could fork before the pids limit refused one."""
    out = subprocess.run([sys.executable, "-c", FORKS, *map(str, procs_files)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


# ---------------------------------------------------------------- reading /proc (pure)


def test_own_v2_path():
    assert own_v2_path("12:pids:/user.slice\n0::/user.slice/session-3.scope\n") == "/user.slice/session-3.scope"
    assert own_v2_path("0::/\n") == "/"
    assert own_v2_path("4:memory:/a\n1:cpu:/\n") is None  # v1 only: no unified line


@pytest.mark.parametrize("mountinfo,path,expected", [
    (HYBRID_MOUNTINFO, "/", "/sys/fs/cgroup/unified"),  # this VM: v2 beside the v1 hierarchies
    (PURE_V2_MOUNTINFO, "/", "/sys/fs/cgroup"),  # a container with a private cgroup namespace
    (PURE_V2_MOUNTINFO, "/system.slice/stepcoder.service", "/sys/fs/cgroup/system.slice/stepcoder.service"),
    (HOST_NS_DOCKER_MOUNTINFO, "/docker/4f2a", "/sys/fs/cgroup"),  # the host's namespace, its own subtree mounted
    (HOST_NS_DOCKER_MOUNTINFO, "/docker/4f2a/stepcoder-pipeline", "/sys/fs/cgroup/stepcoder-pipeline"),
    (HOST_NS_DOCKER_MOUNTINFO, "/docker/other", None),  # not under what the mount shows
    ("39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n", "/", None),  # no cgroup2 mounted
    ("41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n", "/a", "/mnt/my cgroups/a"),
    # the host's cgroup2 bind-mounted into a container with its own cgroup namespace: outside our namespace
    ("801 799 0:30 /../.. /sys/fs/cgroup rw - cgroup2 cgroup rw\n", "/", None),
])
def test_v2_mount_dir(mountinfo, path, expected):
    got = v2_mount_dir(mountinfo, path)
    assert (str(got) if got is not None else None) == expected


# ---------------------------------------------------------------- delegation on the real kernel


def _v2_root() -> Path | None:
    if os.geteuid() != 0:
        return None
    root = v2_mount_dir(Path("/proc/self/mountinfo").read_text(), "/")
    return root if root is not None and (root / "cgroup.controllers").exists() else None


@pytest.fixture
def busy_v2_cgroup():
    """A fresh v2 cgroup under the hierarchy's root holding one live process, with the controllers the root can
    give enabled for it (as an administrator delegating a subtree would). Everything is undone after."""
    root = _v2_root()
    if root is None:
        pytest.skip("needs root and a mounted cgroup2 hierarchy (no cgroup v2 on this host)")
    offered = set((root / "cgroup.controllers").read_text().split()) & {"memory", "pids", "hugetlb"}
    if not offered:
        pytest.skip(f"the cgroup2 hierarchy at {root} offers none of memory, pids, hugetlb")
    before = set((root / "cgroup.subtree_control").read_text().split())
    try:
        (root / "cgroup.subtree_control").write_text(" ".join("+" + c for c in sorted(offered)))
    except OSError as e:  # a namespace's root holding processes (a container): not a root we may delegate from
        pytest.skip(f"cannot enable {sorted(offered)} in {root}: {e}")
    home = root / f"stepcoder-test-{uuid.uuid4().hex[:8]}"
    home.mkdir()
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        (home / "cgroup.procs").write_text(str(sleeper.pid))
        yield home, offered, sleeper
    finally:
        sleeper.kill()
        sleeper.wait()
        for d in sorted(home.rglob("*"), key=lambda p: -len(p.parts)):
            if d.is_dir():
                cgroups.rmdir(d)
        cgroups.rmdir(home)
        for c in offered - before:  # give the root back as it was
            try:
                (root / "cgroup.subtree_control").write_text("-" + c)
            except OSError:
                pass


def test_v2_delegation_moves_the_cgroups_processes_into_a_leaf(busy_v2_cgroup):
    home, offered, sleeper = busy_v2_cgroup
    domain = offered & {"memory", "hugetlb"}  # pids is a threaded controller: the rule does not apply to it
    if domain:
        with pytest.raises(OSError) as refused:  # the rule the delegation has to work around, really enforced
            (home / "cgroup.subtree_control").write_text("+" + min(domain))
        assert refused.value.errno == errno.EBUSY

    group, have = v2_delegate(home, {"memory", "pids", "hugetlb"})
    assert group == home / "stepcoder" and have == offered
    if domain:  # the process had to move out of the way
        assert (home / "cgroup.procs").read_text().split() == []
        assert (home / LEAF / "cgroup.procs").read_text().split() == [str(sleeper.pid)]
    assert offered <= set((home / "cgroup.subtree_control").read_text().split())
    assert offered <= set((group / "cgroup.subtree_control").read_text().split())
    assert v2_home(sleeper.pid) == home  # a process already in the leaf delegates from the same place
    assert v2_delegate(home, {"memory", "pids", "hugetlb"}) == (group, have)  # again: nothing left to do

    worker = group / "w1"  # a worker's cgroup gets the controllers and takes a process
    worker.mkdir()
    assert set((worker / "cgroup.controllers").read_text().split()) == offered  # in the kernel's order
    (worker / "cgroup.procs").write_text(str(sleeper.pid))
    assert (worker / "cgroup.procs").read_text().split() == [str(sleeper.pid)]
    if "pids" in have:  # where pids is delegable here, the limit must hold too
        (worker / "pids.max").write_text("4")
        assert forks_allowed(worker / "cgroup.procs") == 2  # the sleeper, the script and two of its forks


def test_v2_delegation_refused_where_no_controller_is_offered(busy_v2_cgroup):
    home, offered, _ = busy_v2_cgroup
    assert v2_delegate(home, {"no-such-controller"}) == (None, set())
    assert not (home / "stepcoder").exists() and not (home / LEAF).exists()


# ---------------------------------------------------------------- a worker's cgroups on this host


def test_worker_cgroups_hold_the_limits_on_this_host():
    """Whatever version each controller has here, the worker's cgroup carries the limits and an OOM-kill count."""
    if os.geteuid() != 0:
        pytest.skip("cgroups need root; the sandbox reports them missing (test_execution_engine covers the warning)")
    name = f"test-{uuid.uuid4().hex[:8]}"
    memory, pids = 300 << 20, 7
    w = WorkerCgroups(name, memory, pids)
    if set(w.dirs) != {"memory", "pids"}:
        w.remove()
        pytest.skip(f"this host gives the sandbox only {sorted(w.dirs)} (the start-up warning names the rest)")
    try:
        for controller, d in w.dirs.items():
            assert d.name == name and d.is_dir()
            assert w.version[controller] in (1, 2)
        mem_file = "memory.limit_in_bytes" if w.version["memory"] == 1 else "memory.max"
        assert int((w.dirs["memory"] / mem_file).read_text()) == memory
        assert int((w.dirs["pids"] / "pids.max").read_text()) == pids
        oom = Path(w.oom_file()).read_text()
        assert any(line.split()[0] == "oom_kill" for line in oom.splitlines()), oom
        for procs in w.procs().values():  # the file the worker writes itself into
            assert Path(procs).name == "cgroup.procs" and Path(procs).exists()

        # a process in it is bounded: the pids limit counts it and its forks
        assert forks_allowed(*set(w.procs().values())) == pids - 1
    finally:
        w.remove()
    assert not any(d.exists() for d in w.dirs.values())


def test_clean_stale_removes_only_old_empty_worker_cgroups():
    if os.geteuid() != 0:
        pytest.skip("cgroups need root")
    old, young = (WorkerCgroups(f"test-{uuid.uuid4().hex[:8]}", 64 << 20, 4) for _ in range(2))
    if not old.dirs:
        pytest.skip("no cgroup controller for the sandbox on this host")
    try:
        for d in set(old.dirs.values()):
            os.utime(d, (time.time() - 3600, time.time() - 3600))
        cgroups.clean_stale()
        assert old.dirs and not any(d.exists() for d in old.dirs.values())
        assert young.dirs and all(d.exists() for d in young.dirs.values())
    finally:
        old.remove()
        young.remove()
