"""The ``cnnlab`` command: a face. It parses arguments, calls one library function per command, and prints
results and clear errors; every workflow lives in the library (docs/architecture.md). The ``train`` flags are
generated from :class:`~cnnlab.train.TrainConfig`'s field metadata, as the ``viz`` flags are from ``VIEWS``."""

from __future__ import annotations

import argparse
import ast
import sys
import textwrap
from contextlib import contextmanager

from cnnlab.cli_spec import (
    CAPTION_ACTIONS,
    CAPTION_HELP,
    DETECT_ACTIONS,
    DETECT_HELP,
    EXAMPLES,
    GAN_ACTIONS,
    GAN_HELP,
    int_list,
)
from cnnlab.cli_spec import COMMANDS as COMMAND_SPECS
from cnnlab.errors import CnnlabError, ConfigError


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=110)


DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps (default: auto)"


def _config_flags(
    parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None, helps: dict[str, str] | None = None
) -> list[str]:
    """A flag for every :class:`TrainConfig` field offered on the command line (or those in ``only``), from its
    metadata (help, unless ``helps`` has another; choices; how a boolean is set); returns the field names. Unset
    flags stay None: the recipes decide."""
    from dataclasses import fields

    from cnnlab.train.config import TrainConfig

    names = []
    for spec in fields(TrainConfig):
        meta = spec.metadata
        if not meta.get("cli") or (only is not None and spec.name not in only):
            continue
        help_text = (helps or {}).get(spec.name, meta["help"])
        flag, kind = "--" + spec.name.replace("_", "-"), meta["flag"]
        choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
        if kind == "on":
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif kind == "off":
            parser.add_argument("--no-" + flag[2:], dest=spec.name, action="store_false", default=None, help=help_text)
        elif kind == "both":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            annotation = str(spec.type)
            kind_of = int_list if "list" in annotation else float if "float" in annotation else (
                int if "int" in annotation else str
            )  # fmt: skip
            parser.add_argument(flag, type=kind_of, choices=choices, help=help_text)
        names.append(spec.name)
    return names


def build_parser() -> argparse.ArgumentParser:
    from cnnlab import __version__
    from cnnlab.captioning.runs import CAPTION_FLAGS
    from cnnlab.detection.runs import DETECT_FLAGS
    from cnnlab.generative.runs import GAN_FLAGS
    from cnnlab.inspect.views import add_view_arguments, view_list

    parser = argparse.ArgumentParser(
        prog="cnnlab",
        description="Build, train, look inside, fool and reuse convolutional neural networks.",
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-paragraph errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, spec in COMMAND_SPECS.items():
        epilog = ("views:\n" + view_list() + "\n" if name == "viz" else "") + (EXAMPLES.get(name) or "")
        p = _add_command(sub, name, spec, epilog)
        if name == "train":
            TRAIN_FLAGS[:] = _config_flags(p)
        if name == "viz":
            add_view_arguments(p)
        grouped = {
            "gan": (GAN_ACTIONS, GAN_FLAGS, GAN_HELP),
            "caption": (CAPTION_ACTIONS, CAPTION_FLAGS, CAPTION_HELP),
            "detect": (DETECT_ACTIONS, DETECT_FLAGS, DETECT_HELP),
        }
        if name in grouped:  # `cnnlab gan|caption|detect ACTION`: one sub-parser per action
            table, flags, helps = grouped[name]
            actions = p.add_subparsers(dest=f"{name}_action", metavar="ACTION", required=True)
            for action, action_spec in table.items():
                q = _add_command(actions, action, action_spec, EXAMPLES[name])
                if action == "train":
                    _config_flags(q, only=flags, helps=helps)
    return parser


def _add_command(sub, name: str, spec, epilog: str) -> argparse.ArgumentParser:
    """A (sub)command's parser from its :class:`~cnnlab.cli_spec.CommandSpec`."""
    p = sub.add_parser(name, help=spec.help, description=spec.help, epilog=epilog, formatter_class=_formatter)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    if spec.device is not None:
        p.add_argument("--device", default=None if spec.device == "config" else spec.device, help=DEVICE_HELP)
    if spec.data_root:
        p.add_argument("--data-root", help="where datasets live (default: $CNNLAB_DATA, else ~/.cache/cnnlab)")
    group = None
    for arg in spec.arguments:
        if arg.exclusive and group is None:
            group = p.add_mutually_exclusive_group()
        (group if arg.exclusive else p).add_argument(*arg.flags, **arg.options)
    return p


def _parse_model_options(pairs: list[str], flag: str = "--model-option") -> dict:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{flag} {pair!r} must look like KEY=VALUE, e.g. {flag[2:].replace('-', '_')}=...")
        key, raw = pair.split("=", 1)
        # true/false as people type them (per_example=false); "none" stays a word: drop=none is an option's value
        words = {"true": True, "false": False}
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = words.get(raw.strip().lower(), raw)  # any other bare word is a string
        options[key.strip().replace("-", "_")] = value
    return options


def _parse_shape(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"--input {text!r} must be CxHxW with positive whole numbers, e.g. 1x32x32 or 3x224x224.")
    return shape  # type: ignore[return-value]


def _parse_eps(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--eps {text!r} must be comma-separated numbers, e.g. 0,0.1,0.25.") from None


def _warn(text: str) -> None:
    print(text, file=sys.stderr)


@contextmanager
def _session(device: str | None):
    """(torchrun context or None, is this the printing process, progress reporter, say) for a training command."""
    from cnnlab.train.distributed import distributed_session
    from cnnlab.train.progress import QuietReporter, RichReporter, log_console

    with distributed_session(device or "auto") as context:  # None unless started by torchrun
        main = context is None or context.is_main  # rank 0 alone prints and writes files
        console = log_console()
        reporter = RichReporter(console) if main else QuietReporter()
        yield context, main, reporter, (console.print if main else lambda *a, **k: None)


# ---- commands: each calls one library function and prints -----------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from cnnlab.workflows import train_classifier

    given = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    with _session(given.get("device")) as (context, main, reporter, say):
        options = _parse_model_options(args.model_option)
        result = train_classifier(given, model_options=options, resume=args.resume, overwrite=args.overwrite,
                                  reporter=reporter, context=context, say=say)  # fmt: skip
    if main and not result.already_complete:
        final, k = result.history[-1], min(5, result.run.dataset.num_classes)
        print(
            f"final test error {final['test_error']:.2%} (accuracy {1 - final['test_error']:.2%}), top-{k} error "
            f"{final['test_top5_error']:.2%}, after {final['epoch']} epochs ({result.seconds:.1f} s wall, training "
            "and evaluation)"
        )
        print(f"run directory: {result.run.run_dir.path}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from cnnlab.workflows import evaluate_run

    r = evaluate_run(args.checkpoint, args.data, args.data_root, args.batch_size, args.device, args.tta, _warn)
    tta = f", test-time augmentation {r.tta}" if r.tta else ""
    print(f"{r.model} on {r.data} test split ({r.samples:,} images{tta})")
    print(f"top-1 error {r.top1_error:.2%}  (accuracy {1 - r.top1_error:.2%})")
    print(f"top-{r.k} error {r.topk_error:.2%}")
    print(f"cross-entropy {r.loss:.4f}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from cnnlab.workflows import load

    ranked = load(args.checkpoint, args.device).predict(args.images, args.top_k, args.invert)
    for path, top in zip(args.images, ranked, strict=True):
        print(f"{path}: " + ", ".join(f"{name} {p:.1%}" for name, p in top))
    return 0


def _cmd_attack(args: argparse.Namespace) -> int:
    from cnnlab.adversarial import attack_runs

    reports = attack_runs(
        args.checkpoint, args.method, _parse_eps(args.eps), target=args.target, norm=args.norm, steps=args.steps,
        limit=args.limit, batch_size=args.batch_size, out=args.out, data=args.data, data_root=args.data_root,
        device=args.device, say=_warn,
    )  # fmt: skip
    for r in reports:
        what = f"{r.method}{f' targeted at class {r.target}' if r.target is not None else ''}"
        print(f"{r.checkpoint}: {r.model} on {r.data} test split ({r.rows[0].samples:,} images), {what}")
        print("\n".join(r.table()))
        print("\n".join(f"figure: {path}" for path in r.figures))
    return 0


def _cmd_fool(args: argparse.Namespace) -> int:
    from cnnlab.adversarial import fool_run

    r = fool_run(args.checkpoint, args.target_class, args.count, args.steps, args.out, args.device)
    ranked = sorted(r.confidences)
    summary = (
        ", ".join(f"{c:.1%}" for c in r.confidences)
        if len(ranked) <= 16
        else f"min {ranked[0]:.1%}, median {ranked[len(ranked) // 2]:.1%}, max {ranked[-1]:.1%}"
    )
    print(f"{args.count} noise images grown towards {r.class_name!r}: confidence {summary}")
    missed = sum(c < 0.5 for c in r.confidences)
    if missed:
        _warn(f"warning: {missed} of {args.count} images are not called {r.class_name!r} with confidence ≥ 50% "
              f"after {args.steps} steps; give more --steps.")  # fmt: skip
    more = f" ... {r.paths[-1]} ({len(r.paths)} files)" if len(r.paths) > 1 else ""
    print(f"wrote {r.paths[0]}{more}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cnnlab.generative import summary_model
    from cnnlab.inspect import render_summary, summarize

    requested = _parse_shape(args.input)
    options = {"device": "meta", "num_classes": args.num_classes, "in_chans": requested[0] if requested else None}
    model, default_shape = summary_model(args.model, **options)
    render_summary(summarize(model, requested or default_shape), Console(width=max(Console().width, 132)))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cnnlab.inspect.summary import models_table

    Console(width=max(Console().width, 160)).print(models_table(args.pattern))
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from cnnlab.transfer import FinetuneConfig, finetune

    config = FinetuneConfig(**{f.name: getattr(args, f.name) for f in fields(FinetuneConfig)})
    with _session(args.device) as (context, main, reporter, say):
        result = finetune(config, reporter=reporter, context=context, say=say)
    if main:
        final = result.history[-1]
        print(f"final test error {final['test_error']:.2%} (accuracy {1 - final['test_error']:.2%}) after "
              f"{final['epoch']} epochs")  # fmt: skip
        print(f"run directory: {result.run.run_dir.path}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from cnnlab.train.progress import step_lines
    from cnnlab.transfer import features_of_run

    r = features_of_run(
        args.source, args.data, args.layer, args.out, data_root=args.data_root,
        labels_per_class=args.labels_per_class, batch_size=args.batch_size, device=args.device, say=print,
        progress=step_lines("features"),
    )  # fmt: skip
    print(f"{r.images:,} images -> {r.dim}-d features of {args.layer!r} in {r.seconds:.1f} s; wrote {r.path}")
    return 0


def _cmd_linear_probe(args: argparse.Namespace) -> int:
    from cnnlab.transfer import linear_probe, load_features
    from cnnlab.workflows import require_positive

    require_positive("--c", args.c, whole=False)
    features = load_features(args.features)
    result = linear_probe(features, args.classifier, args.c)
    meta = features.get("meta", {})
    print(
        f"{args.classifier} on {result['train_samples']:,} × {result['dim']}-d features "
        f"({meta.get('layer', '?')} of {meta.get('source', '?')}, data {meta.get('data', '?')}): "
        f"test error {result['test_error']:.2%} (train {result['train_error']:.2%}), fit {result['fit_seconds']:.1f} s"
    )
    return 0


def _cmd_viz(args: argparse.Namespace) -> int:
    from cnnlab.inspect.views import options_from_args, run_view
    from cnnlab.train.progress import step_lines

    result = run_view(args.kind, args.checkpoint, args.images, layer=args.layer, channel=args.channel,
                      out_dir=args.out, device=args.device, progress=step_lines("viz"),
                      **options_from_args(args))  # fmt: skip
    for note in result.notes:
        _warn(f"note: {note}")
    print("\n".join(str(path) for path in result.paths))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from cnnlab.inspect import write_report
    from cnnlab.train.progress import step_lines

    print(write_report(args.run_dir, device=args.device, data_root=args.data_root, images=args.images,
                       units=args.units, mistakes=args.mistakes, progress=step_lines("report")))  # fmt: skip
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from cnnlab.export import export_spec

    path, fmt, shape, difference = export_spec(args.model, args.out, args.format, _parse_shape(args.input), args.check)
    print(f"wrote {path} ({fmt}, input {'×'.join(map(str, shape))})")
    if difference is not None:
        print(f"onnxruntime vs PyTorch: largest absolute difference {difference:.2e}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from cnnlab.data.info import dataset_list, describe_dataset, preview_dataset, write_samples

    if args.action == "list":
        print("\n".join(dataset_list()))
    elif not args.name:
        raise ConfigError(f"`cnnlab data {args.action}` needs a dataset name; `cnnlab data list` shows them.")
    elif args.action == "preview":
        path, spec = preview_dataset(args.name, args.augment, args.out, args.count, args.data_root, args.val_split)
        print(f"wrote {path} (row 1: as stored; rows 2-4: {spec})")
    elif args.action == "samples":
        paths = write_samples(args.name, args.count, args.out or ".", args.data_root, args.val_split)
        print("wrote " + " ".join(str(path) for path in paths))
    else:
        print("\n".join(describe_dataset(args.name, args.data_root, args.action == "get", args.val_split)))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from cnnlab.bench.command import BenchOptions, run_benchmark

    options = BenchOptions(**{f.name: getattr(args, f.name) for f in fields(BenchOptions)})
    print("\n".join(run_benchmark(args.kind, options)))
    return 0


def _cmd_gan(args: argparse.Namespace) -> int:
    from cnnlab import generative

    if args.gan_action == "train":
        given = {name: getattr(args, name) for name in generative.GAN_FLAGS if getattr(args, name, None) is not None}
        with _session(given.get("device")) as (context, main, reporter, say):
            r = generative.train_gan(given, arch=args.arch, size=args.size, z_dim=args.z_dim,
                                     reuse_fakes=args.reuse_fakes, coverage_run=args.coverage_run,
                                     resume=args.resume, overwrite=args.overwrite,
                                     reporter=reporter, context=context, say=say)  # fmt: skip
        if main and not r.already_complete:
            last = r.history[-1]
            print(f"after {last['epoch']} epochs ({r.seconds:.1f} s): D loss {last['train_d_loss']:.3f}, G loss "
                  f"{last['train_g_loss']:.3f}; samples in {r.run.run_dir.path / 'samples'}")  # fmt: skip
            print(f"run directory: {r.run.run_dir.path}")
    elif args.gan_action == "sample":
        print(f"wrote {generative.sample_run(args.run, args.n, args.out, args.seed, args.device).path}")
    elif args.gan_action == "interpolate":
        r = generative.interpolate_run(args.run, args.steps, args.rows, args.out, args.seed, args.spherical,
                                       args.device)  # fmt: skip
        print(f"wrote {r.path}")
    elif args.gan_action == "probe":
        r = generative.probe_discriminator(args.run, args.labels, args.seeds, args.features, args.holdout,
                                           args.classifier, args.out, args.data_root, args.device, args.epochs,
                                           say=print)  # fmt: skip
        print("\n".join(["test accuracy, mean ± sd over seeds:", *r.table(), f"wrote {r.path}"]))
    else:
        m = generative.measure_gan(args.run, args.classifier, args.n, args.seed, args.data_root, args.device)
        print("\n".join(m.lines()))
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from cnnlab import detection

    if args.detect_action == "train":
        given = {name: getattr(args, name) for name in detection.DETECT_FLAGS if getattr(args, name, None) is not None}
        with _session(given.get("device")) as (_, _main, reporter, say):
            r = detection.train_detector(
                given, method=args.method, backbone=args.backbone, stage=args.backbone_stage,
                options=_parse_model_options(args.option, "--option"),
                data_options=_parse_model_options(args.data_option, "--data-option"),
                resume=args.resume, overwrite=args.overwrite, reporter=reporter, say=say,
            )  # fmt: skip
        if not r.already_complete:
            last = r.history[-1]
            print(f"after {last['epoch']} epochs ({r.seconds:.1f} s): test mAP@0.5 {last['test_map50']:.3f}, "
                  f"COCO mAP {last['test_map']:.3f}")  # fmt: skip
            print(f"run directory: {r.run.run_dir.path}")
    elif args.detect_action == "eval":
        r = detection.evaluate_detector(args.run, args.data_root, args.device, say=_warn, svd_rank=args.svd_rank)
        print(f"{r.images:,} test images, {r.seconds_per_image * 1000:.1f} ms each: mAP@0.5 {r.map50:.4f}, "
              f"COCO mAP@[.5:.95] {r.map:.4f}")  # fmt: skip
        print("AP@0.5 per class (VOC all-point): " + ", ".join(f"{k} {v:.3f}" for k, v in r.per_class.items()))
        if not args.svd_rank:
            print(f"report: {detection.write_report(args.run, data_root=args.data_root)}")
    elif args.detect_action == "predict":
        for path, found in detection.predict_images(args.run, args.images, args.out, args.threshold, args.device):
            print(f"{path}: {len(found['boxes'])} object(s)")
    else:
        image = int(args.image[5:]) if args.image.startswith("test:") and args.image[5:].isdigit() else args.image
        views = tuple(args.view or ("occlusion", "deconvnet"))
        r = detection.explain_detection(args.run, image, args.detection, views, args.out, args.data_root)
        print(f"detection {args.detection}: {r.label} {r.score:.2f} at {r.box}")
        for view, path in r.files.items():
            print(f"{view}: {path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from cnnlab.serve import serve

    say = lambda text: print(text, flush=True)  # noqa: E731  (the address must show before serving starts)
    serve(args.run_dirs, host=args.host, port=args.port, device=args.device, say=say, warn=_warn)
    return 0


def _cmd_caption(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from cnnlab import captioning

    if args.caption_action == "train":
        given = {k: getattr(args, k) for k in captioning.CAPTION_FLAGS if getattr(args, k, None) is not None}
        chosen = {f.name: getattr(args, f.name) for f in fields(captioning.CaptionOptions) if hasattr(args, f.name)}
        options = captioning.CaptionOptions(**chosen, data_options=_parse_model_options(args.data_option))
        with _session(given.get("device")) as (_, _main, reporter, say):
            r = captioning.train_captioner(given, options, resume=args.resume, overwrite=args.overwrite,
                                           reporter=reporter, say=say)  # fmt: skip
        if not r.already_complete:
            last = r.history[-1]
            print(f"after {last['epoch']} epochs ({r.seconds:.1f} s): {r.trainer.task.epoch_text(last)}")
        print(f"run directory: {r.run.run_dir.path}")
    elif args.caption_action == "eval":
        e = captioning.evaluate_captioner(args.run, args.split, args.beam, args.limit, args.data_root, args.device,
                                          args.samples, args.out, args.regions)  # fmt: skip
        for name, scores in e.bleu.items():
            bleu = "  ".join(f"BLEU-{n} {v:.3f}" for n, v in scores.items())
            print(f"{name:>8}: {bleu}  CIDEr-D {e.cider[name]:.3f}  ({e.scenes:,} scenes)")
        if e.objects:
            print("named objects in the scene (greedy): " + "  ".join(f"{k} {v:.1f}% (chance {c:.1f}%)"
                                                                      for k, (v, c) in e.objects.items()))  # fmt: skip
        print("  ".join(f"{k} {v:.2f} s" for k, v in e.seconds.items()))
        if e.retrieval is not None:
            ways = {"image→sentence": e.retrieval.image_to_sentence, "sentence→image": e.retrieval.sentence_to_image}
            for way, row in ways.items():
                print(f"{way}: R@1 {row['r1']:.1f}%  R@5 {row['r5']:.1f}%  R@10 {row['r10']:.1f}%  median rank "
                      f"{row['median_rank']:g}")  # fmt: skip
            print("chance R@1: " + "  ".join(f"{k} {v:.2f}%" for k, v in e.retrieval.chance_r1.items()))
        for label, rows in (("best", e.best), ("worst", e.worst)):
            for index, caption, references, score in rows:
                print(f"{label} #{index} (BLEU-4 {score:.2f}): {caption}  |  {references[0]}")
        print("wrote " + " ".join(str(p) for p in e.pictures))
    else:
        for p in captioning.predict_captions(args.run, args.images, args.beam, args.out, args.device, args.caption,
                                             args.data_root):  # fmt: skip
            print("\n".join([f"{p.image}: {p.caption}  ({p.picture})", *p.region_lines()]))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from cnnlab.reproduce import list_entries, reproduce

    if args.list or args.name is None:
        for e in list_entries():
            print(f"{e['name']:<26} {e['cost']}; {e['arms']} arm(s) × {e['seeds']} seeds\n    {e['paper']}\n"
                  f"    goal: {e['goal']}")  # fmt: skip
        return 0
    say = lambda text: print(text, flush=True)  # noqa: E731
    result = reproduce(args.name, args.seeds, quick=args.quick, out=args.out, data_root=args.data_root,
                       device=args.device, cpu_anyway=args.cpu_anyway, jobs=args.jobs, say=say)  # fmt: skip
    print(result.markdown())
    print(f"runs, table.md and curves.png: {result.out}")
    return 0


COMMANDS = {
    "detect": _cmd_detect,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "predict": _cmd_predict,
    "summary": _cmd_summary,
    "models": _cmd_models,
    "attack": _cmd_attack,
    "fool": _cmd_fool,
    "viz": _cmd_viz,
    "report": _cmd_report,
    "finetune": _cmd_finetune,
    "features": _cmd_features,
    "linear-probe": _cmd_linear_probe,
    "data": _cmd_data,
    "bench": _cmd_bench,
    "export": _cmd_export,
    "gan": _cmd_gan,
    "caption": _cmd_caption,
    "serve": _cmd_serve,
    "reproduce": _cmd_reproduce,
}
TRAIN_FLAGS: list[str] = []  # the TrainConfig fields offered as `train` flags (filled by build_parser)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cnnlab`` command; returns the exit status."""
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:  # answered before the parser imports torch
        from cnnlab import __version__

        print(f"cnnlab {__version__}")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["train", *([] if argv is None else argv)])  # `cnnlab` alone = the main job
    debug = getattr(args, "debug", False)
    try:
        return COMMANDS[args.command](args)
    except CnnlabError as error:
        if debug:
            raise
        kind = type(error).__name__
        print(textwrap.fill(f"error ({kind}): {error}", width=110, break_on_hyphens=False), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
