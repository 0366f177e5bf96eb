from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_api_imports_no_training_library_until_it_needs_one() -> None:
    # scikit-learn, SciPy and pandas (through LightGBM too) cost an API process seconds to
    # start; they are imported when a model is loaded, trained or a text is read.
    heavy = ("sklearn", "scipy", "pandas", "lightgbm", "shap", "matplotlib")
    code = f"import sys, app.main; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
