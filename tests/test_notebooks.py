"""nbval runs every stage notebook, in order, on a small release's parameters."""
import subprocess
import sys

import papermill as pm

from conftest import ROOT, small_release
from depsim.runner import NOTEBOOK_ORDER as STAGES


def test_notebooks_run_under_nbval(tmp_path):
    params = small_release(tmp_path, "nbval")
    nb_dir = tmp_path / "nb"
    nb_dir.mkdir()
    for i, stage in enumerate(STAGES):
        # papermill only injects the small parameters here; nbval executes the notebooks
        pm.execute_notebook(str(ROOT / "notebooks" / f"{stage}.ipynb"), str(nb_dir / f"{i:02d}_{stage}.ipynb"),
                            parameters={"params_file": str(params), "reports_dir": str(tmp_path / "reports")},
                            prepare_only=True, progress_bar=False)
    r = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(nb_dir), str(nb_dir)], capture_output=True, text=True, cwd=nb_dir, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:]
    passed = int(r.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= len(STAGES) * 3  # nbval counts cells: every notebook ran several
