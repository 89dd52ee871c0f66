import pytest

from stepcoder.config import DEFAULT_CONFIG, ConfigError, load_config, parse_overrides


def test_default_config_loads_and_is_frozen():
    cfg = load_config()
    assert cfg.run_name == "default"
    assert cfg.model.path == "smollm2-135m"
    assert cfg.data.dataset == "mbpp" and cfg.data.split == "train"
    with pytest.raises(Exception):
        cfg.ppo.lr = 1.0  # frozen


def test_overrides_are_parsed_as_yaml_scalars():
    tree = parse_overrides(["ppo.lr=1e-5", "fgo.enabled=false", "curriculum.split_nodes=[If, For]"])
    assert tree == {"ppo": {"lr": 1e-5}, "fgo": {"enabled": False}, "curriculum": {"split_nodes": ["If", "For"]}}
    cfg = load_config(DEFAULT_CONFIG, ["ppo.lr=1e-5", "fgo.enabled=false"], run_name="abl")
    assert cfg.ppo.lr == 1e-5 and cfg.fgo.enabled is False and cfg.run_name == "abl"


@pytest.mark.parametrize(
    "override, field",
    [
        ("ppo.clip_coef=-1", "ppo.clip_coef"),
        ("ppo.lernrate=1", "ppo.lernrate"),
        ("generation.n_samples=zero", "generation.n_samples"),
        ("curriculum.advance_threshold=1.5", "curriculum.advance_threshold"),
        ("run_name=bad name!", "run_name"),
        ("data.dataset=imagenet", "data.dataset"),
    ],
)
def test_bad_values_fail_fast_naming_the_field(override, field):
    with pytest.raises(ConfigError) as exc:
        load_config(DEFAULT_CONFIG, [override])
    assert field in str(exc.value)


def test_minibatch_must_be_a_multiple_of_micro_batch():
    with pytest.raises(ConfigError, match="minibatch_size"):
        load_config(DEFAULT_CONFIG, ["ppo.minibatch_size=6", "ppo.micro_batch_size=4"])


def test_override_without_equals_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(DEFAULT_CONFIG, ["ppo.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_relative_store_is_pinned_to_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(DEFAULT_CONFIG, ["store=rel/store"])
    assert cfg.store == str(tmp_path / "rel" / "store")
    assert load_config(DEFAULT_CONFIG, ["store=s3://bucket/prefix"]).store == "s3://bucket/prefix"


def test_config_hash_changes_with_values():
    assert load_config().config_hash() == load_config().config_hash()
    assert load_config().config_hash() != load_config(DEFAULT_CONFIG, ["ppo.lr=1e-5"]).config_hash()


def test_top_p_below_one_is_refused_with_the_reason():
    """vLLM's log-probs under top-p are of the truncated distribution; the trainer scores the full softmax."""
    with pytest.raises(ConfigError, match="generation.*top_p=0.9 is not supported.*full softmax"):
        load_config(None, ["generation.top_p=0.9"])
    assert load_config(None, ["generation.top_p=1.0"]).generation.top_p == 1.0


def test_models_that_transform_their_logits_are_refused():
    """The trainer computes logits from the output projection alone (lm_logits): a soft-capped or scaled
    model would be trained on other log-probs than vLLM samples from."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from stepcoder.training.actor_critic import ActorCritic, check_plain_lm_head

    config = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    check_plain_lm_head(LlamaForCausalLM(config))  # a plain head passes
    for name, value in (("final_logit_softcapping", 30.0), ("logit_scale", 0.0625), ("logits_scaling", 8.0)):
        capped = LlamaConfig(**{**config.to_dict(), name: value})
        with pytest.raises(ValueError, match=f"{name}={value}"):
            ActorCritic(LlamaForCausalLM(capped))


def _stepcoder_run(*sets: str, tmp_path) -> "subprocess.CompletedProcess":
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).parent / "stepcoder"
    args = [str(cli), "run", "--set", f"checkpoint_dir={tmp_path / 'ckpt'}", "--set", f"store={tmp_path / 'store'}"]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.mark.parametrize("override, field", [
    ("model.path=/nonexistent/model", "model.path='/nonexistent/model'"),
    ("store=/proc/stepcoder-store", "store='/proc/stepcoder-store'"),  # not creatable, even by root
    ("checkpoint_dir=/proc/stepcoder-ckpt", "checkpoint_dir='/proc/stepcoder-ckpt'"),
    ("store=s3://stepcoder-nowhere/x", "store='s3://stepcoder-nowhere/x'"),
])
def test_a_wrong_path_or_an_unreachable_store_is_one_line_not_a_traceback(override, field, tmp_path, monkeypatch):
    if override.startswith("store=s3"):  # nothing listens there: the client gives up fast
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    res = _stepcoder_run(override, tmp_path=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout
