"""The `medusa-v2` command: serve (default), set-password, --version."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from . import __version__

COMMANDS = ("serve", "set-password")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medusa-v2",
        description="Serve the Medusa-style API v2 (ticket API) from a config.ini.",
    )
    parser.add_argument("--version", action="version", version=f"medusa-v2 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{serve,set-password}")

    def add_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            metavar="PATH",
            default=None,
            help="config.ini to use (default: $MEDUSA_V2_CONFIG, else conf/config.ini)",
        )

    serve = sub.add_parser("serve", help="run the daemon in the foreground (the default command)")
    add_config(serve)
    serve.add_argument("--host", default=None, help="address to listen on (overrides [General] web_host)")
    serve.add_argument("--port", type=_port, default=None, help="port to listen on (overrides [General] web_port)")

    setpw = sub.add_parser("set-password", help="store a hashed web_password (and web_username) in config.ini")
    add_config(setpw)
    setpw.add_argument("--username", default=None, help="also set [General] web_username")
    setpw.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input instead of a prompt"
    )
    return parser


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: must be 0-65535")
    return int(text)


def _fail(message: str, status: int = 2) -> int:
    print(f"medusa-v2: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # `serve` is the default: `medusa-v2 --config X` means `medusa-v2 serve --config X`.
    if not any(a in COMMANDS for a in args_list[:1]) and not {"-h", "--help", "--version"} & set(args_list):
        args_list.insert(0, "serve")
    args = _parser().parse_args(args_list)
    if args.command is None:
        args.command = "serve"

    from .config import ConfigError, default_config_path, load_config

    path = args.config or default_config_path()
    try:
        settings = load_config(path)
    except ConfigError as exc:
        return _fail(str(exc))
    if args.command == "set-password":
        return _set_password(path, args.username, args.password_stdin)

    from .daemon import StartupError, serve

    try:
        return serve(settings, args.host, args.port)
    except StartupError as exc:
        return _fail(str(exc), exc.status)
    except KeyboardInterrupt:
        return 0


def _set_password(path: str, username: str | None, from_stdin: bool) -> int:
    from .config import ConfigError, write_settings
    from .passwords import hash_password

    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != password:
            return _fail("the passwords differ; nothing changed", 1)
    if not password:
        return _fail("empty password; nothing changed", 1)
    changes = {"web_password": hash_password(password)}
    if username is not None:
        if not username or ":" in username:
            return _fail("the username must be non-empty and contain no ':'", 1)
        changes["web_username"] = username
    try:
        write_settings(path, {"General": changes})
    except ConfigError as exc:
        return _fail(str(exc))
    print(f"medusa-v2: password hash written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
