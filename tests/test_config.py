"""Tests for medusa_v2.config and medusa_v2.settings."""

import dataclasses
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from medusa_v2.config import CONFIGSPEC, ConfigError, default_config_path, load_config, write_settings
from medusa_v2.settings import Settings, SettingsError

SAMPLE = Path(__file__).resolve().parent.parent / "conf" / "config.ini.sample"
SECRET = "s3cret-Value-42"

MEDUSA_STYLE = """\
# This file was written by Medusa
[General]
git_username = ""
git_remote = origin
web_port = 8090
web_host = 0.0.0.0
web_root = /medusa/
web_username = admin
web_password = "pass, word"
api_key = 0123456789abcdef0123456789abcdef
encryption_secret = fedcba9876543210
web_use_gzip = 0
handle_reverse_proxy = 1
enable_https = 0
developer = 1
root_dirs = 0, /tv
[[nested_unknown]]
anything = goes
[Subtitles]
subtitles_languages = eng, fre
[API]
cors_origins = HTTPS://UI.example:443, http://localhost:8080
[Database]
url = sqlite:data/app.db
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def with_secrets(text: str = "") -> str:
    """Return config text whose secrets are set, so loading never writes."""
    return f"[General]\napi_key = k{'0' * 31}\nencryption_secret = e{'0' * 63}\n" + text


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path / "config.ini", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, write_back=False)
    return info.value


def assert_one_line_naming(error: ConfigError, key: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(str(error.path) + ": ")
    assert re.search(rf"\] {key}: ", message), message
    assert error.key == key


# -- loading ---------------------------------------------------------------------------


def test_empty_file_gives_defaults(tmp_path):
    path = write(tmp_path / "config.ini", "")
    settings = load_config(path, write_back=False)
    defaults = Settings()
    for name in (
        "web_host",
        "web_port",
        "web_root",
        "web_username",
        "web_password",
        "web_use_gzip",
        "handle_reverse_proxy",
        "enable_https",
        "developer",
        "cors_origins",
        "max_body_size",
        "login_max_failures",
        "login_window",
        "token_api_key",
        "resources",
        "extra_handlers",
        "processes",
        "shutdown_timeout",
    ):
        assert getattr(settings, name) == getattr(defaults, name), name
    assert settings.web_host == "0.0.0.0" and settings.web_port == 8081
    assert settings.max_body_size == 1024 * 1024  # DESIGN.md: 1 MiB by default
    assert settings.resources == ("ticket", "message")
    assert settings.https_cert == str(tmp_path / "server.crt")
    assert settings.https_key == str(tmp_path / "server.key")
    assert settings.database_url == "sqlite://" + str(tmp_path / "medusa_v2.db")
    assert settings.sqlite_path == str(tmp_path / "medusa_v2.db")
    assert settings.config_path == str(path)
    assert not settings.auth_required


def test_medusa_style_config_loads(tmp_path):
    settings = load_config(write(tmp_path / "config.ini", MEDUSA_STYLE), write_back=False)
    assert settings.web_port == 8090
    assert settings.web_root == "/medusa"
    assert settings.web_username == "admin"
    assert settings.web_password == "pass, word"
    assert settings.api_key == "0123456789abcdef0123456789abcdef"
    assert settings.encryption_secret == "fedcba9876543210"
    assert settings.web_use_gzip is False
    assert settings.handle_reverse_proxy is True
    assert settings.developer is True
    assert settings.cors_origins == ("https://ui.example", "http://localhost:8080")
    assert settings.database_url == "sqlite://" + str(tmp_path / "data" / "app.db")
    assert settings.auth_required


def test_sample_config_loads_with_documented_defaults(tmp_path):
    path = tmp_path / "config.ini"
    shutil.copy(SAMPLE, path)
    settings = load_config(path, write_back=False)
    assert settings.web_host == "127.0.0.1"
    expected = dataclasses.replace(
        Settings(),
        web_host="127.0.0.1",
        https_cert=settings.https_cert,
        https_key=settings.https_key,
        database_url=settings.database_url,
        config_path=settings.config_path,
        api_key=settings.api_key,
        encryption_secret=settings.encryption_secret,
    )
    assert settings == expected
    assert settings.web_password == "" and settings.web_username == ""


def test_sample_config_names_every_key():
    sample = SAMPLE.read_text(encoding="utf-8")
    for line in CONFIGSPEC.splitlines():
        if "=" in line:
            key = line.split("=", 1)[0].strip()
            assert re.search(rf"^{key} = ", sample, re.M), key


def test_unknown_sections_and_keys_are_ignored(tmp_path):
    text = with_secrets("git_reset = 1\n[Unknown]\nfoo = bar, baz\n[[deep]]\nx = 1\n")
    settings = load_config(write(tmp_path / "config.ini", text), write_back=False)
    assert settings.web_port == 8081


@pytest.mark.parametrize("value", ["notaport", "0", "70000", "80.5"])
def test_bad_web_port_names_the_key(tmp_path, value):
    error = load_error(tmp_path, with_secrets(f"web_port = {value}\n"))
    assert_one_line_naming(error, "web_port")
    assert str(error).startswith(f"{tmp_path / 'config.ini'}: [General] web_port: ")


def test_bad_web_port_message_shows_the_value(tmp_path):
    error = load_error(tmp_path, with_secrets("web_port = notaport\n"))
    assert str(error).endswith("web_port: 'notaport' is not an integer")


@pytest.mark.parametrize("key", ["web_use_gzip", "handle_reverse_proxy", "enable_https", "developer"])
def test_bad_boolean_names_the_key(tmp_path, key):
    error = load_error(tmp_path, with_secrets(f"{key} = maybe\n"))
    assert_one_line_naming(error, key)


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "TRUE"])
def test_booleans_accept_medusa_spellings(tmp_path, value):
    settings = load_config(write(tmp_path / "c.ini", with_secrets(f"developer = {value}\n")), write_back=False)
    assert settings.developer is True


@pytest.mark.parametrize(
    "origin",
    [
        "ftp://a.example",
        "https://a.example/path",
        "a.example",
        "https://",
        "https://u@a.example",
        "https://a.example:99999",
        "https://a.example?x=1",
        "*, https://a.example",
    ],
)
def test_bad_cors_origin_names_the_key(tmp_path, origin):
    error = load_error(tmp_path, with_secrets(f"[API]\ncors_origins = {origin}\n"))
    assert_one_line_naming(error, "cors_origins")


def test_cors_star_alone_is_allowed(tmp_path):
    settings = load_config(write(tmp_path / "c.ini", with_secrets("[API]\ncors_origins = *\n")), write_back=False)
    assert settings.cors_origins == ("*",)


@pytest.mark.parametrize("url", ["mysql://u:pw@h/db", "sqlite://host/db", "sqlite:", "nonsense"])
def test_bad_database_url_names_the_key(tmp_path, url):
    error = load_error(tmp_path, with_secrets(f"[Database]\nurl = {url}\n"))
    assert_one_line_naming(error, "url")
    assert error.section == "Database"


def test_database_url_password_stays_out_of_errors_and_repr(tmp_path):
    error = load_error(tmp_path, with_secrets(f"[Database]\nurl = mysql://u:{SECRET}@h/db\n"))
    assert SECRET not in str(error)
    settings = Settings(database_url=f"postgresql://u:{SECRET}@db.example/medusa")
    assert SECRET not in repr(settings)
    assert "db.example" in repr(settings)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("sqlite:////srv/a.db", "sqlite:///srv/a.db"),
        ("sqlite:///srv/a.db", "sqlite:///srv/a.db"),
        ("sqlite:///srv//x/../a.db", "sqlite:///srv/a.db"),
        ("sqlite:rel/a.db", "REL"),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgres://h/db", "postgres://h/db"),
    ],
)
def test_valid_database_urls(tmp_path, url, expected):
    settings = load_config(write(tmp_path / "c.ini", with_secrets(f"[Database]\nurl = {url}\n")), write_back=False)
    if expected == "REL":
        expected = "sqlite://" + os.path.normpath(tmp_path / url[len("sqlite:") :])
    assert settings.database_url == expected


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("API", "max_body_size", "0"),
        ("API", "login_max_failures", "0"),
        ("API", "login_window", "2592001"),
        ("API", "processes", "257"),
        ("API", "shutdown_timeout", "nan"),
        ("API", "shutdown_timeout", "-1"),
        ("API", "resources", "Ticket"),
        ("API", "resources", "ticket, ticket"),
        ("API", "extra_handlers", "not a path"),
        ("API", "extra_handlers", "nomodule"),
        ("API", "token_api_key", "2"),
        ("General", "web_root", "/a b"),
        ("General", "web_host", '"local host"'),
    ],
)
def test_bad_values_name_their_key(tmp_path, section, key, value):
    body = f"{key} = {value}\n" if section == "General" else f"[{section}]\n{key} = {value}\n"
    error = load_error(tmp_path, with_secrets(body))
    assert_one_line_naming(error, key)
    assert error.section == section


def test_extra_handlers_and_resources_lists(tmp_path):
    text = with_secrets("[API]\nresources = ticket\nextra_handlers = pkg.mod:Handler, pkg.mod.Other\n")
    settings = load_config(write(tmp_path / "c.ini", text), write_back=False)
    assert settings.resources == ("ticket",)
    assert settings.extra_handlers == ("pkg.mod:Handler", "pkg.mod.Other")


def test_empty_resources_means_none(tmp_path):
    settings = load_config(write(tmp_path / "c.ini", with_secrets('[API]\nresources = ""\n')), write_back=False)
    assert settings.resources == ()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[General]\nweb_port = 1\nweb_port = 2\n", "duplicate key 'web_port'"),
        ("[General]\n[General]\n", "duplicate section"),
        ("just some words\n", "line 1"),
        ('[General]\nweb_host = "unterminated\n', "web_host"),
        ("General = scalar\n", "[General] must be a section"),
        ("[General]\n[[web_port]]\nx = 1\n", "web_port"),
    ],
)
def test_structural_errors_are_one_line(tmp_path, text, fragment):
    error = load_error(tmp_path, text)
    assert "\n" not in str(error)
    assert fragment in str(error)


def test_invalid_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "config.ini"
    path.write_bytes(b"[General]\nweb_host = \xff\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path, write_back=False)


def test_unreadable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, write_back=False)  # a directory


@pytest.mark.parametrize("key", ["web_password", "api_key", "encryption_secret"])
def test_secrets_never_in_error_messages(tmp_path, key):
    # A comma makes the value a list, which is an error for a string key.
    error = load_error(tmp_path, f"[General]\n{key} = {SECRET}, {SECRET}\n")
    assert_one_line_naming(error, key)
    assert SECRET not in str(error)
    error = load_error(tmp_path, f'[General]\n{key} = "{SECRET}\n')
    assert SECRET not in str(error)
    error = load_error(tmp_path, f"[General]\n{SECRET}\n")
    assert SECRET not in str(error)


def test_medusa_encrypted_password_is_refused(tmp_path):
    error = load_error(tmp_path, with_secrets(f"encryption_version = 2\nweb_password = {SECRET}\n"))
    assert_one_line_naming(error, "web_password")
    assert SECRET not in str(error)


def test_hashed_password_with_encryption_version_loads(tmp_path):
    text = with_secrets("encryption_version = 1\nweb_password = scrypt$16384$8$1$abc$def\n")
    assert load_config(write(tmp_path / "c.ini", text), write_back=False).web_password.startswith("scrypt$")


# -- secrets and writing back ----------------------------------------------------------

COMMENTED = """\
# top comment   with  odd   spacing
\t# indented comment

[General]
    # indented comment inside
web_port=8081
web_host = 127.0.0.1   # inline comment
api_key =
encryption_secret = ""    # will be generated
web_use_gzip = 1
[[sub]]
api_key = belongs-to-sub
[Other]
key = value
"""


def test_secrets_are_generated_and_written_back(tmp_path):
    path = write(tmp_path / "config.ini", COMMENTED)
    settings = load_config(path)
    assert re.fullmatch(r"[0-9a-f]{32}", settings.api_key)
    assert re.fullmatch(r"[0-9a-f]{64}", settings.encryption_secret)
    after = path.read_text(encoding="utf-8").splitlines()
    before = COMMENTED.splitlines()
    assert len(after) == len(before)
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert changed == [
        ("api_key =", f"api_key = {settings.api_key}"),
        (
            'encryption_secret = ""    # will be generated',
            f"encryption_secret = {settings.encryption_secret}    # will be generated",
        ),
    ]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_second_load_keeps_the_same_secrets(tmp_path):
    path = write(tmp_path / "config.ini", "[General]\n")
    first = load_config(path)
    content = path.read_bytes()
    second = load_config(path)
    assert (second.api_key, second.encryption_secret) == (first.api_key, first.encryption_secret)
    assert path.read_bytes() == content


def test_only_missing_secret_is_generated(tmp_path):
    path = write(tmp_path / "config.ini", "[General]\napi_key = mine\n")
    settings = load_config(path)
    assert settings.api_key == "mine"
    assert path.read_text().startswith("[General]\napi_key = mine\nencryption_secret = ")


def test_missing_file_is_created_private_with_secrets(tmp_path):
    path = tmp_path / "new" / "dir" / "config.ini"
    settings = load_config(path)
    assert path.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load_config(path, write_back=False)
    assert (again.api_key, again.encryption_secret) == (settings.api_key, settings.encryption_secret)
    assert settings.api_key and settings.encryption_secret


def test_write_back_false_does_not_touch_the_file(tmp_path):
    path = write(tmp_path / "config.ini", COMMENTED)
    os.chmod(path, 0o644)
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    settings = load_config(path, write_back=False)
    assert settings.api_key and settings.encryption_secret
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
    assert sorted(os.listdir(tmp_path)) == ["config.ini"]
    missing = tmp_path / "absent.ini"
    load_config(missing, write_back=False)
    assert not missing.exists()


def test_atomic_writer_leaves_no_temporary_files(tmp_path):
    path = write(tmp_path / "config.ini", COMMENTED)
    load_config(path)
    write_settings(path, {"General": {"web_password": "x"}, "New": {"k": "v"}})
    assert sorted(os.listdir(tmp_path)) == ["config.ini"]


def test_write_settings_preserves_other_lines(tmp_path):
    text = COMMENTED.replace("api_key =\n", "api_key = mine\n").replace('secret = ""', "secret = mine")
    path = write(tmp_path / "config.ini", text)
    original = path.read_text()
    write_settings(path, {"General": {"web_port": "9000", "web_username": "bob"}})
    text = path.read_text()
    assert text == original.replace("web_port=8081", "web_port=9000").replace(
        "web_use_gzip = 1\n", "web_use_gzip = 1\nweb_username = bob\n"
    )
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    settings = load_config(path, write_back=False)
    assert (settings.web_port, settings.web_username) == (9000, "bob")


@pytest.mark.parametrize("value", ["", "a, b", "has # hash", " padded ", 'it\'s "quoted"', "ünïcode", "$x%(y)s"])
def test_write_settings_round_trips_awkward_values(tmp_path, value):
    path = write(tmp_path / "config.ini", with_secrets())
    write_settings(path, {"General": {"web_password": value}})
    assert load_config(path, write_back=False).web_password == value


def test_write_settings_refuses_multiline_values(tmp_path):
    path = write(tmp_path / "config.ini", with_secrets())
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_settings(path, {"General": {"web_password": "a\nb"}})
    assert path.read_bytes() == before


def test_write_settings_adds_missing_section(tmp_path):
    path = write(tmp_path / "config.ini", "[General]\nweb_port = 8081")  # no final newline
    write_settings(path, {"API": {"processes": "4"}})
    assert path.read_text() == "[General]\nweb_port = 8081\n\n[API]\nprocesses = 4\n"


def test_write_settings_keeps_crlf_and_symlink(tmp_path):
    real = tmp_path / "real.ini"
    real.write_bytes(b"[General]\r\nweb_port = 8081\r\n")
    link = tmp_path / "config.ini"
    link.symlink_to(real)
    write_settings(link, {"General": {"web_port": "9"}})
    assert link.is_symlink()
    assert real.read_bytes() == b"[General]\r\nweb_port = 9\r\n"


# -- Settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ""),
        ("/", ""),
        ("//", ""),
        ("medusa", "/medusa"),
        ("/medusa", "/medusa"),
        ("/medusa/", "/medusa"),
        ("medusa/", "/medusa"),
        ("//a//b//", "/a/b"),
        ("/a/b/c", "/a/b/c"),
    ],
)
def test_web_root_normalisation(raw, expected):
    assert Settings(web_root=raw).web_root == expected


@pytest.mark.parametrize("raw", ["/a?b", "/a#b", "/a b", "/../x", "/a\\b"])
def test_web_root_rejects_url_breaking_characters(raw):
    with pytest.raises(SettingsError) as info:
        Settings(web_root=raw)
    assert info.value.field == "web_root"


def test_web_root_normalised_from_file(tmp_path):
    settings = load_config(write(tmp_path / "c.ini", with_secrets("web_root = //medusa//\n")), write_back=False)
    assert settings.web_root == "/medusa"


def test_secrets_absent_from_repr():
    settings = Settings(web_password=SECRET, api_key=SECRET + "k", encryption_secret=SECRET + "e")
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert "web_port=8081" in repr(settings)


def test_loaded_secrets_absent_from_repr(tmp_path):
    settings = load_config(write(tmp_path / "config.ini", MEDUSA_STYLE), write_back=False)
    text = repr(settings)
    for secret in (settings.web_password, settings.api_key, settings.encryption_secret):
        assert secret not in text


def test_settings_is_frozen_and_replace_validates():
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.web_port = 1  # type: ignore[misc]
    assert settings.replace(web_port=9000).web_port == 9000
    assert settings.replace(web_root="x/").web_root == "/x"
    with pytest.raises(SettingsError, match="web_port"):
        settings.replace(web_port=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("web_port", True),
        ("web_port", "8081"),
        ("developer", 1),
        ("cors_origins", "https://a.example"),
        ("resources", ["ok", 3]),
        ("shutdown_timeout", float("inf")),
        ("database_url", "sqlite:rel.db"),
    ],
)
def test_settings_rejects_wrong_types(field, value):
    with pytest.raises(SettingsError) as info:
        Settings(**{field: value})
    assert info.value.field == field


def test_settings_normalises_lists_to_tuples():
    settings = Settings(resources=["ticket"], cors_origins=["https://A.example:443", "https://a.example"])
    assert settings.resources == ("ticket",)
    assert settings.cors_origins == ("https://a.example",)
    hash(settings)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///srv/a.db", "/srv/a.db"),
        ("sqlite:////srv/a.db", "/srv/a.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("postgresql://h/db", None),
        ("", None),
    ],
)
def test_sqlite_path(url, path):
    assert Settings(database_url=url).sqlite_path == path


def test_auth_required():
    assert not Settings().auth_required
    assert Settings(web_username="u").auth_required
    assert Settings(web_password="p").auth_required


def test_default_config_path(monkeypatch):
    monkeypatch.delenv("MEDUSA_V2_CONFIG", raising=False)
    assert default_config_path() == "conf/config.ini"
    monkeypatch.setenv("MEDUSA_V2_CONFIG", "/etc/medusa.ini")
    assert default_config_path() == "/etc/medusa.ini"


@pytest.mark.parametrize("value", ["api.example", "https://api.example/path", "ftp://api.example", "https://u@h"])
def test_public_url_must_be_an_origin(tmp_path, value):
    path = tmp_path / "config.ini"
    path.write_text(f"[API]\npublic_url = {value}\n")
    with pytest.raises(ConfigError, match=r"\[API\] public_url"):
        load_config(path, write_back=False)


def test_a_missing_config_is_created_from_the_sample_beside_it(tmp_path):
    """The tracked sample stays as it is; the live file (with its secrets) is the server's own."""
    shutil.copy(SAMPLE, tmp_path / "config.ini.sample")
    settings = load_config(tmp_path / "config.ini")
    live = (tmp_path / "config.ini").read_text()
    assert (tmp_path / "config.ini.sample").read_bytes() == SAMPLE.read_bytes()
    assert stat.S_IMODE(os.stat(tmp_path / "config.ini").st_mode) == 0o600
    assert settings.web_host == "127.0.0.1"  # the sample's, not the built-in default
    assert f"api_key = {settings.api_key}" in live and len(settings.api_key) == 32
    assert "# Origins allowed to call the API" in live  # the sample's comments kept
    again = load_config(tmp_path / "config.ini")
    assert again.api_key == settings.api_key and again.encryption_secret == settings.encryption_secret


def test_without_write_back_nothing_is_created(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "config.ini.sample")
    load_config(tmp_path / "config.ini", write_back=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.ini.sample"]


def test_the_quick_start_leaves_the_checkout_clean():
    """The daemon's first start writes conf/config.ini and conf/medusa_v2.db: neither is tracked."""
    root = SAMPLE.parent.parent
    for name in ("conf/config.ini", "conf/medusa_v2.db", "conf/medusa_v2.db-wal", "conf/medusa_v2.db-shm"):
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=root)
        assert ignored.returncode == 0, f"{name} is not ignored by git"
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", name], cwd=root, capture_output=True)
        assert tracked.returncode != 0, f"{name} is tracked"
    assert (root / "conf" / "config.ini.sample").is_file()
