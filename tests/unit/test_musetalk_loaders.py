"""MuseTalk loaders: published layouts match the networks; tiny random weights round-trip through files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from comfyui_digitalhuman.engine.musetalk import networks as nets
from comfyui_digitalhuman.engine.musetalk.bisenet import BiSeNet
from comfyui_digitalhuman.model_loaders import musetalk as ml

UNET_FILE = "musetalkV15/unet.pth"
VAE_FILE = "sd-vae-ft-mse/diffusion_pytorch_model.bin"
BISENET_FILE = "face-parse-bisent/79999_iter.pth"


@pytest.fixture(scope="module")
def layouts(testdata):
    data = json.loads((testdata.parent / "checkpoints" / "musetalk_layouts.json").read_text())
    whisper = next(k for k in data if k.startswith("whisper-tiny/"))
    unet_cfg = next(v for k, v in data.items() if k.startswith("config_used_for_unet"))
    return data, whisper, unet_cfg


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _layout(entries: dict, strip: str = "") -> dict[str, list[int]]:
    return {k[len(strip):]: shape for k, (shape, _dtype) in entries.items() if k.startswith(strip)}


def test_unet_config_is_the_published_one(layouts):
    _, _, unet_cfg = layouts
    assert nets.UNET_CONFIG == unet_cfg


@pytest.mark.parametrize("which", ["unet", "vae", "whisper", "bisenet"])
def test_published_layout_matches_network_built_on_meta(layouts, which):
    data, whisper_file, _ = layouts
    with torch.device("meta"):
        module, expected = {
            "unet": lambda: (nets.build_unet(), _layout(data[UNET_FILE])),
            "vae": lambda: (nets.build_vae(), _layout(data[VAE_FILE])),
            "whisper": lambda: (nets.build_whisper_encoder(), _layout(data[whisper_file], "model.encoder.")),
            "bisenet": lambda: (BiSeNet(), _layout(data[BISENET_FILE])),
        }[which]()
    got = _shapes(module)
    assert sorted(got) == sorted(expected)
    assert got == expected
    if which == "unet":
        assert sum(int(np.prod(s)) for s in got.values()) > 800_000_000


def test_layout_shapes_pass_the_strict_check(layouts):
    """Every published UNet key/shape passes the loader's check (meta tensors, so nothing is allocated)."""
    data, _, _ = layouts
    state = {k: torch.empty(s, device="meta") for k, s in _layout(data[UNET_FILE]).items()}
    with torch.device("meta"):
        unet = nets.build_unet()
    ml.check_state(unet, state, UNET_FILE)
    state["conv_in.weight"] = torch.empty(320, 4, 3, 3, device="meta")
    with pytest.raises(ValueError, match=r"'conv_in\.weight' has shape \[320, 4, 3, 3\] but the network needs \[320, 8, 3, 3\]"):
        ml.check_state(unet, state, UNET_FILE)


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        assert torch.equal(va, vb), ka


def test_unet_roundtrip_pth(tmp_path):
    unet = nets.randomize_(nets.build_unet(nets.TINY_UNET_CONFIG), seed=1)
    torch.save(unet.state_dict(), tmp_path / "unet.pth")
    (tmp_path / "musetalk.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **nets.TINY_UNET_CONFIG}))
    loaded = ml.load_unet(tmp_path / "unet.pth", tmp_path / "musetalk.json")
    _same_outputs(unet, loaded)
    x, audio = torch.randn(2, 8, 32, 32), torch.randn(2, 50, 384)
    with torch.no_grad():
        ref = unet(x, 0, encoder_hidden_states=audio).sample
        got = loaded(x, 0, encoder_hidden_states=audio).sample
    assert got.shape == (2, 4, 32, 32)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_vae_old_attention_names_bin(tmp_path):
    vae = nets.randomize_(nets.build_vae(nets.TINY_VAE_CONFIG), seed=2)
    old = {}
    for k, v in vae.state_dict().items():
        for new, legacy in ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")):
            k = k.replace(new, legacy)
        old[k] = v
    assert any(".proj_attn." in k for k in old) and not any(".to_q." in k for k in old)
    torch.save(old, tmp_path / "diffusion_pytorch_model.bin")
    loaded = ml.load_vae(tmp_path / "diffusion_pytorch_model.bin", nets.TINY_VAE_CONFIG)
    _same_outputs(vae, loaded)
    img = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(img).latent_dist.mean, vae.encode(img).latent_dist.mean, rtol=0, atol=0)


def test_vae_new_names_safetensors(tmp_path):
    vae = nets.randomize_(nets.build_vae(nets.TINY_VAE_CONFIG), seed=3)
    save_file(vae.state_dict(), str(tmp_path / "vae.safetensors"))
    _same_outputs(vae, ml.load_vae(tmp_path / "vae.safetensors", nets.TINY_VAE_CONFIG))


def test_whisper_encoder_from_full_model_file(tmp_path):
    enc = nets.randomize_(nets.build_whisper_encoder(nets.TINY_WHISPER_CONFIG), seed=4)
    full = {f"model.encoder.{k}": v for k, v in enc.state_dict().items()}
    full["model.decoder.embed_tokens.weight"] = torch.zeros(4, 384)  # decoder keys are ignored
    full["proj_out.weight"] = torch.zeros(4, 384)
    torch.save(full, tmp_path / "pytorch_model.bin")
    loaded = ml.load_whisper_encoder(tmp_path / "pytorch_model.bin", nets.TINY_WHISPER_CONFIG)
    _same_outputs(enc, loaded)
    mel = torch.randn(1, 80, 3000)
    with torch.no_grad():
        a = torch.stack(enc(mel, output_hidden_states=True).hidden_states)
        b = torch.stack(loaded(mel, output_hidden_states=True).hidden_states)
    assert a.shape == (5, 1, 1500, 384)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bisenet_roundtrip_pth(tmp_path):
    net = nets.randomize_(BiSeNet(), seed=5).eval()
    torch.save(net.state_dict(), tmp_path / "79999_iter.pth")
    loaded = ml.load_face_parser(tmp_path / "79999_iter.pth")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    assert loaded(x).shape == (1, 19, 64, 64)
    assert not loaded.training


def test_wrong_shape_names_key_and_shapes(tmp_path):
    net = BiSeNet()
    state = net.state_dict()
    state["ffm.conv1.weight"] = torch.zeros(32, 256, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth.*'ffm\.conv1\.weight' has shape \[32, 256, 1, 1\] but the network needs \[64, 256, 1, 1\]"):
        ml.load_face_parser(tmp_path / "bad.pth")


def test_missing_and_unexpected_keys(tmp_path):
    state = BiSeNet().state_dict()
    del state["cp.arm16.conv_atten.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "m.pth")
    with pytest.raises(ValueError, match=r"1 missing keys, e\.g\. 'cp\.arm16\.conv_atten\.weight'; 1 unexpected keys, e\.g\. 'extra\.weight'"):
        ml.load_face_parser(tmp_path / "m.pth")


def test_not_whisper_and_missing_file(tmp_path):
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "w.bin")
    with pytest.raises(ValueError, match="no Whisper encoder keys"):
        ml.load_whisper_encoder(tmp_path / "w.bin")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ml.read_state_dict(tmp_path / "nope.pth")


def test_load_musetalk_precision(tmp_path):
    unet = nets.randomize_(nets.build_unet(nets.TINY_UNET_CONFIG), seed=1)
    vae = nets.randomize_(nets.build_vae(nets.TINY_VAE_CONFIG), seed=2)
    enc = nets.randomize_(nets.build_whisper_encoder(nets.TINY_WHISPER_CONFIG), seed=3)
    torch.save(unet.state_dict(), tmp_path / "unet.pth")
    save_file(vae.state_dict(), str(tmp_path / "vae.safetensors"))
    torch.save({f"model.encoder.{k}": v for k, v in enc.state_dict().items()}, tmp_path / "w.bin")
    torch.save(BiSeNet().state_dict(), tmp_path / "p.pth")
    models = ml.load_musetalk(tmp_path / "unet.pth", nets.TINY_UNET_CONFIG, tmp_path / "vae.safetensors",
                              tmp_path / "w.bin", tmp_path / "p.pth", "cpu", torch.bfloat16,
                              vae_config=nets.TINY_VAE_CONFIG, whisper_config=nets.TINY_WHISPER_CONFIG)
    assert models.dtype == torch.bfloat16 and models.device.type == "cpu"
    assert next(models.vae.parameters()).dtype == torch.bfloat16
    assert next(models.parser.parameters()).dtype == torch.float32
    torch.testing.assert_close(models.unet.conv_in.weight.float(), unet.conv_in.weight.bfloat16().float())
