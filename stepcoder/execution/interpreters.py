"""Which Python runs the programs: discovery of runner interpreters, cheapest coverage first."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys


def _version_of(path: str) -> tuple[int, int] | None:
    """(major, minor) from an interpreter's file name (python3.12), else by asking it."""
    name = os.path.basename(path)
    if name.startswith("python3.") and name[8:].isdigit():
        return 3, int(name[8:])
    try:
        out = subprocess.run([path, "-S", "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def runner_candidates() -> list[str]:
    """Interpreters to try for running programs, cheapest coverage first: Python >= 3.12 has sys.monitoring
    (coverage nearly free), older ones need sys.settrace (several times slower on CPU-heavy programs).
    Order: ours if >= 3.12; python3.12 / python3.13 on PATH, in pyenv, in /usr; then ours; then the system's."""
    ours = os.path.realpath(sys.executable)
    found: list[str] = []
    if sys.version_info >= (3, 12):
        found.append(ours)
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for minor in (12, 13):
        names = [shutil.which(f"python3.{minor}") or "", f"/usr/bin/python3.{minor}",
                 f"/usr/local/bin/python3.{minor}"]
        names += sorted(glob.glob(f"{pyenv}/versions/3.{minor}.*/bin/python3.{minor}"), reverse=True)
        for name in names:
            if name and "/shims/" not in name and os.access(name, os.X_OK):
                found.append(os.path.realpath(name))
    found += [ours, "/usr/bin/python3"]
    unique: list[str] = []
    for path in found:
        if path not in unique and os.path.exists(path):
            unique.append(path)
    return unique
