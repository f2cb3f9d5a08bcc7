"""docs/python.md runs as written: its Python blocks (each on its own, in order) and its shell commands, in a
scratch folder."""

import shlex
from pathlib import Path

import pytest

from cnnlab.cli import main

DOC = Path(__file__).parents[1] / "docs" / "python.md"


def _blocks(text: str) -> list[tuple[str, str]]:
    out, parts = [], text.split("```")
    for fenced in parts[1::2]:
        language, _, body = fenced.partition("\n")
        out.append((language.strip(), body))
    return out


@pytest.mark.slow
def test_every_block_of_the_python_page_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(DOC.read_text())
    assert [lang for lang, _ in blocks].count("python") >= 4
    for index, (language, body) in enumerate(blocks):
        if language == "python":
            exec(compile(body, f"{DOC.name} block {index}", "exec"), {"__name__": f"docs_block_{index}"})
        elif language == "sh":
            for line in body.strip().splitlines():
                words = shlex.split(line.split("#")[0])
                assert words[0] == "cnnlab" and main(words[1:]) == 0, line
    out = capsys.readouterr().out
    assert "test error" in out and "True" in out and "top-1 error" in out
    assert (tmp_path / "runs" / "py-tensors" / "data.pt").is_file()


def test_in_memory_data_is_checked_with_a_clear_error(tmp_path):
    import torch

    import cnnlab
    from cnnlab.errors import ConfigError, DataError

    with pytest.raises(DataError, match=r"floats in \[-1, 2\]"):
        cnnlab.train("lenet5", (torch.linspace(-1, 2, 64).view(1, 8, 8).repeat(10, 1, 1), torch.arange(10) % 2),
                     out=str(tmp_path / "a"), progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="epoch"):
        cnnlab.train("lenet5", "digits", epoch=3, out=str(tmp_path / "b"), progress=False)
    assert not (tmp_path / "b").exists()


def test_models_listing_takes_aliases_and_parts_of_names(capsys):
    assert main(["models", "vgg16"]) == 0 and "vgg-d" in capsys.readouterr().out
    assert main(["models", "resnet2"]) == 0 and "resnet20" in capsys.readouterr().out


def test_pretrained_is_weights_torchvision(monkeypatch):
    from cnnlab import models
    from cnnlab.models import _registry

    class Asked(Exception):
        pass

    def resolve(info, spec):  # stands in for the download: records what was asked
        raise Asked(spec)

    monkeypatch.setattr(_registry, "resolve_torchvision_weights", resolve)
    with pytest.raises(Asked, match="^torchvision$"):
        models.create("resnet18", pretrained=True)


def test_summary_infers_the_input_of_a_model_built_by_hand():
    from torch import nn

    import cnnlab

    table = cnnlab.summary(nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.MaxPool2d(2)), show=False)
    assert table.input_shape == (3, 32, 32) and table.rows[0].output_shape == (8, 28, 28)
