"""Run a paper's experiment over seeds through the engine and judge ours against the paper's figures.

Every arm and seed is an ordinary cnnlab run (``<out>/<arm>-seed<k>``, resumable: running the same command again
continues unfinished runs and reuses finished ones). ``jobs`` > 1 trains that many runs at a time in worker
processes on the CPU, the threads shared out between them (the table says how many each run had). The figure per
run is the test error at the epoch with the lowest *validation* error (the split held out of the training data);
the test split is never used to choose.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cnnlab.errors import ConfigError, UnknownNameError
from cnnlab.reproduce.entries import ENTRIES, Entry

METRIC_NAMES = {
    "error": "test error %",
    "error_12_draws": "test error %, 12 pooling draws",
    "fgsm_error": "FGSM ε 0.25 error %",
}


@dataclass
class Row:
    """One arm × metric of the results table."""

    arm: str
    metric: str
    paper: float | None
    values: list[float]  # one per seed, in %
    seconds: list[float]  # training time per seed (the engine's epoch times)
    verdict: str = ""

    @property
    def mean(self) -> float:
        return statistics.mean(self.values)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


@dataclass
class Reproduction:
    """What :func:`reproduce` measured: the rows, the verdict and where the runs are."""

    entry: str
    seeds: list[int]
    quick: bool
    device: str
    rows: list[Row]
    verdict: str
    why: str
    out: str
    notes: list[str] = field(default_factory=list)
    curves: str = ""  # curves.png: every arm's error per epoch, mean over the seeds (the papers' figures)

    def markdown(self) -> str:
        """The table as docs/reproductions.md shows it."""
        entry = ENTRIES[self.entry]
        lines = [
            f"**{self.entry}** — {entry.paper}.",
            "",
            f"| arm | metric | paper | ours (mean ± sd, n = {len(self.seeds)}) | per seed | min per seed | verdict |",
            "|---|---|---:|---:|---|---:|---|",
        ]
        for row in self.rows:
            paper = "—" if row.paper is None else f"{row.paper:.2f}"
            seeds = ", ".join(f"{v:.2f}" for v in row.values)
            minutes = statistics.mean(row.seconds) / 60
            lines.append(
                f"| {row.arm} | {METRIC_NAMES[row.metric]} | {paper} | {row.mean:.2f} ± {row.sd:.2f} | {seeds} | "
                f"{minutes:.1f} | {row.verdict} |"
            )
        quick = " (--quick: a short check, not a measurement)" if self.quick else ""
        lines += ["", f"Verdict{quick}: **{self.verdict}** — {self.why.rstrip('.')}. Device: {self.device}."]
        if self.curves:
            lines += ["", f"![{self.entry}: error per epoch, every arm]({Path(self.curves).name})"]
        return "\n".join(lines)


def list_entries() -> list[dict]:
    """Name, paper, goal and expected minutes per seed on CPU and GPU of every entry (``cost``: both in words)."""
    return [
        {
            "name": e.name,
            "paper": e.paper,
            "goal": e.goal,
            "arms": len(e.arms),
            "seeds": e.default_seeds,
            "cpu_minutes": e.cpu_minutes,
            "gpu_minutes": e.gpu_minutes,
            "gpu_only": e.gpu_only,
            "cost": _cost_text(e),
        }
        for e in ENTRIES.values()
    ]


def _duration(minutes: float) -> str:
    """12 min, 2.5 h, 31 h."""
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h" if minutes < 600 else f"{minutes / 60:.0f} h"


def _cost_text(entry: Entry) -> str:
    """Expected time a seed, as ``--list`` prints it: "CPU ~10 min/seed, GPU ~1 min/seed", or for a GPU-sized
    entry "GPU-sized (CPU ~31 h/seed with --cpu-anyway)"."""
    gpu = f"GPU ~{_duration(entry.gpu_minutes)}/seed" if entry.gpu_minutes else None
    cpu = f"CPU ~{_duration(entry.cpu_minutes)}/seed" if entry.cpu_minutes else None
    if entry.gpu_only:
        sized = f"GPU-sized ({cpu} with --cpu-anyway)" if cpu else "GPU-sized (CPU time not measured)"
        return ", ".join(filter(None, [sized, gpu]))
    return ", ".join(filter(None, [cpu or "CPU time not measured", gpu]))


def get_entry(name: str) -> Entry:
    if name not in ENTRIES:
        raise UnknownNameError("reproduction", name, list(ENTRIES))
    return ENTRIES[name]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def reproduce(
    name: str,
    seeds: int | None = None,
    *,
    quick: bool = False,
    out: str | Path | None = None,
    data_root: str | None = None,
    device: str = "auto",
    cpu_anyway: bool = False,
    jobs: int = 1,
    say: Callable[[str], None] = lambda text: None,
) -> Reproduction:
    """Run entry ``name`` for ``seeds`` seeds (default: the entry's) and judge it; writes ``results.json`` and
    ``table.md`` into ``out`` (default ``runs/reproduce-<name>``; ``-quick`` appended for ``quick``).

    Raises:
        UnknownNameError: no such entry.
        ConfigError: bad seeds or jobs, ``jobs`` > 1 on a GPU, or a GPU-only entry on a CPU without ``quick`` or
            ``cpu_anyway``.
    """
    import torch

    from cnnlab.train import resolve_device

    entry = get_entry(name)
    count = entry.default_seeds if seeds is None else seeds
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"--seeds must be a positive whole number of seeds, got {seeds!r}.")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"--jobs must be a positive whole number of runs at a time, got {jobs!r}.")
    resolved = resolve_device(device)
    if jobs > 1 and resolved.type != "cpu":
        raise ConfigError(
            f"--jobs {jobs} shares the CPU's cores between runs; on {resolved.type} train one run at a time "
            "(--jobs 1), or pass --device cpu."
        )
    if entry.gpu_only and resolved.type == "cpu" and not quick and not cpu_anyway:
        hours = f"about {_duration(entry.cpu_minutes)} a seed" if entry.cpu_minutes else "many hours"
        raise ConfigError(
            f"{name} is GPU-sized (its recipe would take {hours} on a 2-core CPU). Run it on a GPU, run "
            f"`cnnlab reproduce {name} --quick` for a short check, or pass --cpu-anyway."
        )
    out_dir = Path(out) if out is not None else Path("runs") / f"reproduce-{name}{'-quick' if quick else ''}"
    seed_list = list(range(count))
    plan = [(seed, index) for seed in seed_list for index in range(len(entry.arms))]  # the table's order
    jobs = min(jobs, len(plan))
    threads = max(1, torch.get_num_threads() // jobs) if jobs > 1 else torch.get_num_threads()
    device_name = _device_name(resolved, threads, jobs)
    _refuse_other_recipes(entry, plan, quick, out_dir)
    outcomes = _run_plan(entry, plan, quick, out_dir, data_root, device, say, jobs, threads)
    results: dict[tuple[str, str], Row] = {}
    histories: dict[str, list[list[dict]]] = {arm.label: [] for arm in entry.arms}
    for (_, index), (measured, seconds, history) in zip(plan, outcomes, strict=True):
        arm = entry.arms[index]
        histories[arm.label].append(history)
        for metric in entry.metrics:
            if metric not in measured:
                continue
            row = results.setdefault((arm.label, metric), Row(arm.label, metric, arm.paper.get(metric), [], []))
            row.values.append(measured[metric])
            row.seconds.append(seconds)
    rows = list(results.values())
    verdict, why = judge(entry, rows)
    result = Reproduction(name, seed_list, quick, device_name, rows, verdict, why, str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    result.curves = str(_draw_curves(entry, histories, out_dir / "curves.png", quick))
    (out_dir / "results.json").write_text(json.dumps(asdict(result), indent=2))
    (out_dir / "table.md").write_text(result.markdown() + "\n")
    return result


def _device_name(device, threads: int, jobs: int) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    at_a_time = f", {jobs} runs at a time" if jobs > 1 else ""
    return f"CPU ({platform.machine()}, {threads} thread(s) a run{at_a_time}), torch {torch.__version__}"


def _run_plan(entry: Entry, plan, quick, out_dir: Path, data_root, device, say, jobs: int, threads: int) -> list:
    """Each (seed, arm index) of ``plan`` trained or reused, its :func:`_run_arm` outcome in ``plan``'s order.

    With ``jobs`` > 1 the runs go to that many spawned worker processes of ``threads`` threads each (spawn, not
    fork: the OpenMP runtime of torch's CPU kernels is not safe to use in a child forked after the parent used it).
    A run that fails cancels those not yet started; the ones under way finish (their work is kept), then the failure
    is raised.
    """
    if jobs == 1:
        return [_run_arm(entry, entry.arms[i], seed, quick, out_dir, data_root, device, say) for seed, i in plan]
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    say(f"{entry.name}: {len(plan)} runs, {jobs} at a time, {threads} thread(s) each")
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(threads,))  # fmt: skip
    waiting, running, outcomes = list(enumerate(plan)), {}, [None] * len(plan)
    try:
        while waiting or running:
            while waiting and len(running) < jobs:  # no more handed out than run: a stop starts nothing new
                k, (seed, index) = waiting.pop(0)
                job = pool.submit(_run_arm_in_worker, entry.name, index, seed, quick, str(out_dir), data_root, device)
                running[job] = k
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for job in finished:
                outcomes[running.pop(job)] = job.result()
    except BaseException:
        say(f"{entry.name}: a run failed or was stopped; waiting for the runs under way (they resume next time)")
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return outcomes


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_arm_in_worker(name: str, index: int, seed: int, quick: bool, out_dir: str, data_root, device):
    entry = get_entry(name)
    tag = f"[{_slug(entry.arms[index].label)}-seed{seed}]"
    return _run_arm(entry, entry.arms[index], seed, quick, Path(out_dir), data_root, device,
                    lambda text: print(f"{tag} {text}", flush=True))  # fmt: skip


def _draw_curves(entry: Entry, histories: dict[str, list[list[dict]]], path: Path, quick: bool) -> Path:
    from cnnlab.inspect.curves import plot_arms

    title = f"{entry.name}{' (--quick: a short check)' if quick else ''}: {entry.paper.split(':')[0]}"
    return plot_arms(histories, path, title)


def _arm_settings(entry: Entry, arm, seed: int, quick: bool, out_dir: Path, data_root, device):
    """(run directory, TrainConfig fields, model options) of one arm and seed."""
    run_dir = out_dir / f"{_slug(arm.label)}-seed{seed}"
    given = {**arm.train, **(entry.quick if quick else {}), "seed": seed, "device": device, "out": str(run_dir)}
    if data_root is not None:
        given["data_root"] = data_root
    return run_dir, given, {**arm.model_options, **(entry.quick_options if quick else {})}


def _refuse_other_recipes(entry: Entry, plan, quick: bool, out_dir: Path) -> None:
    """Before any training: every run already in ``out_dir`` must have been made with the entry's present recipe.

    Resuming continues a run with its own settings and may lengthen it, so a run left by an earlier version of
    the entry (say 40 epochs where the entry now trains 80) would otherwise be stretched into a run that is
    neither recipe, or refused halfway through the plan with a flag the user never typed.
    """
    from cnnlab.train import find_resume_checkpoint
    from cnnlab.train.config import fixed_settings_changed
    from cnnlab.train.record import RunRecord

    for seed, index in plan:
        run_dir, given, options = _arm_settings(entry, entry.arms[index], seed, quick, out_dir, None, "cpu")
        found = find_resume_checkpoint("auto", run_dir) if run_dir.is_dir() else None
        if found is None:
            continue
        saved = RunRecord.from_payload(*found).train_config()
        changed = fixed_settings_changed(saved, given, options, also_fixed=("epochs",))
        if changed:
            what = ", ".join(f"{name.replace('_', ' ')} {old!r} (now {new!r})" for name, old, new in changed)
            raise ConfigError(
                f"{run_dir} holds a run of an earlier recipe of {entry.name}: {what}. Its figures "
                f"would not be the entry's. Pass --out NEW_FOLDER to run the present recipe, or delete {run_dir} "
                "(or the whole folder) first."
            )


def _run_arm(entry: Entry, arm, seed: int, quick: bool, out_dir: Path, data_root, device, say):
    """Train (or finish, or reuse) one arm for one seed: its metrics in %, its training seconds and its per-epoch
    history rows."""
    from cnnlab.workflows import train_classifier

    run_dir, given, options = _arm_settings(entry, arm, seed, quick, out_dir, data_root, device)
    say(f"{entry.name}: {arm.label}, seed {seed} → {run_dir}")
    trained = train_classifier(given, model_options=options, resume="auto", say=say, command=["cnnlab", "reproduce"])
    history = trained.history
    # the engine's own choice of best.pt (lowest validation error, first of equals); the last epoch without one
    best = trained.trainer.monitor.best(history) or history[-1]
    measured = {"error": 100 * float(best["test_error"])}
    run_files = trained.run.run_dir
    best_checkpoint = run_files.best if run_files.best.is_file() else run_files.checkpoint
    if "error_12_draws" in entry.metrics:
        averaged = _pooling_draws_error(best_checkpoint, data_root, device)
        if averaged is not None:
            measured["error_12_draws"] = averaged
    if "fgsm_error" in entry.metrics:
        from cnnlab.adversarial import attack_runs

        limit = 500 if quick else None
        (report,) = attack_runs([best_checkpoint], "fgsm", [0.25], limit=limit, data_root=data_root, device=device)
        measured["fgsm_error"] = 100 * (1 - report.rows[0].accuracy)
    # the engine's own per-epoch times: the same figure when a finished run is reused
    return measured, sum(float(row.get("seconds", 0.0)) for row in history), [dict(row) for row in history]


def _pooling_draws_error(checkpoint: Path, data_root, device) -> float | None:
    """Test error % of the checkpoint with softmax averaged over 12 fractional-pooling draws; None if the model
    has no fractional pooling."""
    from cnnlab.layers import FractionalMaxPool2d, average_over_pooling_draws
    from cnnlab.workflows import open_run

    record, model, resolved = open_run(checkpoint, device)
    if not any(isinstance(m, FractionalMaxPool2d) for m in model.modules()):
        return None
    # the test images the run was scored on (all of them, or --quick's subset)
    _, loader = record.test_loader(None, data_root, 500, resolved, per_class=record.config.get("eval_per_class"))
    wrong = total = 0
    for images, labels in loader:
        probs = average_over_pooling_draws(model, images, draws=12)
        wrong += int((probs.argmax(1) != labels).sum())
        total += len(labels)
    return 100 * wrong / total


def _target(row: Row, tolerance: float) -> str:
    if row.paper is None:
        return "—"
    if row.mean + row.sd < row.paper - tolerance:
        return "beaten"
    return "reproduced" if row.mean <= row.paper + tolerance else "not reproduced"


def judge(entry: Entry, rows: list[Row]) -> tuple[str, str]:
    """(verdict, why) for the entry, and each row's own verdict against its paper figure."""
    for row in rows:
        row.verdict = _target(row, entry.tolerance)
    errors = [row for row in rows if row.metric == "error"]
    if entry.judge == "report":
        return "reported", "no goal on this machine; shown beside the paper's figures"
    if entry.judge == "target":
        missed = [r for r in rows if r.verdict == "not reproduced"]
        if missed:
            worst = ", ".join(f"{r.arm} {r.mean:.2f}% vs {r.paper:.2f}%" for r in missed)
            return "not reproduced", f"{worst}; {entry.differs}"
        return ("beaten" if all(r.verdict == "beaten" for r in rows) else "reproduced"), "every arm at its figure"
    if entry.judge == "all_targets":
        last = [r for r in rows if r.arm == entry.arms[-1].label]
        missed = [r for r in last if r.verdict == "not reproduced"]
        if missed:
            listing = ", ".join(f"{METRIC_NAMES[r.metric]} {r.mean:.2f} vs {r.paper:.2f}" for r in missed)
            return "not reproduced", f"{entry.arms[-1].label}: {listing}"
        return "reproduced", "every figure of the last arm at once"
    means = [r.mean for r in errors]
    labels = " > ".join(r.arm for r in errors)
    if entry.judge == "order_of_means":
        held = all(a > b for a, b in itertools.pairwise(means))
        return ("reproduced" if held else "not reproduced"), (
            f"the mean errors {'fall' if held else 'do not fall'} in the paper's order ({labels})"
        )
    if entry.judge == "order_every_seed":
        per_seed = list(zip(*(r.values for r in errors), strict=True))
        broken = [i for i, values in enumerate(per_seed) if not all(a > b for a, b in itertools.pairwise(values))]
        if broken:
            return "not reproduced", f"the order {labels} breaks in seed(s) {', '.join(map(str, broken))}"
        return "reproduced", f"the order {labels} holds in all {len(per_seed)} seeds"
    if entry.judge == "degradation":
        by_arm = {r.arm: r.mean for r in errors}
        plain = by_arm["plain-56"] > by_arm["plain-20"]
        residual = by_arm["ResNet-56"] < by_arm["ResNet-20"]
        text = (
            f"plain-56 {'worse' if plain else 'not worse'} than plain-20 "
            f"({by_arm['plain-56']:.2f} vs {by_arm['plain-20']:.2f}); ResNet-56 "
            f"{'better' if residual else 'not better'} than ResNet-20 "
            f"({by_arm['ResNet-56']:.2f} vs {by_arm['ResNet-20']:.2f})"
        )
        return ("reproduced" if plain and residual else "not reproduced"), text
    raise ConfigError(f"Unknown judge {entry.judge!r} in entry {entry.name!r}.")
