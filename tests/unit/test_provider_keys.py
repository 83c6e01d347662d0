"""API keys with copy-paste slips, and exception texts that leave a provider, against the fake OpenAI server.

A key with a line break, a tab, a zero-width space or a non-ASCII letter must fail where it is
read, with a message naming the variable or the file and never the value; whatever a transport
library raises must leave the provider with every form of the key removed (the raw key, its
repr/JSON escapes, pieces of it of 8 characters or more).
"""
from __future__ import annotations

import json
import logging
import traceback

import pytest

from fakeopenai import FakeOpenAI, fake_key
from comfyui_digitalhuman.providers import http as dh_http
from comfyui_digitalhuman.providers.http import ApiError, HttpClient, RetryPolicy
from comfyui_digitalhuman.providers.keys import ApiKeyError, InvalidKeyError, MissingKeyError, get_api_key
from comfyui_digitalhuman.providers.openai_images import OpenAIImages

ONE_TRY = RetryPolicy(max_tries=1)

# (tag, the slip inserted in the middle of the key, what the message must call it)
SLIPS = [
    ("newline", "\n", "line break"),
    ("crlf", "\r\n", "line break"),
    ("zwsp", "\u200b", "U+200B"),
    ("tab", "\t", "tab"),
    ("nonascii", "\u00e9", "U+00E9"),  # latin-1 encodable: it would even reach the server
    ("space", " ", "space"),
]


def slipped(tag: str, slip: str) -> str:
    k = fake_key(tag)
    return k[:11] + slip + k[11:]


def leaked_pieces(text: str, secret: str, n: int = 8) -> list[str]:
    """Every piece of ``secret`` of ``n`` characters (in its raw, repr- and JSON-escaped forms) found in ``text``."""
    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], secret.encode("unicode_escape").decode("ascii")}
    return sorted({f[i:i + n] for f in forms for i in range(len(f) - n + 1) if f[i:i + n] in text})


def full_text(exc: BaseException) -> str:
    """What a log shows of an exception: its traceback with the whole cause/context chain, and its args."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + repr(exc.args)


@pytest.fixture()
def server():
    with FakeOpenAI(api_key=fake_key("good")) as s:
        yield s


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def write_key_file(user_dir, entries: dict):
    folder = user_dir / "digitalhuman"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "keys.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


@pytest.mark.parametrize("tag, slip, called", SLIPS, ids=[s[0] for s in SLIPS])
def test_env_key_with_a_slip_is_rejected_naming_the_variable(tag, slip, called, server, monkeypatch, tmp_path, caplog):
    bad = slipped(tag, slip)
    monkeypatch.setenv("OPENAI_API_KEY", bad)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InvalidKeyError) as ei:
        OpenAIImages(base_url=server.url, user_dir=tmp_path, retry=ONE_TRY).generate("p", model="gpt-image-1")
    msg = str(ei.value)
    assert "environment variable OPENAI_API_KEY" in msg and called in msg, msg
    assert leaked_pieces(full_text(ei.value), bad) == []
    assert leaked_pieces(caplog.text, bad) == []
    assert server.requests == []  # rejected before anything was sent


@pytest.mark.parametrize("tag, slip, called", SLIPS, ids=[s[0] for s in SLIPS])
def test_file_key_with_a_slip_is_rejected_naming_the_file(tag, slip, called, server, tmp_path):
    bad = slipped(tag, slip)
    path = write_key_file(tmp_path, {"OPENAI_API_KEY": bad})
    with pytest.raises(InvalidKeyError) as ei:
        OpenAIImages(base_url=server.url, user_dir=tmp_path, retry=ONE_TRY).generate("p", model="gpt-image-1")
    msg = str(ei.value)
    assert str(path) in msg and '"OPENAI_API_KEY"' in msg and called in msg, msg
    assert leaked_pieces(full_text(ei.value), bad) == []
    assert server.requests == []


@pytest.mark.parametrize("padding", [" ", "  \n", "\t", "\r\n", "\n\n "])
def test_surrounding_whitespace_is_stripped_and_the_key_accepted(padding, server, monkeypatch, tmp_path):
    good = fake_key("good")
    monkeypatch.setenv("OPENAI_API_KEY", padding + good + padding)
    OpenAIImages(base_url=server.url, user_dir=tmp_path, retry=ONE_TRY).generate("p", model="gpt-image-1")
    monkeypatch.delenv("OPENAI_API_KEY")
    write_key_file(tmp_path, {"OPENAI_API_KEY": good + padding})
    OpenAIImages(base_url=server.url, user_dir=tmp_path, retry=ONE_TRY).generate("p", model="gpt-image-1")
    assert [r.headers["Authorization"] for r in server.requests] == [f"Bearer {good}"] * 2


def test_a_bad_env_key_is_not_silently_replaced_by_the_file(monkeypatch, tmp_path):
    write_key_file(tmp_path, {"OPENAI_API_KEY": fake_key("good")})
    monkeypatch.setenv("OPENAI_API_KEY", slipped("envbad", "\n"))
    with pytest.raises(InvalidKeyError, match="environment variable OPENAI_API_KEY"):
        get_api_key("OPENAI_API_KEY", tmp_path)


def test_a_key_file_entry_that_is_not_text_names_the_file(tmp_path):
    path = write_key_file(tmp_path, {"OPENAI_API_KEY": 1234567890123})
    with pytest.raises(InvalidKeyError) as ei:
        get_api_key("OPENAI_API_KEY", tmp_path)
    assert str(path) in str(ei.value) and "1234567890123" not in str(ei.value)


def test_key_errors_share_one_base_and_missing_still_says_where(tmp_path):
    with pytest.raises(MissingKeyError) as ei:
        get_api_key("OPENAI_API_KEY", tmp_path)
    assert isinstance(ei.value, ApiKeyError) and issubclass(InvalidKeyError, ApiKeyError)
    assert "OPENAI_API_KEY" in str(ei.value)


def test_an_explicit_key_argument_is_checked_too(server):
    bad = slipped("arg", "\u200b")
    with pytest.raises(InvalidKeyError) as ei:
        OpenAIImages(api_key=bad, base_url=server.url)
    assert "api_key" in str(ei.value) and leaked_pieces(full_text(ei.value), bad) == []


# -- whatever a transport raises leaves the provider redacted -------------------------------------

@pytest.mark.parametrize("tag, slip, status", [("hdrnl", "\n", 0), ("hdrcr", "\r\n", 0), ("hdrzw", "\u200b", 0),
                                              ("hdrsp", " ", 401)])  # a space is sent; the server echoes the key
def test_transport_errors_leave_the_base_client_redacted(tag, slip, status, server, caplog):
    """The base client does not check keys (a subclass may take one from anywhere): requests, urllib3
    and http.client then raise with the header in their text (or in the args); none of it may leave."""
    bad = slipped(tag, slip)
    caplog.set_level(logging.DEBUG)
    c = HttpClient(server.url, headers={"Authorization": f"Bearer {bad}"}, secrets=[bad], retry=ONE_TRY)
    c.service = "Test"
    with pytest.raises(ApiError) as ei:
        c.request("POST", "images/generations", json_body={"prompt": "p", "model": "gpt-image-1"})
    assert ei.value.status == status and ei.value.service == "Test"
    assert ei.value.__cause__ is None and ei.value.__context__ is None
    assert leaked_pieces(full_text(ei.value), bad) == [], full_text(ei.value)
    assert leaked_pieces(caplog.text, bad) == []


def test_redact_removes_pieces_and_escaped_forms():
    key = fake_key("redactme")
    broken = key[:9] + "\n" + key[9:]
    texts = [
        f"header value {broken!r}",                       # repr-escaped newline
        json.dumps({"auth": "Bearer " + broken}),          # JSON-escaped
        f"got '{key[4:20]}' in the middle",                # a piece, without the sk- prefix
        f"tail {key[-12:]} only",                          # the last 12 characters
        f"{key[:9]}\u00e9{key[9:]}",                       # a non-ASCII letter inside
    ]
    for t in texts:
        out = dh_http.redact(t, [broken, key])
        assert leaked_pieces(out, key) == [] and leaked_pieces(out, broken) == [], (t, out)
        assert dh_http.REDACTED in out
    assert dh_http.redact("nothing secret here: 0123", [key]) == "nothing secret here: 0123"


def test_guard_cleans_any_exception_that_carries_a_secret_and_passes_others_unchanged(server):
    key = fake_key("guard")

    class Client(HttpClient):
        service = "Guarded"

        @dh_http.guarded
        def debug_headers(self):
            raise ValueError(f"unexpected headers {dict(self.session.headers)}")  # a careless message

        @dh_http.guarded
        def plain(self):
            raise ValueError("count must be positive")

    c = Client(server.url, headers={"Authorization": f"Bearer {key}"})
    with pytest.raises(ApiError) as ei:
        c.debug_headers()
    assert ei.value.service == "Guarded" and "unexpected headers" in str(ei.value) and dh_http.REDACTED in str(ei.value)
    assert leaked_pieces(full_text(ei.value), key) == [] and ei.value.__context__ is None
    with pytest.raises(ValueError, match="count must be positive"):
        c.plain()


def test_every_public_method_of_every_api_client_is_guarded():
    """A provider added later must wrap its public methods too (this finds it by itself)."""
    import importlib
    import inspect
    import pkgutil

    import comfyui_digitalhuman.providers as pkg

    clients = []
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        clients += [c for _, c in inspect.getmembers(mod, inspect.isclass)
                    if issubclass(c, HttpClient) and c is not HttpClient and c.__module__ == mod.__name__]
    assert OpenAIImages in clients
    assert getattr(HttpClient.request, "__dh_guarded__", False)
    for cls in clients:
        for name, attr in vars(cls).items():
            if name.startswith("_") or not inspect.isfunction(attr):
                continue
            assert getattr(attr, "__dh_guarded__", False), f"{cls.__name__}.{name} is not wrapped with http.guarded"


def _clients():
    """(class, its key variable) of every API client in providers/ that reads a key."""
    from comfyui_digitalhuman.providers.did_streams import DIDStreams
    from comfyui_digitalhuman.providers.elevenlabs import ElevenLabs
    from comfyui_digitalhuman.providers.heygen_streaming import HeyGenStreaming
    from comfyui_digitalhuman.providers.liveavatar import LiveAvatar
    from comfyui_digitalhuman.providers.openai_speech import OpenAISpeech

    return [(OpenAIImages, "OPENAI_API_KEY"), (OpenAISpeech, "OPENAI_API_KEY"), (ElevenLabs, "ELEVENLABS_API_KEY"),
            (LiveAvatar, "LIVEAVATAR_API_KEY"), (HeyGenStreaming, "HEYGEN_API_KEY"), (DIDStreams, "DID_API_KEY")]


@pytest.mark.parametrize("slip", ["\n", "\u200b", "\t"], ids=["newline", "zwsp", "tab"])
def test_every_client_checks_its_key_from_env_file_and_argument(slip, monkeypatch, tmp_path):
    for i, (cls, var) in enumerate(_clients()):
        bad = slipped(f"client{i}", slip)  # not the class name: a traceback names its module, which is no leak
        monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv(var, bad)
        with pytest.raises(InvalidKeyError, match=f"environment variable {var}") as ei:
            cls(base_url="http://127.0.0.1:9", user_dir=tmp_path)
        assert leaked_pieces(full_text(ei.value), bad) == [], cls
        monkeypatch.delenv(var)
        path = write_key_file(tmp_path, {var: bad})
        with pytest.raises(InvalidKeyError) as ei:
            cls(base_url="http://127.0.0.1:9", user_dir=tmp_path)
        assert str(path) in str(ei.value) and leaked_pieces(full_text(ei.value), bad) == [], cls
        path.unlink()
        with pytest.raises(InvalidKeyError, match="api_key argument"):
            cls(api_key=bad, base_url="http://127.0.0.1:9")
        good = cls(api_key=f" {fake_key('ok')}\n", base_url="http://127.0.0.1:9")
        assert fake_key("ok") in good.secrets() and all(s == s.strip() for s in good.secrets())


# Each API's documented auth header (the contracts in each client's docstring), the variable its key
# comes from, and the client; the key travels in exactly that form and is a secret of the client.
AUTH_FORMS = [
    ("openai_base", "OpenAIClient", "OPENAI_API_KEY", "Authorization", "Bearer {}"),
    ("elevenlabs", "ElevenLabs", "ELEVENLABS_API_KEY", "xi-api-key", "{}"),
    ("liveavatar", "LiveAvatar", "LIVEAVATAR_API_KEY", "X-API-KEY", "{}"),
    ("heygen_streaming", "HeyGenStreaming", "HEYGEN_API_KEY", "X-Api-Key", "{}"),
    ("did_streams", "DIDStreams", "DID_API_KEY", "Authorization", "Basic {}"),
]


@pytest.mark.parametrize("module,cls,env,header,form", AUTH_FORMS, ids=[f[1] for f in AUTH_FORMS])
def test_each_api_key_client_sends_its_key_in_the_documented_header(module, cls, env, header, form, tmp_path,
                                                                     monkeypatch):
    import importlib

    client_cls = getattr(importlib.import_module(f"comfyui_digitalhuman.providers.{module}"), cls)
    key = fake_key(cls)
    monkeypatch.setenv(env, key)
    client = client_cls(user_dir=str(tmp_path))
    assert client.session.headers[header] == form.format(key)
    assert client.key_env == env
    assert key in client.secrets()
    assert key not in client.redact(f"the server said: {header}: {form.format(key)}")

    monkeypatch.delenv(env)
    with pytest.raises(MissingKeyError) as ei:
        client_cls(user_dir=str(tmp_path))
    assert env in str(ei.value) and client_cls.service in str(ei.value)
