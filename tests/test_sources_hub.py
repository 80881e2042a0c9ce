"""The whole fetch plan against a mocked Hub (``responses``): revision -> config -> index -> ranged headers.

Files are written by the safetensors library itself; LFS files answer ``resolve/`` with a 302 to a CDN
that serves 206 ranges.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import responses
from safetensors.numpy import save as st_save

from hubvram import load_model
from hubvram.errors import HeaderError
from hubvram.hub import HubClient

HUB = "https://hub.example"
CDN = "https://cdn-lfs.example"
SHA = "0123456789abcdef0123456789abcdef01234567"

CFG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16, "intermediate_size": 48,
       "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
       "tie_word_embeddings": False, "torch_dtype": "float16", "max_position_embeddings": 64}


@pytest.fixture(autouse=True)
def _requests_transport(monkeypatch):
    """`responses` mocks requests' HTTPAdapter: ranged reads go through it too (HUBVRAM_HTTP=urllib3)."""
    monkeypatch.setenv("HUBVRAM_HTTP", "urllib3")


def tiny_llama_arrays() -> dict[str, np.ndarray]:
    h, i, kv, v = 16, 48, 8, 100
    out = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for layer in range(2):
        p = f"model.layers.{layer}."
        out |= {p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                p + "mlp.down_proj.weight": (h, i), p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,)}
    return {k: np.zeros(s, np.float16) for k, s in out.items()}


EXPECTED_TOTAL = 100 * 16 * 2 + 16 + 2 * (16 * 16 * 2 + 8 * 16 * 2 + 3 * 16 * 48 + 32)


class MockHub:
    def __init__(self, rsps, repo: str):
        self.rsps, self.repo = rsps, repo

    def repo_files(self, files: dict[str, bytes]):
        self.rsps.add(responses.GET, f"{HUB}/api/models/{self.repo}/revision/main",
                      json={"id": self.repo, "sha": SHA, "siblings": [{"rfilename": f} for f in files]})
        for name, data in files.items():
            if name.endswith(".safetensors"):
                self._lfs(name, data)
            elif name.endswith(".json"):  # a first fetch asks config.json and the index at the branch,
                self.rsps.add(responses.GET, f"{HUB}/{self.repo}/resolve/main/{name}", body=data,  # with the
                              headers={"X-Repo-Commit": SHA})                                     # revision lookup
            else:
                self.rsps.add(responses.GET, f"{HUB}/{self.repo}/resolve/{SHA}/{name}", body=data)
        if "model.safetensors.index.json" not in files:
            self.rsps.add(responses.GET, f"{HUB}/{self.repo}/resolve/main/model.safetensors.index.json", status=404,
                          headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": SHA})

    def _lfs(self, name: str, data: bytes):
        cdn = f"{CDN}/{name}?X-Amz-Signature=s"
        self.rsps.add(responses.GET, f"{HUB}/{self.repo}/resolve/{SHA}/{name}", status=302, headers={"Location": cdn})

        def serve(request):
            a, b = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers["Range"]).groups())
            b = min(b, len(data) - 1)
            return 206, {"Content-Range": f"bytes {a}-{b}/{len(data)}"}, data[a:b + 1]

        self.rsps.add_callback(responses.GET, re.compile(re.escape(f"{CDN}/{name}") + r"\?.*"), callback=serve)


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as r:
        yield r


def _client(tmp_path):
    return HubClient(endpoint=HUB, token=False, cache_dir=tmp_path / "cache", offline=False, retries=0)


def test_single_file_repo(rsps, tmp_path):
    MockHub(rsps, "org/tiny").repo_files({"config.json": json.dumps(CFG).encode(),
                                          "model.safetensors": st_save(tiny_llama_arrays())})
    with _client(tmp_path) as client:
        arch = load_model("org/tiny", client=client)
        assert (client.stats["api"], client.stats["file"], client.stats["header"]) == (1, 2, 1)  # index: 404
    assert arch.metadata.source == "hub" and arch.metadata.revision == SHA
    assert arch.counts.total == EXPECTED_TOTAL
    assert arch.counts.by_dtype == {"F16": EXPECTED_TOTAL}
    assert arch.metadata.provenance.tensors == f"safetensors header of model.safetensors at {SHA[:12]}"


def test_sharded_repo_with_index(rsps, tmp_path):
    arrays = tiny_llama_arrays()
    names = sorted(arrays)
    shard1 = {k: arrays[k] for k in names[: len(names) // 2]}
    shard2 = {k: arrays[k] for k in names[len(names) // 2:]}
    files = {"model-00001-of-00002.safetensors": st_save(shard1), "model-00002-of-00002.safetensors": st_save(shard2)}
    index = {"metadata": {"total_size": EXPECTED_TOTAL * 2},
             "weight_map": {**{k: "model-00001-of-00002.safetensors" for k in shard1},
                            **{k: "model-00002-of-00002.safetensors" for k in shard2}}}
    MockHub(rsps, "org/sharded").repo_files({"config.json": json.dumps(CFG).encode(),
                                             "model.safetensors.index.json": json.dumps(index).encode(), **files})
    with _client(tmp_path) as client:
        arch = load_model("org/sharded", client=client)
        assert (client.stats["api"], client.stats["file"], client.stats["header"]) == (1, 2, 2)
    assert arch.counts.total == EXPECTED_TOTAL
    assert arch.metadata.index_total_size == arch.counts.stored_bytes
    assert arch.warnings == ()


def test_index_claiming_a_tensor_its_shard_lacks(rsps, tmp_path):
    arrays = tiny_llama_arrays()
    index = {"weight_map": {**{k: "model-00001-of-00001.safetensors" for k in arrays},
                            "model.extra.weight": "model-00001-of-00001.safetensors"}}
    MockHub(rsps, "org/liar").repo_files({"config.json": json.dumps(CFG).encode(),
                                          "model.safetensors.index.json": json.dumps(index).encode(),
                                          "model-00001-of-00001.safetensors": st_save(arrays)})
    with _client(tmp_path) as client, pytest.raises(HeaderError) as e:
        load_model("org/liar", client=client)
    assert str(e.value) == ("org/liar: model.safetensors.index.json: index says 'model.extra.weight' is in "
                            "model-00001-of-00001.safetensors, but that shard does not contain it")


def test_bin_only_repo_derives_inventory_from_config(rsps, tmp_path):
    MockHub(rsps, "org/bin").repo_files({"config.json": json.dumps(CFG).encode(), "pytorch_model.bin": b""})
    rsps.remove(responses.GET, f"{HUB}/org/bin/resolve/{SHA}/pytorch_model.bin")  # never fetched
    with _client(tmp_path) as client:
        arch = load_model("org/bin", client=client)
    assert arch.metadata.tensors_from == "config"
    assert arch.counts.total == EXPECTED_TOTAL
