import pytest

from llmpopcorn.core.errors import ConfigError
from llmpopcorn.core.settings import Settings


def test_defaults_follow_the_paper():
    s = Settings.resolve(env={})
    assert (s.temperature, s.top_p, s.seed) == (0.7, 0.9, 42)
    assert s.llm == "offline" and s.image == "draft" and s.video == "draft"
    assert (s.num_tags, s.ratio, s.n_refs) == (1, 0.1, 50)


def test_precedence_explicit_cli_env_config_default(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('seed = 1\nllm_model = "from-config"\ntemperature = 0.1\ntop_p = 0.5\n')
    env = {"POPCORN_SEED": "2", "POPCORN_LLM_MODEL": "from-env", "POPCORN_TEMPERATURE": "0.2"}
    s = Settings.resolve({"seed": 3, "llm_model": None}, env=env, config_path=cfg, seed=4)
    assert s.seed == 4  # explicit beats everything
    s = Settings.resolve({"seed": 3}, env=env, config_path=cfg)
    assert s.seed == 3  # cli beats env
    assert s.llm_model == "from-env"  # env beats config (cli value None = not given)
    assert s.temperature == 0.2
    assert s.top_p == 0.5  # config beats default


def test_config_from_env_var_and_popcorn_table(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[popcorn]\nllm = "deepseek"\n')
    s = Settings.resolve(env={"POPCORN_CONFIG": str(cfg)})
    assert s.llm == "deepseek"


def test_default_config_file_in_home(tmp_path, monkeypatch):
    (tmp_path / ".config" / "llmpopcorn").mkdir(parents=True)
    (tmp_path / ".config" / "llmpopcorn" / "config.toml").write_text("n_refs = 10\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings.resolve(env={}).n_refs == 10


def test_data_alias_env():
    s = Settings.resolve(env={"POPCORN_DATA": "/some/where"})
    assert str(s.data_dir) == "/some/where"


def test_missing_explicit_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Settings.resolve(config_path=tmp_path / "nope.toml", env={})


def test_bad_toml_and_unknown_keys(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.resolve(config_path=bad, env={})
    unknown = tmp_path / "u.toml"
    unknown.write_text("sede = 3")
    with pytest.raises(ConfigError, match="unknown setting.*sede"):
        Settings.resolve(config_path=unknown, env={})


def test_invalid_value_names_the_setting():
    with pytest.raises(ConfigError, match="temperature"):
        Settings.resolve(env={"POPCORN_TEMPERATURE": "hot"})


def test_secret_never_in_public_or_errors():
    secret = "sk-test-SECRET-123"
    s = Settings.resolve(env={"POPCORN_LLM_API_KEY": secret})
    assert s.api_key() == secret
    assert secret not in str(s.public())
    assert secret not in repr(s)
    assert "llm_api_key" not in s.public()
    # a broken secret value must not be echoed in the error either
    with pytest.raises(ConfigError) as info:
        Settings.resolve(env={"POPCORN_LLM_API_KEY": secret}, max_attempts=99)
    assert secret not in str(info.value)
