"""Every ``sentemb`` command of the README's shell blocks runs as written, in order, in a fresh folder.

The commands are read from README.md (```bash blocks, and the ``$`` lines of ```console blocks, whose
printed lines are compared too), run by bash with this checkout's ``sentemb`` and the real default
model. Nothing in a command is changed: the folder only gets the input files the commands name
(``docs.jsonl`` with the ``body`` and ``doc_id`` fields the README's first encode of it reads, STS dev
as ``sts-dev.csv``, ...), ``./e5-small-v2``, which stands in for the hub's e5-small-v2 (the default
model's files with e5's prompts: the tests never download), and ``./ms-marco-MiniLM-L6-v2``, a tiny random
cross-encoder saved by sentence-transformers in its place, and ``./splade-cocondenser``, a tiny random SPLADE
model (a fill-mask BERT and SpladePooling) likewise. Only commands that need a server or Ray are
skipped, each with its reason.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Commands the README shows that this test does not run, and why (each is tested elsewhere).
SKIPPED = {
    "serve": "starts a server that runs until it is stopped (tests/test_server_cli.py runs it)",
    "batch": "needs Ray (tests/test_batch_job.py runs it)",
}
# A command of a shell block: `sentemb ...` at the start of the line or after a pipe.
SENTEMB = re.compile(r"(^|\|\s*|^\w+=\S+\s+)sentemb\s+(?P<verb>[\w-]+)")
HANG_S = 300  # a command still running after this long has hung; none takes more than a minute


@dataclass(frozen=True)
class Example:
    line: int  # where the command starts in README.md (1-based)
    section: str
    command: str
    expected: tuple[str, ...] = ()  # what a console block shows it printing ("..." ends a shortened output)

    @property
    def verb(self) -> str:
        found = SENTEMB.search(self.command)
        return found.group("verb") if found else ""


def readme_examples(text: str) -> list[Example]:
    """The ``sentemb`` commands of README.md's ```bash and ```console blocks, in the order they appear."""
    examples: list[Example] = []
    section = ""
    block: str | None = None
    owner: int | None = None  # the console command whose printed lines follow
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            block, owner = (line[3:].strip(), None) if block is None else (None, None)
        elif block is None and line.startswith("## "):
            section = line[3:].strip()
        elif block == "console" and line.startswith("$ "):
            examples.append(Example(number, section, line[2:].strip()))
            owner = len(examples) - 1
        elif block == "console" and owner is not None and line.strip():
            examples[owner] = replace(examples[owner], expected=(*examples[owner].expected, line))
        elif block == "bash":
            start = start if pending else number
            if line.endswith("\\"):  # continued on the next line
                pending += line[:-1] + " "
                continue
            command, pending = (pending + line).strip(), ""
            if command and not command.startswith("#") and SENTEMB.search(command):
                examples.append(Example(start, section, command))
    return examples


def test_the_readme_has_command_line_examples_and_each_is_run_or_skipped_with_a_reason():
    examples = readme_examples(README.read_text(encoding="utf-8"))
    verbs = {example.verb for example in examples}
    assert {"encode", "similarity", "search", "index", "dedup", "cluster", "eval", "info", "export"} <= verbs
    assert all(example.verb for example in examples)
    assert {e.verb for e in examples if e.verb in SKIPPED} == set(SKIPPED)  # no stale skip reason
    similarity = next(e for e in examples if e.verb == "similarity")
    assert similarity.expected == ("0.9262",)  # a console block's printed lines are read too


def _write_inputs(folder: Path, sts_dev: Path, model: Path) -> None:
    """The input files the README's commands name, with what those commands expect in them."""
    import sentemb

    dev = sentemb.read_sts(sts_dev)
    sentences = list(dict.fromkeys(dev.sentences1[:60] + dev.sentences2[:60]))
    lines = "\n".join(sentences[:20]) + "\n"
    for name in ("sentences.txt", "notes.txt", "titles.txt", "docs.txt"):
        (folder / name).write_text(lines, encoding="utf-8")
    (folder / "questions.txt").write_text("Who is playing the guitar?\nIs it sunny?\n", encoding="utf-8")
    with (folder / "docs.jsonl").open("w", encoding="utf-8") as docs:
        for i, body in enumerate(sentences):
            docs.write(json.dumps({"doc_id": f"doc-{i}", "body": body}) + "\n")
    with (folder / "big.jsonl").open("w", encoding="utf-8") as big:
        for i, body in enumerate(sentences[:30]):
            big.write(json.dumps({"id": i, "text": body if i != 7 else None}) + "\n")  # one bad record to skip
    with (folder / "reviews.csv").open("w", encoding="utf-8", newline="") as reviews:
        csv.writer(reviews).writerows([["stars", "review"], *([5, text] for text in sentences[:10])])
    faq = ["How do I reset my password?", "Where can I download my invoices?", "Which payment methods do you accept?",
           "How do I change the e-mail address of my account?"]  # fmt: skip
    (folder / "faq.txt").write_text("\n".join(faq) + "\n", encoding="utf-8")
    shutil.copyfile(sts_dev, folder / "sts-dev.csv")
    e5 = folder / "e5-small-v2"  # the default model's files with e5-small-v2's prompts
    e5.mkdir()
    for item in model.iterdir():
        if item.name != "config_sentence_transformers.json":
            (e5 / item.name).symlink_to(item)
    settings = json.loads((model / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    settings["prompts"] = {"query": "query: ", "passage": "passage: "}
    (e5 / "config_sentence_transformers.json").write_text(json.dumps(settings), encoding="utf-8")
    from tiny_models import build_tiny_cross_encoder, build_tiny_splade

    build_tiny_cross_encoder("bert", folder / "ms-marco-MiniLM-L6-v2", activation="identity")
    build_tiny_splade("bert", folder / "splade-cocondenser")  # stands for naver/splade-cocondenser-*


def _environment(cache: Path) -> dict[str, str]:
    """This checkout's ``sentemb`` first on PATH and PYTHONPATH; a cache of its own; the hub offline."""
    paths = [str(ROOT / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(paths), "SENTEMB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}  # fmt: skip


def _check_printed(example: Example, stdout: str) -> None:
    """The lines a console block shows the command printing (whitespace aside); with a "..." the block shows
    a selection, so its lines must appear in that order among the printed ones."""
    want = [" ".join(line.split()) for line in example.expected if line.strip() != "..."]
    got = [" ".join(line.split()) for line in stdout.splitlines()]
    if "..." in (line.strip() for line in example.expected):
        rest = iter(got)
        missing = [line for line in want if line not in rest]  # `in` on an iterator consumes it: in order
    else:
        missing = [] if got == want else want
    assert not missing, (
        f"README.md:{example.line}: `{example.command}` printed\n{stdout}\nbut the README shows\n"
        + "\n".join(example.expected)
    )


def _run(command: str, work: Path, env: dict[str, str], where: str) -> subprocess.CompletedProcess:
    """``command`` run by bash in ``work``; a failure names where the command came from and shows its stderr."""
    try:
        done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], check=False, cwd=work, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=HANG_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"{where}: `{command}` still ran after {HANG_S} s")
    assert done.returncode == 0, f"{where}: `{command}` exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, sts_dev_path, default_model_dir):
    if shutil.which("sentemb", path=str(Path(sys.executable).parent)) is None:
        pytest.fail(f"no `sentemb` script beside {sys.executable}: pip install -e .")
    work = tmp_path / "work"
    work.mkdir()
    _write_inputs(work, sts_dev_path, default_model_dir)
    env = _environment(tmp_path / "cache")
    printed: dict[str, str] = {}
    for example in readme_examples(README.read_text(encoding="utf-8")):
        if example.verb in SKIPPED:
            continue
        done = _run(example.command, work, env, f"README.md:{example.line} ({example.section})")
        if example.expected:
            _check_printed(example, done.stdout)
        printed[example.verb] = done.stdout
    assert {"encode", "similarity", "search", "index", "dedup", "cluster", "eval", "info", "export"} <= set(printed)
    # `sentemb export` names the command that runs the folder it wrote (on this install, with torch): run it
    advice = re.search(r"`(sentemb encode -m \S+)` runs it", printed["export"])
    assert advice is not None, printed["export"]
    done = _run(f"{advice.group(1)} --text hello -o -", work, env, "the command `sentemb export` printed")
    assert len(json.loads(done.stdout)["embedding"]) == 384
