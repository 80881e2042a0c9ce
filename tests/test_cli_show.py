"""`hubvram MODEL`: the model picture in every format, and one-line errors with documented exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hubvram.cli import main


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBVRAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def _run(*args):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)
    return _run


def test_json_keys_other_tools_parse(run):
    r = run("meta-llama/Meta-Llama-3-8B", "--format", "json", "--offline")
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)["models"][0]
    assert m["id"] == "meta-llama/Meta-Llama-3-8B"
    assert m["source"] == "snapshot"
    assert m["revision"] is None  # the seed entry was not recorded at a commit
    assert m["parameters"]["total"] == 8_030_261_248
    assert m["parameters"]["by_dtype"] == {"BF16": 8_030_261_248}
    assert m["parameters"]["by_group"]["mlp"] == 5_637_144_576
    a = m["architecture"]
    assert (a["num_layers"], a["hidden_size"], a["num_kv_heads"], a["vocab_size"], a["tied_embeddings"]) == \
        (32, 4096, 8, 128256, False)
    assert a["moe"] is None and a["mla"] is None


def test_table_output_names_counts_and_source(run):
    r = run("meta-llama/Llama-2-7b-hf", "--offline")
    assert r.exit_code == 0
    assert "Parameters: 6,738,415,616 (6.74B)" in r.output
    assert "bundled snapshot, recorded" in r.output


def test_hub_total_difference_is_explained(run):
    r = run("tiiuae/falcon-7b", "--offline")
    assert "Parameters: 6,921,720,704 (6.92B)   [Hub total 7,217,189,760]" in r.output
    assert "295,469,056 elements of a stored copy of the tied lm_head" in r.output


def test_markdown_and_csv(run):
    md = run("Qwen/Qwen2.5-0.5B", "--offline", "--format", "markdown").output
    assert md.startswith("## Qwen/Qwen2.5-0.5B") and "| embedding |" in md
    csv_out = run("Qwen/Qwen2.5-0.5B", "--offline", "--format", "csv").output.splitlines()
    assert csv_out[0].startswith("id,revision,source,parameters,hub_total,params_embedding")
    assert csv_out[1].startswith("Qwen/Qwen2.5-0.5B,,snapshot,494032768,494032768,")


@pytest.mark.parametrize("arg,code,message", [
    ("not a model", 2, "hubvram: error: not a model: not a Hub model id (expected org/name or org/name@revision) "
                       "and not an existing folder"),
    ("./no/such/folder", 2, "hubvram: error: ./no/such/folder: no such folder"),
])
def test_bad_references_are_one_line_errors(run, arg, code, message):
    r = CliRunner().invoke(main, [arg])
    assert r.exit_code == code
    assert r.stdout == "" and r.stderr.strip() == message


def test_local_folder_config_only(run, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 896,
                                                      "intermediate_size": 4864, "num_hidden_layers": 24,
                                                      "num_attention_heads": 14, "num_key_value_heads": 2,
                                                      "vocab_size": 151936, "tie_word_embeddings": True,
                                                      "torch_dtype": "bfloat16"}))
    r = run(str(tmp_path), "--format", "json")
    m = json.loads(r.output)["models"][0]
    assert m["source"] == "local" and m["parameters"]["total"] == 494_032_768


def test_absurd_config_is_rejected(run, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4096,
                                                      "num_hidden_layers": 10**12, "num_attention_heads": 32,
                                                      "vocab_size": 32000, "intermediate_size": 11008}))
    r = CliRunner().invoke(main, [str(tmp_path)])
    assert r.exit_code == 2
    assert r.stderr == (f"hubvram: error: {tmp_path}: config.json: num_hidden_layers=1000000000000 is beyond any "
                        "real model (limit 4096)\n")
