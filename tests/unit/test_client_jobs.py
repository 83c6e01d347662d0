"""client/ without a server: overrides and the file policy, the video and portrait recipes of the tool
table, voice splicing, the portrait check's verdict, prompt progress, cost estimates, batch rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_digitalhuman.client import batch, costs, recipes
from comfyui_digitalhuman.client.jobs import upload_name
from comfyui_digitalhuman.client.progress import PromptProgress
from comfyui_digitalhuman.client.workflows import (FilePolicy, UsageError, load_workflow, prepare, settable_inputs,
                                                   shipped_workflows)

REPO = Path(__file__).resolve().parents[2]
TABLE = recipes.load_table()
PRICES = json.loads((REPO / "data" / "prices.json").read_text())
# /object_info entries in ComfyUI's shape for the combos the recipes check (values from data/speech.json).
SPEECH = json.loads((REPO / "data" / "speech.json").read_text())
OBJECT_INFO = {
    "DH_OpenAISpeech": {"input": {"required": {"text": ["STRING", {}], "voice": [SPEECH["openai"]["voices"], {}]}}},
    "DH_ElevenLabsSpeech": {"input": {"required": {"text": ["STRING", {}], "voice": ["STRING", {}]}}},
    **{n: {"input": {"required": {}}} for n in ("LoadImage", "DH_LoadAudio", "DH_LoadMuseTalk", "DH_MuseTalkLipSync",
                                                 "DH_SaveVideo", "DH_LoadVideo", "DH_LoadLivePortrait",
                                                 "DH_LivePortraitAnimate")},
}


@pytest.fixture
def files(tmp_path, testdata):
    """The allowed folder holds copies of a real portrait and a speech file; ``outside`` is elsewhere."""
    import shutil

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(testdata / "s0.jpg", allowed / "me.jpg")
    shutil.copy(testdata / "yongen.wav", allowed / "hello.wav")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((testdata / "s6.jpg").read_bytes())
    return allowed, outside


def test_overrides_by_title_id_and_class_type_and_local_files(files):
    allowed, _ = files
    prompt = load_workflow("talking_head")
    job = prepare(prompt, {"portrait.image": "me.jpg", "DH_SaveVideo.crf": "23", "4.blend_mode": "\"face\""},
                  policy=FilePolicy.under([allowed]), base=allowed)
    assert job.uploads == [("1", "image", (allowed / "me.jpg").resolve())]
    assert job.prompt["5"]["inputs"]["crf"] == 23 and job.prompt["4"]["inputs"]["blend_mode"] == "face"
    assert prompt["5"]["inputs"]["crf"] == 19  # the loaded workflow itself is untouched
    # a value naming no local file is an ordinary value (a file already in ComfyUI's input folder)
    job = prepare(prompt, {"portrait.image": "s0.jpg"}, policy=FilePolicy.under([allowed]), base=allowed)
    assert job.uploads == [] and job.prompt["1"]["inputs"]["image"] == "s0.jpg"


def test_file_policy_refuses_files_outside_the_allowed_folders(files):
    allowed, outside = files
    prompt = load_workflow("talking_head")
    with pytest.raises(UsageError, match=r"override portrait.image: .*outside.jpg' is outside the allowed folders"):
        prepare(prompt, {"portrait.image": str(outside)}, policy=FilePolicy.under([allowed]))
    # a symlink inside the allowed folder that points out of it is judged by its target
    (allowed / "link.jpg").symlink_to(outside)
    with pytest.raises(UsageError, match="outside the allowed folders"):
        prepare(prompt, {"portrait.image": "link.jpg"}, policy=FilePolicy.under([allowed]), base=allowed)
    # the command line (no policy) takes any file the user names
    assert prepare(prompt, {"portrait.image": str(outside)}).uploads[0][2] == outside.resolve()


def test_workflow_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(UsageError, match="workflow 'nope' not found; shipped API workflows: .*talking_head"):
        load_workflow("nope")
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(UsageError, match="UI-format workflow"):
        load_workflow(str(ui))
    with pytest.raises(UsageError, match="no node 'nosuch' in the workflow"):
        prepare(load_workflow("talking_head"), {"nosuch.x": "1"})
    with pytest.raises(UsageError, match="expected NODE.INPUT"):
        prepare(load_workflow("talking_head"), {"noinput": "1"})


def test_settable_inputs_list_literals_with_kinds():
    prompt = load_workflow("talking_head")
    info = {"DH_SaveVideo": {"input": {"required": {"crf": ["INT", {"tooltip": "quality"}],
                                                     "preset": [["fast", "medium"], {}]}}}}
    entries = {e["key"]: e for e in settable_inputs(prompt, info)}
    assert entries["portrait.image"]["value"] == "s0.jpg"
    assert entries["save.crf"]["kind"] == "int" and entries["save.crf"]["tooltip"] == "quality"
    assert entries["save.preset"]["choices"] == ["fast", "medium"]
    assert "lip sync.audio" not in entries  # links are not overrides
    assert set(shipped_workflows()) >= {"talking_head", "digital_human", "avatar_openai"}


def test_video_job_speech_file_route(files):
    allowed, _ = files
    vj = recipes.video_job({"portrait": "me.jpg", "speech": "hello.wav"}, table=TABLE, object_info=OBJECT_INFO,
                           policy=FilePolicy.under([allowed]), base=allowed)
    assert vj.route["workflow"] == "talking_head" and vj.voice == ""
    assert {(n, i) for n, i, _ in vj.job.uploads} == {("1", "image"), ("2", "audio")}
    assert vj.arg_inputs == {("1", "image"): "portrait", ("2", "audio"): "speech"}


def test_video_job_script_splices_the_voice_node(files):
    allowed, _ = files
    vj = recipes.video_job({"portrait": "me.jpg", "script": "Hello there.", "voice": "openai:nova"}, table=TABLE,
                           object_info=OBJECT_INFO, policy=FilePolicy.under([allowed]), base=allowed)
    node = vj.job.prompt["2"]
    assert node["class_type"] == "DH_OpenAISpeech"
    assert node["inputs"]["text"] == "Hello there." and node["inputs"]["voice"] == "nova"
    assert node["inputs"]["model"] == TABLE["video"]["voices"]["openai"]["inputs"]["model"]
    assert vj.job.prompt["4"]["inputs"]["audio"] == ["2", 0] and vj.voice == "openai:nova"
    # a bare name takes the default back-end, empty its default voice
    vj = recipes.video_job({"portrait": "me.jpg", "script": "Hi"}, table=TABLE, object_info=OBJECT_INFO,
                           policy=FilePolicy.under([allowed]), base=allowed)
    assert vj.voice == "openai:" + TABLE["video"]["voices"]["openai"]["default_voice"]
    vj = recipes.video_job({"portrait": "me.jpg", "script": "Hi", "voice": "elevenlabs:Rachel"}, table=TABLE,
                           object_info=OBJECT_INFO, policy=FilePolicy.under([allowed]), base=allowed)
    assert vj.job.prompt["2"]["class_type"] == "DH_ElevenLabsSpeech" and vj.job.prompt["2"]["inputs"]["voice"] == "Rachel"


def test_splice_moves_links_to_the_voice_output_slot():
    prompt = load_workflow("talking_head")
    row = {"node": "X_Voice", "text_input": "t", "voice_input": "v", "audio_output": 2, "inputs": {"k": 1}}
    recipes.splice_voice(prompt, "2", row, "text", "who")
    assert prompt["2"] == {"class_type": "X_Voice", "inputs": {"k": 1, "t": "text", "v": "who"},
                           "_meta": {"title": "speech"}}
    assert prompt["4"]["inputs"]["audio"] == ["2", 2]


def test_video_job_driving_video_route(files, testdata):
    allowed, _ = files
    import shutil

    shutil.copy(testdata / "d20.mp4", allowed / "drive.mp4")
    vj = recipes.video_job({"portrait": "me.jpg", "speech": "hello.wav", "driving_video": "drive.mp4"}, table=TABLE,
                           object_info=OBJECT_INFO, policy=FilePolicy.under([allowed]), base=allowed)
    assert vj.route["workflow"] == "digital_human"
    assert vj.arg_inputs[("2", "video")] == "driving_video" and vj.arg_inputs[("3", "audio")] == "speech"


@pytest.mark.parametrize("args, message", [
    ({"speech": "hello.wav"}, "portrait: give the path of a local file"),
    ({"portrait": "me.jpg"}, "give script .* or speech"),
    ({"portrait": "me.jpg", "script": ""}, "script: is empty"),
    ({"portrait": "me.jpg", "script": "   \n "}, "script: has only white space"),
    ({"portrait": "me.jpg", "script": "x" * 50_000}, "script: has 50,000 characters; make_video takes 1 to 20,000"),
    ({"portrait": "me.jpg", "script": "Hi", "speech": "hello.wav"}, "either script .* or speech .*, not both"),
    ({"portrait": "me.jpg", "speech": "hello.wav", "voice": "openai:nova"}, "voice: only a script is spoken"),
    ({"portrait": "me.jpg", "script": "Hi", "voice": "openai:robot"}, "voice: 'robot' is not one of the openai voices"),
    ({"portrait": "me.jpg", "script": "Hi", "voice": "acme:x"}, "voice: unknown voice back-end 'acme'"),
    ({"portrait": "me.jpg", "script": "Hi", "quality": "latentsync"}, "quality: 'latentsync' is not available"),
    ({"portrait": "missing.jpg", "script": "Hi"}, "portrait: no such file 'missing.jpg'"),
    ({"portrait": "me.jpg", "script": "Hi", "colour": "red"}, "unknown video field.*colour"),
])
def test_video_job_bad_input_names_the_argument(files, args, message):
    allowed, _ = files
    with pytest.raises(UsageError, match=message):
        recipes.video_job(args, table=TABLE, object_info=OBJECT_INFO, policy=FilePolicy.under([allowed]), base=allowed)


def test_rows_need_their_nodes():
    routes = recipes.video_routes(TABLE, OBJECT_INFO)
    assert [r["workflow"] for r in routes] == ["talking_head", "digital_human"]
    no_liveportrait = {k: v for k, v in OBJECT_INFO.items() if "LivePortrait" not in k}
    assert [r["workflow"] for r in recipes.video_routes(TABLE, no_liveportrait)] == ["talking_head"]
    assert set(recipes.voice_backends(TABLE, {k: v for k, v in OBJECT_INFO.items() if k != "DH_ElevenLabsSpeech"})) == {"openai"}
    assert recipes.workflow_tools(TABLE, OBJECT_INFO) == {}  # no extra tool is installed here
    assert recipes.workflow_tools(TABLE, None) == {}  # and none is guessed without a server


def test_avatar_job_fills_the_prompt_node_and_a_new_seed():
    aj = recipes.avatar_job({"description": "a businessman", "gender": "man", "attire": "a navy suit"}, table=TABLE,
                            object_info=None, policy=FilePolicy(), seed=1234)
    p = aj.job.prompt
    assert aj.generator == "openai" and aj.check_node == "3" and aj.portrait_node == "4"
    assert p["1"]["inputs"]["description"] == "a businessman" and p["1"]["inputs"]["attire"] == "a navy suit"
    assert p["2"]["inputs"]["run_id"] == 1234
    flux = recipes.avatar_job({"generator": "flux", "checkpoint": "my_flux.safetensors"}, table=TABLE,
                              object_info=None, policy=FilePolicy(), seed=7)
    assert flux.job.prompt["6"]["inputs"]["seed"] == 7 and flux.job.prompt["2"]["inputs"]["ckpt_name"] == "my_flux.safetensors"
    assert flux.portrait_node == "9" and flux.arg_inputs[("2", "ckpt_name")] == "checkpoint"
    with pytest.raises(UsageError, match="checkpoint: the 'openai' generator takes no checkpoint"):
        recipes.avatar_job({"checkpoint": "x"}, table=TABLE, object_info=None, policy=FilePolicy())


def test_parse_check_reads_the_engines_report():
    from comfyui_digitalhuman.engine.avatar.portrait_check import Check, PortraitReport

    ok = PortraitReport([Check("faces", "pass", 1)], num_faces=1, image_size=(704, 600))
    bad = PortraitReport([Check("faces", "fail", 0, reason="no face found"),
                          Check("resolution", "fail", 64, reason="image too small")], image_size=(96, 64))
    assert recipes.parse_check(ok.text()) == (True, [])
    assert recipes.parse_check(bad.text()) == (False, ["no face found", "image too small"])
    with pytest.raises(ValueError):
        recipes.parse_check("something else")


# How a run ends: the 2024 ComfyUI sends ``executing`` with no node; today's sends
# ``execution_success`` before it, and ComfyClient stops following at the first of the two.
ENDINGS = {"2024": [("executing", {"node": None})], "today": [("execution_success", {})]}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_prompt_progress_rises_to_the_node_count(ending):
    prompt = load_workflow("talking_head")
    p = PromptProgress(prompt)
    events = [("execution_start", {}), ("execution_cached", {"nodes": ["3"]}), ("executing", {"node": "1"}),
              ("executing", {"node": "2"}), ("executing", {"node": "4"}),
              *[("progress", {"node": "4", "value": v, "max": 10}) for v in (1, 5, 10)],
              ("executing", {"node": "5"}), ("progress", {"node": "5", "value": 3, "max": 30}),
              *ENDINGS[ending]]
    seen = []
    for e in events:
        p.update(*e)
        seen.append((p.value, p.message))
    values = [v for v, _ in seen]
    assert values == sorted(values) and values[-1] == p.total == len(prompt)
    assert ("lip sync 5/10" in [m for _, m in seen]) and seen[-1][1] == "finished"
    # 3 cached + 1 + 2 done while node 4 is at 5/10: 3 + 0.5
    assert seen[6][0] == pytest.approx(3.5)


def test_cost_estimates_follow_the_price_table():
    prompt = {"1": {"class_type": "DH_OpenAISpeech", "inputs": {"model": "tts-1", "text": "a" * 1000}},
              "2": {"class_type": "DH_OpenAIImage", "inputs": {"model": "gpt-image-1", "quality": "high",
                                                                "size": "1024x1536", "count": 2, "prompt": ["9", 0]}},
              "3": {"class_type": "DH_ElevenLabsSpeech", "inputs": {"model": "eleven_flash_v2_5", "text": "b" * 400}},
              "4": {"class_type": "DH_MuseTalkLipSync", "inputs": {}}}
    est = costs.estimate(prompt)
    tts = 1000 * PRICES["speech"]["openai"]["tts-1"]["usd_per_1m_chars"] / 1e6
    img = 2 * PRICES["images"]["gpt-image-1"]["high"]["1024x1536"]
    el = PRICES["speech"]["elevenlabs"]
    eleven = 400 * el["credits_per_char"]["eleven_flash_v2_5"] * el["usd_per_credit"][el["plan"]]
    assert est.usd == pytest.approx(tts + img + eleven, rel=1e-9)
    per_minute = costs.estimate({"1": {"class_type": "DH_OpenAISpeech", "inputs": {"model": "gpt-4o-mini-tts", "text": "hi"}}},
                                audio_seconds=90.0)
    assert per_minute.usd == pytest.approx(1.5 * PRICES["speech"]["openai"]["gpt-4o-mini-tts"]["usd_per_minute"])
    assert costs.estimate(load_workflow("talking_head")).basis == "local steps only: no API cost"


def test_upload_names_follow_the_content(tmp_path):
    a, b, c = tmp_path / "my portrait.JPG", tmp_path / "x" / "my portrait.JPG", tmp_path / "other.jpg"
    b.parent.mkdir()
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    c.write_bytes(b"one")
    na, nb, nc = upload_name(a), upload_name(b), upload_name(c)
    assert na.startswith("my_portrait-") and na.endswith(".jpg") and na != nb
    assert na.split("-")[1] == nc.split("-")[1]  # same bytes, same digest


def test_batch_rows_from_csv_and_jsonl(tmp_path):
    csv_file = tmp_path / "jobs.csv"
    csv_file.write_text("id,workflow,portrait.image,portrait,script,voice\n"
                        "a,talking_head,me.jpg,,,\n"
                        ",,,me.jpg,Hello there,openai:nova\n"
                        "a,talking_head,x.jpg,,,\n"
                        "b,talking_head,me.jpg,me.jpg,,\n")
    rows = batch.read_rows(csv_file)
    assert [r.id for r in rows] == ["a", "job0003", "a", "b"]
    assert rows[0].spec == {"workflow": "talking_head", "set": {"portrait.image": "me.jpg"}} and not rows[0].error
    assert rows[1].spec == {"video": {"portrait": "me.jpg", "script": "Hello there", "voice": "openai:nova"}}
    assert "id 'a' is used on line 2 too" in rows[2].error
    assert "a video row (portrait) takes no workflow" in rows[3].error
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("workflow,colour\ntalking_head,red\n")
    with pytest.raises(UsageError, match="column\\(s\\) colour are neither"):
        batch.read_rows(bad_header)
    jl = tmp_path / "jobs.jsonl"
    jl.write_text('{"workflow": "talking_head", "set": {"portrait.image": "me.jpg"}, "save.crf": 23}\n'
                  "\n# a comment\n"
                  "not json\n"
                  '{"portrait": "me.jpg", "speech": "a.wav"}\n'
                  '{"set": {"portrait.image": "me.jpg"}}\n')
    rows = batch.read_rows(jl)
    assert rows[0].spec == {"workflow": "talking_head", "set": {"portrait.image": "me.jpg", "save.crf": 23}}
    assert rows[1].line == 4 and "not a JSON object" in rows[1].error
    assert rows[2].spec == {"video": {"portrait": "me.jpg", "speech": "a.wav"}}
    assert "no workflow" in rows[3].error
    assert batch.read_rows(jl, default_workflow="digital_human")[3].spec["workflow"] == "digital_human"
