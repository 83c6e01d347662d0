"""The MCP server through the SDK's own client over stdio, against a real ComfyUI with small weights:
the tool list and schemas, make_video producing a checked MP4 (from a speech file and from a script
through the OpenAI voice), progress notifications, a cancel, bad input, and no key anywhere."""
from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.request
import wave
from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from PIL import Image

from comfy_server import free_port
from test_video_roundtrip import media_facts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "scripts" / "mcp_server.py"
BASE_TOOLS = {"design_avatar", "make_video", "list_workflows", "run_workflow", "list_voices", "run_batch", "clone_voice"}
LIVE_TOOLS = {"live_start", "live_say", "live_stop"}


@pytest.fixture(scope="module")
def work(tmp_path_factory, testdata):
    """The folder the MCP server may read (a portrait, short speech) and its output folder."""
    root = tmp_path_factory.mktemp("mcp")
    allowed = root / "allowed"
    allowed.mkdir()
    shutil.copy(testdata / "s0.jpg", allowed / "me.jpg")
    with wave.open(str(testdata / "yongen.wav")) as r:  # the first 1.2 s, cut with the standard library
        params = r.getparams()
        data = r.readframes(int(params.framerate * 1.2))
    with wave.open(str(allowed / "hello.wav"), "wb") as w:
        w.setparams(params)
        w.writeframes(data)
    shutil.copy(testdata / "eng.wav", allowed / "long.wav")
    outside = root / "outside.jpg"
    shutil.copy(testdata / "s6.jpg", outside)
    return {"root": root, "allowed": allowed, "out": root / "out", "outside": outside}


def run_session(work: dict, url: str, scenario, *, extra: list[str] | None = None, env: dict | None = None):
    """Start the MCP server as an agent would (stdio, the SDK's client) and run ``scenario(session)``;
    returns its result and what the server wrote to stderr."""
    params = StdioServerParameters(command=sys.executable, args=[
        str(SERVER), "--server", url, "--out", str(work["out"]), "--allow", str(work["allowed"]), *(extra or [])],
        env=env or {})
    errlog = work["root"] / f"stderr-{time.monotonic_ns()}.log"

    async def main():
        with open(errlog, "w") as err:
            async with stdio_client(params, errlog=err) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await scenario(session)

    result = anyio.run(main)
    return result, errlog.read_text()


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


def object_info(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/object_info", timeout=60) as r:
        return json.loads(r.read())


def test_tool_list_and_schemas(comfy, work, tmp_path):
    async def scenario(session):
        return (await session.list_tools()).tools

    tools, _ = run_session(work, comfy.url, scenario)
    by_name = {t.name: t for t in tools}
    assert set(by_name) == BASE_TOOLS | LIVE_TOOLS
    info = object_info(comfy.url)
    for t in tools:
        assert t.description and len(t.description) > 80, t.name
        assert t.input_schema["type"] == "object" and t.input_schema["additionalProperties"] is False, t.name
    for t in tools:  # no tool takes a key: keys stay in the environment or the key file
        names = " ".join(t.input_schema["properties"]).lower()
        assert not any(w in names for w in ("key", "token", "secret", "password")), t.name
    mv = by_name["make_video"].input_schema
    assert mv["required"] == ["portrait"]
    assert set(mv["properties"]) == {"portrait", "script", "speech", "voice", "driving_video", "quality"}
    assert mv["properties"]["quality"]["enum"] == ["musetalk", "latentsync"]
    assert mv["properties"]["script"]["maxLength"] == 20000
    da = by_name["design_avatar"].input_schema["properties"]
    prompt_inputs = info["DH_PortraitPrompt"]["input"]["required"]
    for field in ("gender", "age_range", "preset"):
        assert da[field]["enum"] == prompt_inputs[field][0]  # the choices this ComfyUI really has
    assert da["generator"]["enum"] == ["openai", "flux"]
    assert by_name["list_voices"].input_schema["properties"]["backend"]["enum"] == ["openai", "elevenlabs", "cosyvoice"]
    assert by_name["list_workflows"].annotations.read_only_hint is True

    # a table's extra tool is offered only when its nodes are installed
    table = json.loads((REPO / "data" / "mcp_tools.json").read_text())
    table["tools"] = {
        "edit_expression": {"description": "Edit the expression of a portrait (a test row).", "workflow": "expression_edit",
                            "requires_nodes": ["DH_ExpressionEditor", "DH_LoadLivePortrait"],
                            "arguments": {"portrait": {"type": "file", "set": "portrait.image", "required": True,
                                                       "description": "The portrait."},
                                          "smile": {"type": "number", "set": "expression.smile", "minimum": -0.3,
                                                    "maximum": 1.3, "description": "Smile."}}},
        "sing": {"description": "Sing a song (needs a node this ComfyUI lacks).", "workflow": "talking_head",
                 "requires_nodes": ["DH_NoSuchSinger"], "arguments": {}},
    }
    alt = tmp_path / "tools.json"
    alt.write_text(json.dumps(table))
    tools, _ = run_session(work, comfy.url, scenario, extra=["--table", str(alt)])
    by_name = {t.name: t for t in tools}
    assert set(by_name) == (BASE_TOOLS - {"clone_voice"}) | LIVE_TOOLS | {"edit_expression"}  # no clone_voice row
    ee = by_name["edit_expression"].input_schema
    assert ee["required"] == ["portrait"] and ee["properties"]["smile"] == {
        "type": "number", "description": "Smile.", "minimum": -0.3, "maximum": 1.3}


def assert_sound_matches(mp4: Path, audio_s: float, seconds: float) -> None:
    """The MP4's sound covers the speech to within one video frame (1/25 s) and runs past it by at most
    one AAC frame: the encoder pads its last frame to 1024 samples and PyAV decodes the padding too
    (42.7 ms at 24 kHz, more than a video frame)."""
    import av

    with av.open(str(mp4)) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
    assert seconds - 1 / 25 - 1e-9 <= audio_s <= seconds + 1024 / rate + 1e-9, (audio_s, seconds, rate)


def check_progress(updates: list[tuple]) -> None:
    values = [p for p, _, _ in updates]
    assert values == sorted(values), "progress went down"
    assert updates[-1][0] == updates[-1][1], "progress did not end at its total"
    assert any(m.startswith("lip sync ") for _, _, m in updates)  # the lip-sync node's own steps came through


def test_make_video_from_a_speech_file(comfy, work):
    updates: list[tuple] = []

    async def scenario(session):
        async def progress(value, total, message):
            updates.append((value, total, message))
        result = await session.call_tool("make_video", {"portrait": str(work["allowed"] / "me.jpg"),
                                                        "speech": str(work["allowed"] / "hello.wav")},
                                         progress_callback=progress)
        await anyio.sleep(0.5)  # progress callbacks run as their own tasks: let the last ones land
        return result

    result, _ = run_session(work, comfy.url, scenario)
    assert not result.is_error, text_of(result)
    answer = result.structured_content
    mp4 = Path(answer["video"])
    assert mp4.is_file() and work["out"] in mp4.parents
    facts = media_facts(mp4)  # read independently, every packet decoded
    assert facts["frames"] == 30  # floor(1.2 s x 25 fps)
    assert_sound_matches(mp4, facts["audio_s"], 1.2)
    assert facts["size"] == (600, 704)
    assert answer["frames"] == 30 and answer["duration_s"] == pytest.approx(1.2, abs=1 / 25)
    assert answer["cost_usd"] == 0.0 and answer["workflow"] == "talking_head"
    check_progress(updates)
    assert updates[0][2].startswith("queued as prompt ")


def test_make_video_from_a_script_with_the_openai_voice(comfy, work, fake_apis):
    script = "Hello from your new digital human " * 9 + "okay"  # starts and ends with letters: no edge trim
    key = fake_apis.openai.api_key

    async def scenario(session):
        return await session.call_tool("make_video", {"portrait": str(work["allowed"] / "me.jpg"), "script": script,
                                                      "voice": "openai:nova"})

    result, stderr = run_session(work, comfy.url, scenario, env={"OPENAI_API_KEY": key})
    assert not result.is_error, text_of(result)
    answer = result.structured_content
    sent = [r.json for r in fake_apis.openai.requests if r.path == "/v1/audio/speech" and (r.json or {}).get("input") == script]
    assert len(sent) == 1 and sent[0]["voice"] == "nova" and sent[0]["model"] == "gpt-4o-mini-tts"
    # the fake voice lasts 4 ms a character (tests/fakespeech.py): 310 characters, 1.24 s, 31 frames
    seconds = len(script) * 0.004
    facts = media_facts(Path(answer["video"]))
    assert facts["frames"] == int(len(script) * 0.004 * 25 + 1e-9) == 31
    assert_sound_matches(Path(answer["video"]), facts["audio_s"], seconds)
    prices = json.loads((REPO / "data" / "prices.json").read_text())["speech"]["openai"]["gpt-4o-mini-tts"]
    assert answer["cost_usd"] == pytest.approx(answer["duration_s"] / 60 * prices["usd_per_minute"], rel=1e-6)
    assert answer["voice"] == "openai:nova"
    with urllib.request.urlopen(f"{comfy.url}/history/{answer['prompt_id']}", timeout=30) as r:
        history = r.read().decode()
    # the key never leaves the environment: not in the answer, the server's log, the prompt or its history
    assert key not in json.dumps(answer) and key not in stderr and key not in history


def test_clone_a_voice_then_make_video_in_it(comfy, work):
    """clone_voice (CosyVoice 2) saves a voice from a recording; make_video speaks a script in it; the
    MP4's length follows that speech. The default voice back-end is CosyVoice (no key, no cost)."""
    async def scenario(session):
        cloned = await session.call_tool("clone_voice", {"audio": str(work["allowed"] / "hello.wav"),
                                                         "name": "Mcp Voice", "transcript": "hello"})
        voices = await session.call_tool("list_voices", {"backend": "cosyvoice"})
        video = await session.call_tool("make_video", {"portrait": str(work["allowed"] / "me.jpg"),
                                                       "script": "Hello there, this is my own voice.",
                                                       "voice": "cosyvoice:Mcp Voice"})
        return cloned, voices, video

    saved = comfy.workdir / "models" / "cosyvoice" / "voices" / "Mcp Voice.safetensors"
    try:
        (cloned, voices, video), _ = run_session(work, comfy.url, scenario)
    finally:
        found = saved.is_file()
        saved.unlink(missing_ok=True)  # the server is shared: other tests compare its voice list with the pack's
    assert not cloned.is_error, text_of(cloned)
    assert found
    assert "cosyvoice:Mcp Voice" in [v["id"] for v in voices.structured_content["voices"]]
    assert not video.is_error, text_of(video)
    answer = video.structured_content
    facts = media_facts(Path(answer["video"]))
    assert facts["frames"] > 10
    assert_sound_matches(Path(answer["video"]), facts["audio_s"], facts["frames"] / 25)  # frames follow the speech
    assert answer["voice"] == "cosyvoice:Mcp Voice" and answer["cost_usd"] == 0.0


def start_long_run(session, work):
    """make_video on a minute of speech: (state, an event set once the lip sync reports steps, the call)."""
    state: dict = {"updates": []}
    seen = anyio.Event()

    async def progress(value, total, message):
        state["updates"].append(message)
        if message.startswith("queued as prompt "):
            state["prompt_id"] = message.split()[3]
        if message.startswith("lip sync ") and not seen.is_set():
            seen.set()

    async def call():
        with anyio.CancelScope() as scope:
            state["scope"] = scope
            state["result"] = await session.call_tool("make_video", {"portrait": str(work["allowed"] / "me.jpg"),
                                                                     "speech": str(work["allowed"] / "long.wav")},
                                                      progress_callback=progress)
        state["cancelled"] = scope.cancelled_caught

    return state, seen, call


def wait_history(url: str, prompt_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/history/{prompt_id}", timeout=30) as r:
            entry = json.loads(r.read()).get(prompt_id)
        if entry:
            return entry
        time.sleep(0.5)
    raise AssertionError(f"prompt {prompt_id} never finished")


def test_cancel_interrupts_the_run_in_comfyui(comfy, work):
    async def scenario(session):
        state, seen, call = start_long_run(session, work)
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            with anyio.fail_after(600):
                await seen.wait()
            state["scope"].cancel()  # the SDK sends notifications/cancelled for the request
        entry = await anyio.to_thread.run_sync(wait_history, comfy.url, state["prompt_id"])
        after = await session.call_tool("list_voices", {"backend": "openai"})  # the server is still serving
        return state, entry, after

    (state, entry, after), stderr = run_session(work, comfy.url, scenario)
    assert state["cancelled"] and "result" not in state  # cancelled requests get no answer (MCP)
    messages = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in messages and entry["status"]["completed"] is False
    with urllib.request.urlopen(f"{comfy.url}/queue", timeout=30) as r:
        q = json.loads(r.read())
    assert state["prompt_id"] not in {i[1] for i in q["queue_running"] + q["queue_pending"]}
    assert f"cancelled by the client: prompt {state['prompt_id']} interrupted" in stderr
    assert not after.is_error


def test_cancel_pressed_in_comfyui_returns_a_cancellation(comfy, work):
    async def scenario(session):
        state, seen, call = start_long_run(session, work)
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            with anyio.fail_after(600):
                await seen.wait()
            req = urllib.request.Request(f"{comfy.url}/interrupt", data=b"{}", headers={"Content-Type": "application/json"})
            await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(req, timeout=30).read())
        return state

    state, _ = run_session(work, comfy.url, scenario)
    result = state["result"]
    assert result.is_error
    assert text_of(result).startswith("cancelled: the run was interrupted in ComfyUI")
    assert "DH_MuseTalkLipSync" in text_of(result)


def test_design_avatar_returns_the_portrait_and_the_checks_verdict(comfy, work, fake_apis):
    async def scenario(session):
        return await session.call_tool("design_avatar", {
            "description": "a 30-year-old businessman with short dark hair", "gender": "man",
            "age_range": "adult (25-40)", "attire": "a navy suit", "preset": "enterprise spokesperson"})

    result, _ = run_session(work, comfy.url, scenario)
    assert not result.is_error, text_of(result)
    answer = result.structured_content
    sent = [r.json for r in fake_apis.openai.requests if r.path == "/v1/images/generations"
            and "businessman" in (r.json or {}).get("prompt", "")]
    assert len(sent) == 1 and "a navy suit" in sent[0]["prompt"]
    # the fake draws a 1024x1536 request as a 64x96 solid colour: the check must fail it, saying why
    assert answer["passed"] is False
    assert "no face found" in answer["reasons"] and any("too small" in r for r in answer["reasons"])
    assert answer["report"].startswith("FAIL: no face found")
    img = np.asarray(Image.open(answer["portrait"]).convert("RGB")).astype(np.int16)
    assert img.shape == (96, 64, 3)
    from fakeopenai import gen_color

    # SaveImage truncates 255 * (v / 255) in float32, which may land one level below v
    assert np.abs(img - np.array(gen_color(0))).max() <= 1
    (preview,) = [c for c in result.content if c.type == "image"]
    assert preview.mime_type == "image/jpeg" and len(preview.data) > 100
    price = json.loads((REPO / "data" / "prices.json").read_text())["images"]["gpt-image-2"]["medium"]["1024x1536"]
    assert answer["cost_usd"] == pytest.approx(price)


def test_list_voices_and_workflows(comfy, work, fake_apis):
    async def scenario(session):
        return (await session.call_tool("list_voices", {}), await session.call_tool("list_workflows", {}))

    (voices, workflows), _ = run_session(work, comfy.url, scenario, env={
        "ELEVENLABS_API_KEY": fake_apis.elevenlabs.api_key, "ELEVENLABS_BASE_URL": fake_apis.elevenlabs.url})
    v = voices.structured_content
    info = object_info(comfy.url)
    openai_ids = [x["id"] for x in v["voices"] if x["backend"] == "openai"]
    assert openai_ids == [f"openai:{n}" for n in info["DH_OpenAISpeech"]["input"]["required"]["voice"][0]]
    from fakeelevenlabs import VOICES

    assert {x["voice_id"] for x in v["voices"] if x["backend"] == "elevenlabs"} == {x["voice_id"] for x in VOICES}
    assert v["default"] == "cosyvoice:default"  # the self-hosted voice is the default back-end
    cosy = [x["id"] for x in v["voices"] if x["backend"] == "cosyvoice"]
    assert cosy and cosy == [f"cosyvoice:{n}" for n in info["DH_CosyVoiceLoadVoice"]["input"]["required"]["voice_name"][0]]
    w = {x["name"]: x for x in workflows.structured_content["workflows"]}
    assert set(w) == {p.stem for p in (REPO / "workflows" / "api").glob("*.json")}
    assert w["talking_head"]["description"].startswith("Talking head from one portrait")
    keys = {i["key"]: i for i in w["talking_head"]["inputs"]}
    assert keys["portrait.image"]["kind"] == "choice" and keys["portrait.image"]["value"] == "s0.jpg"
    assert keys["save.crf"]["kind"] == "int"


def test_run_workflow_with_overrides(comfy, work, testdata):
    wf = work["allowed"] / "invert.json"
    wf.write_text(json.dumps({
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}, "_meta": {"title": "portrait"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "mcp_invert"}}}))

    async def scenario(session):
        return await session.call_tool("run_workflow", {"workflow": str(wf), "set": {
            "portrait.image": str(work["allowed"] / "me.jpg"), "3.filename_prefix": "mcp_run"}})

    result, _ = run_session(work, comfy.url, scenario)
    assert not result.is_error, text_of(result)
    (out,) = result.structured_content["files"]
    got = np.asarray(Image.open(out).convert("RGB")).astype(np.int16)
    src = np.asarray(Image.open(testdata / "s0.jpg").convert("RGB")).astype(np.int16)
    assert Path(out).name.startswith("mcp_run") and np.abs(got - (255 - src)).max() <= 1


def test_run_batch_tool(comfy, work, testdata):
    wf = work["allowed"] / "invert_b.json"
    wf.write_text(json.dumps({
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}, "_meta": {"title": "portrait"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "mcp_batch"}}}))
    shutil.copy(testdata / "s6.jpg", work["allowed"] / "statue.jpg")
    jobs = work["allowed"] / "jobs.csv"
    jobs.write_text("id,workflow,portrait.image\n"
                    "painted,invert_b.json,me.jpg\n"
                    "statue,invert_b.json,statue.jpg\n"
                    f"escape,invert_b.json,{work['outside']}\n")
    updates: list[str] = []

    async def scenario(session):
        async def progress(value, total, message):
            updates.append(message)
        result = await session.call_tool("run_batch", {"batch": str(jobs), "servers": [comfy.url]},
                                         progress_callback=progress)
        await anyio.sleep(0.5)
        return result

    result, _ = run_session(work, comfy.url, scenario)
    assert not result.is_error, text_of(result)
    answer = result.structured_content
    assert answer["counts"] == {"done": 2, "failed": 1} and answer["all_done"] is False
    rows = {r["id"]: r for r in answer["jobs"]}
    assert "outside the allowed folders" in rows["escape"]["reason"]  # a batch row obeys the same file policy
    manifest = Path(answer["manifest"])
    assert manifest.is_file() and work["out"] in manifest.parents
    for name, src in (("painted", "s0.jpg"), ("statue", "s6.jpg")):
        (rel,) = rows[name]["outputs"]
        got = np.asarray(Image.open(manifest.parent / rel).convert("RGB")).astype(np.int16)
        ref = np.asarray(Image.open(testdata / src).convert("RGB")).astype(np.int16)
        assert np.abs(got - (255 - ref)).max() <= 1, name  # each job got its own picture
    assert any(": done on " in m for m in updates) and "painted" in answer["table"]


def test_bad_input_comes_back_as_readable_tool_errors(comfy, work):
    rejected = work["allowed"] / "rejected.json"
    rejected.write_text(json.dumps({"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}))
    portrait = str(work["allowed"] / "me.jpg")
    calls = {
        "unknown argument": ("make_video", {"portrait": portrait, "script": "Hi", "colour": "red"}),
        "outside folders": ("make_video", {"portrait": str(work["outside"]), "script": "Hi"}),
        "empty script": ("make_video", {"portrait": portrait, "script": ""}),
        "long script": ("make_video", {"portrait": portrait, "script": "word " * 10_000}),
        "no speech": ("make_video", {"portrait": portrait}),
        "rejected workflow": ("run_workflow", {"workflow": str(rejected)}),
        "rejected value": ("run_workflow", {"workflow": "talking_head", "set": {"speech.audio": "nosuch.wav"}}),
        "unknown tool": ("make_coffee", {}),
        "bad type": ("run_batch", {"batch": 3}),
    }

    async def scenario(session):
        return {k: await session.call_tool(name, args) for k, (name, args) in calls.items()}

    results, stderr = run_session(work, comfy.url, scenario)
    text = {k: text_of(r) for k, r in results.items()}
    assert all(r.is_error for r in results.values()), text
    assert "unknown argument colour (make_video takes: portrait, script, speech, voice, driving_video, quality)" in text["unknown argument"]
    assert "portrait:" in text["outside folders"] and "is outside the allowed folders" in text["outside folders"]
    assert "script: is empty" in text["empty script"]
    assert "script: has 50,000 characters; at most 20,000 allowed" in text["long script"]
    assert "give script (text to speak) or speech (a speech file)" in text["no speech"]
    assert "ComfyUI rejected the workflow" in text["rejected workflow"] and "node 1 (SaveImage)" in text["rejected workflow"]
    assert "images" in text["rejected workflow"]
    # the override behind the input ComfyUI refused is named first
    assert text["rejected value"].startswith("set['speech.audio']: ComfyUI rejected the workflow"), text["rejected value"]
    assert "node 2 (DH_LoadAudio)" in text["rejected value"] and "[input 'audio']" in text["rejected value"]
    assert "unknown tool 'make_coffee'" in text["unknown tool"]
    assert "batch: must be string" in text["bad type"]
    assert not any("Traceback" in t for t in text.values()) and "Traceback" not in stderr


def test_a_server_that_is_down_is_a_tool_error(work):
    url = f"http://127.0.0.1:{free_port()}"

    async def scenario(session):
        tools = (await session.list_tools()).tools
        return tools, await session.call_tool("make_video", {"portrait": str(work["allowed"] / "me.jpg"), "script": "Hi"})

    (tools, result), _ = run_session(work, url, scenario, extra=["--no-start"])
    # listed from the table, less the tools whose nodes only a running server can vouch for; the call says what is wrong
    assert {t.name for t in tools} == BASE_TOOLS - {"clone_voice"}  # and no live_*
    assert result.is_error and f"ComfyUI at {url} does not answer" in text_of(result)


def test_starts_a_comfyui_on_demand_and_stops_it_after(comfy, work):
    """No ComfyUI at the address: the server starts one there (as the runner does), lists the tools of
    that server once it answers, and takes it down when the agent closes the session."""
    from comfy_server import server_alive

    url = f"http://127.0.0.1:{free_port()}"

    async def scenario(session):
        listed = await session.call_tool("list_workflows", {})  # waits for the started server
        alive = await anyio.to_thread.run_sync(server_alive, url)
        tools = (await session.list_tools()).tools
        return listed, alive, tools

    (listed, alive, tools), stderr = run_session(work, url, scenario, extra=["--comfyui", str(comfy.comfyui)])
    assert not listed.is_error, text_of(listed)
    assert alive and f"no ComfyUI at {url}; starting one" in stderr
    assert {t.name for t in tools} == BASE_TOOLS | LIVE_TOOLS
    deadline = time.monotonic() + 30
    while server_alive(url) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not server_alive(url)  # stopped with the session


def test_a_live_session_started_made_to_speak_and_stopped(comfy, work):
    """live_start runs the shipped CosyVoice live workflow (small weights) and gives the page; live_say
    waits until the avatar has said the text and reports the latencies; chat mode through a chat
    server on this machine; live_stop closes it (gone from the list, its page's session ends)."""
    from fakechat import FakeChat

    with FakeChat() as chat:
        async def scenario(session):
            started = await session.call_tool("live_start", {
                "portrait": str(work["allowed"] / "me.jpg"), "name": "mcp desk", "max_side": 256,
                "chat_base_url": chat.url, "chat_model": "local"})
            said = await session.call_tool("live_say", {"session": "mcp desk", "text": "Good morning, welcome."})
            answered = await session.call_tool("live_say", {"session": "mcp desk", "text": "What time is it",
                                                            "mode": "chat"})
            wrong = await session.call_tool("live_say", {"session": "no such desk", "text": "Hello"})
            stopped = await session.call_tool("live_stop", {"session": "mcp desk"})
            again = await session.call_tool("live_say", {"session": "mcp desk", "text": "Hello"})
            return started, said, answered, wrong, stopped, again

        (started, said, answered, wrong, stopped, again), _ = run_session(work, comfy.url, scenario)
    assert not started.is_error, text_of(started)
    s = started.structured_content
    assert s["name"] == "mcp desk" and s["page"].startswith(comfy.url + "/digitalhuman/live/page#s=" + s["session"])
    assert set(s["modes"]) >= {"repeat", "chat"}
    with urllib.request.urlopen(s["page"].split("#")[0], timeout=30) as r:
        assert r.status == 200 and b"<html" in r.read(2000).lower()
    assert not said.is_error, text_of(said)
    a = said.structured_content
    assert a["finished"] and a["error"] is None and "Good morning" in a["said"]
    assert 0 < a["latency_ms"]["first_audio_ms"] <= a["latency_ms"]["first_frame_ms"]
    assert not answered.is_error, text_of(answered)
    c = answered.structured_content
    assert c["finished"] and c["answer"].startswith("You said: What time is it") and "You said" in c["said"]
    assert wrong.is_error and "no open live session called 'no such desk'" in text_of(wrong) and "'mcp desk'" in text_of(wrong)
    assert not stopped.is_error, text_of(stopped)
    assert stopped.structured_content["closed"] is True
    assert again.is_error and "no open live session called 'mcp desk'" in text_of(again)
    with urllib.request.urlopen(f"{comfy.url}/digitalhuman/live/sessions", timeout=30) as r:
        assert all(x["id"] != s["session"] for x in json.loads(r.read())["sessions"])


def test_make_video_in_latentsync_quality(comfy, work, tmp_path):
    """quality 'latentsync' runs the LatentSync route (portrait, no driving video: talking_head_hq) and
    gives a checked MP4. The route's workflow is the shipped one made cheap for the CPU (version 1.5 at
    256 px, one step, no guidance batch), passed as a path in a copy of the tool table."""
    table = json.loads((REPO / "data" / "mcp_tools.json").read_text())
    (route,) = [r for r in table["video"]["routes"] if r["quality"] == "latentsync" and not r["driving_video"]]
    prompt = json.loads((REPO / "workflows" / "api" / f"{route['workflow']}.json").read_text())
    assert [n["class_type"] for n in prompt.values()] == ["LoadImage", "DH_LoadAudio", "DH_LoadLatentSync",
                                                         "DH_LatentSyncLipSync", "DH_SaveVideo"]
    prompt["3"]["inputs"]["version"] = "1.5"
    prompt["4"]["inputs"].update(steps=1, guidance=1.0)
    prompt["5"]["inputs"]["preset"] = "ultrafast"
    cheap = work["allowed"] / "talking_head_hq_cheap.json"
    cheap.write_text(json.dumps(prompt))
    route["workflow"] = str(cheap)
    alt = tmp_path / "tools.json"
    alt.write_text(json.dumps(table))

    async def scenario(session):
        return await session.call_tool("make_video", {"portrait": str(work["allowed"] / "me.jpg"),
                                                      "speech": str(work["allowed"] / "hello.wav"),
                                                      "quality": "latentsync"})

    result, _ = run_session(work, comfy.url, scenario, extra=["--table", str(alt)])
    assert not result.is_error, text_of(result)
    answer = result.structured_content
    assert answer["quality"] == "latentsync" and answer["workflow"] == str(cheap)
    facts = media_facts(Path(answer["video"]))
    assert facts["frames"] == 30  # floor(1.2 s x 25)
    assert_sound_matches(Path(answer["video"]), facts["audio_s"], facts["frames"] / 25)
