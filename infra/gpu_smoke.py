"""`make gpu-smoke`: one tiny StepCoder iteration on CUDA (vLLM CUDA + DeepSpeed on NCCL), the first check on a
GPU node. Skips with a clear message where there is no CUDA device (this project's CI machines).

It runs `stepcoder run` on the tiny model with the GPU settings a real run uses (bf16, ZeRO-2, CUDA graphs, a
fixed vLLM memory share, sleep mode between generate and train), then checks in SQL that the iteration committed
and that training ran on the GPU.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu-smoke: skipped: no CUDA device on this machine (torch.cuda.is_available() is False)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="stepcoder-gpu-smoke-"))
    sets = [f"store={work / 'store'}", f"checkpoint_dir={work / 'ckpt'}", "data.limit=4", "model.dtype=bfloat16",
            "ppo.deepspeed_config=infra/deepspeed/zero2_bf16.json", "generation.enforce_eager=false",
            "generation.gpu_memory_utilization=0.3", "generation.sleep_mode=true"]
    cmd = [str(Path(sys.executable).parent / "stepcoder"), "run", "-c", "infra/configs/tiny.yaml", "-r", "gpu-smoke"]
    for s in sets:
        cmd += ["--set", s]
    print("gpu-smoke:", " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=REPO).returncode != 0:
        print("gpu-smoke: FAILED: the iteration did not finish")
        return 1
    from storage import open_store

    store = open_store(str(work / "store"))
    committed = store.committed_iterations("gpu-smoke")
    steps = store.connect().sql("SELECT count(*) FROM train_metrics").fetchone()[0]
    ok = committed == [1] and steps > 0
    print(f"gpu-smoke: {'ok' if ok else 'FAILED'}: committed {committed}, {steps} optimizer steps on "
          f"{torch.cuda.get_device_name(0)}; store {work / 'store'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
