"""`popcorn batch` labels results of the offline stand-in as the study does."""

import json

from click.testing import CliRunner

from llmpopcorn.cli import main


def test_batch_listing_and_json_say_no_llm_was_used(tmp_path):
    qfile = tmp_path / "q.txt"
    qfile.write_text("a corgi learns to surf\npasta in three steps\n")
    args = ["batch", str(qfile), "--no-render", "--no-score"]
    listed = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert listed.exit_code == 0, listed.output
    items = [line for line in listed.stdout.splitlines() if "[a corgi" in line or "[pasta" in line]
    assert len(items) == 2 and all(line.endswith("[no LLM]") for line in items)
    assert "NO LLM WAS USED in 2 of 2 finished items" in listed.stdout
    assert "offline (offline-composer-" in listed.stdout
    as_json = CliRunner().invoke(main, [*args, "--json", "--out", str(tmp_path / "b")])
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.stdout.split("\n", 1)[1])  # the batch id comes first
    assert summary["no_llm_items"] == 2 and summary["banner"].startswith("NO LLM WAS USED")
    assert [i["name"] for i in summary["ideators"]] == ["offline"]
    assert summary["ideators"][0]["is_llm"] is False
