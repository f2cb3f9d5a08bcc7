"""``cnnlab bench KIND``: runs one benchmark and returns its report as text lines (the command prints them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnlab.errors import ConfigError

KINDS = ("data", "models", "train", "adversarial", "transfer", "viz", "detect", "gan")
DEFAULT_MODELS = ["lenet5-modern", "resnet20", "vgg11"]


@dataclass
class BenchOptions:
    """The settings of ``cnnlab bench`` (most apply to one kind only; see ``cnnlab bench --help``)."""

    names: list[str] = field(default_factory=list)  # models: which
    quick: bool = False  # seconds: checks that it runs, not its speed
    device: str = "auto"
    data_root: str | None = None  # train, viz: where real MNIST is
    batch_size: int = 32  # models: images per step
    input_size: int | None = None  # models: square input side, pixels
    dtype: str = "float32"  # models: precision
    channels_last: bool = False  # models: NHWC for both sides
    repeats: int = 3  # models: alternating rounds
    paper_scale: bool = False  # detect: R-CNN vs Fast R-CNN with AlexNet on a photo-sized image, untrained

    def check(self, kind: str) -> None:
        if kind not in KINDS:
            raise ConfigError(f"Unknown benchmark {kind!r}; choose one of {', '.join(KINDS)}.")
        if self.names and kind not in ("models", "detect"):
            raise ConfigError(
                f"`cnnlab bench {kind}` takes no model names ({', '.join(self.names)}); they are for "
                "`cnnlab bench models MODEL ...` (and run directories for `cnnlab bench detect RUN ...`)."
            )
        if self.paper_scale and (kind != "detect" or self.names):
            raise ConfigError(
                "--paper-scale is for `cnnlab bench detect` without run directories: it builds its own untrained "
                "AlexNet R-CNN and Fast R-CNN; drop the run directories (or --paper-scale)."
            )
        for name in ("batch_size", "repeats", "input_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive whole number, got {value}.")


def run_benchmark(kind: str, options: BenchOptions) -> list[str]:
    """Run benchmark ``kind`` and return its report lines."""
    from cnnlab.train import resolve_device

    options.check(kind)
    device = str(resolve_device(options.device))
    return {
        "models": _models,
        "train": _train,
        "viz": _viz,
        "adversarial": _adversarial,
        "transfer": _transfer,
        "data": _data,
        "detect": _detect,
        "gan": _gan,
    }[kind](options, device)


def _gan(options: BenchOptions, device: str) -> list[str]:
    from cnnlab.bench import gan

    return gan.run(quick=options.quick, device=device, data_root=options.data_root)


def _detect(options: BenchOptions, device: str) -> list[str]:
    from cnnlab.bench.detect import bench_detectors, paper_scale_lines

    if options.paper_scale:
        return paper_scale_lines(options.quick)
    return bench_detectors(options.names, quick=options.quick, data_root=options.data_root)


def _models(options: BenchOptions, device: str) -> list[str]:
    from cnnlab.bench.models import bench_models

    rows = bench_models(
        options.names or DEFAULT_MODELS, options.batch_size, options.input_size, device, dtype=options.dtype,
        channels_last=options.channels_last, repeats=options.repeats, quick=options.quick,
    )  # fmt: skip
    lines = [
        f"training images/s on {device}, {options.dtype}, ours vs torchvision's model of the same name",
        f"{'model':16} {'cnnlab':>10} {'torchvision':>12} {'ratio':>7}",
    ]
    for row in rows:
        tv = row.get("torchvision_images_per_s")
        ratio = f"{row['ratio']:6.2f}×" if row.get("ratio") else "   n/a"
        tv_text = f"{tv:12,.0f}" if tv else f"{'(none)':>12}"
        lines.append(f"{row['model']:16} {row['ours_images_per_s']:10,.0f} {tv_text} {ratio}")
    return lines


def _train(options: BenchOptions, device: str) -> list[str]:
    from cnnlab.bench import train

    return [train.run(quick=options.quick, device=device, mnist_root=options.data_root)]


def _viz(options: BenchOptions, device: str) -> list[str]:
    from cnnlab.bench import viz

    return [viz.format_rows(viz.run(quick=options.quick, device=device, data_root=options.data_root))]


def _adversarial(options: BenchOptions, device: str) -> list[str]:
    from cnnlab.bench import adversarial

    attack, epoch = adversarial.run(quick=options.quick, device=device)
    rounds = ", ".join(f"{r:.2f}×" for r in epoch["ratios"])
    return [
        f"FGSM (ε = 0.25) over {attack['images']:,} images, {attack['model']} on {device}: "
        f"cnnlab {attack['cnnlab_s']:.2f} s, usual loop {attack['usual_s']:.2f} s",
        f"one epoch of {epoch['images']:,} images (median of {len(epoch['ratios'])} alternating rounds): normal "
        f"{epoch['normal_s']:.2f} s, adversarial (FGSM, α = 0.5) {epoch['adversarial_s']:.2f} s; "
        f"ratio {epoch['ratio']:.2f}× (median of the rounds: {rounds})",
    ]


def _transfer(options: BenchOptions, device: str) -> list[str]:
    from cnnlab.bench import transfer

    features, probes = transfer.run(quick=options.quick, device=device)
    lines = [
        f"LeNet-5 c5 features of {features['images']:,} images on {device}: cnnlab {features['cnnlab_s']:.2f} s, "
        f"usual DataLoader way {features['usual_s']:.2f} s ({features['usual_s'] / features['cnnlab_s']:.1f}×; "
        f"same features: {features['same_features']})"
    ]
    for p in probes:
        lines.append(
            f"linear probe ({p['classifier']}) on {p['samples']:,} × {p['dim']}-d vectors: fit {p['fit_s']:.1f} s"
        )
    return lines


def _data(options: BenchOptions, device: str) -> list[str]:
    from cnnlab.bench.data import run

    lines = [
        f"input pipeline, images/s on {device} (shuffled, augmented, normalised batches of 512 on the device)",
        f"{'data':12} {'images':>8} {'cnnlab':>10} {'usual way':>10} {'ratio':>7}",
    ]
    for row in run(quick=options.quick, device=device):
        ours, usual = row.cnnlab_images_per_s, row.usual_images_per_s
        lines.append(f"{row.shape:12} {row.images:8,} {ours:10,.0f} {usual:10,.0f} {row.ratio:6.1f}×")
    lines.append("usual way: PIL images + torchvision.transforms.v2 per sample + DataLoader(num_workers=2)")
    return lines
