"""A run's checkpoints in a local directory or under any fsspec URL (``s3://bucket/prefix``).

Layout: ``<root>/<run>/iter-000007/`` holds one iteration's checkpoint (what the trainer writes: the HF policy
dir, the value head, the DeepSpeed resume state, trainer_state.json).

- **Atomic publish.** Locally the trainer writes ``iter-N.tmp`` and renames it. On an object store, where there is
  no rename, the files are uploaded first and a ``COMPLETE`` object is written last; a checkpoint without it is a
  torn upload and is never read. The iteration's commit records the checkpoint's URI only after the publish, so
  a reader that follows ``iterations.checkpoint_uri`` always finds a whole checkpoint.
- **Resume elsewhere.** ``local_path(uri)`` gives a local directory for a published URI: itself for a local
  checkpoint, a download into the cache (once, also published atomically) for a remote one. A scheduled run on
  a fresh container continues from the last committed iteration with no volume mounted.
- **Lean history.** ``prune(keep)`` keeps the last ``keep`` checkpoints; only the newest keeps the resume-only
  parts (the DeepSpeed optimizer state, ~3x the fp32 weights): the older ones stay loadable policies for
  evaluation. Resume only ever starts from the newest committed checkpoint.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from storage.objects import filesystem

COMPLETE = "COMPLETE"
_ITER = re.compile(r"^iter-(\d{6})$")


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


class Checkpoints:
    """The checkpoints of ``run`` under ``root`` (a local dir or an fsspec URL), with a local cache for remote ones."""

    def __init__(self, root: str, run: str, storage_options: dict[str, Any] | None = None,
                 cache_dir: str | os.PathLike = ".stepcoder/cache/checkpoints"):
        self.root, self.run = str(root).rstrip("/"), run
        self.remote = is_remote(self.root)
        self.cache = Path(cache_dir).expanduser().resolve() / run
        if self.remote:
            self.fs, base = filesystem(self.root, storage_options)
            self._dir = f"{base}/{run}"
            self._protocol = self.root.split("://", 1)[0]
        else:
            self._dir = str(Path(self.root).expanduser().resolve() / run)

    def __repr__(self) -> str:
        return f"Checkpoints({self.root!r}, run={self.run!r})"

    @staticmethod
    def name(iteration: int) -> str:
        return f"iter-{iteration:06d}"

    def uri(self, iteration: int) -> str:
        if self.remote:
            return f"{self._protocol}://{self._dir}/{self.name(iteration)}"
        return f"{self._dir}/{self.name(iteration)}"

    def staging_dir(self, iteration: int) -> Path:
        """Where the trainer writes iteration ``iteration``'s checkpoint on this machine."""
        return self.cache / self.name(iteration) if self.remote else Path(self._dir) / self.name(iteration)

    # ---- publish -------------------------------------------------------------------------------------
    def publish(self, local: Path, iteration: int) -> str:
        """Make the checkpoint in ``local`` (written by the trainer) the published one; returns its URI."""
        local = Path(local)
        if not self.remote:
            if local.resolve() != Path(self.uri(iteration)).resolve():
                raise ValueError(f"{local} is not this run's checkpoint dir for iteration {iteration}")
            return str(local)
        target = f"{self._dir}/{self.name(iteration)}"
        if self.fs.exists(target):  # a torn upload of an earlier try of this iteration (never committed)
            self.fs.rm(target, recursive=True)
        for path in sorted(p for p in local.rglob("*") if p.is_file() and p.name != COMPLETE):
            self.fs.put_file(str(path), f"{target}/{path.relative_to(local).as_posix()}")
        self.fs.pipe_file(f"{target}/{COMPLETE}", b"")  # last: the checkpoint exists from here on
        (local / COMPLETE).touch()  # the cache copy is whole too: local_path() reuses it
        return self.uri(iteration)

    # ---- resume --------------------------------------------------------------------------------------
    def local_path(self, uri: str) -> Path:
        """A local directory holding the published checkpoint ``uri`` (downloaded into the cache if remote)."""
        if not is_remote(uri):
            return Path(uri.removeprefix("file://"))
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        cached = self.cache / name
        if (cached / COMPLETE).exists():
            return cached
        src = uri.split("://", 1)[1].rstrip("/")
        if not self.fs.exists(f"{src}/{COMPLETE}"):
            raise FileNotFoundError(f"checkpoint {uri} is incomplete or missing (no {COMPLETE} marker)")
        tmp = cached.with_name(name + ".download")
        shutil.rmtree(tmp, ignore_errors=True)
        for path in self.fs.find(src):
            rel = path[len(src) + 1:]
            if rel == COMPLETE:
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(path, str(tmp / rel))
        (tmp / COMPLETE).touch()
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)
        return cached

    # ---- prune ---------------------------------------------------------------------------------------
    def published(self) -> list[int]:
        """Iterations with a whole checkpoint, oldest first."""
        if self.remote:
            entries = self.fs.ls(self._dir, detail=False) if self.fs.exists(self._dir) else []
            names = [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]
            return sorted(int(m.group(1)) for n in names if (m := _ITER.match(n))
                          and self.fs.exists(f"{self._dir}/{n}/{COMPLETE}"))
        root = Path(self._dir)
        return sorted(int(m.group(1)) for p in root.glob("iter-*") if p.is_dir() and (m := _ITER.match(p.name)))

    def prune(self, keep: int, resume_only: tuple[str, ...] = ()) -> None:
        """Keep the last ``keep`` checkpoints; strip ``resume_only`` parts from all but the newest."""
        done = self.published()
        if not done:
            return
        for it in done[:-keep] if keep > 0 else []:
            self._remove(self.name(it))
        for it in done[-keep:-1] if keep > 1 else []:
            for part in resume_only:
                self._remove(f"{self.name(it)}/{part}")
        if self.remote:  # torn uploads of earlier tries, and the cache beyond the newest checkpoint
            for entry in self.fs.ls(self._dir, detail=False) if self.fs.exists(self._dir) else []:
                n = entry.rstrip("/").rsplit("/", 1)[-1]
                if _ITER.match(n) and int(n[5:]) < done[-1] and not self.fs.exists(f"{entry}/{COMPLETE}"):
                    self.fs.rm(entry, recursive=True)
            newest = self.name(done[-1])
            for p in self.cache.glob("iter-*") if self.cache.exists() else []:
                if p.name != newest:
                    shutil.rmtree(p, ignore_errors=True)

    def _remove(self, rel: str) -> None:
        if self.remote:
            path = f"{self._dir}/{rel}"
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        else:
            shutil.rmtree(Path(self._dir) / rel, ignore_errors=True)

    def size(self, uri: str) -> int | None:
        """Bytes under a published checkpoint, None if it is gone."""
        if not is_remote(uri):
            p = Path(uri)
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else None
        path = uri.split("://", 1)[1].rstrip("/")
        return int(self.fs.du(path)) if self.fs.exists(path) else None
