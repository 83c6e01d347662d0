"""The pack's data files: read once per path, shared; sections copied without their notes; a broken
or missing file, or a missing section, is an error that names what the file holds and where it is."""
from __future__ import annotations

import json

import pytest

from comfyui_digitalhuman.engine.data_files import data_section, read_json


def test_a_section_is_a_copy_without_notes_and_the_file_is_read_once(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"_about": "x", "pauses": {"_about": "y", "comma": 0.2, "list": [1, 2]}}))
    got = data_section(path, "pauses", "speech rules")
    assert got == {"comma": 0.2, "list": [1, 2]}
    got["list"].append(3)  # a caller's change reaches neither the cache nor the next caller
    assert data_section(path, "pauses", "speech rules")["list"] == [1, 2]
    path.write_text(json.dumps({"pauses": {"comma": 9}}))  # parsed once per path: not read again
    assert read_json(path, "speech rules")["pauses"]["comma"] == 0.2


def test_a_broken_file_names_what_it_holds_and_where(tmp_path):
    bad = tmp_path / "prices.json"
    bad.write_text('{"images": ')
    with pytest.raises(RuntimeError, match=r"price table .*prices\.json could not be read: JSONDecodeError"):
        read_json(bad, "price table")
    with pytest.raises(RuntimeError, match=r"live settings .*absent\.json could not be read: FileNotFoundError"):
        data_section(tmp_path / "absent.json", "limits", "live settings")


def test_a_missing_section_names_it_and_the_file(tmp_path):
    path = tmp_path / "live.json"
    path.write_text(json.dumps({"limits": {"max_sessions": 2}, "note": "text"}))
    with pytest.raises(KeyError, match=r"live settings .*live\.json have no section 'media'"):
        data_section(path, "media", "live settings")
    with pytest.raises(KeyError, match="no section 'note'"):  # not a table
        data_section(path, "note", "live settings")


def test_the_packs_own_tables_read_through_it():
    from comfyui_digitalhuman.engine.live.config import section as live_section
    from comfyui_digitalhuman.engine.speech.config import section as speech_section
    from comfyui_digitalhuman.providers.avatar_common import RULES_FILE, rules

    assert "_about" not in speech_section("pauses") and speech_section("pauses")
    assert rules("did")["key_env"] == json.loads(RULES_FILE.read_text(encoding="utf-8"))["did"]["key_env"]
    assert live_section("limits")["max_sessions"] >= 1
