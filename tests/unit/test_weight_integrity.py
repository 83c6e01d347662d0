"""Files already in place: their sha256 is checked once and the verdict remembered (by size, mtime and
ctime, next to the file), and every weight loader names an unreadable file and says what to do."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fakehub import FakeHub  # noqa: E402

from comfyui_digitalhuman.engine.musetalk import networks as nets  # noqa: E402
from comfyui_digitalhuman.model_loaders import catalog, download, verdicts  # noqa: E402
from comfyui_digitalhuman.model_loaders import liveportrait as lp  # noqa: E402
from comfyui_digitalhuman.model_loaders import musetalk as ml  # noqa: E402
from comfyui_digitalhuman.model_loaders.download import ModelIntegrityError, ensure_file, ensure_model, fetch_models  # noqa: E402
from comfyui_digitalhuman.model_loaders.weights_io import WeightFileError  # noqa: E402

VAE_ID = "vae.sd_vae_ft_mse"


@pytest.fixture(scope="module")
def vae_bytes() -> bytes:
    """A tiny sd-vae-ft-mse-layout VAE as .safetensors (random weights, the published key names)."""
    from safetensors.torch import save

    vae = nets.randomize_(nets.build_vae(nets.TINY_VAE_CONFIG), seed=1)
    return save({k: v.contiguous() for k, v in vae.state_dict().items()})


@pytest.fixture()
def hashes(monkeypatch) -> list[Path]:
    """Every file ``download.sha256_of`` reads (the real function still runs)."""
    seen: list[Path] = []
    real = download.sha256_of
    monkeypatch.setattr(download, "sha256_of", lambda path, ci=None: seen.append(Path(path)) or real(path, ci))
    verdicts.forget_memory()
    yield seen
    verdicts.forget_memory()


@pytest.fixture()
def vae_entry(vae_bytes, monkeypatch):
    """The catalogue's own VAE entry, with the size and sha256 of the tiny stand-in."""
    entry = dataclasses.replace(catalog.get_model(VAE_ID), size=len(vae_bytes),
                                sha256=hashlib.sha256(vae_bytes).hexdigest())
    monkeypatch.setitem(catalog._default_catalog(), VAE_ID, entry)
    for var in download.OFFLINE_VARS:
        monkeypatch.setenv(var, "")
    monkeypatch.setenv("DH_OFFLINE", "1")  # nothing here may download: the files are placed by hand
    return entry


def _place(root: Path, entry, data: bytes) -> Path:
    path = root / entry.folder / entry.local
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _zero_second_half(data: bytes) -> bytes:
    return data[: len(data) // 2] + bytes(len(data) - len(data) // 2)


def test_vae_with_zeroed_second_half_is_caught_on_first_load(vae_entry, vae_bytes, tmp_path, hashes):
    path = _place(tmp_path, vae_entry, _zero_second_half(vae_bytes))
    # the damage is invisible to the loader: the header is intact and the network loads (with zeros)
    assert ml.load_vae(path, nets.TINY_VAE_CONFIG) is not None
    with pytest.raises(ModelIntegrityError) as err:
        ensure_model(VAE_ID, models_dir=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and f"expected {vae_entry.sha256}" in msg and "corrupt" in msg
    assert "Delete it and run again" in msg and vae_entry.url() in msg
    assert path.read_bytes() == _zero_second_half(vae_bytes)  # refused, not deleted: it may be the user's
    with pytest.raises(ModelIntegrityError):  # and refused again: a bad verdict is never remembered as good
        ensure_model(VAE_ID, models_dir=tmp_path)
    assert len(hashes) == 2


def test_verdict_is_reused_until_size_or_times_change(vae_entry, vae_bytes, tmp_path, hashes):
    path = _place(tmp_path, vae_entry, vae_bytes)
    assert ensure_model(VAE_ID, models_dir=tmp_path) == path and len(hashes) == 1
    assert ensure_model(VAE_ID, models_dir=tmp_path) == path and len(hashes) == 1  # in-process verdict
    verdicts.forget_memory()  # a new process: the verdict is read from next to the file
    assert ensure_model(VAE_ID, models_dir=tmp_path) == path and len(hashes) == 1
    store = tmp_path / "vae" / download.STAGING_DIR / verdicts.STORE_NAME
    rec = json.loads(store.read_text())["files"][vae_entry.local]
    st = path.stat()
    assert rec == {"sha256": vae_entry.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
    # touched: hashed again (and remembered again)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ensure_model(VAE_ID, models_dir=tmp_path)
    ensure_model(VAE_ID, models_dir=tmp_path)
    assert len(hashes) == 2
    # overwritten with damaged bytes of the same size and the old mtime put back (cp --preserve): the
    # status-change time still differs, so the damage is found
    st = path.stat()
    path.write_bytes(_zero_second_half(vae_bytes))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    with pytest.raises(ModelIntegrityError, match="corrupt"):
        ensure_model(VAE_ID, models_dir=tmp_path)
    assert len(hashes) == 3


def test_a_verdict_for_another_expected_hash_is_not_reused(vae_entry, vae_bytes, tmp_path, hashes, monkeypatch):
    _place(tmp_path, vae_entry, vae_bytes)
    ensure_model(VAE_ID, models_dir=tmp_path)
    other = dataclasses.replace(vae_entry, sha256="0" * 64)  # e.g. the catalogue moved to a new revision
    with pytest.raises(ModelIntegrityError, match="expected " + "0" * 64):
        ensure_file(other, tmp_path)
    assert len(hashes) == 2


def test_files_without_a_catalogued_hash_keep_the_size_check(vae_entry, vae_bytes, tmp_path, hashes):
    entry = dataclasses.replace(vae_entry, sha256=None)
    path = _place(tmp_path, entry, _zero_second_half(vae_bytes))
    assert ensure_file(entry, tmp_path) == (path, False) and hashes == []
    assert not (tmp_path / "vae" / download.STAGING_DIR).exists()


def test_verify_hashes_again_even_with_a_verdict(vae_entry, vae_bytes, tmp_path, hashes):
    _place(tmp_path, vae_entry, vae_bytes)
    ensure_model(VAE_ID, models_dir=tmp_path)
    (res,) = fetch_models([vae_entry], tmp_path, verify=True)
    assert res.status == "present" and len(hashes) == 2
    (res,) = fetch_models([vae_entry], tmp_path)
    assert res.status == "present" and len(hashes) == 2


def test_a_fresh_download_is_not_hashed_again_on_load(vae_entry, vae_bytes, tmp_path, hashes, monkeypatch):
    monkeypatch.setenv("DH_OFFLINE", "0")
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        hub.add_entry(vae_entry, vae_bytes)
        path = ensure_model(VAE_ID, models_dir=tmp_path)
        assert len(hashes) == 1  # the check of the download itself
        verdicts.forget_memory()
        assert ensure_model(VAE_ID, models_dir=tmp_path) == path and len(hashes) == 1


def test_garbled_store_and_unwritable_folder(vae_entry, vae_bytes, tmp_path, hashes):
    path = _place(tmp_path, vae_entry, vae_bytes)
    store_dir = tmp_path / "vae" / download.STAGING_DIR
    store_dir.mkdir()
    (store_dir / verdicts.STORE_NAME).write_text("{not json")
    ensure_model(VAE_ID, models_dir=tmp_path)  # a garbled store counts as empty, and is rewritten
    assert len(hashes) == 1 and vae_entry.local in json.loads((store_dir / verdicts.STORE_NAME).read_text())["files"]
    # a folder where nothing can be written (here: the staging name taken by a file, which stops root too)
    other = tmp_path / "ro"
    _place(other, vae_entry, vae_bytes)
    (other / "vae" / download.STAGING_DIR).write_text("in the way")
    verdicts.forget_memory()
    ensure_model(VAE_ID, models_dir=other)
    ensure_model(VAE_ID, models_dir=other)
    assert len(hashes) == 2  # kept for the process
    verdicts.forget_memory()
    ensure_model(VAE_ID, models_dir=other)
    assert len(hashes) == 3  # not stored: hashed again by a new process, and still no error
    assert path.read_bytes() == vae_bytes


def test_concurrent_writers_never_tear_the_store(tmp_path):
    folder = tmp_path / "vae"
    store_dir = folder / download.STAGING_DIR
    files = []
    for i in range(16):
        f = folder / f"m{i}.safetensors"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(bytes([i]) * 10)
        files.append(f)
    torn: list[str] = []

    def reader() -> None:
        for _ in range(200):
            try:
                text = (store_dir / verdicts.STORE_NAME).read_text()
            except OSError:
                continue
            try:
                json.loads(text)
            except ValueError:
                torn.append(text)

    threads = [threading.Thread(target=verdicts.remember, args=(f, folder, store_dir, "a" * 64)) for f in files]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torn == []
    verdicts.forget_memory()
    assert all(verdicts.is_verified(f, folder, store_dir, "a" * 64) for f in files)
    assert sorted(p.name for p in store_dir.iterdir()) == [verdicts.STORE_NAME]  # no temporary file left


# -- loaders name the files they cannot read -------------------------------------------------------

def _garbage_header(path: Path) -> Path:
    path.write_bytes((2**62).to_bytes(8, "little") + b"{" * 64)  # claims an 4 EiB header
    return path


def test_garbage_safetensors_header_names_the_file(tmp_path):
    path = _garbage_header(tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(WeightFileError) as err:
        ml.load_vae(path, nets.TINY_VAE_CONFIG)
    msg = str(err.value)
    assert str(path) in msg and "header too large" in msg and "Delete it and run again" in msg
    lp_path = _garbage_header(tmp_path / "warping_module.safetensors")
    with pytest.raises(WeightFileError, match=str(lp_path).replace(".", r"\.") + ".*header too large"):
        lp.load_network("warping_module", lp_path)


@pytest.mark.parametrize("kind", ["truncated_zip", "garbage_pickle", "truncated_safetensors", "empty"])
def test_unreadable_weight_files_name_the_file(tmp_path, kind):
    buf = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, buf)
    if kind == "truncated_zip":
        path, data, reason = tmp_path / "79999_iter.pth", buf.getvalue()[:5000], "PyTorch zip archive"
    elif kind == "garbage_pickle":
        path, data, reason = tmp_path / "unet.pth", b"garbage" * 100, "weights_only=True) refused it"
    elif kind == "truncated_safetensors":
        from safetensors.torch import save

        full = save({"a": torch.zeros(1000)})
        path, data, reason = tmp_path / "w.safetensors", full[: len(full) // 2], "incomplete metadata"
    else:
        path, data, reason = tmp_path / "empty.pth", b"", ""
    path.write_bytes(data)
    for read in (ml.read_state_dict, lp.read_weights):
        with pytest.raises(WeightFileError) as err:
            read(path)
        msg = str(err.value)
        assert str(path) in msg and f"{len(data)} bytes" in msg and reason in msg and "Delete it" in msg


def test_unreadable_config_names_the_file(tmp_path, vae_bytes):
    cfg = tmp_path / "musetalk.json"
    cfg.write_text('{"sample_size": 32,')
    with pytest.raises(WeightFileError, match=str(cfg).replace(".", r"\.") + ".*JSONDecodeError"):
        ml.load_unet(tmp_path / "unet.pth", cfg)


def test_saved_avatar_that_cannot_be_read_names_its_file(tmp_path):
    from comfyui_digitalhuman.engine.musetalk.pipeline import FORMAT_VERSION, AvatarCache

    (tmp_path / "avatar.json").write_text(json.dumps({"format": FORMAT_VERSION}))
    _garbage_header(tmp_path / "avatar.safetensors")
    with pytest.raises(ValueError, match=r"avatar\.safetensors: cannot read the saved avatar.*header too large"):
        AvatarCache.load(tmp_path)


def test_unreadable_face_model_names_the_file(tmp_path, monkeypatch):
    """A face model the catalogue cannot vouch for (here: size and sha256 unknown) that is not a TFLite file."""
    from comfyui_digitalhuman.model_loaders import face

    monkeypatch.setenv("DH_OFFLINE", "1")
    for mid in face.CATALOG_IDS:
        entry = dataclasses.replace(catalog.get_model(mid), size=None, sha256=None)
        monkeypatch.setitem(catalog._default_catalog(), mid, entry)
        _place(tmp_path, entry, b"not a tflite model at all")
    monkeypatch.setenv("DH_MODELS_DIR", str(tmp_path))
    face._cached.cache_clear()
    with pytest.raises(WeightFileError) as err:
        face.load_face_analyzer(device="cpu")
    face._cached.cache_clear()
    msg = str(err.value)
    assert str(tmp_path / "face_analysis") in msg and "is not a TFLite model" in msg and "Delete it" in msg
