"""The `medusa-v2` command: serve (default), set-password, export, import, --version."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__

COMMANDS = ("serve", "set-password", "export", "import")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medusa-v2",
        description="Serve the Medusa-style API v2 (ticket API) from a config.ini.",
    )
    parser.add_argument("--version", action="version", version=f"medusa-v2 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{serve,set-password,export,import}")

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

    export = sub.add_parser(
        "export",
        help="write every ticket with its messages (and every other mounted stored resource) as JSON Lines "
        "(a backup; FILE '-' is stdout)",
        description="Write every stored resource that [API] resources mounts as JSON Lines: one top-level item "
        "per line (tickets first) in its API representation, with the items nested under it, ids and "
        "timestamps kept. FILE '-' writes to standard output. Exit status: 0 done, 1 the store failed, 2 "
        "usage or config.ini error.",
    )
    add_config(export)
    export.add_argument("file", metavar="FILE", help="the file to write ('-': standard output)")

    imp = sub.add_parser(
        "import",
        help="load tickets, messages and other mounted resources from JSON Lines written by export (FILE '-' is stdin)",
        description="Load JSON Lines written by `export` (or by hand, in the same format) in one transaction: "
        "every line is validated as POST would; the first bad line or taken id stops the import and "
        "nothing of it is applied. Exit status: 0 done, 1 bad data or the store failed, 2 usage or "
        "config.ini error.",
    )
    add_config(imp)
    imp.add_argument("file", metavar="FILE", help="the file to read ('-': standard input)")
    imp.add_argument(
        "--replace",
        action="store_true",
        help="replace top-level items whose ids exist (and everything nested under them) instead of failing",
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
    if args.command in ("export", "import"):
        return _transfer(settings, args)

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
    print(f"medusa-v2: {_running_daemon_took(path)}", file=sys.stderr)
    return 0


def _running_daemon_took(path: str, wait: float = 3.0) -> str:
    """Say whether a daemon serving `path` applies the new credentials (it re-reads the file each second).

    Asks it with a short-lived token bound to the new credentials: a daemon accepts
    one only once it runs with them. Nothing else is sent, and no login is counted.
    """
    import contextlib
    import ssl
    import time
    import urllib.error
    import urllib.request

    from .auth import Authenticator
    from .config import ConfigError, load_config

    try:
        settings = load_config(path, write_back=False, generate=False)
    except ConfigError as exc:
        return f"cannot tell whether a running daemon took the change: {exc}"
    if not settings.encryption_secret:
        return "the file has no encryption_secret yet: a running daemon re-reads the credentials within a second"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.web_host, settings.web_host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.enable_https else "http"
    url = f"{scheme}://{host}:{settings.web_port}{settings.web_root}/api/v2/config"
    token = Authenticator(settings, None, time.time, __version__).issue_token("set-password", 30)  # type: ignore[arg-type]
    request = urllib.request.Request(url, headers={"x-auth": f"Bearer {token}"})
    context = ssl._create_unverified_context() if scheme == "https" else None  # our own daemon, on this host
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(request, timeout=1, context=context):
                pass
            revoke = urllib.request.Request(url[: -len("/config")] + "/authenticate", method="DELETE")
            revoke.add_header("x-auth", f"Bearer {token}")
            with contextlib.suppress(OSError), urllib.request.urlopen(revoke, timeout=1, context=context):
                pass  # the probe's token is of no further use
            return f"the daemon at {url.rsplit('/api/v2', 1)[0]} now uses the new password"
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                return f"the daemon at {url} answered {exc.code}; check that it took the change"
        except OSError:
            return f"no daemon answers at {scheme}://{host}:{settings.web_port}: the next start uses the new password"
        if time.monotonic() >= deadline:
            return (
                f"a daemon answers at {scheme}://{host}:{settings.web_port} but still refuses the new "
                f"password after {wait:g} s: is it serving another config.ini?"
            )
        time.sleep(0.2)


READ_BUFFER = 1 << 20


def _private_file(path: str) -> Any:
    """Open `path` for writing, created (or truncated) readable by its owner only: a backup holds every row."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    return os.fdopen(fd, "wb")


def _transfer(settings: object, args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import gc
    import os
    import time

    from .progress import progress_stream
    from .store import StoreUnavailable, open_store
    from .transfer import (
        TransferError,
        export_jsonl,
        import_jsonl,
        input_size,
        mounted_resources,
        summary,
    )
    from .url_table import stored_declarations

    try:
        resources = mounted_resources(settings)
    except TransferError as exc:
        return _fail(str(exc))  # config.ini names something that cannot be mounted

    async def run() -> dict[str, int]:
        declarations = stored_declarations(resources)  # their tables, created or migrated as the daemon does
        store = await open_store(settings.database_url, declarations)  # type: ignore[attr-defined]
        try:
            if args.command == "export":
                if args.file == "-":
                    return await export_jsonl(store, sys.stdout.buffer, resources=resources, progress=progress_stream())
                # Written beside the target and renamed at the end: never half a backup.
                partial = f"{args.file}.partial"
                try:
                    with _private_file(partial) as out:
                        counts = await export_jsonl(store, out, resources=resources, progress=progress_stream())
                        out.flush()
                        os.fsync(out.fileno())
                    os.replace(partial, args.file)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(partial)
                    raise
                return counts
            # Read a megabyte at a time: every read lets the store's threads take the GIL
            # from the parser, which then waits to get it back (docs/benchmarks.md, Import).
            stdin = args.file == "-"
            path: int | str = sys.stdin.fileno() if stdin else args.file
            with open(path, "rb", buffering=READ_BUFFER, closefd=not stdin) as source:
                return await import_jsonl(
                    store,
                    source,
                    replace=args.replace,
                    resources=resources,
                    progress=progress_stream(),
                    size=input_size(source),  # None unless a regular file (stdin redirected from one too)
                    exclusive=True,
                )
        finally:
            await store.close()

    # This process only moves data: millions of short-lived dicts and lists holding
    # strings and numbers, no reference cycles. At its default pace (a collection per
    # 700 new objects) the collector took a measurable share of an import's parsing
    # thread (docs/benchmarks.md, Import).
    gc.set_threshold(100_000, 50, 100)
    start = time.monotonic()
    try:
        counts = asyncio.run(run())
    except TransferError as exc:
        done = "nothing was imported" if args.command == "import" else "the export is incomplete"
        return _fail(f"{args.command} failed: {exc}; {done}", 1)
    except StoreUnavailable as exc:
        return _fail(f"{args.command} failed: the store is unavailable: {exc}", 1)
    except OSError as exc:
        return _fail(f"{args.command} failed: {exc.strerror or exc}: {exc.filename or args.file}", 1)
    except KeyboardInterrupt:
        return _fail(f"{args.command} interrupted; nothing was {args.command}ed", 1)
    seconds = time.monotonic() - start
    verb = "exported to" if args.command == "export" else "imported from"
    where = ("standard output" if args.command == "export" else "standard input") if args.file == "-" else args.file
    first, lines = next(iter(counts.items()), ("item", 0))  # the first top-level resource: tickets when mounted
    rate = f"{lines / max(seconds, 1e-9):,.0f} {first}s/s"
    print(f"medusa-v2: {summary(counts)} {verb} {where} in {seconds:.1f} s ({rate})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
