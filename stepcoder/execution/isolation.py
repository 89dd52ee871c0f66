"""Confinement for the sandbox worker and for each program's child: namespaces, a minimal read-only filesystem
view, rlimits, a non-root uid, seccomp.

Two levels (see ``worker.py`` for the process layout):

- ``setup_worker`` runs once per worker. In ``host`` mode it enters fresh network, mount, PID, IPC and UTS
  namespaces (as root, or inside a user namespace when not root), joins the worker's cgroups, and forks the
  *zygote*: PID 1 of the new PID namespace, which builds the filesystem view (read-only binds of /usr, /lib* and
  the runner interpreter's prefix; a synthetic /etc; /dev with null/zero/full/random/urandom; a private size-capped
  tmpfs /tmp; /proc of its own PID namespace) and ``pivot_root``s into it. Nothing else of the host is visible:
  not /root, /home, /work, /run (the Docker socket), nor the host's /tmp and its Unix sockets. The zygote then
  forks one child per program. In ``container`` mode the container provides all of that (``docker_sandbox.py``)
  and the worker, already PID 1 of the container, only checks it.
- ``lock_worker`` then applies to the worker itself what every child inherits: the seccomp filter (with
  no-new-privileges), rlimits that do not bind the worker, a minimal environment, cwd /tmp.
- ``confine_child`` runs in each program's child before any program code: own session, fds 0-2 on /dev/null,
  address-space and CPU rlimits, the uid drop. Few syscalls: every Python-level step in a fresh fork costs page
  copies, so whatever can be inherited is set once, in the worker.

Because the zygote is PID 1 of a namespace that holds nothing but the current program, ``kill(-1, SIGKILL)``
after each program reaps everything the program left behind, daemons included. ``reset_writable`` then empties
every place the program could write (``SCRATCH_DIRS``: /tmp and /dev/shm, which are also its cwd and $HOME) and
removes its SysV IPC objects, so the next program in this worker finds nothing of it.

This module runs inside the sandbox worker: it imports only the stdlib and is sent to the worker as source.
"""

import ctypes
import os
import resource
import signal
import struct
import sys

import seccomp

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}
MB = 1 << 20

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
DEVICES = ("null", "zero", "full", "random", "urandom")
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")
# Every directory a program can write to in a private view or a runner container (tests/test_fresh_state.py finds
# no other): emptied after each program. In the host view /dev/shm is a link to /tmp.
SCRATCH_DIRS = ("/tmp", "/dev/shm")
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
IPC_RMID = 0
# (kind, its *_INFO command, which int of the answer counts the objects in use): one syscall each, per program
IPC_INFO = (("shm", 14, 0), ("msg", 12, 0), ("sem", 19, 7))  # shm_info.used_ids, msginfo.msgpool, seminfo.semusz

_libc = ctypes.CDLL(None, use_errno=True)


class IsolationError(OSError):
    pass


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise IsolationError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


class WorkerState:
    """What the worker ended up with. ``pid1``: we are init of a PID namespace holding only our programs, so
    ``kill(-1)`` is safe and complete. ``private_tmp``: /tmp is ours alone; ``scratch``: the directories (/tmp,
    /dev/shm) emptied after each program. ``private_ipc``: the SysV IPC namespace is ours alone, so every object
    in it is a program's, removed after each program."""

    def __init__(self):
        self.applied: list = []
        self.missing: list = []
        self.pid1 = False
        self.private_tmp = False
        self.scratch: list = []
        self.private_ipc = False
        self.root = os.geteuid() == 0
        self.oom_fd = -1  # the OOM kill count of the worker's (or container's) cgroup, read after each program
        self.seccomp = None  # the filter program, built once
        self.devnull = -1
        self.oom_adj_fd = -1  # our /proc/self/oom_score_adj (root zygote): children are forked at 1000
        self.uid_drop = False
        self.uid_processes = 0  # processes the programs' uid had on the host when we started


# ---------------------------------------------------------------- the worker (once)


def setup_worker(cfg: dict) -> WorkerState:
    """Confine this worker as ``cfg`` asks. In host mode this forks: the caller's process stays outside as a
    waiter and exits with the zygote's status; only the zygote returns from here."""
    st = WorkerState()
    os.umask(0o022)
    st.seccomp = seccomp.filter_bytes()
    (st.applied if st.seccomp else st.missing).append("seccomp")
    if cfg["mode"] == "container":
        _setup_container(cfg, st)
    else:
        _setup_host(cfg, st)
    st.devnull = os.open("/dev/null", os.O_RDWR)
    st.applied += ["session", "rlimits"]
    return st


def _setup_container(cfg: dict, st: WorkerState) -> None:
    # The container is the jail (network none, read-only root, tmpfs /tmp, cap-drop ALL, no-new-privileges,
    # memory and pids limits: see docker_sandbox.py). We only need to be its PID 1, the reaper of everything.
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # programs share our uid: keep them out of /proc/1/mem
    st.pid1 = os.getpid() == 1
    st.private_tmp = st.pid1
    if st.pid1:
        st.applied += ["pid_namespace", "private_tmp"]
        st.scratch = _scratch_dirs()
    else:
        st.missing += ["pid_namespace", "private_tmp"]
    st.applied += list(cfg.get("container_protections", ()))
    st.private_ipc = st.pid1 and "ipc_namespace" in st.applied
    (st.missing if os.geteuid() == 0 else st.applied).append("uid")
    # The container's own cgroup (Docker's memory limit), read-only: its OOM kill count tells a program killed
    # for memory from one that crashed. v2 with a private cgroup namespace; v1.
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            st.oom_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            break
        except OSError:
            pass


def _setup_host(cfg: dict, st: WorkerState) -> None:
    for name, procs in sorted((cfg.get("cgroups") or {}).items()):
        try:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))  # the zygote and every program inherit it
            st.applied.append("cgroup_" + name)
        except OSError:
            st.missing.append("cgroup_" + name)
    for name in ("memory", "pids"):
        if "cgroup_" + name not in st.applied and "cgroup_" + name not in st.missing:
            st.missing.append("cgroup_" + name)
    (st.applied if st.root and cfg.get("uid_drop") else st.missing).append("uid")
    oom_file = cfg.get("oom_file")  # v1 memory.oom_control or v2 memory.events: both have an "oom_kill N" line
    if "cgroup_memory" in st.applied and oom_file and os.path.exists(oom_file):
        st.oom_fd = os.open(oom_file, os.O_RDONLY)
    uid, gid = os.geteuid(), os.getegid()
    st.uid_processes = count_processes(cfg["uid"] if st.root and cfg.get("uid") is not None else uid)
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if not st.root:  # a user namespace grants the capabilities the other namespaces need
        flags |= CLONE_NEWUSER
    if _libc.unshare(flags) != 0:
        st.missing += ["network", "pid_namespace", "ipc_namespace", "mount_view", "private_tmp"]
        return
    if not st.root:
        _map_ids(uid, gid)
    st.applied += ["network", "pid_namespace", "ipc_namespace"]
    st.private_ipc = True
    _become_zygote()
    st.pid1 = os.getpid() == 1
    try:
        _build_view(cfg, st)
        st.applied += ["mount_view", "private_tmp"]
        st.private_tmp = True
        st.scratch = _scratch_dirs()
    except OSError as e:
        st.missing += ["mount_view", "private_tmp"]
        sys.stderr.write(f"stepcoder worker: no filesystem view: {e}\n")
    try:
        _libc.sethostname(b"sandbox", 7)
    except OSError:
        pass


def _map_ids(uid: int, gid: int) -> None:
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def _become_zygote() -> None:
    """Fork the first process of the new PID namespace (its PID 1). The original process waits outside."""
    pid = os.fork()
    if pid == 0:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the waiter killed: the namespace goes too
        return
    for fd in range(0, 3):  # the parent sees EOF on our pipes as soon as the zygote is gone
        try:
            os.close(fd)
        except OSError:
            pass
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    os._exit(max(0, os.waitstatus_to_exitcode(status)))


def _bind(src: str, dst: str, writable: bool = False, devices: bool = False) -> None:
    _mount(src, dst, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if writable else MS_RDONLY) | (0 if devices else MS_NODEV)
    _mount(None, dst, None, flags)


def interpreter_dirs() -> list:
    """Directories the running interpreter needs: its prefixes, its binary's directory, and sys.path."""
    dirs = [sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    dirs += [p for p in sys.path if p and os.path.isdir(p)]
    return [os.path.realpath(d) for d in dirs]


def _build_view(cfg: dict, st: WorkerState) -> None:
    root = cfg["view_root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=755")
    bound: list = []

    def covered(path: str) -> bool:
        return any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound)

    for path in SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(path), root + path)
        elif os.path.isdir(path):
            os.makedirs(root + path, exist_ok=True)
            _bind(path, root + path)
            bound.append(path)
    extra = list(cfg.get("extra_ro_dirs", ()))
    for path in sorted(set(interpreter_dirs() + extra), key=len):
        if os.path.isdir(path) and not covered(path):
            os.makedirs(root + path, exist_ok=True)  # parents are 755 in the view, even under /root
            _bind(path, root + path)
            bound.append(path)
    os.makedirs(root + "/etc")
    for path in ETC_FILES:
        if os.path.exists(path):
            open(root + path, "w").close()
            _bind(os.path.realpath(path), root + path)
    uid = cfg.get("uid") or 65534
    _write(root + "/etc/passwd", f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                                 f"sandbox:x:{uid}:{uid}:sandbox:/tmp:/usr/sbin/nologin\n")
    _write(root + "/etc/group", f"root:x:0:\nsandbox:x:{uid}:\n")
    _write(root + "/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n")
    os.makedirs(root + "/dev")
    for name in DEVICES:
        open(root + "/dev/" + name, "w").close()
        _bind("/dev/" + name, root + "/dev/" + name, writable=True, devices=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("shm", "/tmp")):
        os.symlink(target, root + "/dev/" + name)
    os.makedirs(root + "/tmp")
    _mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(cfg['tmp_mb'])}m,mode=1777")
    os.makedirs(root + "/proc")
    if st.pid1:  # a procfs of our own PID namespace: programs see themselves, not the host
        try:
            _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
        except OSError:
            pass
    os.chdir(root)
    machine = os.uname().machine
    _check(_libc.syscall(SYS_PIVOT_ROOT[machine], b".", b"."), "pivot_root")  # old root stacked under new
    _check(_libc.umount2(b".", MNT_DETACH), "detach old root")
    os.chdir("/")
    _mount("tmpfs", "/", "tmpfs", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4m,mode=755")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------- what every child inherits (once per worker)


def lock_worker(cfg: dict, st: WorkerState) -> None:
    """After set-up and preloading: give the worker itself everything its children can inherit, so a child's own
    confinement is a handful of syscalls (every Python-level step in a fresh fork costs page copies).

    - rlimits that bind programs and not the worker (file size, open files, no core, no locked memory, no
      message queues, processes: RLIMIT_NPROC does not bind root);
    - the seccomp filter (with no-new-privileges): the worker needs none of what it denies from here on;
    - the environment and, with a private /tmp, the working directory;
    - without the root uid drop (a user namespace), no capabilities at all.
    """
    limits = (("NPROC", _nproc_limit(cfg, st)), ("FSIZE", cfg["file_mb"] * MB), ("NOFILE", 256), ("CORE", 0),
              ("MEMLOCK", 0), ("MSGQUEUE", 0))
    for name, value in limits:
        try:  # soft == hard: nothing below can raise them back
            resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value))
        except (ValueError, OSError, AttributeError):
            st.missing.append("rlimit_" + name.lower())
    st.uid_drop = st.root and cfg.get("uid") is not None and cfg.get("uid_drop", True)
    if os.geteuid() == 0 and not st.uid_drop:
        _drop_capabilities()
    workdir = "/tmp" if st.private_tmp else "/"
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
                       "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"})
    if st.root and cfg["mode"] != "container":
        try:  # 1000 around each fork (children start as the OOM killer's first victims), else -1000: never us
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.pwrite(fd, b"-1000", 0)  # needs CAP_SYS_RESOURCE; without it, each child raises its own
            st.oom_adj_fd = fd
        except OSError:
            pass
    if st.seccomp:
        err = seccomp.install(st.seccomp)
        if err:
            st.applied.remove("seccomp")
            st.missing.append("seccomp")
            sys.stderr.write(f"stepcoder worker: no seccomp: {err}\n")


def _nproc_limit(cfg: dict, st: WorkerState) -> int:
    """RLIMIT_NPROC counts every process of the uid on the host (other pools, containers, the user's own
    session): where a pids cgroup (or the container's pids limit) bounds the program, it is only a loose
    backstop; without one, it is what the uid runs already plus this pool's allowance."""
    if "cgroup_pids" in st.applied:
        return 4096
    return st.uid_processes + cfg["nproc"]


def count_processes(uid: int) -> int:
    """Processes of ``uid`` on this host (a /proc scan: run before the filesystem view hides it)."""
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            n += int(line.split()[1]) == uid
                            break
            except OSError:
                pass
    return n


# ---------------------------------------------------------------- each program's child (before program code)


def confine_child(cfg: dict, st: WorkerState, result_fd: int, workdir: str) -> list:
    """Confine the calling (freshly forked) process; ``lock_worker`` already gave it the rest. Returns the
    protections that could not be applied. Must not raise: the caller runs program code next."""
    missing = []
    os.setsid()  # own session and process group: killed as a group
    for fd in (0, 1, 2):  # never the worker's pipes: the program could forge frames
        os.dup2(st.devnull, fd)
    keep = 3
    if result_fd != keep:
        os.dup2(result_fd, keep, inheritable=False)  # programs the candidate execs do not get it
    os.closerange(keep + 1, 1 << 16)
    if st.oom_adj_fd < 0:
        try:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.write(fd, b"1000")  # the program, never the worker, is the OOM killer's victim
            os.close(fd)
        except OSError:
            pass
    for limit, value in ((resource.RLIMIT_AS, cfg["memory_mb"] * MB), (resource.RLIMIT_CPU, int(cfg["cpu_s"]))):
        try:  # per process: the worker must not carry these. CPU at the limit: SIGXCPU, then SIGKILL
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            missing.append("rlimits")
    if st.uid_drop:
        uid = cfg["uid"]
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)  # clears every capability; also leaves the process undumpable (its
        except OSError:  # /proc/self entries belong to root, as in the container): no prctl, which costs page copies
            missing.append("uid")
    if not st.pid1:  # no PID namespace to die with: die with the worker
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if workdir != os.environ.get("HOME"):  # no private /tmp: a scratch directory per program
        os.chdir(workdir)
        os.environ.update({"HOME": workdir, "TMPDIR": workdir})
    return missing


# ---------------------------------------------------------------- after each program: a clean slate


def reset_writable(st: WorkerState, workdir: str) -> None:
    """Leave nothing of the program that just ended (its processes are gone) for the next one: empty every
    directory it could write (the scratch directories, or its own ``workdir`` where there is no private /tmp,
    which goes too) and remove every SysV IPC object in our private IPC namespace. A tmpfs empties in
    microseconds when the program left little. Whatever cannot be removed ends this worker, so the pool starts a
    fresh one: the program gets a "worker died" error, and no later program sees its state."""
    left = []
    for path in st.scratch if st.private_tmp else [workdir]:
        left += _empty_dir(path)
    if not st.private_tmp:
        try:
            os.rmdir(workdir)
        except OSError:
            left.append(workdir)
    if st.private_ipc:
        left += _remove_ipc()
    if left:
        sys.stderr.write(f"stepcoder worker: could not remove what a program left, restarting: {left[:5]}\n")
        sys.stderr.flush()
        os._exit(75)


def _scratch_dirs() -> list:
    dirs = []
    for path in SCRATCH_DIRS:
        real = os.path.realpath(path)
        if os.path.isdir(real) and real not in dirs:
            dirs.append(real)
    return dirs


def _empty_dir(path: str) -> list:
    """Remove everything in ``path`` (not ``path`` itself), whatever the program did to it: directories it made
    unreadable or unwritable (we own them, or are root: a chmod opens them), symbolic links (removed, never
    followed), any depth (one directory open at a time, climbing back through ``..``: the open-file limit is
    low and paths can outgrow PATH_MAX). Returns what is left: nothing, unless an entry resists removal."""
    try:
        fd = os.open(path, O_DIR)
    except OSError:
        return [path]
    names: list = []  # the directories we are in, below ``path``
    stuck: set = set()  # (dev, inode) of directories that could not be emptied: not entered again
    left: list = []
    try:
        while True:
            child = None
            for name in os.listdir(fd):
                try:
                    os.unlink(name, dir_fd=fd)
                    continue
                except IsADirectoryError:
                    pass
                except OSError:
                    left.append("/".join([path, *names, name]))
                    continue
                try:
                    os.rmdir(name, dir_fd=fd)
                    continue
                except OSError:
                    pass
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if (info.st_dev, info.st_ino) in stuck:
                        continue
                    os.chmod(name, 0o700, dir_fd=fd)  # a directory (unlink said so), not a link: we may list it
                    child = os.open(name, O_DIR, dir_fd=fd)
                except OSError:
                    left.append("/".join([path, *names, name]))
                    continue
                break
            if child is not None:  # go down, and list it from the start
                os.close(fd)
                fd = child
                names.append(name)
                continue
            if not names:
                return left
            parent = os.open("..", O_DIR, dir_fd=fd)  # back up, remove the directory just emptied
            info = os.fstat(fd)
            os.close(fd)
            fd = parent
            try:
                os.rmdir(names.pop(), dir_fd=fd)
            except OSError:
                stuck.add((info.st_dev, info.st_ino))
    except OSError as e:
        return left + [f"{'/'.join([path, *names])}: {e}"]
    finally:
        os.close(fd)


def _remove_ipc() -> list:
    """Remove every SysV shared memory segment, message queue and semaphore set in this IPC namespace (ours
    alone: everything in it is a program's). Their processes are gone, so segments are freed at once. Most
    programs leave none: three ``*_INFO`` calls say so, and /proc/sysvipc is read only when they count some."""
    info = ctypes.create_string_buffer(256)
    in_use = False
    for kind, cmd, field in IPC_INFO:
        ctl = getattr(_libc, kind + "ctl")
        if (ctl(0, 0, cmd, info) if kind == "sem" else ctl(0, cmd, info)) < 0:
            continue  # no SysV IPC in this kernel
        in_use = in_use or struct.unpack_from("i", info, 4 * field)[0] > 0
    if not in_use:
        return []
    left = []
    for kind, ctl in (("shm", _libc.shmctl), ("msg", _libc.msgctl), ("sem", _libc.semctl)):
        try:
            with open("/proc/sysvipc/" + kind) as f:
                rows = f.read().splitlines()[1:]  # a header, then one object a line: key, id, ...
        except OSError:  # no procfs here, or a kernel without SysV IPC
            continue
        for row in rows:
            ident = int(row.split()[1])
            if (ctl(ident, 0, IPC_RMID, None) if kind == "sem" else ctl(ident, IPC_RMID, None)) != 0:
                left.append(f"{kind} {ident}")
    return left


def _drop_capabilities() -> None:
    machine = os.uname().machine
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break
    if machine in SYS_CAPSET:
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
        data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2: all zero
        _libc.syscall(SYS_CAPSET[machine], header, data)
