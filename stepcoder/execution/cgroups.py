"""Per-worker cgroups of the embedded sandbox: memory and pids limits on all of one program's processes together.

RLIMIT_AS and RLIMIT_NPROC bind one process (or one uid, host-wide); a cgroup binds everything a program forks.
Each worker of a pool gets its own cgroup, and its zygote moves itself in (``isolation._setup_host``), so every
program it forks inherits it.

Both cgroup versions are used, controller by controller, because hosts mix them: a *hybrid* host has a v1
hierarchy per controller under ``/sys/fs/cgroup/<controller>`` and a v2 hierarchy at ``/sys/fs/cgroup/unified``
(which controllers sit where is the host's choice); a current host (Docker's default, systemd's) has only v2 at
``/sys/fs/cgroup``. A controller's v1 hierarchy is used where it is mounted, else v2 where it can be delegated.

v2 delegation follows the kernel's rules (Documentation/admin-guide/cgroup-v2.rst, "Delegation" and "No Internal
Process Constraint"): controllers reach a child only through its parent's ``cgroup.subtree_control``, and a
non-root cgroup that holds processes cannot enable any there. So in our own cgroup (``/proc/self/cgroup``) we
enable memory and pids; where that is refused because the cgroup holds processes (the pipeline in a container or a
systemd service), those processes first move into a leaf of their own (``stepcoder-pipeline``, as Docker-in-Docker
and systemd-in-a-container do), which changes no limit: the leaf sits inside the same cgroup. The workers' cgroups
then live under ``stepcoder/`` beside it.

Nothing here is required: a controller that cannot be had is left out, and the sandbox reports it missing (the
loud start-up warning, and every result's ``runner["missing"]``).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger("stepcoder.execution")

V1_ROOT = Path("/sys/fs/cgroup")
GROUP = "stepcoder"  # the workers' cgroups live under <parent>/stepcoder/<pool>-<n>
LEAF = "stepcoder-pipeline"  # v2: where our cgroup's own processes go when it must give up holding any
CONTROLLERS = ("memory", "pids")


# ---------------------------------------------------------------- finding the hierarchies


def v1_root(controller: str) -> Path | None:
    """The controller's v1 hierarchy, where it is mounted and we may use it (root)."""
    path = V1_ROOT / controller
    if os.geteuid() != 0 or not (path / "cgroup.procs").exists():
        return None
    return path


def own_v2_path(proc_cgroup: str) -> str | None:
    """This process's v2 cgroup path from the text of ``/proc/self/cgroup`` (the ``0::`` line), or None."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def v2_mount_dir(mountinfo: str, cgroup_path: str) -> Path | None:
    """The directory of ``cgroup_path`` under a mounted cgroup2 file system, from the text of
    ``/proc/self/mountinfo`` (fields: id, parent, dev, root, mount point, options, ..., ``-``, fstype, ...)."""
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if not right.startswith("cgroup2 ") or len(fields) < 5:
            continue
        root, mount_point = fields[3], fields[4].replace("\\040", " ")
        if root.startswith("/..") or "/.." in cgroup_path:
            continue  # the mount shows cgroups outside our cgroup namespace: paths here do not map onto it
        rel = os.path.relpath(cgroup_path, root)
        if rel == ".":
            return Path(mount_point)
        if not rel.startswith(".."):  # our cgroup is under what this mount shows
            return Path(mount_point) / rel
    return None


def v2_home(pid: int | str = "self") -> Path | None:
    """The v2 cgroup to delegate from: the process's own, or its parent if the process is already in the leaf a
    delegation made."""
    if os.geteuid() != 0:
        return None
    try:
        path = own_v2_path(Path(f"/proc/{pid}/cgroup").read_text())
        home = v2_mount_dir(Path("/proc/self/mountinfo").read_text(), path) if path else None
    except OSError:
        return None
    if home is None or not (home / "cgroup.controllers").exists():
        return None
    return home.parent if home.name == LEAF else home


def _read_set(path: Path) -> set[str]:
    return set(path.read_text().split())


def _enable(cgroup: Path, controllers: set[str]) -> None:
    (cgroup / "cgroup.subtree_control").write_text(" ".join("+" + c for c in sorted(controllers)))


def v2_delegate(home: Path, wanted: set[str]) -> tuple[Path | None, set[str]]:
    """Make ``home/stepcoder`` a cgroup whose children get the ``wanted`` controllers ``home`` can give. Returns
    it and the controllers it got (None, empty where none). May move ``home``'s processes into ``home/LEAF``."""
    have = _read_set(home / "cgroup.controllers") & wanted
    if not have:
        return None, set()
    if not have <= _read_set(home / "cgroup.subtree_control"):
        try:
            _enable(home, have)
        except OSError as e:
            if e.errno != errno.EBUSY:  # EBUSY: the no-internal-process rule; anything else is a real refusal
                raise
            moved = _vacate(home)
            logger.info("cgroup v2: moved %d process(es) of %s into %s/ to delegate %s to the sandbox workers",
                        moved, home, LEAF, ", ".join(sorted(have)))
            _enable(home, have)
    group = home / GROUP
    group.mkdir(exist_ok=True)
    if not have <= _read_set(group / "cgroup.subtree_control"):
        _enable(group, have)
    return group, have


def _vacate(home: Path) -> int:
    """Move every process of ``home`` into ``home/LEAF``. Returns how many moved."""
    leaf = home / LEAF
    leaf.mkdir(exist_ok=True)
    moved = 0
    for _ in range(10):  # processes may fork while we move them: repeat until none is left
        pids = (home / "cgroup.procs").read_text().split()
        if not pids:
            return moved
        for pid in pids:
            try:
                (leaf / "cgroup.procs").write_text(pid)
                moved += 1
            except OSError as e:
                if e.errno != errno.ESRCH:  # gone meanwhile
                    raise
    return moved


# ---------------------------------------------------------------- one worker's cgroups


class WorkerCgroups:
    """One worker's memory and pids cgroups, each on v1 or v2, or whatever subset the host allows."""

    def __init__(self, name: str, memory_bytes: int, pids_max: int):
        self.dirs: dict[str, Path] = {}  # controller -> the worker's cgroup directory
        self.version: dict[str, int] = {}
        v1_settings = {"memory": {"memory.limit_in_bytes": memory_bytes, "memory.memsw.limit_in_bytes": memory_bytes,
                                  "memory.swappiness": 0},
                       "pids": {"pids.max": pids_max}}
        v2_settings = {"memory": {"memory.max": memory_bytes, "memory.swap.max": 0}, "pids": {"pids.max": pids_max}}
        on_v2 = set()
        for controller in CONTROLLERS:
            root = v1_root(controller)
            if root is None:
                on_v2.add(controller)
                continue
            d = root / GROUP / name
            try:
                d.mkdir(parents=True, exist_ok=True)
                _write_settings(d, v1_settings[controller], optional=("memory.memsw.limit_in_bytes",
                                                                      "memory.swappiness"))
                self.dirs[controller], self.version[controller] = d, 1
            except OSError as e:
                logger.debug("no v1 %s cgroup: %s", controller, e)
                rmdir(d)
        if on_v2:
            self._join_v2(name, on_v2, v2_settings)

    def _join_v2(self, name: str, wanted: set[str], settings: dict) -> None:
        home = v2_home()
        if home is None:
            return
        d = None
        try:
            group, have = v2_delegate(home, wanted)
            if group is None:
                return
            d = group / name
            d.mkdir(exist_ok=True)
            for controller in sorted(have):
                _write_settings(d, settings[controller], optional=("memory.swap.max",))  # no swap accounting: fine
                self.dirs[controller], self.version[controller] = d, 2
        except OSError as e:
            logger.debug("no v2 cgroup for %s: %s", ", ".join(sorted(wanted)), e)
            for controller in wanted:
                self.dirs.pop(controller, None)
                self.version.pop(controller, None)
            if d is not None:
                rmdir(d)

    def procs(self) -> dict[str, str]:
        """controller -> the ``cgroup.procs`` file the worker writes its pid to (one file for both on v2)."""
        return {c: str(d / "cgroup.procs") for c, d in self.dirs.items()}

    def oom_file(self) -> str | None:
        """The file whose ``oom_kill N`` line counts OOM kills in the worker's memory cgroup."""
        d = self.dirs.get("memory")
        if d is None:
            return None
        return str(d / ("memory.events" if self.version["memory"] == 2 else "memory.oom_control"))

    def remove(self) -> None:
        for d in set(self.dirs.values()):
            rmdir(d)


def _write_settings(d: Path, settings: dict, optional: tuple = ()) -> None:
    for key, value in settings.items():
        try:
            (d / key).write_text(str(value))
        except OSError:
            if key not in optional:
                raise


def rmdir(d: Path) -> None:
    for _ in range(50):  # the worker's processes leave the cgroup asynchronously after dying
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def clean_stale() -> None:
    """Remove empty per-worker cgroups a killed parent left behind (busy ones refuse to go). Not a young one:
    another pool may have made it and be about to start its worker in it."""
    parents = [root / GROUP for root in map(v1_root, CONTROLLERS) if root is not None]
    home = v2_home()
    if home is not None:
        parents.append(home / GROUP)
    for parent in parents:
        for d in glob.glob(str(parent / "*")):
            try:
                if os.path.isdir(d) and os.stat(d).st_mtime < time.time() - 600:
                    os.rmdir(d)
            except OSError:
                pass
