import json

from click.testing import CliRunner

from llmpopcorn.cli import main


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_help_for_every_command():
    result = run("--help")
    assert result.exit_code == 0 and "popcorn make" in result.output
    for name, command in main.commands.items():
        sub = run(name, "--help")
        assert sub.exit_code == 0, name
        assert (command.help or "").split("\n")[0][:20] in sub.output


def test_make_json_prints_only_the_record(out_dir):
    result = run("make", "a corgi learns to surf", "--out", str(out_dir), "--json", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "ok" and record["seed"] == 3
    assert record["backends"]["llm"]["is_llm"] is False
    assert "No LLM was used" in result.stderr  # the note goes to stderr, not stdout


def test_make_human_output_points_to_files_and_real_llms(out_dir):
    result = run("make", "a corgi learns to surf", "--out", str(out_dir))
    assert result.exit_code == 0
    assert "Title:" in result.stdout and "Run directory:" in result.stdout
    assert "--llm deepseek" in result.stderr


def test_empty_query_and_unknown_backend_exit_2_with_hint(out_dir):
    result = run("make", "   ", "--out", str(out_dir))
    assert result.exit_code == 2 and "error: the query is empty" in result.stderr
    result = run("make", "q", "--llm", "nope", "--out", str(out_dir))
    assert result.exit_code == 2 and "unknown llm backend 'nope'" in result.stderr
    assert "hint: available llm backends" in result.stderr
    assert result.stdout == ""


def test_env_settings_reach_the_run(out_dir):
    result = run(
        "make", "a corgi", "--json", env={"POPCORN_OUT": str(out_dir), "POPCORN_SEED": "9"}
    )
    assert json.loads(result.stdout)["seed"] == 9


def test_backends_lists_kinds_and_reasons():
    result = run("backends", "--json")
    table = json.loads(result.stdout)
    names = {row["name"]: row for row in table["llm"]}
    assert {"offline", "openai", "deepseek", "ollama", "vllm", "llamacpp", "transformers"} <= set(
        names
    )
    assert names["offline"]["usable"] is True
    assert (
        names["deepseek"]["usable"] is False and "DEEPSEEK_API_KEY" in names["deepseek"]["reason"]
    )
    assert any(r["name"] == "draft" for r in table["image"])
    text = run("backends").stdout
    assert "llm:" in text and "video:" in text


def test_deepseek_becomes_usable_with_a_key():
    table = json.loads(run("backends", "--json", env={"DEEPSEEK_API_KEY": "k"}).stdout)
    assert {r["name"]: r for r in table["llm"]}["deepseek"]["usable"] is True
