"""`hubvram MODEL`: the model picture in every format, and one-line errors with documented exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hubvram.cli import main




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


def test_show_prints_breakdown_per_method_then_fit_matrix(run):
    out = run("meta-llama/Meta-Llama-3-8B", "--offline").output
    assert out.index("Parameters:") < out.index("Training memory on one GPU") < out.index("GPU fit")
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines()}
    assert rows["weights (frozen or trained)"][-3:] == ["14.96", "14.96", "7.27"]
    assert rows["gradients"][-3:] == ["14.96", "—", "—"]
    assert rows["peak allocated (max_memory_allocated)"][-3:] == ["59.88", "18.96", "12.78"]
    assert rows["trainable parameters"][-3:] == ["8,030,261,248", "41,943,040", "41,943,040"]
    assert "qlora: batch 1 × seq 2048, amp-bf16, AdamW (fused), grad checkpointing, QLoRA nf4 double-quant" in out
    assert "warning:" not in out


def test_show_json_estimates(run):
    m = json.loads(run("meta-llama/Meta-Llama-3-8B", "--offline", "--format", "json", "--method", "lora",
                       "--lora-rank", "8", "--lora-targets", "q_proj,v_proj", "--seq-len", "4096").output)["models"][0]
    (e,) = m["estimates"]
    assert e["method"] == "lora" and e["trainable_params"] == 32 * 8 * ((4096 + 4096) + (4096 + 1024))
    assert e["setup"]["lora_targets"] == ["q_proj", "v_proj"] and e["setup"]["seq_len"] == 4096
    assert {"peak_phase", "peak_allocated_bytes", "reserved_bytes", "device_bytes", "components", "fit"} <= set(e)
    assert e["peak_allocated_bytes"] < e["reserved_bytes"] < e["device_bytes"]
    assert sum(e["components_at_peak"].values()) == e["peak_allocated_bytes"]
    assert e["fit"][0]["gpu"] == "t4" and {"fits_on_one", "min_gpus", "strategy", "per_gpu_bytes"} <= set(e["fit"][0])


def test_show_explain_names_formulas_and_sources(run):
    out = run("meta-llama/Meta-Llama-3-8B", "--offline", "--method", "full", "--explain").output
    assert "* weights: 14.958 GiB" in out
    assert "      = 8,030,261,248 params × 2 B (bf16) = 16,060,522,496 B" in out
    assert out.count("source:") >= 10


def test_breakdown_rows_cover_every_component_name():
    import itertools

    import hubvram
    from hubvram.render import BREAKDOWN_ROWS, _row_of, estimate_breakdown

    arch = hubvram.load_model("mistralai/Mixtral-8x7B-v0.1", offline=True)
    other = BREAKDOWN_ROWS[-1][0]
    for method, opt, prec in itertools.product(("full", "lora", "qlora"), ("adamw-foreach", "paged-adamw-8bit"),
                                               ("bf16", "amp-bf16")):
        e = hubvram.estimate(arch, method=method, optimizer=opt, precision=prec, grad_checkpointing=False)
        assert sum(estimate_breakdown(e).values()) == e.peak_allocated_bytes
        for c in e.components:
            row = _row_of(c.name)
            assert row != other or c.name.startswith(("inputs", "positions", "kernel_scratch", "embedding_backward")), c.name


@pytest.mark.parametrize("model,total,hub_total,index_file", [
    ("meta-llama/Llama-2-7b-hf", 6_738_415_616, 6_738_417_664, "model.safetensors.index.json"),
    ("tiiuae/falcon-7b", 6_921_720_704, 7_217_189_760, "pytorch_model.bin.index.json"),
    ("mistralai/Mixtral-8x7B-v0.1", 46_702_792_704, 46_702_792_704, "model.safetensors.index.json"),
])
def test_snapshot_entries_with_an_index_match_the_published_totals(model, total, hub_total, index_file):
    import hubvram

    arch = hubvram.load_model(model, offline=True)
    assert (arch.counts.total, arch.counts.stored_elements) == (total, hub_total)
    assert arch.counts.stored_bytes == arch.metadata.index_total_size and arch.warnings == ()
    assert arch.metadata.provenance.tensors.endswith(f"names and total_size checked against {index_file}")
