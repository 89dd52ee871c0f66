"""StepCoder: RL for code LLMs from unit-test feedback (CCCS curriculum + FGO masks).

Kept light on purpose: importing ``stepcoder`` pulls in no torch, vLLM, DeepSpeed or Prefect.
"""

__version__ = "0.1.0"
