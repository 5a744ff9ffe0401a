"""The generator's text-feature files, checked with the libraries that read the real ones.

`radio-sidecar make-checkpoint --preset tiny-text --siglip DIR` writes, beside config.json/model.safetensors,
the torch.hub checkpoint c-radio_v4-h_half.pth.tar (a torch.save zip written by the sidecar's own pickle
and zip writers) and a tiny google/siglip2-giant-opt-patch16-384 folder. Here torch.load (weights_only
too) must read the .pth into the structure the shared upstream fixture has, the backbone must agree with
model.safetensors, and transformers (when installed) must load the SigLIP folder and its tokenizer.
"""
from __future__ import annotations

import argparse
import json
import pickletools
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from sidecar_cli import REPO, sidecar

FIXTURE = REPO.parent / "shared" / "fixtures" / "upstream-adaptor-golden"
PTH = "c-radio_v4-h_half.pth.tar"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gen")
    sidecar("make-checkpoint", "--preset", "tiny-text", "--siglip", str(root / "siglip"), "--out", str(root / "tiny-text"))
    sidecar("make-checkpoint", "--preset", "tiny", "--out", str(root / "tiny"))
    sidecar("make-checkpoint", "--preset", "tiny-so400m-text", "--out", str(root / "so400m-text"))
    return {"text": root / "tiny-text", "tiny": root / "tiny", "so400m": root / "so400m-text", "siglip": root / "siglip"}


def load_pth(path: Path, weights_only: bool) -> dict:
    if weights_only:
        torch.serialization.add_safe_globals([argparse.Namespace])
    return torch.load(path, weights_only=weights_only, map_location="cpu")


# ---------------------------------------------------------------------------------------------------
# the .pth


def test_pth_zip_layout_is_torch_save(generated):
    path = generated["text"] / PTH
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        root = "c-radio_v4-h_half.pth"
        assert names[0] == f"{root}/data.pkl"
        assert {f"{root}/version", f"{root}/byteorder", f"{root}/.format_version", f"{root}/.storage_alignment"} <= set(names)
        assert z.read(f"{root}/byteorder") == b"little"
        assert z.testzip() is None  # every CRC right
        infos = z.infolist()
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        raw = path.read_bytes()
        for info in infos:
            if "/data/" in info.filename:  # storages start 64-byte aligned, as torch writes them
                n, e = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
                assert (info.header_offset + 30 + n + e) % 64 == 0, info.filename
        ops = list(pickletools.genops(z.read(f"{root}/data.pkl")))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2
    globals_ = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert globals_ == {"collections OrderedDict", "torch._utils _rebuild_tensor_v2", "torch HalfStorage", "argparse Namespace", "torch float32"}


def test_pth_loads_with_weights_only_and_equals_full_load(generated):
    path = generated["text"] / PTH
    safe = load_pth(path, weights_only=True)
    full = load_pth(path, weights_only=False)
    assert list(safe) == ["state_dict", "args", "arch", "epoch", "version"]
    assert (safe["arch"], safe["epoch"], safe["version"]) == ("vit_huge_patch16_224", 299, 2)
    assert isinstance(safe["state_dict"], OrderedDict) and isinstance(safe["args"], argparse.Namespace)
    assert list(safe["state_dict"]) == list(full["state_dict"])
    for k, v in safe["state_dict"].items():
        assert v.dtype == torch.float16, k
        assert v.is_contiguous()
        assert torch.equal(v, full["state_dict"][k]), k
    assert vars(safe["args"]) == vars(full["args"])
    args = safe["args"]
    assert args.mlp_version == "v2" and args.dtype is torch.float32 and args.cls_token_per_teacher is True
    assert args.teachers == [
        {"name": "siglip2-g", "type": "siglip2", "model": "siglip2-g-384", "use_summary": True, "spatial_mlp_version": "attn"},
        {"name": "dino_v3_7b", "type": "dino_v3", "use_summary": True},
        {"name": "sam3", "type": "sam3", "use_summary": False},
    ]
    assert isinstance(args.cutmix, float) and isinstance(args.epoch, int)


def test_pth_heads_have_expected_keys_and_shapes(generated):
    sd = load_pth(generated["text"] / PTH, weights_only=True)["state_dict"]
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    C = 64
    # siglip2-g summary MLP2: 64 → 72 (one residual block) → 40
    assert {k: s for k, s in shapes.items() if k.startswith("_heads.siglip2-g.")} == {
        "_heads.siglip2-g.fc1.weight": (72, C), "_heads.siglip2-g.fc1.bias": (72,),
        "_heads.siglip2-g.blocks.0.0.weight": (72,), "_heads.siglip2-g.blocks.0.0.bias": (72,),
        "_heads.siglip2-g.blocks.0.2.weight": (72, 72), "_heads.siglip2-g.blocks.0.2.bias": (72,),
        "_heads.siglip2-g.final.0.weight": (72,), "_heads.siglip2-g.final.0.bias": (72,),
        "_heads.siglip2-g.final.2.weight": (40, 72), "_heads.siglip2-g.final.2.bias": (40,),
    }
    dense = {k[len("_feature_projections.siglip2-g."):]: s for k, s in shapes.items() if k.startswith("_feature_projections.siglip2-g.")}
    assert len(dense) == 32
    for b in (0, 1):
        assert dense[f"blocks.{b}.attn.qkv.weight"] == (3 * C, C)
        assert f"blocks.{b}.attn.qkv.bias" not in dense
        assert dense[f"blocks.{b}.attn.proj.weight"] == (C, C)
        assert dense[f"blocks.{b}.ls1.gamma"] == dense[f"blocks.{b}.ls2.gamma"] == (C,)
        assert dense[f"blocks.{b}.mlp.fc1.weight"] == (4 * C, C) and dense[f"blocks.{b}.mlp.fc2.weight"] == (C, 4 * C)
    assert C % 16 == 0
    assert (dense["mlp.fc1.weight"], dense["mlp.final.2.weight"]) == ((48, C), (40, 48))
    for name, out in (("dino_v3_7b", 56), ("sam3", 24)):
        assert shapes[f"_heads.{name}.final.2.weight"][0] == out
        assert shapes[f"_feature_projections.{name}.final.2.weight"][0] == out
        assert f"_feature_projections.{name}.blocks.0.0.weight" in shapes
    assert shapes["input_conditioner.norm_mean"] == shapes["input_conditioner.norm_std"] == (3, 1, 1)


def test_pth_backbone_is_model_safetensors_rounded(generated):
    """Both files hold the same fp16 values, and they are `tiny`'s draws rounded (torch's .half())."""
    sd = load_pth(generated["text"] / PTH, weights_only=True)["state_dict"]
    hf = load_file(generated["text"] / "model.safetensors")
    tiny = load_file(generated["tiny"] / "model.safetensors")
    backbone = {k for k in sd if not k.startswith("_")}
    mapped = {k.replace("radio_model.model.", "base_model.").replace("radio_model.", "") for k in hf if k != "radio_model.summary_idxs"}
    assert backbone == mapped
    for k, v in hf.items():
        if k == "radio_model.summary_idxs":
            assert torch.equal(v, tiny[k])
            continue
        pk = k.replace("radio_model.model.", "base_model.").replace("radio_model.", "")
        assert v.dtype == torch.float32
        assert torch.equal(sd[pk].float(), v), k
        assert torch.equal(tiny[k].half().float(), v), k
    assert not torch.equal(hf["radio_model.model.blocks.0.attn.qkv.weight"], tiny["radio_model.model.blocks.0.attn.qkv.weight"])


@pytest.mark.skipif(not (FIXTURE / "C-RADIOv4-H" / PTH).exists(), reason="shared upstream fixture not present")
def test_pth_structure_matches_upstream_fixture(generated):
    ours = load_pth(generated["text"] / PTH, weights_only=True)
    ref = load_pth(FIXTURE / "C-RADIOv4-H" / PTH, weights_only=True)
    assert list(ours) == list(ref)
    heads = lambda sd: {k: (tuple(v.shape), v.dtype) for k, v in sd.items() if k.startswith("_")}  # noqa: E731
    assert heads(ours["state_dict"]) == heads(ref["state_dict"])  # same head sizes as the fixture
    # backbone: the same keys up to the depth (ours 8 blocks, the fixture's 4)
    pattern = lambda sd: {k.split(".", 3)[3] if k.startswith("base_model.blocks.") else k for k in sd if not k.startswith("_")}  # noqa: E731
    assert pattern(ours["state_dict"]) == pattern(ref["state_dict"])
    assert ours["args"].teachers == ref["args"].teachers
    assert set(vars(ours["args"])) == set(vars(ref["args"]))
    for k in ("mlp_version", "dtype", "cls_token_per_teacher", "model", "cpe_max_size", "register_multiple"):
        assert getattr(ours["args"], k) == getattr(ref["args"], k), k


def test_so400m_text_preset_names_its_file(generated):
    files = sorted(p.name for p in generated["so400m"].iterdir())
    assert "c-radio_v4-so400m_half.pth.tar" in files
    sd = load_pth(generated["so400m"] / "c-radio_v4-so400m_half.pth.tar", weights_only=True)["state_dict"]
    assert sd["_feature_projections.siglip2-g.blocks.0.attn.qkv.weight"].shape == (240, 80)
    assert not (generated["tiny"] / PTH).exists()


# ---------------------------------------------------------------------------------------------------
# the SigLIP2 folder

SIGLIP_FILES = {"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"}


def test_siglip_files_and_shards(generated):
    d = generated["siglip"]
    assert {p.name for p in d.iterdir()} == SIGLIP_FILES
    index = json.loads((d / "model.safetensors.index.json").read_text())
    wm = index["weight_map"]
    assert list(wm) == sorted(wm)
    shard1 = {k for k, f in wm.items() if f == "model-00001-of-00002.safetensors"}
    assert {"logit_scale", "logit_bias"} <= shard1
    assert {k for k in wm if k.startswith("text_model.")} <= shard1
    assert {k for k in shard1 if k.startswith("vision_model.")} == {
        "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.patch_embedding.bias"}
    total = 0
    for f in set(wm.values()):
        with safe_open(d / f, "pt") as s:
            assert set(s.keys()) == {k for k, v in wm.items() if v == f}
            for k in s.keys():
                sl = s.get_slice(k)
                assert sl.get_dtype() == "F32"
                total += 4 * int(torch.tensor(sl.get_shape()).prod())
    assert index["metadata"]["total_size"] == total
    cfg = json.loads((d / "config.json").read_text())
    pth = load_pth(generated["text"] / PTH, weights_only=True)["state_dict"]
    assert cfg["text_config"]["projection_size"] == pth["_heads.siglip2-g.final.2.weight"].shape[0]
    vocab = json.loads((d / "tokenizer.json").read_text())["model"]["vocab"]
    assert cfg["text_config"]["vocab_size"] == len(vocab)


@pytest.mark.skipif(not (FIXTURE / "siglip2-giant-opt-patch16-384").exists(), reason="shared upstream fixture not present")
def test_siglip_structure_matches_upstream_fixture(generated):
    ours, ref = generated["siglip"], FIXTURE / "siglip2-giant-opt-patch16-384"
    assert {p.name for p in ref.iterdir()} == SIGLIP_FILES
    load = lambda d, f: json.loads((d / f).read_text())  # noqa: E731
    for f in ("special_tokens_map.json", "preprocessor_config.json"):
        assert load(ours, f) == load(ref, f), f
    assert load(ours, "tokenizer_config.json") == load(ref, "tokenizer_config.json")
    a, b = load(ours, "tokenizer.json"), load(ref, "tokenizer.json")
    assert list(a) == list(b)
    assert {k: v for k, v in a.items() if k != "model"} == {k: v for k, v in b.items() if k != "model"}
    assert {k: v for k, v in a["model"].items() if k not in ("vocab", "merges")} == {k: v for k, v in b["model"].items() if k not in ("vocab", "merges")}
    assert list(a["model"]["vocab"])[:269] == list(b["model"]["vocab"])[:269]  # specials, "\n", the 256 byte tokens
    ca, cb = load(ours, "config.json"), load(ref, "config.json")
    assert {k: set(v) if isinstance(v, dict) else v for k, v in ca.items()} == {k: set(v) if isinstance(v, dict) else v for k, v in cb.items()}
    assert set(load(ours, "model.safetensors.index.json")["weight_map"]) == set(load(ref, "model.safetensors.index.json")["weight_map"])


def test_siglip_loads_in_transformers(generated):
    transformers = pytest.importorskip("transformers")
    d = generated["siglip"]
    tok = transformers.AutoTokenizer.from_pretrained(d)
    ids = tok("a photo of a dog")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["a", "\u2581photo", "\u2581of", "\u2581a", "\u2581dog", "<eos>"]
    assert ids[-1] == 1 and 2 not in ids
    # unknown characters fall back to one token per UTF-8 byte
    assert tok.convert_ids_to_tokens(tok("\U0001f436")["input_ids"]) == ["<0xF0>", "<0x9F>", "<0x90>", "<0xB6>", "<eos>"]
    proc = transformers.AutoProcessor.from_pretrained(d)
    batch = proc(text=["a photo of a dog", "dog " * 80], return_tensors="pt", max_length=64, padding="max_length", truncation=True)
    assert list(batch.keys()) == ["input_ids"]
    assert batch["input_ids"].shape == (2, 64)
    assert batch["input_ids"][0, :6].tolist() == ids and batch["input_ids"][0, 6:].eq(0).all()
    assert batch["input_ids"][1, 63] == 1 and 0 not in batch["input_ids"][1].tolist()
    model, info = transformers.SiglipModel.from_pretrained(d, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with torch.no_grad():
        out = model.text_model(input_ids=batch["input_ids"])
    assert out.pooler_output.shape == (2, 40)
    hf = load_file(d / "model-00001-of-00002.safetensors")
    assert torch.equal(model.text_model.head.weight, hf["text_model.head.weight"])
    assert torch.equal(model.logit_scale, hf["logit_scale"])
