"""The documentation site: every Python block of every page runs, as a user would
run it (a fresh process, JAX's default float32), and the site builds strictly.
The README's fragments call the API as it is."""

import ast
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import recursive_opt as ro

from .helpers import subprocess_env

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted((DOCS / "src").rglob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text())


def run(args, cwd, timeout=600):
    # XLA's flags as a user has them, but for conftest.py's compile-time ones.
    env = subprocess_env(JAX_PLATFORMS="cpu", MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_pages_are_found_and_hold_code():
    names = {p.relative_to(DOCS / "src").as_posix() for p in PAGES}
    assert {"index.md", "getting-started.md", "concepts.md", "api.md"} <= names
    assert sum(len(python_blocks(p)) for p in PAGES) >= 15


RUNNER = """
import json, sys, traceback
results = {}
for name, code in json.load(open(sys.argv[1])).items():
    try:
        exec(compile(code, name, "exec"), {"__name__": "__main__"})
        results[name] = None
    except BaseException:
        results[name] = traceback.format_exc()
json.dump(results, open(sys.argv[2], "w"))
"""


CODE_PAGES = [p.relative_to(DOCS / "src").as_posix() for p in PAGES if python_blocks(p)]


def run_pages(pages: dict[str, str], tmp_path: Path) -> dict[str, str | None]:
    """Run each page's code (name -> source) in its own namespace, all in one fresh
    process; name -> None, or the traceback of the block that failed."""
    (tmp_path / "pages.json").write_text(json.dumps(pages))
    (tmp_path / "runner.py").write_text(RUNNER)
    out = run([sys.executable, "runner.py", "pages.json", "results.json"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results) == list(pages)
    return results


@pytest.mark.parametrize("half", [0, 1], ids=["pages-0::2", "pages-1::2"])
def test_every_python_block_runs(half, tmp_path):
    """Every page's blocks, run in order in one namespace per page, the pages in
    two fresh processes (JAX imported once in each; the two halves spread over the
    test workers): every other page of the sorted list in each."""
    pages = {
        name: "\n\n".join(python_blocks(DOCS / "src" / name))
        for name in CODE_PAGES[half::2]
    }
    results = run_pages(pages, tmp_path)
    failed = {name: error for name, error in results.items() if error is not None}
    assert not failed, "\n".join(f"{n}:\n{e}" for n, e in failed.items())


def test_the_page_runner_reports_each_failure(tmp_path):
    # Pages do not share a namespace, and a failing page does not stop the next.
    results = run_pages(
        {"a.md": "x = 1", "b.md": "print(x)", "c.md": "raise ValueError('c')"},
        tmp_path,
    )
    assert results["a.md"] is None
    assert "NameError" in results["b.md"] and 'File "b.md"' in results["b.md"]
    assert "ValueError: c" in results["c.md"]


def test_site_builds_strictly(tmp_path):
    # mkdocs comes with the test dependencies: a missing one fails here.
    exe = shutil.which("mkdocs", path=os.path.dirname(sys.executable)) or "mkdocs"
    out = run(
        [
            exe,
            "build",
            "--strict",
            "-f",
            str(DOCS / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert (
        "tree_set"
        in (tmp_path / "site" / "how-to" / "optax" / "index.html").read_text()
    )
    for name in ["Stack", "hyperparams", "at_level", "fit", "sweep", "RealTime"]:
        assert f'id="recursive_opt.{name}"' in api, name
    assert (tmp_path / "site" / "benchmarks" / "tuning_free.png").exists()


def _check_ro_calls(source: str) -> int:
    """Check every call `ro.<name>(...)` or `ro.<name>[k](...)` in `source`: the
    name is public in `recursive_opt` and its signature takes the arguments as
    written (TypeError otherwise). Returns how many calls were checked."""
    checked = 0
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func, index = node.func, None
        if isinstance(func, ast.Subscript):
            func, index = func.value, func.slice
        if not (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "ro"
        ):
            continue
        where = ast.unparse(node)
        if func.attr.startswith("_") or not hasattr(ro, func.attr):
            raise TypeError(f"recursive_opt has no public {func.attr!r}: {where}")
        target = getattr(ro, func.attr)
        if index is not None:
            target = target[ast.literal_eval(index)]
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            continue  # *args / **kwargs: not checkable from the text
        try:
            inspect.signature(target).bind(
                *node.args, **{k.arg: k.value for k in node.keywords}
            )
        except TypeError as e:
            raise TypeError(f"{where}: {e}") from None
        checked += 1
    return checked


def test_readme_fragments_call_the_api_as_written():
    """The README's Python fragments use a model and data of the reader's, so they
    do not run alone (the documentation site's pages, run above, hold runnable
    versions). They must parse, and every `ro.` call in them must name a public
    function or class whose signature takes its arguments as written."""
    blocks = python_blocks(ROOT / "README.md")
    assert len(blocks) >= 5
    assert sum(_check_ro_calls(block) for block in blocks) >= 20
    # The check catches what it is for.
    for wrong in (
        "ro.Adam(lrr=1e-3)",
        "ro.Stack[3](ro.Adam(), tied=True)",
        "ro.fit(f)",
        "ro.Staack[2](ro.Adam())",
        "ro.RealTime(0.9, True, 3)",
    ):
        with pytest.raises(TypeError):
            _check_ro_calls(wrong)


def test_readme_floors_command_pins_the_lower_bounds():
    """The README's command that runs the suite at the oldest supported versions
    pins exactly the lower bounds `pyproject.toml` declares."""
    names = "jax|jaxlib|equinox|optax|chex|jaxtyping|tqdm|flax"
    pyproject = (ROOT / "pyproject.toml").read_text()
    declared = dict(re.findall(rf'"({names})>=([\d.]+)"', pyproject))
    assert set(declared) == {
        "jax",
        "equinox",
        "optax",
        "chex",
        "jaxtyping",
        "tqdm",
        "flax",
    }
    declared["jaxlib"] = declared["jax"]
    readme = (ROOT / "README.md").read_text()
    text = readme[readme.index("The lower bounds in `pyproject.toml`") :]
    start = text.index("```bash")
    command = text[start : text.index("```", start + 3)]
    pinned = dict(re.findall(rf"(?<![\w-])({names})==([\d.]+)", command))

    def version(v):  # 4.60 and 4.60.0 are one floor
        parts = [int(p) for p in v.split(".")]
        return tuple(parts + [0] * (3 - len(parts)))

    assert {k: version(v) for k, v in pinned.items()} == {
        k: version(v) for k, v in declared.items()
    }


def _benchmark_rows() -> set[str]:
    """The names `benchmarks/tuning_free.py --row` accepts: the keys of the dict
    `ablation()` returns and of `SEEDED_TOWERS`, read from its source."""
    tree = ast.parse((ROOT / "benchmarks" / "tuning_free.py").read_text())
    dicts = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "ablation":
            dicts += [n.value for n in ast.walk(node) if isinstance(n, ast.Return)]
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "SEEDED_TOWERS" for t in node.targets
        ):
            dicts.append(node.value)
    assert len(dicts) == 2 and all(isinstance(d, ast.Dict) for d in dicts)
    return {k.value for d in dicts for k in d.keys}


def _unknown_rows(text: str, known: set[str]) -> list[str]:
    quoted = re.findall(r'--row "([^"]*)"', re.sub(r"\s+", " ", text))
    assert quoted, "no --row in the text"
    return [name for name in quoted if name not in known]


def _unknown_tasks(text: str, known: set[str]) -> list[str]:
    lists = r"--tasks[ =]+(\w+(?:,\s*\w+)*)"
    quoted = re.findall(lists, re.sub(r"\s+", " ", text))
    assert quoted, "no --tasks in the text"
    names = {n.strip() for q in quoted for n in q.split(",")}
    return sorted(names - known)


def test_the_benchmark_tasks_the_docs_quote_exist(monkeypatch):
    """Every name in a `--tasks a,b,...` of the two READMEs is a task or a set of
    tasks of `benchmarks/tuning_free.py` (or `every`, `trend_gate.py`'s): the
    scripts stop with "unknown task(s)" otherwise. Wrapped lines included; the
    placeholders `GROUPS` and `freshN` stand for such names."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import tuning_free as tf

    known = {*tf.TASK_SETS, *tf.TASKS, *tf.EXTRA_TASKS, *tf.makers_of(*tf.TASK_SETS)}
    known |= {"every", "GROUPS", "freshN"}
    assert {"all", "fresh22", "seq2seq", "ctc"} <= known
    readmes = (ROOT / "README.md", ROOT / "benchmarks" / "README.md")
    text = "\n".join(readme.read_text() for readme in readmes)
    assert text.count("--tasks") >= 100
    assert _unknown_tasks(text, known) == []
    # The check catches what it is for, across a line break too.
    wrapped = "--tasks fresh22,\n nope --tasks\n ctc,fresh99`"
    assert _unknown_tasks(wrapped, known) == ["fresh99", "nope"]


def test_the_benchmark_rows_the_docs_quote_exist():
    """Every `--row "NAME"` in a command of the two READMEs names a row
    `benchmarks/tuning_free.py` has (it stops with "unknown row(s)" otherwise),
    wrapped lines included."""
    known = _benchmark_rows()
    assert {"Stack[3](Adam(lr))", "no warm-up"} <= known and len(known) > 20
    readmes = (ROOT / "README.md", ROOT / "benchmarks" / "README.md")
    text = "\n".join(readme.read_text() for readme in readmes)
    assert text.count("--row") >= 20
    assert _unknown_rows(text, known) == []
    # The check catches what it is for, across a line break too.
    assert _unknown_rows('--row "no\n warm-up" --row "no warmup"', known) == [
        "no warmup"
    ]
