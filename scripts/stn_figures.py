"""docs/stn.md's pictures: the distorted-MNIST sets, and what trained ST-CNNs do (from scripts/stn_study.py's runs).

    python scripts/stn_figures.py datasets                       # docs/images/stn-datasets.png
    python scripts/stn_figures.py views runs/stn-study           # docs/images/stn-<data>*.png from the seed-0 runs

The data root is $CNNLAB_DATA (the folder holding MNIST/raw).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
SETS = ["mnist-rotated", "mnist-rts", "mnist-projective", "mnist-elastic", "mnist-cluttered"]


def datasets_figure(out: Path, per_row: int = 10) -> Path:
    import torch.nn.functional as F

    from cnnlab.data import load_dataset
    from cnnlab.inspect.grid import new_figure, save

    fig = new_figure(1.1 * per_row + 1.6, 1.15 * len(SETS) + 0.3)
    axes = fig.subplots(len(SETS), per_row, squeeze=False)
    for row, name in enumerate(SETS):
        data = load_dataset(name)
        images = data.train.images[:per_row].float() / 255
        for col in range(per_row):
            ax = axes[row, col]
            ax.imshow(F.pad(images[col, 0], (1, 1, 1, 1), value=0.35), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"{name}\n{images.shape[-1]}×{images.shape[-1]}", fontsize=8)
    fig.suptitle("The distorted-MNIST sets (first training images, generated from a fixed seed)", fontsize=9)
    return save(fig, out)


def view_figures(study: Path) -> list[Path]:
    from cnnlab.inspect.views import run_view

    written = []
    for data in ("mnist-rts", "mnist-cluttered"):
        run = study / f"st-cnn-{data}-seed0"
        if not (run / "checkpoint.pt").exists():
            print(f"skipped {data}: no {run}")
            continue
        result = run_view("transformer", run, count=8, device="cpu")
        for path in result.paths:
            target = IMAGES / f"stn-{data.removeprefix('mnist-')}{path.stem.removeprefix('transformer')}.png"
            shutil.copyfile(path, target)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["datasets", "views"])
    parser.add_argument("study", nargs="?", default="runs/stn-study")
    args = parser.parse_args()
    if args.what == "datasets":
        print(datasets_figure(IMAGES / "stn-datasets.png"))
    else:
        for path in view_figures(Path(args.study)):
            print(path)


if __name__ == "__main__":
    main()
