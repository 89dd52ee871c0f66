"""One rank of a multi-process PPO update: ``python -m torch.distributed.run ... -m tasks.train_rank SPEC.json``.

Started by tasks/train.py's ``launch``. Every rank reads the iteration's staged rollouts from the store and runs
its share of the update; rank 0 writes the checkpoint's files and ``result`` (metrics and checkpoint path). An
exception fails this rank; torchrun then stops the others and reports this rank's traceback (``record``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record


@record
def main(spec_path: str) -> None:
    from stepcoder.config import RunConfig
    from stepcoder.faults import fail_point
    from tasks.train import update

    spec = json.loads(Path(spec_path).read_text())
    cfg = RunConfig.model_validate_json(spec["config"])
    fail_point("train_rank", int(os.environ.get("RANK", "0")))
    metrics, checkpoint, world = update(cfg, spec["iteration"], spec["base_dir"], spec["policy_dir"], spec["resume_dir"],
                                 spec["checkpoint_dir"])
    if int(os.environ.get("RANK", "0")) == 0:
        tmp = Path(spec["result"] + ".tmp")
        tmp.write_text(json.dumps({"metrics": metrics, "checkpoint": checkpoint, "world_size": world}))
        tmp.replace(spec["result"])


if __name__ == "__main__":
    main(sys.argv[1])
