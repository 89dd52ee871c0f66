"""Is the flow run holding a run's store lock finished? (Prefect's view, for ``storage.lock``'s takeover.)

A crashed flow run leaves its lock behind until the lock expires. When the holder was a flow run that the
Prefect server has since marked terminal (Crashed, Failed, Cancelled, Completed), waiting is pointless: the next
run takes the lock over at once. With no server configured, or an unknown run, nothing is presumed.
"""

from __future__ import annotations

import uuid
from typing import Any

OWNER_PREFIX = "flow-run "


def flow_run_finished(holder: dict[str, Any], current_run_id: str | None = None) -> str | None:
    """Why the flow run named in ``holder["owner"]`` cannot hold the lock any more, or None."""
    owner = str(holder.get("owner", ""))
    if not owner.startswith(OWNER_PREFIX):
        return None
    run_id = owner[len(OWNER_PREFIX):].strip()
    if not run_id or run_id == str(current_run_id):  # our own earlier attempt (a retry): the pid check decides
        return None
    try:
        key = uuid.UUID(run_id)
    except ValueError:
        return None
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(key).state
    if state is not None and state.is_final():
        return f"its flow run {run_id} is {state.name}"
    return None
