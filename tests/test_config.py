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
