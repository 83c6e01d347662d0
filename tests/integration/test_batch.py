"""Batch runs against two real ComfyUI servers on loopback, one of them killed in the middle of a job:
its jobs move to the other, nothing is lost or done twice, bad rows fail alone, and a rerun of the
same batch skips what is finished."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import urllib.request
import wave
from pathlib import Path

import pytest

from comfyui_digitalhuman.client.batch import BatchOptions, run_batch_file
from comfyui_digitalhuman.client.launch import ComfyServer
from test_video_roundtrip import media_facts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Four speech lengths, so every job has its own prompt (ComfyUI would reuse a cached identical one) and
# its own expected frame count: a job's MP4 with another job's length would be caught.
SPEECH_S = {"a": 1.0, "b": 1.2, "c": 1.4, "d": 1.6}


def cut_wav(src: Path, dest: Path, seconds: float) -> None:
    """The first ``seconds`` of a WAV, with the standard library (an input independent of our audio code)."""
    with wave.open(str(src)) as r:
        params = r.getparams()
        data = r.readframes(int(round(params.framerate * seconds)))
    with wave.open(str(dest), "wb") as w:
        w.setparams(params)
        w.writeframes(data)


@pytest.fixture(scope="module")
def comfy_b(comfy, tmp_path_factory):
    """A second ComfyUI like the session's (same environment, own folders), to be killed by a test."""
    workdir = tmp_path_factory.mktemp("comfyui_b")
    server = ComfyServer(comfyui=comfy.comfyui, workdir=workdir, env={**comfy.env, "DH_MODELS_DIR": str(workdir / "models")})
    server.start(timeout=300)
    yield server
    server.cleanup()


def history_ids(url: str) -> set[str]:
    with urllib.request.urlopen(f"{url}/history", timeout=30) as r:
        return set(json.loads(r.read()))


@pytest.fixture(scope="module")
def batch_run(comfy, comfy_b, testdata, tmp_path_factory):
    """Run a JSONL batch over both servers and kill server B as soon as it starts executing a job."""
    folder = tmp_path_factory.mktemp("batch")
    shutil.copy(testdata / "s0.jpg", folder / "me.jpg")
    for name, seconds in SPEECH_S.items():
        cut_wav(testdata / "yongen.wav", folder / f"{name}.wav", seconds)
    rows = [{"id": name, "portrait": "me.jpg", "speech": f"{name}.wav"} for name in SPEECH_S]
    rows += [{"id": "nofile", "portrait": "me.jpg", "speech": "missing.wav"},
             {"id": "badwf", "workflow": "nosuch", "portrait.image": "me.jpg"},
             {"id": "rejected", "workflow": "talking_head", "portrait.image": "me.jpg", "speech.audio": "a.wav",
              "save.preset": "nosuchpreset"}]
    jobs = folder / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = folder / "out"
    before = history_ids(comfy.url)
    killed: list[str] = []
    lines: list[str] = []

    def on_event(job_id: str, server: str, etype: str, data: dict) -> None:
        if server == comfy_b.url and etype == "executing" and data.get("node") and not killed:
            comfy_b.proc.kill()  # SIGKILL: no goodbye on the WebSocket, in the middle of the job
            killed.append(job_id)

    opts = BatchOptions(servers=[comfy.url, comfy_b.url], out_dir=out, queue_depth=2, timeout=900)
    summary = asyncio.run(run_batch_file(jobs, opts, log=lines.append, on_event=on_event))
    return {"summary": summary, "killed": killed, "lines": lines, "jobs": jobs, "out": out, "before": before,
            "manifest": json.loads((out / "manifest.json").read_text())}


def test_killed_server_jobs_move_to_the_other_and_nothing_is_lost(batch_run, comfy, comfy_b):
    summary, manifest, out = batch_run["summary"], batch_run["manifest"], batch_run["out"]
    assert len(batch_run["killed"]) == 1, batch_run["lines"]
    (victim,) = batch_run["killed"]
    assert victim in SPEECH_S
    assert comfy_b.proc.poll() is not None  # B really is gone
    assert summary.servers[comfy_b.url].startswith("stopped answering")
    assert summary.counts == {"done": 4, "failed": 3}, summary.table()
    jobs = manifest["jobs"]
    for name, seconds in SPEECH_S.items():
        entry = jobs[name]
        assert entry["state"] == "done"
        assert entry["attempts"][-1]["server"] == comfy.url and entry["attempts"][-1]["result"] == "done"
        (rel,) = entry["outputs"]  # exactly one output per job, in the job's own folder
        assert rel.startswith(f"{name}/") and rel.endswith(".mp4")
        facts = media_facts(out / rel)
        assert facts["frames"] == int(seconds * 25), (name, facts)  # floor(seconds x fps) of its own speech
        assert facts["audio_s"] == pytest.approx(seconds, abs=1 / 25)
    lost = jobs[victim]["attempts"]
    assert [a["server"] for a in lost] == [comfy_b.url, comfy.url]
    assert lost[0]["result"] == "server lost while running"
    assert any(f"{victim}: server lost while running" in line and "back in the queue" in line for line in batch_run["lines"])
    # nothing done twice: one MP4 per job on disk, and server A ran each job's prompt exactly once
    assert len(list(out.rglob("*.mp4"))) == 4
    done_ids = [jobs[n]["attempts"][-1]["prompt_id"] for n in SPEECH_S]
    new = history_ids(comfy.url) - batch_run["before"]
    assert set(done_ids) <= new and len(set(done_ids)) == 4
    assert len(new) == 4  # the rejected row never entered the history (refused at /prompt)


def test_bad_rows_fail_alone_with_their_reasons(batch_run):
    jobs = batch_run["manifest"]["jobs"]
    assert jobs["nofile"]["state"] == "failed" and "speech: no such file 'missing.wav'" in jobs["nofile"]["error"]
    assert jobs["nofile"]["error"].startswith("line 5:")
    assert jobs["badwf"]["state"] == "failed" and "workflow 'nosuch' not found" in jobs["badwf"]["error"]
    assert jobs["rejected"]["state"] == "failed"
    assert "ComfyUI rejected the workflow" in jobs["rejected"]["error"] and "[input 'preset']" in jobs["rejected"]["error"]
    table = batch_run["summary"].table()
    assert "4 done, 0 skipped (done before), 3 failed, 0 not run" in table
    for name in ("nofile", "badwf", "rejected"):
        assert any(line.startswith(name) and "failed" in line for line in table.splitlines())


def test_rerun_of_the_same_batch_skips_finished_jobs(batch_run, comfy):
    before = history_ids(comfy.url)
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "run_workflow.py"), "--batch", str(batch_run["jobs"]),
                          "--server", comfy.url, "--out", str(batch_run["out"])],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stdout + res.stderr  # the bad rows still fail
    assert "0 done, 4 skipped (done before), 3 failed" in res.stdout, res.stdout
    for name in SPEECH_S:
        assert any(line.startswith(name) and " skipped " in line for line in res.stdout.splitlines()), res.stdout
    assert history_ids(comfy.url) == before  # nothing was run again
    manifest = json.loads((batch_run["out"] / "manifest.json").read_text())
    assert all(manifest["jobs"][n]["state"] == "done" for n in SPEECH_S)
