"""What a training checkpoint directory holds (plain names; importing this loads no torch).

    policy/                 HF model dir in the serving dtype: vLLM loads it, evaluation reads it
    value_head.safetensors  the critic's head (a separate critic also writes critic/)
    deepspeed/              DeepSpeed's state: fp32 master weights and optimizer moments, only for resuming
    trainer_state.json      global step, KL controller, hyperparameters
"""

POLICY = "policy"
DEEPSPEED = "deepspeed"
STATE_FILE = "trainer_state.json"
# Needed only to resume training, never to generate or evaluate: kept in the newest checkpoint alone.
RESUME_ONLY = (DEEPSPEED,)
