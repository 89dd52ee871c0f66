"""Table schemas of the rollout store: one constant per table.

Files live at ``<root>/<table>/run=<run>/iteration=<n>/part-<id>.parquet``. The partition columns ``run``
(string) and ``iteration`` (int32) come from the path only and are not stored in the files. Every file
stores its table's ``schema_version`` so an old partition can be told apart from a new one.

Every data column is nullable: evolving a schema means appending a nullable column to the table and
bumping its number in ``SCHEMA_VERSIONS``; old files then read with NULLs in the new column.
"""

from __future__ import annotations

import pyarrow as pa

# Each table's schema version, stored in every file it writes. Bump a table's number when you add a column.
SCHEMA_VERSIONS: dict[str, int] = {
    # Latest bump of rollouts, test_results, curriculum, train_metrics, iterations: scalar floats are DOUBLE (they
    # were REAL, so a reward of -0.6 read back as -0.6000000238418579); older files' float32 values read as DOUBLE.
    "rollouts": 3,  # 2: r_exec, r_ast, r_dfg
    "test_results": 3,  # 2: isolation
    "curriculum": 2,
    "train_metrics": 4,  # 2: logprob_gap; 3: critic_lr, explained_variance over the batch before the update
    "evals": 1,
    "iterations": 4,  # 2: time_eval_s; 4: train_world_size
}

# Partition columns: encoded in the path, added back by readers.
PARTITION_FIELDS = (pa.field("run", pa.string()), pa.field("iteration", pa.int32()))

# Stored in every file, written by the store itself (not required from callers).
SCHEMA_VERSION_FIELD = pa.field("schema_version", pa.int32(), nullable=False)


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([SCHEMA_VERSION_FIELD] + [pa.field(n, t) for n, t in fields])


# One row per sampled completion. Token-level columns are list<int32> / list<float32> / list<uint8>
# (not bool) so they convert to tensors zero-copy.
ROLLOUTS = _schema(
    ("rollout_id", pa.string()),
    ("problem_id", pa.string()),
    ("sample_index", pa.int32()),
    ("stage", pa.int32()),  # CCCS curriculum stage the prompt was cut at
    ("num_stages", pa.int32()),
    ("split_line", pa.int32()),  # line of the canonical solution where the prompt ends
    ("prompt", pa.string()),
    ("completion", pa.string()),
    ("program", pa.string()),  # prompt + completion as executed
    ("prompt_ids", pa.list_(pa.int32())),
    ("completion_ids", pa.list_(pa.int32())),
    ("old_logprobs", pa.list_(pa.float32())),  # log π_old(a_t|s_t), one per completion token
    ("fgo_mask", pa.list_(pa.uint8())),  # FGO: 1 = token on an executed line, 0 = masked out of the loss
    ("outcome", pa.string()),
    ("reward", pa.float64()),
    ("tests_passed", pa.int32()),
    ("tests_total", pa.int32()),
    ("executed_lines", pa.list_(pa.int32())),
    ("exec_time_ms", pa.float64()),
    ("checkpoint_id", pa.string()),
    ("cache_hit", pa.bool_()),
    ("finish_reason", pa.string()),
    ("r_exec", pa.float64()),  # compiler / unit-test part of the reward
    ("r_ast", pa.float64()),  # PPOCoder: AST (syntax) match with the reference, else NULL
    ("r_dfg", pa.float64()),  # PPOCoder: data-flow-graph match with the reference, else NULL
)

# One row per (rollout, unit test).
TEST_RESULTS = _schema(
    ("rollout_id", pa.string()),
    ("problem_id", pa.string()),
    ("sample_index", pa.int32()),
    ("test_index", pa.int32()),
    ("status", pa.string()),
    ("time_ms", pa.float64()),
    # "split": test code and expected values never in the program's process; "in_process": beside it, guarded
    ("isolation", pa.string()),
)

# One row per problem per iteration: the CCCS stage before and after this iteration's rollouts.
CURRICULUM = _schema(
    ("problem_id", pa.string()),
    ("stage_before", pa.int32()),
    ("stage_after", pa.int32()),
    ("num_stages", pa.int32()),
    ("split_line", pa.int32()),
    ("samples", pa.int32()),
    ("passes", pa.int32()),
    ("pass_rate", pa.float64()),
    ("advanced", pa.bool_()),
    ("full_stage", pa.bool_()),  # sampled at the final stage for practice this iteration (stage unchanged)
)

# One row per optimizer step (minibatch) of PPO.
TRAIN_METRICS = _schema(
    ("step", pa.int32()),
    ("epoch", pa.int32()),
    ("minibatch", pa.int32()),
    ("policy_loss", pa.float64()),
    ("value_loss", pa.float64()),
    ("entropy", pa.float64()),
    ("approx_kl", pa.float64()),
    ("clipfrac", pa.float64()),
    ("kl_ref", pa.float64()),
    ("kl_coef", pa.float64()),
    ("explained_variance", pa.float64()),
    ("grad_norm", pa.float64()),
    ("masked_fraction", pa.float64()),
    ("lr", pa.float64()),  # the actor's
    ("critic_lr", pa.float64()),  # the value head's (and critic trunk's)
    ("logprob_gap", pa.float64()),  # mean |log π_vLLM − log π_trainer| over completion tokens
)

# One row per (eval, dataset, metric) computed on this iteration's checkpoint.
EVALS = _schema(
    ("eval_name", pa.string()),
    ("dataset", pa.string()),
    ("metric", pa.string()),
    ("value", pa.float64()),
    ("checkpoint_uri", pa.string()),
)

# One row per iteration: config, timings and headline numbers.
ITERATIONS = _schema(
    ("config_hash", pa.string()),
    ("config_json", pa.string()),
    ("checkpoint_uri", pa.string()),
    ("started_at", pa.timestamp("us", tz="UTC")),
    ("finished_at", pa.timestamp("us", tz="UTC")),
    ("time_generate_s", pa.float64()),
    ("time_execute_s", pa.float64()),
    ("time_store_s", pa.float64()),
    ("time_train_s", pa.float64()),
    ("time_eval_s", pa.float64()),
    ("num_problems", pa.int32()),
    ("num_rollouts", pa.int32()),
    ("pass_rate", pa.float64()),
    ("reward_mean", pa.float64()),
    ("train_world_size", pa.int32()),  # DeepSpeed ranks of the PPO update (ppo.num_processes)
)

# Key columns stage() insists on (present and non-null); every other column may be missing (-> NULL).
REQUIRED: dict[str, tuple[str, ...]] = {
    "rollouts": ("rollout_id", "problem_id"),
    "test_results": ("rollout_id", "test_index"),
    "curriculum": ("problem_id",),
    "train_metrics": ("step",),
    "evals": ("eval_name", "metric"),
    "iterations": (),
}

TABLES: dict[str, pa.Schema] = {
    "rollouts": ROLLOUTS,
    "test_results": TEST_RESULTS,
    "curriculum": CURRICULUM,
    "train_metrics": TRAIN_METRICS,
    "evals": EVALS,
    "iterations": ITERATIONS,
}
assert set(SCHEMA_VERSIONS) == set(TABLES) == set(REQUIRED), "every table needs a schema version and keys"
