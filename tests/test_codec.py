"""The codec: compact ASCII JSON, the same with or without CPython's C encoder, and ETags."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medusa_v2 import codec, handler

VALUES = [
    {"id": 1, "title": "Prînter \u2603 \U0001f600", "assignee": None, "ok": True, "ratio": 0.5},
    [1, -2, 2**70, 1.5e300, "", {}, [], {"a": {"b": [None, False]}}],
    'a\x00"\\/\n',
    7,
]


@pytest.mark.parametrize("value", VALUES)
def test_the_fallback_gives_the_same_text(value):
    expected = json.dumps(value, separators=(",", ":"), allow_nan=False)
    assert codec._compact_encoder(None)(value) == expected
    assert codec.encode_json_text(value) == expected
    assert codec.encode_json(value) == expected.encode("ascii")


@pytest.mark.parametrize("make_c_encoder", [None, json.encoder.c_make_encoder])
def test_either_encoder_refuses_what_json_cannot_say(make_c_encoder):
    encode = codec._compact_encoder(make_c_encoder)
    with pytest.raises(ValueError):
        encode({"x": float("nan")})
    with pytest.raises(TypeError):
        encode({"x": object()})


def test_the_c_encoder_is_used_where_there_is_one():
    assert json.encoder.c_make_encoder is not None  # CPython with its _json module
    assert codec._encode is not codec._ENCODER.encode


def test_without_the_c_encoder_the_module_falls_back():
    code = (
        "import json.encoder\n"
        "json.encoder.c_make_encoder = None\n"  # as json.encoder says a missing _json module
        "from medusa_v2 import codec\n"
        "assert codec._encode == codec._ENCODER.encode, codec._encode\n"
        "print(codec.encode_json({'a': [1, 'ü', None]}).decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == '{"a":[1,"\\u00fc",null]}'


def test_etag_of_is_the_strong_sha1_of_the_body_then_suffix():
    assert codec.etag_of(b"{}") == '"bf21a9e8fbc5a3846fb05b4fa0859e0917b2202f"'
    assert codec.etag_of(b"{}", b"\n3") == codec.etag_of(b"{}\n3")


def test_the_old_names_still_import_from_handler():
    assert handler.encode_json is codec.encode_json
    assert handler.encode_json_text is codec.encode_json_text
    assert handler.etag_of is codec.etag_of
