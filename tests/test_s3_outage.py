"""The object store goes away in the middle of an iteration's writes and comes back: store operations retry with
bounded backoff and the iteration commits once. An outage longer than the budget fails with the endpoint named,
and a re-run then commits exactly once. (A server that is down when a run starts: tests/test_config.py.)"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from s3_server import seaweedfs

from storage import StoreUnavailable, open_store

pytestmark = pytest.mark.slow


def _rows(n: int, tag: str) -> list[dict]:
    return [{"rollout_id": f"{tag}-{i}", "problem_id": f"p{i}", "reward": -0.3} for i in range(n)]


class _Outage:
    """Stops the server (SIGTERM, as a restart would) and starts it again on the same ports, data and keys."""

    def __init__(self, server, workdir):
        self.server, self.workdir, self._ctx = server, workdir, None

    def stop(self) -> None:
        pid = self.current_pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child: reap it (its Popen copes)
                    return
            except ChildProcessError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    @property
    def current_pid(self) -> int:
        return self.restarted.pid if self._ctx is not None else self.server.pid

    def start(self) -> None:
        self._ctx = seaweedfs(self.workdir, same_as=self.server)
        self.restarted = self._ctx.__enter__()

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None


def test_writes_survive_an_outage_and_a_long_outage_names_the_endpoint(tmp_path):
    workdir = tmp_path / "weed"
    with seaweedfs(workdir) as server:
        url, opts = server.url("outage"), server.storage_options
        store = open_store(url, opts, retry_s=60)
        store.stage("r", 1, "rollouts", _rows(3, "a"))
        server_ctl = _Outage(server, workdir)
        server_ctl.stop()
        try:
            # down for ~8 s while the iteration stages and commits: the calls wait and then go through
            threading.Timer(8.0, server_ctl.start).start()
            t0 = time.monotonic()
            store.stage("r", 1, "test_results", [{"rollout_id": "a-0", "test_index": 0, "status": "pass"}])
            store.commit("r", 1)
            assert time.monotonic() - t0 > 5  # it really waited for the server
            assert store.committed_iterations("r") == [1]
            assert store.read("rollouts", run="r").num_rows == 3

            # down for longer than the budget: a clear error naming the endpoint, nothing committed
            short = open_store(url, opts, retry_s=3)
            server_ctl.close()  # stops the restarted server: down again
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable, match=rf"object store at {server.endpoint_url} unreachable "
                                                        r"for 3 s .* during stage"):
                short.stage("r", 2, "rollouts", _rows(2, "b"))
            assert time.monotonic() - t0 < 30
            server_ctl.start()
            # the re-run of iteration 2 commits exactly once
            store.discard_staged("r", 2)
            store.stage("r", 2, "rollouts", _rows(2, "b"))
            store.commit("r", 2)
            assert store.committed_iterations("r") == [1, 2]
            con = store.connect()
            assert con.sql("SELECT iteration, count(*) FROM rollouts GROUP BY ALL ORDER BY 1").fetchall() == \
                [(1, 3), (2, 2)]
        finally:
            server_ctl.close()
