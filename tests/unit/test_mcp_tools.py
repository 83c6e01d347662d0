"""The MCP server's tool list and argument checks without a ComfyUI: tools follow the installed nodes,
schemas are closed, and a bad argument reads as one clear line; answers never carry a key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_digitalhuman.client import recipes
from comfyui_digitalhuman.engine.data_files import without_notes
from comfyui_digitalhuman.mcp_server.server import Config, DigitalHumanMCP, ToolFailure, check_arguments
from comfyui_digitalhuman.mcp_server.tools import build_tools

TABLE = recipes.load_table()
NODES = ["LoadImage", "SaveImage", "DH_LoadAudio", "DH_LoadMuseTalk", "DH_MuseTalkLipSync", "DH_SaveVideo",
         "DH_LoadVideo", "DH_LoadLivePortrait", "DH_LivePortraitAnimate", "DH_PortraitPrompt", "DH_PortraitCheck",
         "DH_OpenAIImage", "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
         "DH_OpenAISpeech", "DH_ElevenLabsSpeech", "DH_LoadCosyVoice", "DH_CosyVoiceLoadVoice", "DH_CosyVoiceSpeak",
         "DH_CosyVoiceClone"]
LIVE = ["DH_MuseTalkPrepareAvatar", "DH_CosyVoiceLiveVoice", "DH_ChatModel", "DH_LiveSession"]


def info(without: tuple[str, ...] = (), live: bool = False) -> dict:
    """/object_info in ComfyUI's shape for the nodes the table names (inputs only where a test reads them)."""
    out = {n: {"input": {"required": {}}} for n in NODES + (LIVE if live else []) if n not in without}
    if "DH_PortraitPrompt" in out:
        out["DH_PortraitPrompt"]["input"]["required"] = {"gender": [["unspecified", "man"], {}],
                                                         "age_range": [["unspecified"], {}], "preset": [["teacher"], {}]}
    return out


def tools(object_info) -> dict:
    return {t.name: t for t in build_tools(TABLE, object_info)}


def test_tools_follow_the_installed_nodes():
    assert set(tools(info())) == {"design_avatar", "make_video", "list_workflows", "run_workflow", "list_voices", "run_batch",
                                  "clone_voice"}
    assert "clone_voice" not in tools(info(without=("DH_CosyVoiceClone",)))
    assert "make_video" not in tools(info(without=("DH_MuseTalkLipSync",)))
    only_flux = tools(info(without=("DH_OpenAIImage",)))["design_avatar"].schema["properties"]["generator"]
    assert only_flux["enum"] == ["flux"]
    no_voice = tools(info(without=("DH_OpenAISpeech", "DH_ElevenLabsSpeech", "DH_CosyVoiceSpeak")))
    assert "list_voices" not in no_voice and "none installed" in no_voice["make_video"].schema["properties"]["voice"]["description"]
    da = tools(info())["design_avatar"].schema["properties"]
    assert da["gender"]["enum"] == ["unspecified", "man"] and da["preset"]["enum"] == ["teacher"]
    # unreachable server: the table's own tools, but never a one-workflow tool guessed without its nodes
    assert set(tools(None)) == set(tools(info())) - {"clone_voice"}


def test_every_schema_is_closed():
    for t in build_tools(TABLE, info()):
        assert t.schema["type"] == "object" and t.schema["additionalProperties"] is False, t.name
        assert set(t.schema["required"]) <= set(t.schema["properties"]), t.name


@pytest.mark.parametrize("args, message", [
    ({"portrait": "a.jpg", "colour": "red"},
     "make_video: unknown argument colour (make_video takes: portrait, script, speech, voice, driving_video, quality)"),
    ({"script": "hi"}, "make_video: portrait: is required"),
    ({"portrait": "a.jpg", "script": ""}, "make_video: script: is empty"),
    ({"portrait": "a.jpg", "script": "x" * 50_000}, "make_video: script: has 50,000 characters; at most 20,000 allowed"),
    ({"portrait": "a.jpg", "quality": "best"}, "make_video: quality: 'best' is not one of musetalk"),
    ({"portrait": 7}, "make_video: portrait: must be string (got int)"),
])
def test_argument_checks_read_as_one_line(args, message):
    with pytest.raises(ToolFailure) as err:
        check_arguments(tools(info())["make_video"], args)
    assert str(err.value) == message


def test_nested_unknown_keys_and_array_items():
    with pytest.raises(ToolFailure, match=r"run_batch: servers.0: 'ftp://x' does not match"):
        check_arguments(tools(info())["run_batch"], {"batch": "b.csv", "servers": ["ftp://x"]})
    with pytest.raises(ToolFailure, match="set.a.b: must be"):
        check_arguments(tools(info())["run_workflow"], {"workflow": "w", "set": {"a.b": [1]}})


def test_answers_and_errors_are_redacted(tmp_path, monkeypatch):
    key = "-".join(("sk", "unit", "0123456789abcdef"))
    monkeypatch.setenv("OPENAI_API_KEY", key)
    app = DigitalHumanMCP(Config(out=tmp_path / "out", allow=[tmp_path]))
    res = app.answer({"note": f"the node said {key}"})
    assert key not in res.content[0].text and "[REDACTED]" in res.structured_content["note"]
    err = app.error(f"failed with Authorization: Bearer {key}")
    assert err.is_error and key not in err.content[0].text
    # the output folder is always readable (a previous tool's result); the allowed folder too; nothing else
    assert app.policy.roots == [tmp_path.resolve(), (tmp_path / "out").resolve()]


def test_table_rows_name_existing_workflows():
    root = Path(recipes.TABLE_FILE).parents[1] / "workflows" / "api"
    for row in TABLE["video"]["routes"]:
        prompt = json.loads((root / f"{row['workflow']}.json").read_text())
        assert prompt[row["speech_node"]]["class_type"] == "DH_LoadAudio", row["workflow"]
        assert prompt[row["video_out"]]["class_type"] == "DH_SaveVideo", row["workflow"]
        assert {n["class_type"] for n in prompt.values()} <= set(row["requires_nodes"]), row["workflow"]
    for name, row in without_notes(TABLE["avatar"]["generators"]).items():
        prompt = json.loads((root / f"{row['workflow']}.json").read_text())
        assert {n["class_type"] for n in prompt.values()} <= set(row["requires_nodes"]), name


def test_a_script_in_a_cosyvoice_voice_splices_its_three_nodes(tmp_path):
    """CosyVoice 2 speaks with a model loader and a voice loader beside the speaking node: the speech
    file node becomes the speaking node (same id, same links) and the two helpers join the graph."""
    from comfyui_digitalhuman.client.workflows import FilePolicy

    portrait = tmp_path / "p.jpg"
    portrait.write_bytes(b"x")
    ob = info()
    ob["DH_CosyVoiceLoadVoice"]["input"]["required"] = {"voice_name": [["default", "Anna"], {}]}
    job = recipes.video_job({"portrait": str(portrait), "script": "Hello there.", "voice": "cosyvoice:Anna"},
                            table=TABLE, object_info=ob, policy=FilePolicy(roots=[tmp_path.resolve()]))
    prompt = job.job.prompt
    speak = prompt["2"]
    assert speak["class_type"] == "DH_CosyVoiceSpeak" and speak["inputs"]["text"] == "Hello there."
    assert speak["inputs"]["cosyvoice"] == ["2_model", 0] and speak["inputs"]["voice"] == ["2_voice", 0]
    assert prompt["2_model"]["class_type"] == "DH_LoadCosyVoice"
    assert prompt["2_voice"] == {"class_type": "DH_CosyVoiceLoadVoice", "inputs": {"voice_name": "Anna"}}
    assert prompt["4"]["inputs"]["audio"] == ["2", 0]  # the lip sync now hears the speaking node
    assert job.voice == "cosyvoice:Anna" and job.arg_inputs[("2_voice", "voice_name")] == "voice"
    with pytest.raises(recipes.UsageError, match="not one of the cosyvoice voices"):
        recipes.video_job({"portrait": str(portrait), "script": "Hi.", "voice": "cosyvoice:Nobody"},
                          table=TABLE, object_info=ob, policy=FilePolicy(roots=[tmp_path.resolve()]))


def test_live_tools_come_with_the_live_nodes_and_take_the_servers_voices():
    assert not {"live_start", "live_say", "live_stop"} & set(tools(info()))  # no Live Session node: not offered
    live = info(live=True)
    live["DH_CosyVoiceLoadVoice"]["input"]["required"]["voice_name"] = [["default", "Anna"], {}]
    got = tools(live)
    assert {"live_start", "live_say", "live_stop"} <= set(got)
    props = got["live_start"].schema["properties"]
    assert props["voice"]["enum"] == ["default", "Anna"] and got["live_start"].schema["required"] == ["portrait"]
    assert got["live_say"].schema["properties"]["mode"]["enum"] == ["repeat", "chat"]
    # live_say / live_stop drive any open session (providers' too): they need only the Live Session node
    only_routes = tools(info(live=True, without=("DH_CosyVoiceLiveVoice",)))
    assert "live_start" not in only_routes and {"live_say", "live_stop"} <= set(only_routes)
    assert not {"live_say", "live_stop"} & set(tools(None))  # never guessed without a server
    with pytest.raises(ToolFailure, match="live_start: voice: 'Bob' is not one of"):
        check_arguments(got["live_start"], {"portrait": "me.jpg", "voice": "Bob"})
    with pytest.raises(ToolFailure, match="live_say: text: is empty"):
        check_arguments(got["live_say"], {"session": "agent", "text": ""})


def test_the_live_row_names_its_workflows_nodes_and_inputs():
    root = Path(recipes.TABLE_FILE).parents[1] / "workflows" / "api"
    start = TABLE["live"]["start"]
    prompt = json.loads((root / f"{start['workflow']}.json").read_text())
    assert {n["class_type"] for n in prompt.values()} <= set(start["requires_nodes"])
    assert prompt[start["session_node"]]["class_type"] == "DH_LiveSession"
    for arg, a in start["arguments"].items():
        node, inp = a["set"].split(".")
        assert inp in prompt[node]["inputs"], (arg, a["set"])
        if "choices_of" in a:
            assert a["choices_of"].split(".")[0] == prompt[node]["class_type"], arg


def test_latentsync_is_a_second_quality_when_its_nodes_are_installed():
    with_ls = info()
    for n in ("DH_LoadLatentSync", "DH_LatentSyncLipSync"):
        with_ls[n] = {"input": {"required": {}}}
    q = tools(with_ls)["make_video"].schema["properties"]["quality"]
    assert q["enum"] == ["musetalk", "latentsync"] and q["default"] == "musetalk"
    assert tools(info())["make_video"].schema["properties"]["quality"]["enum"] == ["musetalk"]
    routes = {(r["quality"], r["driving_video"]): r["workflow"] for r in TABLE["video"]["routes"]}
    assert routes[("latentsync", False)] == "talking_head_hq" and routes[("latentsync", True)] == "digital_human_hq"
