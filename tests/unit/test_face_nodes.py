"""Face nodes with a stand-in for ComfyUI's progress, interrupt and temp folder."""
from __future__ import annotations


import cv2
import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.face.align import warp_to_crop
from rounding import NETWORK_ATOL, assert_within


@pytest.fixture()
def comfy_stub(comfy_env):
    """The face nodes run against the real ComfyUI modules (folders in tmp, progress recorded)."""
    from comfyui_digitalhuman.nodes import face

    return face, comfy_env.progress, comfy_env.dirs["temp"].parent


def to_image(*frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).float() / 255.0


def s0(testdata):
    return cv2.cvtColor(cv2.imread(str(testdata / "s0.jpg")), cv2.COLOR_BGR2RGB)


def test_node_declarations(comfy_stub):
    face, _, _ = comfy_stub
    from comfyui_digitalhuman.nodes.common import CAT_FACE

    assert set(face.NODE_CLASS_MAPPINGS) == {"DH_FaceDetectCrop", "DH_FacePasteBack", "DH_FacePreview"}
    for cls in face.NODE_CLASS_MAPPINGS.values():
        spec = cls.INPUT_TYPES()
        for group in spec.values():
            for name, (_, opts) in group.items():
                assert opts.get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
        assert cls.CATEGORY == CAT_FACE and cls.DESCRIPTION
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        assert callable(getattr(cls, cls.FUNCTION))


def test_detect_crop_and_paste_back(comfy_stub, testdata):
    face, bars, _ = comfy_stub
    img = s0(testdata)
    images = to_image(img, np.zeros_like(img), img)
    crops, track, mask = face.DH_FaceDetectCrop().run(images, "liveportrait_source", 256, "largest", 0, 0.0, "pass")
    assert crops.shape == (3, 256, 256, 3) and mask.shape == (3, 704, 600)
    assert track.missing_frames == [1] and track.crop_size == 256
    assert float(crops[1].abs().max()) == 0.0 and float(mask[1].max()) == 0.0
    assert float(mask[0].max()) == pytest.approx(1.0) and float(mask[0, 0, 0]) == 0.0
    assert bars[-1] == (6, 6)
    out, = face.DH_FacePasteBack().run(images, crops, track, 0)
    assert out.shape == images.shape
    assert torch.equal(out[1], images[1])
    mse = float(((out[0] - images[0]) ** 2).mean())
    assert 10 * np.log10(1.0 / mse) > 40
    # crops processed at another resolution (e.g. a 512 model output) are rescaled
    big = torch.nn.functional.interpolate(crops.permute(0, 3, 1, 2), size=(512, 512), mode="bilinear").permute(0, 2, 3, 1)
    out2, = face.DH_FacePasteBack().run(images, big, track, 4)
    assert 10 * np.log10(1.0 / float(((out2[0] - images[0]) ** 2).mean())) > 30


def test_custom_preset_and_hold(comfy_stub, testdata):
    face, _, _ = comfy_stub
    img = s0(testdata)
    images = to_image(np.zeros_like(img), img)
    crops, track, _ = face.DH_FaceDetectCrop().run(images, "custom", 128, "index", 0, 0.5, "hold",
                                                   scale=1.5, vx_ratio=0.0, vy_ratio=0.0)
    assert track.held.tolist() == [True, False]
    assert np.array_equal(track.M_o2c[0], track.M_o2c[1])  # the held frame is cut where the face was
    assert float(crops[0].max()) == 0.0  # ... from its own (black) pixels
    single, single_track, _ = face.DH_FaceDetectCrop().run(to_image(img), "custom", 128, "largest", 0, 0.5, "pass",
                                                           scale=1.5, vy_ratio=0.0)
    # Frame 1 is cut from its own face, as when it comes alone. The networks see a batch of two here
    # and of one there, which some CPUs sum in another order (on the AVX-only paths of
    # docs/DEVELOPING.md the landmarks move by 0.007 px and 1 % of the crop's pixels by one level), so
    # the crops are not compared with each other but each with the warp of its own transform (exact),
    # and the transforms by where they sample the image. Landmarks are network outputs scaled to the
    # image: rounding <= NETWORK_ATOL * 704 px = 0.014 px; the crop's centre, size and eye-line angle
    # built from them move its corners by at most ~10x that (measured 0.004 px; a 0.05 change of
    # `scale` moves them 2.2 px).
    for got, tr, i in ((crops, track, 1), (single, single_track, 0)):
        assert torch.equal(got[i], to_image(warp_to_crop(img, tr.M_o2c[i], 128))[0])
    corners = np.array([[0, 0, 1], [127, 0, 1], [0, 127, 1], [127, 127, 1]], np.float64).T
    sampled = [(np.linalg.inv(m) @ corners)[:2] for m in (track.M_o2c[1], single_track.M_o2c[0])]
    assert_within(sampled[0], sampled[1], 10 * NETWORK_ATOL * max(img.shape), "crop corners in the image (px)")


def test_paste_back_errors(comfy_stub, testdata):
    face, _, _ = comfy_stub
    img = s0(testdata)
    images = to_image(img, img)
    crops, track, _ = face.DH_FaceDetectCrop().run(images, "generic", 128, "largest", 0, 0.0, "pass")
    with pytest.raises(ValueError, match="crops: 3 frames, but the other input has 3|images: 2 frames"):
        face.DH_FacePasteBack().run(images, torch.cat([crops, crops[:1]]), track, 0)
    with pytest.raises(ValueError, match="images are 300x200 but the face track was made on 600x704"):
        face.DH_FacePasteBack().run(torch.zeros(2, 200, 300, 3), crops, track, 0)


def test_preview_draws_and_saves(comfy_stub, testdata):
    face, _, tmp = comfy_stub
    img = s0(testdata)
    res = face.DH_FacePreview().run(to_image(img))
    out = res["result"][0]
    files = res["ui"]["images"]
    assert len(files) == 1 and (tmp / "temp" / files[0]["filename"]).is_file()
    changed = (out[0] - to_image(img)[0]).abs().sum(-1) > 0
    ys, xs = np.nonzero(changed.numpy())
    assert 250 < xs.mean() < 400 and 60 < ys.mean() < 230  # drawing is on the face
    _, track, _ = face.DH_FaceDetectCrop().run(to_image(img), "generic", 128, "largest", 0, 0.0, "pass")
    res2 = face.DH_FacePreview().run(to_image(img), track)
    assert res2["result"][0].shape == (1, 704, 600, 3)
