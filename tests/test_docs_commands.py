"""Every command the README and docs show still exists (issue 15): each `cnnlab ...` line of their shell blocks (and
of the `--help` examples) parses with the real command-line parser, and every model, dataset, view and
augmentation it names is registered, so renaming a flag or a model breaks this test, not a new user's first hour.
Nothing is run: tests/test_readme.py runs the README's commands (slow), tests/test_python_docs.py docs/python.md.
The docs' other Python blocks are compiled and their `from cnnlab... import NAME` lines resolved.

Shell blocks are fences tagged `sh`, `console`, `bash` or untagged; a block with `$ ` lines is a transcript whose
`$ ` lines are the commands, any other block's commands are its lines that start with a command. Usage synopses
(`cnnlab viz KIND CHECKPOINT [IMAGE...]`) are fenced as `text` and skipped."""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import pytest

from cnnlab.cli import build_parser
from cnnlab.cli_spec import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"", "sh", "console", "bash", "shell"}
PROGRAMS = ("cnnlab", "torchrun", "python", ".venv/bin/python", ".venv/bin/cnnlab", "make")
EXECUTED_PYTHON = {"python.md"}  # tests/test_python_docs.py runs these blocks as written


def _blocks(path: Path) -> list[tuple[str, str]]:
    """(language, body) of every fenced block of a Markdown page."""
    return [(lang.strip(), body) for lang, _, body in (f.partition("\n") for f in path.read_text().split("```")[1::2])]


def _logical_lines(body: str) -> list[str]:
    """Lines with backslash continuations joined."""
    out, pending = [], ""
    for line in body.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def shell_commands(body: str) -> list[tuple[str, str]]:
    """(command line, the error it is shown to end with, or "") for each command of a shell block."""
    lines = _logical_lines(body)
    if not any(line.startswith("$ ") for line in lines):
        return [(line, "") for line in lines if line.split(" ", 1)[0] in PROGRAMS]
    found = []
    for i, line in enumerate(lines):
        if line.startswith("$ "):
            shown = lines[i + 1] if i + 1 < len(lines) else ""
            found.append((line[2:], shown.split(")")[0].removeprefix("error (") if shown.startswith("error (") else ""))
    return found


def documented_commands() -> list[tuple[str, list[str], str]]:
    """(where, words, shown error) for every command of the README's and docs' shell blocks and of the `--help`
    examples."""
    found = []
    for page in PAGES:
        for language, body in _blocks(page):
            if language in SHELL:
                found += [(page.name, shlex.split(line, comments=True), e) for line, e in shell_commands(body)]
    for name, text in EXAMPLES.items():
        found += [
            (f"cnnlab {name} --help", shlex.split(line.strip(), comments=True), "")
            for line in text.splitlines()
            if line.startswith("  cnnlab ")
        ]
    return [(where, words, error) for where, words, error in found if words]


def cnnlab_arguments(words: list[str]) -> list[str] | None:
    """The arguments given to cnnlab by a command line, or None if it does not run cnnlab."""
    if words[0] in ("cnnlab", ".venv/bin/cnnlab"):
        return words[1:]
    for i in range(len(words) - 1):
        if words[i : i + 2] == ["-m", "cnnlab"]:  # torchrun ... -m cnnlab ..., python -m cnnlab ...
            return words[i + 2 :]
    return None


def _parse(arguments: list[str]):
    parser, errors = build_parser(), io.StringIO()
    with contextlib.redirect_stderr(errors):
        try:
            args = parser.parse_args(arguments)
            if args.command is None:  # `cnnlab` alone is `cnnlab train`
                args = parser.parse_args(["train", *arguments])
        except SystemExit:
            return None, errors.getvalue()
    return args, ""


def _is_path(text: str) -> bool:
    return "/" in text or text.endswith((".pt", ".npz", ".onnx", ".safetensors")) or Path(text).suffix != ""


def _model_info(name: str):
    """A zoo model's registry entry, else a GAN generator's (``cnnlab summary`` takes both)."""
    from cnnlab import models
    from cnnlab.generative.architectures import GENERATORS

    return GENERATORS[name] if name in GENERATORS else models.get_model_info(name)


def _dataset_info(name: str):
    """A classification dataset's registry entry, else a detection or caption dataset's."""
    from cnnlab.data import get_dataset_info
    from cnnlab.data.captions import get_caption_dataset_info, is_caption_dataset
    from cnnlab.data.detection import get_detection_dataset_info, is_detection_dataset

    if is_caption_dataset(name):
        return get_caption_dataset_info(name)
    return get_detection_dataset_info(name) if is_detection_dataset(name) else get_dataset_info(name)


def unregistered_names(args) -> list[str]:
    """The model, dataset, view and augmentation names of a parsed command that nothing registers."""
    from cnnlab.data.augment import validate_augmentation
    from cnnlab.errors import CnnlabError
    from cnnlab.inspect.summary import models_table
    from cnnlab.inspect.views import VIEWS

    checks = []
    model_names = [getattr(args, "model", None)] if args.command in ("train", "summary", "export") else []
    if args.command == "finetune" and args.source.endswith(":torchvision"):
        model_names.append(args.source.removesuffix(":torchvision"))
    if args.command == "bench" and args.kind == "models":
        model_names += args.names
    if args.command == "caption" and args.caption_action == "train":
        model_names.append(args.encoder)
    checks += [(f"model {m!r}", _model_info, m) for m in model_names if m and not _is_path(m)]
    data = args.name if args.command == "data" else getattr(args, "data", None)
    if data and not (args.command == "data" and args.action == "list"):
        checks.append((f"dataset {data!r}", _dataset_info, data))
    if getattr(args, "augment", None):
        checks.append((f"augmentation {args.augment!r}", validate_augmentation, args.augment))
    if args.command == "viz":
        checks.append((f"view {args.kind!r}", lambda kind: VIEWS[kind], args.kind))
    if args.command == "models":
        checks.append((f"models pattern {args.pattern!r}", models_table, args.pattern))
    missing = []
    for what, check, value in checks:
        try:
            check(value)
        except (CnnlabError, KeyError) as error:
            missing.append(f"{what}: {error}")
    return missing


COMMANDS = documented_commands()


def test_the_docs_commands_are_found():
    pages = {where for where, _, _ in COMMANDS}
    assert {"README.md", "inspect.md", "transfer.md", "data.md", "training.md", "lenet5.md"} <= pages, pages
    runs_cnnlab = [words for _, words, _ in COMMANDS if cnnlab_arguments(words) is not None]
    assert len(runs_cnnlab) > 50 and ["cnnlab", "train"] in runs_cnnlab
    assert any(w[:3] == ["torchrun", "--standalone", "--nproc-per-node"] for _, w, _ in COMMANDS)
    assert not any("[" in " ".join(w) and "|" in " ".join(w) for _, w, _ in COMMANDS), "a synopsis is not fenced text"
    assert {e for _, _, e in COMMANDS} == {"", "UnknownNameError", "InputSizeError"}  # the README's error examples


@pytest.mark.parametrize(
    ("where", "words", "shown_error"), COMMANDS, ids=[f"{w}: {' '.join(c)}"[:100] for w, c, _ in COMMANDS]
)
def test_every_documented_command_parses_and_names_what_exists(where, words, shown_error):
    arguments = cnnlab_arguments(words)
    if arguments is None:
        program = words[0]
        if program == "make":
            targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE)
            assert set(words[1:]) <= set(targets), (where, words, targets)
        elif "-m" in words:  # python -m MODULE ...: the module exists
            module = words[words.index("-m") + 1]
            if module == "pytest":
                assert all((ROOT / w).exists() for w in words if w.startswith("tests/")), (where, words)
            else:
                assert importlib.util.find_spec(module) is not None, (where, words)
        else:  # python scripts/NAME.py ...
            assert program.endswith("python") and (ROOT / words[1]).is_file(), (where, words)
        return
    args, error = _parse(arguments)
    assert args is not None, f"{where}: `{' '.join(words)}` does not parse: {error.strip()}"
    unknown = unregistered_names(args)
    if shown_error == "UnknownNameError":  # the docs show it refused: it must still name something unknown
        assert unknown, f"{where}: `{' '.join(words)}` is shown as an unknown name, but every name it uses exists"
    else:
        assert unknown == [], f"{where}: `{' '.join(words)}`"


def test_no_developer_paths_in_the_docs():
    """The data root a user has is $CNNLAB_DATA (README): no command shows this repository's own data folder."""
    for page in PAGES:
        assert "shared/datasets" not in page.read_text(), page.name
    assert not any("shared/datasets" in text for text in EXAMPLES.values())


def python_blocks() -> list[tuple[str, str]]:
    return [
        (f"{page.name} block {i}", body)
        for page in PAGES
        if page.name not in EXECUTED_PYTHON
        for i, (language, body) in enumerate(_blocks(page))
        if language == "python"
    ]


@pytest.mark.parametrize(("where", "source"), python_blocks(), ids=[w for w, _ in python_blocks()])
def test_every_python_block_compiles_and_imports_what_exists(where, source):
    tree = compile(source, where, "exec", flags=ast.PyCF_ONLY_AST)
    compile(tree, where, "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cnnlab":
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert missing == [], f"{where}: from {node.module} import {missing}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "cnnlab":
                    importlib.import_module(alias.name)
