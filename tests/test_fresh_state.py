"""Every program starts from a clean slate: nothing one program leaves behind in a warm worker (files in /tmp,
/dev/shm, its working directory or $HOME, SysV IPC objects) is visible to the next program in the same worker, on
both backends. One worker per executor, so program B runs in the very worker (container) program A ran in.

The programs check themselves and raise what they found (the error of the result says it); they print "ok"
otherwise. The docker backend needs a Docker engine (``infra/docker/start-dockerd.sh``); its cases skip, loudly,
only when no engine can start.
"""

from __future__ import annotations

import pytest
from test_execution_docker import docker_or_skip

from stepcoder.execution import make_executor
from stepcoder.problems import TestSpec

BACKENDS = ("embedded", "docker")
WIPED = ("/tmp", "/dev/shm")  # every directory a program may write to (isolation.SCRATCH_DIRS)
PRINTS_OK = TestSpec(kind="stdio", inputs=("",), outputs=("ok",))

COMMON = r'''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
KEY, IPC_CREAT = 0x5EED, 0o1000
PLACES = sorted({"/tmp", "/dev/shm", os.getcwd(), os.path.expanduser("~"), os.environ.get("TMPDIR", "/tmp")})
'''

# Program A: leaves state everywhere it can, including what trips a naive wipe.
LEAVE_STATE = COMMON + r'''
wrote = []
for d in PLACES:
    with open(os.path.join(d, "left-by-a" + d.replace("/", "-")), "w") as f:
        f.write("state")
    wrote.append(d)
os.makedirs("/tmp/locked/shut")  # a directory that cannot be listed, inside one that cannot be written
open("/tmp/locked/shut/secret", "w").close()
os.chmod("/tmp/locked/shut", 0)
os.chmod("/tmp/locked", 0o500)
os.symlink("/", "/tmp/to-root")  # the wipe must remove the link, not follow it
os.mkfifo("/tmp/fifo")
with open("/tmp/read-only", "w"):
    os.chmod("/tmp/read-only", 0o400)
here = os.open("/tmp", os.O_RDONLY)
for _ in range(300):  # deeper than the worker's open-file limit: a wipe holding an fd per level stops short
    os.mkdir("d")
    os.chdir("d")
os.fchdir(here)
ipc = [name for name, made in (("shm", libc.shmget(KEY, 4096, IPC_CREAT | 0o600)),
                               ("shm_private", libc.shmget(0, 4096, IPC_CREAT | 0o600)),
                               ("msg", libc.msgget(KEY, IPC_CREAT | 0o600)),
                               ("sem", libc.semget(KEY, 1, IPC_CREAT | 0o600))) if made >= 0]
if ipc != ["shm", "shm_private", "msg", "sem"]:
    raise RuntimeError("could not create SysV IPC objects: %r" % ipc)
print("ok")
'''

# Program B: finds none of it.
FIND_STATE = COMMON + r'''
found = {d: sorted(os.listdir(d)) for d in PLACES if os.listdir(d)}
for name, there in (("shm", libc.shmget(KEY, 0, 0)), ("msg", libc.msgget(KEY, 0)), ("sem", libc.semget(KEY, 0, 0))):
    if there >= 0:
        found[name] = there
for kind in ("shm", "msg", "sem"):
    try:
        with open("/proc/sysvipc/" + kind) as f:
            rows = f.readlines()[1:]
    except OSError:
        continue
    if rows:
        found["/proc/sysvipc/" + kind] = rows
if found:
    raise RuntimeError("left by the previous program: %r" % found)
print("ok")
'''

# Every directory this program can create a file in (not /proc, /sys): all of them must be wiped ones.
WRITABLE = r'''
import os
found = []
def walk(d, depth):
    try:
        entries = list(os.scandir(d))
    except OSError:
        entries = []
    probe = os.path.join(d, ".probe-%d" % os.getpid())
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
        found.append(d)
    except OSError:
        pass
    for e in entries:
        if depth < 8 and e.path not in ("/proc", "/sys") and e.is_dir(follow_symlinks=False):
            walk(e.path, depth + 1)
walk("/", 0)
unwiped = [d for d in found if d not in WIPED]
for name in ("cwd", "home"):
    place = os.path.realpath(os.getcwd() if name == "cwd" else os.path.expanduser("~"))
    if place not in WIPED:
        unwiped.append(name + "=" + place)
if unwiped or "/tmp" not in found:
    raise RuntimeError("writable: %r, not wiped: %r" % (found, unwiped))
print("ok")
'''


@pytest.fixture(scope="module", params=BACKENDS)
def ex(request):
    if request.param == "docker":
        docker_or_skip()
        executor = make_executor("docker", workers=1, cache=False, auto_build=True, timeout_s=5.0, budget_s=10.0)
    else:
        executor = make_executor("embedded", workers=1, cache=False, timeout_s=5.0, budget_s=10.0)
    with executor:
        yield executor


def _containers(ex) -> list:
    if ex.backend != "docker":
        return []
    return sorted(c.id for c in ex._client.containers.list(filters={"label": f"stepcoder.pool={ex._pool_id}"}))


def run1(ex, program: str):
    return ex.run([(program, PRINTS_OK)])[0]


def why(result) -> str:
    return "; ".join([result.error] + [t.detail for t in result.tests])


def test_a_program_finds_nothing_the_previous_one_left(ex):
    containers, restarts = _containers(ex), ex._pool.restarts
    for attempt in range(2):  # the second round: the wipe left the worker as usable as it found it
        left = run1(ex, LEAVE_STATE + f"# round {attempt}\n")
        assert left.outcome == "pass", why(left)  # A really did leave all of it
        found = run1(ex, FIND_STATE + f"# round {attempt}\n")
        assert found.outcome == "pass", why(found)
    assert ex._pool.restarts == restarts and _containers(ex) == containers  # the same warm worker ran them all


def test_programs_can_write_only_where_the_worker_wipes(ex):
    """The wipe covers every writable directory: a new one (a mount, a changed image) fails here first."""
    result = run1(ex, f"WIPED = {WIPED!r}\n" + WRITABLE)
    assert result.outcome == "pass", why(result)


def test_a_full_tmp_is_empty_again(ex):
    """A program that fills /tmp (and /dev/shm) to the brim leaves the next one all of the space."""
    fill = run1(ex, "import os\nfor d in ('/tmp', '/dev/shm'):\n"
                    "    try:\n        with open(os.path.join(d, 'fill'), 'wb') as f:\n"
                    "            while True:\n                f.write(b'x' * (1 << 20))\n"
                    "    except OSError:\n        pass\nprint('ok')\n")
    assert fill.outcome == "pass", why(fill)
    after = run1(ex, "import os\nwith open('/tmp/big', 'wb') as f:\n    f.write(b'x' * (48 << 20))\n"
                     "print('ok' if os.path.getsize('/tmp/big') == 48 << 20 else 'short')\n")
    assert after.outcome == "pass", why(after)
