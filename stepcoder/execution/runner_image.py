"""The Docker runner image, built offline from an interpreter on this machine (no registry is reachable here).

The image holds one Python interpreter and its standard library, the shared libraries they link (found with
``ldd``), a synthetic /etc/passwd and an empty /tmp: no shell, no package manager, no site-packages. The worker
code is not in the image: every container receives it on stdin at start (``pool.BOOTSTRAP``), so the image never
goes stale when the harness changes. Labels record the interpreter's path and version.

    python -m stepcoder.execution.runner_image [--python PATH] [--tag TAG]     # = infra/docker/build-image.sh

Default interpreter: the cheapest for coverage (Python >= 3.12: sys.monitoring), as for the embedded backend.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

logger = logging.getLogger("stepcoder.execution")

DEFAULT_IMAGE = "stepcoder-runner:latest"
SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "dist-packages",
             "lib2to3", "pydoc_data", "config-3.11-x86_64-linux-gnu", "__phello__"}
SKIP_SUFFIXES = (".opt-1.pyc", ".opt-2.pyc", ".a", ".exe")
SKIP_MODULES = ("_tkinter", "_test", "xxlimited", "_xxtestfuzz", "_ctypes_test")

_PROBE = """
import json, os, sys, sysconfig
v = sysconfig.get_config_vars()
lib = os.path.join(v.get("LIBDIR") or "", v.get("INSTSONAME") or v.get("LDLIBRARY") or "")
print(json.dumps({"executable": os.path.realpath(sys.executable), "version": sys.version.split()[0],
                  "stdlib": sysconfig.get_path("stdlib"), "platstdlib": sysconfig.get_path("platstdlib"),
                  "dynload": v.get("DESTSHARED") or "", "libpython": lib if v.get("Py_ENABLE_SHARED") else ""}))
"""


def probe_interpreter(python: str) -> dict:
    out = subprocess.run([python, "-S", "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def _ldd(paths: list[str]) -> set[str]:
    """Shared libraries (and the dynamic loader) the given ELF files need, as absolute paths."""
    found: set[str] = set()
    # Resolve as a plain process would: a caller that imported torch/vLLM may have LD_LIBRARY_PATH/LD_PRELOAD
    # pointing into a virtualenv, which would drag site-packages libraries into the image.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    for path in paths:
        try:
            out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30, env=env).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            m = re.search(r"(/\S+)\s+\(0x", line)
            if m and os.path.exists(m.group(1)):
                found.add(m.group(1))
    return found


def _tree(root: str) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            if name.endswith(SKIP_SUFFIXES) or name.startswith(SKIP_MODULES):
                continue
            files.append(os.path.join(dirpath, name))
    return files


def rootfs_files(info: dict) -> list[str]:
    """Every host path the image needs, for the interpreter described by ``probe_interpreter``."""
    files = {info["executable"]}
    for key in ("stdlib", "platstdlib", "dynload"):
        if info.get(key) and os.path.isdir(info[key]):
            files.update(_tree(info[key]))
    if info.get("libpython") and os.path.exists(info["libpython"]):
        files.add(info["libpython"])
    elves = [f for f in files if f.endswith(".so") or f == info["executable"] or ".so." in f]
    libs = _ldd(elves)
    files |= libs
    return sorted(files)


def _add_dirs(tar: tarfile.TarFile, directory: str, added: set[str]) -> None:
    """Directory entries for ``directory`` and its parents: mode 755, traversable by the runner uid even where
    the host has 700 (a pyenv interpreter under /root)."""
    parts = Path(directory).parts
    for i in range(2, len(parts) + 1):
        d = str(Path(*parts[:i]))
        if d not in added:
            added.add(d)
            info = tarfile.TarInfo(d.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)


def _add_path(tar: tarfile.TarFile, path: str, added: set[str]) -> None:
    """Add ``path`` at its real location; symlinked ancestors (merged /usr: /lib -> usr/lib) and a symlinked
    file go in as symlinks too, so the path the host uses resolves the same way in the image."""
    parts = Path(path).parts
    for i in range(2, len(parts)):
        prefix = str(Path(*parts[:i]))
        if os.path.islink(prefix) and prefix not in added:
            added.add(prefix)
            link = tarfile.TarInfo(prefix.lstrip("/"))
            link.type, link.linkname = tarfile.SYMTYPE, os.readlink(prefix)
            tar.addfile(link)
            _add_dirs(tar, os.path.realpath(prefix), added)
    real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    _add_dirs(tar, os.path.dirname(real), added)
    if real in added:
        return
    added.add(real)
    info = tar.gettarinfo(real, arcname=real.lstrip("/"))
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode &= 0o755  # no setuid bits, nothing writable
    if info.issym():
        tar.addfile(info)
        _add_path(tar, os.path.normpath(os.path.join(os.path.dirname(real), os.readlink(real))), added)
    elif info.isfile():
        with open(real, "rb") as f:
            tar.addfile(info, f)


def _add_text(tar: tarfile.TarFile, name: str, text: str, mode: int = 0o644) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def write_rootfs(python: str, out: str | os.PathLike) -> dict:
    """Write the runner rootfs for ``python`` as a tar file at ``out``. Returns the interpreter's probe."""
    info = probe_interpreter(python)
    added: set[str] = set()
    with tarfile.open(out, "w") as tar:
        for name in ("tmp", "etc", "usr", "usr/bin", "dev", "proc"):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(ti)
            added.add("/" + name)
        _add_text(tar, "etc/passwd", "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                                     "nobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin\n")
        _add_text(tar, "etc/group", "root:x:0:\nnogroup:x:65534:\n")
        for path in rootfs_files(info):
            _add_path(tar, path, added)
        if "/usr/bin/python3" not in added:
            link = tarfile.TarInfo("usr/bin/python3")
            link.type, link.linkname = tarfile.SYMTYPE, info["executable"]
            tar.addfile(link)
    return info


def build_image(python: str | None = None, tag: str = DEFAULT_IMAGE, client=None) -> str:
    """Build (or rebuild) the runner image from ``python`` and tag it ``tag``. Returns the image id."""
    import docker

    if python is None:
        from stepcoder.execution.interpreters import runner_candidates

        python = runner_candidates()[0]
    client = client or docker.from_env()
    repository, _, version = tag.partition(":")
    with tempfile.TemporaryDirectory(prefix="stepcoder-rootfs-") as tmp:
        tarball = os.path.join(tmp, "rootfs.tar")
        info = write_rootfs(python, tarball)
        logger.info("importing %s (%.0f MB) as %s", tarball, os.path.getsize(tarball) / 1e6, tag)
        changes = ["USER 65534:65534", "WORKDIR /tmp", f"LABEL stepcoder.python={info['executable']}",
                   f"LABEL stepcoder.python_version={info['version']}", "ENV LC_ALL=C.UTF-8 PYTHONHASHSEED=0",
                   f'CMD ["{info["executable"]}"]']
        out = client.api.import_image(src=tarball, repository=repository, tag=version or "latest",
                                      changes=changes)
    image = client.images.get(tag)
    logger.info("runner image %s: Python %s at %s (%s)", tag, info["version"], info["executable"], out)
    return image.id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", help="interpreter to put in the image (default: the cheapest for coverage)")
    parser.add_argument("--tag", default=DEFAULT_IMAGE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    image_id = build_image(args.python, args.tag)
    print(f"{args.tag} {image_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
