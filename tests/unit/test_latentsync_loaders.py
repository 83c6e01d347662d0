"""LatentSync's networks against the published layouts, and the strict loaders on real files."""
from __future__ import annotations

import json

import pytest
import torch

from comfyui_digitalhuman.engine.latentsync import config as C
from comfyui_digitalhuman.engine.latentsync import random_models as R
from comfyui_digitalhuman.engine.latentsync.unet import UNet3DConditionModel
from comfyui_digitalhuman.engine.latentsync.whisper import checkpoint_layout
from comfyui_digitalhuman.model_loaders import latentsync as L
from comfyui_digitalhuman.model_loaders.musetalk import check_state


@pytest.fixture(scope="module")
def layouts(testdata):
    return json.loads((testdata.parent / "checkpoints" / "latentsync_layouts.json").read_text())


def test_unet_hyper_parameters_are_the_published_config(layouts):
    """latentsync.json's model section is the reference's yaml (as recorded with the layouts)."""
    assert C.unet_config() == layouts["latentsync_unet.pt"]["config"]
    assert C.resolution("1.6") == 512 and C.resolution("1.5") == 256
    with pytest.raises(ValueError, match="unknown LatentSync version '2.0'"):
        C.resolution("2.0")


def test_full_size_unet_matches_the_published_layout_key_for_key(layouts):
    """Our UNet at the published size (built on the meta device) has exactly the file's keys and shapes,
    and the loader's strict check accepts a state of that layout."""
    lay = layouts["latentsync_unet.pt"]
    with torch.device("meta"):
        net = UNet3DConditionModel(C.unet_config())
    sd = net.state_dict()
    assert set(sd) == set(lay["keys"]) and len(sd) == 1246
    assert {k: list(v.shape) for k, v in sd.items()} == {k: s for k, (s, _) in lay["keys"].items()}
    assert sum(p.numel() for p in net.parameters()) == lay["parameter_count"] == 1_267_099_844
    assert sum(1 for k in sd if k.endswith("pos_encoder.pe")) == 40
    file_like = {k: torch.empty(s, device="meta") for k, (s, _) in lay["keys"].items()}
    check_state(net, file_like, "latentsync_unet.pt")
    del file_like["up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight"]
    with pytest.raises(ValueError, match=r"1 missing keys, e.g. 'up_blocks\.3\.attentions\.2\.transformer_blocks\.0\.attn2\.to_k\.weight'"):
        check_state(net, file_like, "latentsync_unet.pt")


def test_whisper_layout_is_the_published_one(layouts):
    lay = layouts["whisper/tiny.pt"]
    got = checkpoint_layout(C.whisper_dims())
    assert C.whisper_dims() == lay["dims"]
    assert {k: list(s) for k, s in got.items()} == {k: s for k, (s, _) in lay["keys"].items()}
    assert sum(torch.Size(s).numel() for k, s in got.items() if k != "encoder.positional_embedding") == lay["parameter_count"]


def _save_unet(path, net, container=True, **extra):
    state = net.state_dict()
    torch.save({"state_dict": state, "global_step": 1234, **extra} if container else state, str(path))


def test_unet_checkpoint_loads_strictly_and_names_bad_keys(tmp_path):
    net = R.random_unet(tiny=True, seed=3)
    cfg = C.unet_config(tiny=True)
    good = tmp_path / "latentsync_unet.pt"
    _save_unet(good, net)
    loaded = L.load_unet(good, cfg)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    assert not any(t.is_meta for t in loaded.state_dict().values())

    state = net.state_dict()
    bad = dict(state)
    bad["conv_in.weight"] = torch.zeros(32, 9, 3, 3)  # a 9-channel (other model's) input conv
    torch.save({"state_dict": bad, "global_step": 0}, str(tmp_path / "wrong.pt"))
    with pytest.raises(ValueError, match=r"wrong\.pt.*key 'conv_in\.weight' has shape \[32, 9, 3, 3\] but the network needs \[32, 13, 3, 3\]"):
        L.load_unet(tmp_path / "wrong.pt", cfg)
    extra = dict(state, **{"module.extra": torch.zeros(1)})
    torch.save({"state_dict": extra}, str(tmp_path / "extra.pt"))
    with pytest.raises(ValueError, match="1 unexpected keys, e.g. 'module.extra'"):
        L.load_unet(tmp_path / "extra.pt", cfg)
    torch.save({"model": state}, str(tmp_path / "other.pt"))
    with pytest.raises(ValueError, match=r"not a LatentSync UNet checkpoint \(expected \{'state_dict'"):
        L.load_unet(tmp_path / "other.pt", cfg)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    net = R.random_unet(tiny=True, seed=3)
    path = tmp_path / "latentsync_unet.pt"
    _save_unet(path, net)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"latentsync_unet\.pt: not a complete PyTorch checkpoint \(truncated or damaged.*download it again"):
        L.load_unet(path, C.unet_config(tiny=True))
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        L.load_unet(tmp_path / "absent.pt", C.unet_config(tiny=True))


def test_whisper_checkpoint_in_openai_format_loads_strictly(tmp_path):
    """The published size (decoder included, float16) loads into the encoder; any missing or mis-shaped
    key of encoder or decoder is refused by name."""
    full = R.whisper_checkpoint(seed=4, small_decoder=False)
    assert len(full["model_state_dict"]) == 167
    assert all(v.dtype == torch.float16 for v in full["model_state_dict"].values())
    path = tmp_path / "tiny.pt"
    torch.save(full, str(path))
    enc = L.load_whisper(path)
    assert next(enc.parameters()).dtype == torch.float32
    ref = full["model_state_dict"]["encoder.blocks.3.mlp.2.weight"].float()
    assert torch.equal(enc.blocks[3].mlp[2].weight, ref)
    assert enc.n_states == 5

    broken = {"dims": full["dims"], "model_state_dict": dict(full["model_state_dict"])}
    del broken["model_state_dict"]["decoder.blocks.2.cross_attn.key.weight"]
    torch.save(broken, str(tmp_path / "no_key.pt"))
    with pytest.raises(ValueError, match=r"1 missing keys, e.g. 'decoder\.blocks\.2\.cross_attn\.key\.weight'"):
        L.load_whisper(tmp_path / "no_key.pt")
    broken["model_state_dict"]["decoder.blocks.2.cross_attn.key.weight"] = torch.zeros(384, 385, dtype=torch.float16)
    torch.save(broken, str(tmp_path / "shape.pt"))
    with pytest.raises(ValueError, match=r"key 'decoder\.blocks\.2\.cross_attn\.key\.weight' has shape \[384, 385\]"):
        L.load_whisper(tmp_path / "shape.pt")
    torch.save(full["model_state_dict"], str(tmp_path / "flat.pt"))
    with pytest.raises(ValueError, match=r"not an OpenAI Whisper checkpoint \(expected \{'dims', 'model_state_dict'\}"):
        L.load_whisper(tmp_path / "flat.pt")


def test_catalogue_entries_cover_both_versions():
    from comfyui_digitalhuman.model_loaders.catalog import files_for, get_model

    for version in C.VERSIONS:
        ids = L.catalog_ids(version)
        for role, mid in ids.items():
            if role != "mask":
                assert "DH_LoadLatentSync" in get_model(mid).nodes, mid
    assert get_model("latentsync.unet_v16").repo == "ByteDance/LatentSync-1.6"
    assert get_model("latentsync.unet_v15").repo == "ByteDance/LatentSync-1.5"
    assert get_model("latentsync.unet_v16").size == 5_072_222_488
    w = get_model("latentsync.whisper_tiny")
    assert w.size == 75_572_083 and w.sha256.startswith("65147644")
    assert {e.id for e in files_for("latentsync_16")} >= {"latentsync.unet_v16", "latentsync.whisper_tiny",
                                                        "vae.sd_vae_ft_mse"}
    with pytest.raises(ValueError, match="unknown LatentSync version"):
        L.catalog_ids("1.0")
