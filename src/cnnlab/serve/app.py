"""The explorer's web app (Starlette): the page, its assets, and a JSON API over :class:`RunExplorer`.

API (every answer is JSON; images inside it are PNG ``data:`` URLs; docs/serve.md has the table):

- ``GET /api/runs``: the runs served, their classes, layers and views, and the upload limits.
- ``POST /api/runs/{id}/{view}`` with the image as the request body (PNG, JPEG...; ``?frame=1`` frames a
  drawing like an MNIST digit): ``predict``, ``features?layer=``, ``occlusion``, ``deconv?layer=``,
  ``guided-backprop``, ``fgsm?eps=``, ``transformer``.
- ``GET /api/runs/{id}/curves`` and ``/confusion``: from the run record and its test split.

Runs are addressed by id only, never by path, so no request can name a file: an unknown id, view or asset is a
404. Bad input is a 400 (413 for an upload over the limit) with ``{"error": message}``; an unexpected failure is a
500 whose body says only that (the traceback goes to the server's log, never to the client).

Scheduling: each run has four lanes (``explorer.py``); a request waits for its lane in the event loop (never
holding a worker thread while it waits), then computes in a worker thread. When several requests for the same
run and view are waiting, only the newest is computed: the older ones answer 409 ``superseded`` at once, so a
slider dragged across ten values costs one FGSM, not ten. Each answer carries a ``Server-Timing`` header
(``wait``, ``compute`` and ``total`` milliseconds; browsers' developer tools show it).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.serve.explorer import MAX_EPSILON, RunExplorer
from cnnlab.serve.images import Limits, UploadTooLargeError, decode_upload, size_text

LOG = logging.getLogger("cnnlab.serve")
STATIC = Path(str(resources.files("cnnlab.serve") / "static"))

# view -> the lane it runs in (explorer.py)
IMAGE_VIEWS = {
    "predict": "fast",
    "fgsm": "fast",
    "features": "maps",
    "transformer": "maps",
    "occlusion": "slow",
    "deconv": "slow",
    "guided-backprop": "slow",
    "boxes": "fast",  # detection runs (serve/detection.py)
}
RECORD_VIEWS = {"curves": None, "confusion": "record"}


def run_ids(names: list[str]) -> list[str]:
    """URL-safe, distinct ids for runs named ``names`` (their folder names): ``lenet5-mnist``, ``lenet5-mnist-2``."""
    ids: list[str] = []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
        candidate, n = base, 1
        while candidate in ids:
            n += 1
            candidate = f"{base}-{n}"
        ids.append(candidate)
    return ids


class _Scheduler:
    """One asyncio lock per (run, lane), and the newest ticket per (run, view) so stale requests are skipped."""

    def __init__(self) -> None:
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.newest: dict[tuple[str, str], int] = {}
        self.tickets = 0

    def ticket(self, run_id: str, view: str) -> int:
        self.tickets += 1
        self.newest[run_id, view] = self.tickets
        return self.tickets

    def lock(self, run_id: str, lane: str) -> asyncio.Lock:
        return self.locks.setdefault((run_id, lane), asyncio.Lock())

    def superseded(self, run_id: str, view: str, ticket: int) -> bool:
        return self.newest.get((run_id, view), ticket) > ticket


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The request body, refused as soon as it passes the byte limit (a declared or an actual length)."""
    declared = request.headers.get("content-length", "")
    too_large = UploadTooLargeError(
        f"The upload is larger than {size_text(limits.max_bytes)}, the most the explorer accepts. Resize it first."
    )
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _query_number(request: Request, name: str, default: float, kind: type = float) -> float:
    """A number from the query string (``kind`` int: a whole one), or a ConfigError naming it."""
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{name} must be a {'whole ' if kind is int else ''}number, got {text!r}.") from None


def _compute(explorer: RunExplorer, view: str, request: Request, body: bytes, limits: Limits):
    """Run one view (in a worker thread): decode the upload for image views, call the explorer."""
    if view in RECORD_VIEWS:
        if view not in explorer.describe()["views"]:
            raise ConfigError(f"Run {explorer.run_id} has no {view} view.")
        return explorer.curves() if view == "curves" else explorer.confusion()
    views = explorer.describe()["views"]
    if view not in views and (view == "boxes" or "boxes" in views):  # a detector's views, or a classifier's
        raise ConfigError(f"Run {explorer.run_id} has no {view} view; its views: {', '.join(views)}.")
    frame = request.query_params.get("frame", "0") in ("1", "true") and view != "boxes"  # canvases are not framed
    pixels = decode_upload(body, explorer.preprocessing, limits, frame=frame)
    if view == "boxes":
        return explorer.boxes(pixels, _query_number(request, "threshold", 0.5))
    layer = request.query_params.get("layer") or None
    if view == "predict":
        return explorer.predict(pixels, _query_number(request, "top_k", 5, int))
    if view == "fgsm":
        return explorer.fgsm(pixels, _query_number(request, "eps", 0.1))
    if view in ("features", "deconv"):
        if layer is None:
            raise ConfigError(f"The {view} view needs ?layer=NAME; this run's layers: {', '.join(explorer.layers)}.")
        return explorer.features(pixels, layer) if view == "features" else explorer.deconv(pixels, layer)
    if view == "transformer":
        return explorer.transformer_output(pixels)
    if view == "occlusion":
        return explorer.occlusion(pixels)
    return explorer.guided_backprop(pixels)


def create_app(explorers: list[RunExplorer], limits: Limits | None = None) -> Starlette:
    """The web app serving ``explorers`` (each under its ``run_id``)."""
    limits = limits or Limits()
    by_id = {explorer.run_id: explorer for explorer in explorers}
    scheduler = _Scheduler()

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def runs(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "runs": [explorer.describe() for explorer in by_id.values()],
                "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels},
                "max_epsilon": MAX_EPSILON,
            }
        )

    async def view(request: Request) -> JSONResponse:
        started = time.perf_counter()
        run_id, name = request.path_params["run_id"], request.path_params["view"]
        explorer = by_id.get(run_id)
        methods = ("POST",) if name in IMAGE_VIEWS else ("GET",) if name in RECORD_VIEWS else ()
        if explorer is None or not methods:
            return _error(404, f"Not found: the explorer serves runs {', '.join(by_id)} and views "
                          f"{', '.join([*IMAGE_VIEWS, *RECORD_VIEWS])}.")  # fmt: skip
        if request.method not in methods:
            return _error(405, f"{name} takes {methods[0]} requests.")
        ticket = scheduler.ticket(run_id, name)  # on arrival: a slow upload must not make an older request newer
        try:
            body = await _read_body(request, limits) if request.method == "POST" else b""
            lane = IMAGE_VIEWS.get(name) or RECORD_VIEWS[name]
            waited = time.perf_counter()
            if lane is None:
                result = await run_in_threadpool(_compute, explorer, name, request, body, limits)
            else:
                async with scheduler.lock(run_id, lane):
                    if scheduler.superseded(run_id, name, ticket):
                        return JSONResponse({"superseded": True, "error": "a newer request replaced this one"}, 409)
                    waited = time.perf_counter()
                    result = await run_in_threadpool(_compute, explorer, name, request, body, limits)
        except ClientDisconnect:  # the page aborted a stale request while it was being sent: nobody to answer
            return _error(400, "The client closed the request before sending all of it.")
        except UploadTooLargeError as error:
            return _error(413, str(error))
        except CnnlabError as error:
            return _error(400, str(error))
        except Exception:  # the log keeps the traceback; the client gets no internals
            LOG.exception("view %s of run %s failed", name, run_id)
            return _error(500, f"Internal error while computing {name}; the server's log has the details.")
        done = time.perf_counter()
        timing = (
            f"wait;dur={(waited - started) * 1e3:.2f}, compute;dur={(done - waited) * 1e3:.2f}, "
            f"total;dur={(done - started) * 1e3:.2f}"
        )
        return JSONResponse(result, headers={"Server-Timing": timing, "Cache-Control": "no-store"})

    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, "Not found." if error.status_code == 404 else str(error.detail))

    async def server_error(request: Request, error: Exception) -> JSONResponse:
        LOG.exception("request %s failed", request.url.path)
        return _error(500, "Internal error; the server's log has the details.")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/runs", runs),
            Route("/api/runs/{run_id}/{view}", view, methods=["GET", "POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
