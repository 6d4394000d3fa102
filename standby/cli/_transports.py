"""Transport arguments shared by the operator commands (``inspect``, ``drain``, ``stop``).

One place parses ``--transport nostr|etcd|redis`` and the arguments each
needs, and builds the transport and the quorums from them:

- ``nostr``: ``--relay URL`` (one per relay) and, to act as a node,
  ``--key-file PATH`` (the node's secret key, hex or ``nsec1...``);
  a read-only command without it reads with a fresh key.
- ``etcd``: ``--endpoint URL`` (one per member), ``--user``.
- ``redis``: ``--host``, ``--port``, ``--user``.

The password of an etcd or redis user is read from ``--password-file`` or
the environment variable ``STANDBY_PASSWORD`` (never from the command line,
where other users of the host could read it). ``--prefix`` names the key
prefix of both. ``--timing NAME=SECONDS`` (repeatable) sets the
:class:`~standby.Timing` the node runs with; ``relay_count`` is taken from
the transport, ``write_quorum`` defaults to a majority.

A bad combination raises :class:`BadArguments` (one line; exit status 2).
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import attrs

from ..core._errors import StandbyError
from ..core._timing import Timing
from ..protocols._contracts import RelayTransport

__all__ = [
    "BadArguments",
    "OpenTransport",
    "add_transport_arguments",
    "open_transport",
    "timing_for",
]

PASSWORD_VARIABLE = "STANDBY_PASSWORD"

_T = TypeVar("_T")


class OpenTransport(RelayTransport, Protocol):
    """A transport the command enters (``async with``) before it reads or acts."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...


class BadArguments(Exception):
    """Arguments that do not fit together; the command prints it and exits with status 2."""


def add_transport_arguments(parser: argparse.ArgumentParser) -> None:
    """The transport and timing arguments of an operator command."""
    group = parser.add_argument_group("transport")
    group.add_argument("--transport", required=True, choices=("nostr", "etcd", "redis"))
    group.add_argument("--relay", action="append", default=[], help="nostr: a relay URL")
    group.add_argument(
        "--key-file", type=Path, help="nostr: a file holding the node's secret key (hex or nsec)"
    )
    group.add_argument("--endpoint", action="append", default=[], help="etcd: a member URL")
    group.add_argument("--host", help="redis: the server's host")
    group.add_argument("--port", type=_port, default=6379, help="redis: the server's port")
    group.add_argument("--user", help="etcd and redis: the provider's user name")
    group.add_argument(
        "--password-file",
        type=Path,
        help=f"etcd and redis: a file holding the password (else ${PASSWORD_VARIABLE})",
    )
    group.add_argument("--prefix", help="etcd and redis: the key prefix the nodes use")
    group.add_argument(
        "--timing",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Timing field the nodes run with (repeatable), e.g. heartbeat_interval=10",
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"expected a port between 1 and 65535, got {port}")
    return port


def open_transport(args: argparse.Namespace, *, act: bool) -> OpenTransport:
    """The transport the arguments describe (not entered yet).

    ``act``: the command acts as the node (drain, stop), so a Nostr key is
    required; a read-only command may read with a fresh key.
    """
    kind = args.transport
    if kind == "nostr":
        return _nostr(args, act=act)
    if kind == "etcd":
        from ..adapters.etcd import EtcdTransport

        if not args.endpoint:
            raise BadArguments("--transport etcd needs at least one --endpoint URL")
        user, password = _account(args)
        extra = {} if args.prefix is None else {"prefix": args.prefix}
        return _built(lambda: EtcdTransport(args.endpoint, user=user, password=password, **extra))
    from ..adapters.redis import RedisTransport

    if not args.host:
        raise BadArguments("--transport redis needs --host")
    user, password = _account(args)
    extra = {} if args.prefix is None else {"prefix": args.prefix}
    return _built(
        lambda: RedisTransport(args.host, args.port, user=user, password=password, **extra)
    )


def _nostr(args: argparse.Namespace, *, act: bool) -> OpenTransport:
    from ..adapters.nostr import NostrKeys, NostrTransport

    if not args.relay:
        raise BadArguments("--transport nostr needs at least one --relay URL")
    if args.key_file is None:
        if act:
            raise BadArguments("--transport nostr needs --key-file to act as the node")
        keys = NostrKeys.generate()
    else:
        keys = _built(lambda: NostrKeys.from_secret(_read(args.key_file, "--key-file")))
    return _built(lambda: NostrTransport(args.relay, keys))


def _account(args: argparse.Namespace) -> tuple[str, str]:
    if not args.user:
        raise BadArguments(f"--transport {args.transport} needs --user")
    if args.password_file is not None:
        return args.user, _read(args.password_file, "--password-file")
    password = os.environ.get(PASSWORD_VARIABLE)
    if password is None:
        raise BadArguments(
            f"--transport {args.transport} needs --password-file or ${PASSWORD_VARIABLE}"
        )
    return args.user, password


def _read(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BadArguments(f"{option}: cannot read {path}: {exc.strerror or exc}") from None


def _built(build: Callable[[], _T]) -> _T:
    """``build()``, its refusal of bad values turned into :class:`BadArguments`."""
    try:
        return build()
    except (ValueError, TypeError, StandbyError) as exc:
        raise BadArguments(str(exc).splitlines()[0]) from None


def timing_for(args: argparse.Namespace, relay_count: int) -> Timing:
    """The :class:`~standby.Timing` of ``--timing`` for ``relay_count`` relays.

    ``scale=F`` starts from ``Timing().scaled(F)``; every other ``NAME=VALUE``
    sets one field. ``relay_count`` is the transport's; ``write_quorum``
    defaults to a majority and ``read_quorum`` to the smallest that overlaps it.
    """
    fields = {field.name: field for field in attrs.fields(Timing)}
    values: dict[str, Any] = {"relay_count": relay_count, "write_quorum": relay_count // 2 + 1}
    base = Timing()
    for item in args.timing:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or (name not in fields and name != "scale"):
            raise BadArguments(f"--timing expects NAME=VALUE with a Timing field, got {item!r}")
        try:
            if name == "scale":
                base = _built(functools.partial(Timing().scaled, float(text)))
            else:
                values[name] = int(text) if fields[name].type in ("int", int) else float(text)
        except ValueError:
            raise BadArguments(f"--timing {name}: expected a number, got {text!r}") from None
    start = {k: v for k, v in attrs.asdict(base).items() if k != "read_quorum"}
    return _built(lambda: Timing(**(start | values)))
