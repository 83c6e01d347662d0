"""The shared real-ComfyUI fixture: folders redirected, progress recorded, Cancel raises."""
from __future__ import annotations

import pytest


def test_comfy_env_redirects_folders_and_records_progress(comfy_env):
    fp = comfy_env.modules.folder_paths
    assert fp.get_input_directory() == str(comfy_env.dirs["input"])
    assert fp.get_output_directory() == str(comfy_env.dirs["output"])
    assert fp.get_folder_paths("vae") == [str(comfy_env.dirs["models"] / "vae")]
    from comfyui_digitalhuman.nodes.common import Progress, check_interrupt

    bar = Progress(4)
    bar(2)
    bar(4)
    assert comfy_env.progress[-2:] == [(2, 4), (4, 4)]
    check_interrupt()  # not pressed: no error
    comfy_env.interrupt()
    with pytest.raises(comfy_env.modules.mm.InterruptProcessingException):
        check_interrupt()


def test_safe_path_confines_inputs(comfy_env):
    from comfyui_digitalhuman.nodes.common import safe_path

    (comfy_env.dirs["input"] / "clip.mp4").write_bytes(b"x")
    assert safe_path("clip.mp4").name == "clip.mp4"
    for bad in ("../clip.mp4", "/etc/passwd", "sub/../../x"):
        with pytest.raises(ValueError, match="only files inside|outside"):
            safe_path(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        safe_path("missing.mp4")
