"""``cnnlab serve``: load the runs, bind the address, print it, serve until Ctrl-C (uvicorn)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.serve.explorer import RunExplorer

LOOPBACK = "127.0.0.1"


def load_explorers(run_dirs: Sequence[str | Path], device: str = "auto") -> list[RunExplorer]:
    """One :class:`RunExplorer` per run directory (or checkpoint file), each read once, with distinct ids.

    Raises:
        CheckpointError: a path that does not exist or is not a cnnlab classification run (checked for every path
            before any model is built).
    """
    from cnnlab.serve.app import run_ids

    if not run_dirs:
        raise ConfigError("Give at least one run directory to serve, e.g. `cnnlab serve runs/latest`.")
    paths = [Path(p).expanduser() for p in run_dirs]
    for path in paths:
        if not path.exists():
            raise CheckpointError(
                f"Run directory {str(path)!r} does not exist; give the folder `cnnlab train` wrote (its last line "
                "says `run directory: ...`)."
            )
    names = [(p.parent.parent if p.parent.name == "checkpoints" else p.parent).name if p.is_file() else p.name
             for p in (q.resolve() for q in paths)]  # fmt: skip
    return [_explorer(path, run_id, device) for path, run_id in zip(paths, run_ids(names), strict=True)]


def _explorer(path: Path, run_id: str, device: str):
    """A detection run's explorer (boxes) or a classification run's (every classifier view)."""
    from cnnlab.train.record import RunRecord

    if RunRecord.load(path).task == "detection":
        from cnnlab.serve.detection import DetectionExplorer

        return DetectionExplorer(path, run_id, device)
    return RunExplorer(path, run_id, device)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(port: int) -> None:
    """A ConfigError unless ``port`` is a TCP port number (0: any free one)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535 (or 0 for any free port), got {port}.")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) (port 0: a free one), or a clear error when it cannot be had.

    Raises:
        ConfigError: a port outside 0…65535, a port in use, an address this machine does not have.
    """
    check_port(port)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        raise ConfigError(
            f"Cannot listen on {host}:{port}: {error.strerror or error}. Choose another --port (or --port 0 for any "
            "free one), or a --host this machine has."
        ) from None
    return sock


def serve(
    run_dirs: Sequence[str | Path],
    host: str = LOOPBACK,
    port: int = 8000,
    device: str = "auto",
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> None:
    """Serve the explorer for ``run_dirs`` on http://host:port until interrupted.

    Every run is loaded and the address bound before the address is printed, so a bad run directory or a busy
    port is an error at once. A host other than loopback gets a warning: the explorer has no authentication,
    and anyone who can reach the port can run the models (and read the runs' names, classes and curves).

    Raises:
        CheckpointError, ConfigError: a run that cannot be served, a port or host that cannot be bound.
    """
    import uvicorn

    from cnnlab.serve.app import create_app

    check_port(port)  # before the models load: a typo should not cost their loading time
    explorers = load_explorers(run_dirs, device)
    sock = bind(host, port)
    if not is_loopback(host):
        warn(
            f"warning: serving on {host}, not only on this machine: the explorer has no login, so anyone who can "
            "reach this address can use the served models. Leave --host out to serve on 127.0.0.1 only."
        )
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    say(f"cnnlab serve: {len(explorers)} run(s): {', '.join(e.run_id for e in explorers)}")
    say(f"open http://{shown}:{bound_port}/ (Ctrl-C stops the server)")
    config = uvicorn.Config(create_app(explorers), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
