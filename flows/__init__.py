"""Prefect flows: `stepcoder` (deployment `iterate`).

Prefect reads its settings when first imported, so the defaults we rely on are set here, before that.
Users can override each one in their environment.
"""

import os
from pathlib import Path

_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # The ephemeral API server needs 10-30 s to start on a busy 2-core machine; Prefect's default is 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_HOME": str(Path(__file__).resolve().parent.parent / ".stepcoder" / "prefect"),
}
for _key, _value in _DEFAULTS.items():
    os.environ.setdefault(_key, _value)
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
