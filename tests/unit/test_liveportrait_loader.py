"""The LivePortrait loader reads both published layouts strictly and reproduces spectral norm exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from comfyui_digitalhuman.engine.liveportrait.blocks import SpectralConv2d
from comfyui_digitalhuman.engine.liveportrait.networks import NETWORK_NAMES, build_network
from comfyui_digitalhuman.model_loaders import liveportrait as lp

# Parameter counts in millions, as stated in shared/checkpoints/README.md.
README_MILLIONS = {"appearance_feature_extractor": 0.84, "motion_extractor": 28.1, "warping_module": 45.5,
                   "spade_generator": 55.4, "stitching_retargeting_module": 0.23}


@pytest.fixture(scope="module")
def published_layout(testdata: Path) -> dict:
    layout = testdata.parent / "checkpoints" / "liveportrait_official_keys.json"  # honours DH_SHARED
    if not layout.is_file():
        pytest.fail(f"layout listing not found at {layout}")
    return json.loads(layout.read_text())


def _flatten_published(name: str, state: dict) -> dict[str, list]:
    """Our synthetic file content as ``{key: shape}`` in the JSON's spelling (``group/module.x`` for nested)."""
    out = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out.update({f"{k}/{sk}": list(sv.shape) for sk, sv in v.items()})
        else:
            out[k] = list(v.shape)
    return out


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_both_layouts_load_strictly(name: str, published_layout: dict, tmp_path: Path) -> None:
    state = lp.synthetic_weights(name, seed=1, layout="pth")
    listing = published_layout[f"{name}.pth"]
    assert _flatten_published(name, state) == {k: v[0] for k, v in listing.items()}
    pth = lp.write_weights(state, tmp_path / f"{name}.pth")
    net = lp.load_network(name, pth)
    n_params = sum(p.numel() for p in net.parameters())
    assert round(n_params / 1e6, 2 if n_params < 1e6 else 1) == README_MILLIONS[name]
    # the values arrive unchanged: compare one tensor per state dict
    ours = net.state_dict()
    if name == "stitching_retargeting_module":
        assert torch.equal(ours["eye.mlp.10.weight"], state["retarget_eye"]["module.mlp.10.weight"])
        flat = lp.synthetic_weights(name, seed=1, layout="safetensors")
        assert "retarget_shoulder_module.mlp.0.weight" in flat
        assert torch.equal(flat["retarget_mouth_module.mlp.6.bias"], state["retarget_mouth"]["module.mlp.6.bias"])
        state = flat
    else:
        key = next(k for k in state if state[k].is_floating_point())
        assert torch.equal(ours[key], state[key])
    del net, pth
    (tmp_path / f"{name}.pth").unlink()
    st = lp.write_weights(state, tmp_path / f"{name}.safetensors")
    net2 = lp.load_network(name, st)
    for key, value in net2.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_wrong_shape_names_key_and_shapes(tmp_path: Path) -> None:
    state = lp.synthetic_weights("appearance_feature_extractor", seed=0)
    state["second.weight"] = torch.zeros(512, 128, 1, 1)
    path = lp.write_weights(state, tmp_path / "appearance_feature_extractor.safetensors")
    with pytest.raises(ValueError) as err:
        lp.load_network("appearance_feature_extractor", path)
    msg = str(err.value)
    assert "second.weight" in msg and "[512, 256, 1, 1]" in msg and "[512, 128, 1, 1]" in msg
    assert str(path) in msg


def test_missing_and_unexpected_keys_are_reported(tmp_path: Path) -> None:
    state = lp.synthetic_weights("stitching_retargeting_module", seed=0, layout="pth")
    del state["retarget_eye"]["module.mlp.10.bias"]
    state["retarget_eye"]["module.mlp.12.bias"] = torch.zeros(3)
    path = lp.write_weights(state, tmp_path / "s.pth")
    with pytest.raises(ValueError, match=r"missing key 'eye\.mlp\.10\.bias'.*unexpected key 'eye\.mlp\.12\.bias'"):
        lp.load_network("stitching_retargeting_module", path)


def test_unreadable_and_absent_files(tmp_path: Path) -> None:
    bad = tmp_path / "warping_module.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read LivePortrait weights"):
        lp.load_network("warping_module", bad)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        lp.load_network("warping_module", tmp_path / "nothing.pth")
    with pytest.raises(ValueError, match="unknown LivePortrait network"):
        build_network("flow_net")


@pytest.mark.parametrize("cin,cout,k,bias", [(16, 8, 3, True), (12, 6, 1, False)])
def test_spectral_conv_matches_torch_spectral_norm_eval(cin: int, cout: int, k: int, bias: bool) -> None:
    torch.manual_seed(0)
    ref = nn.utils.spectral_norm(nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias))
    ref.train()
    x = torch.randn(2, cin, 9, 9)
    for _ in range(3):  # a few power iterations so u, v are not the initial ones
        ref(x)
    ref.eval()
    ours = SpectralConv2d(cin, cout, k, padding=k // 2, bias=bias)
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        expected = ref(x)
        got = ours(x)
        # eval mode: sigma = u . (W v) from the stored vectors, no power iteration
        w = ref.weight_orig.reshape(cout, -1)
        sigma = torch.dot(ref.weight_u, w @ ref.weight_v)
    # Both sides run the same float32 operations in the same order (torch's eval-mode spectral norm is
    # dot(u, mv(W, v)), then W / sigma and the same conv), so they agree bit for bit on any CPU; the
    # tolerances only leave room for a torch that reorders them. A wrong sigma (one more power
    # iteration, or the true top singular value) moves the output by 0.02 to 0.2.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.weight(), ref.weight_orig / sigma, rtol=0, atol=1e-7)
    # the stored vectors are left untouched by our forward
    assert torch.equal(ours.weight_u, ref.weight_u)


def test_spectral_conv_sigma_is_top_singular_value_when_converged() -> None:
    torch.manual_seed(3)
    conv = SpectralConv2d(5, 4, 3)
    w = conv.weight_orig.detach().reshape(4, -1)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    conv.weight_u.copy_(u[:, 0])
    conv.weight_v.copy_(vh[0])
    assert torch.linalg.matrix_norm(conv.weight().detach().reshape(4, -1), ord=2).item() == pytest.approx(1.0, abs=1e-5)
