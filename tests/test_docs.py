"""The package's docstrings use one style (Google) and document every public function.

Their examples run as doctests with the rest of the suite (``--doctest-modules`` in pyproject.toml).
"""
import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "voxprint"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))

UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
NON_GOOGLE_HEADER = re.compile(r"^\s*(Arguments|Parameters|Examples|Notes|See Also)\s*:?\s*$")
NUMPY_PARAMETER = re.compile(r"^\s*\*{0,2}\w+(\s*,\s*\w+)* : \S")


def numpydoc_lines(path: Path) -> list[str]:
    """Docstring lines of ``path`` written in numpydoc style (doctest lines excepted)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            for line in (doc or "").splitlines():
                if line.lstrip().startswith((">>>", "...")):
                    continue
                if UNDERLINE.match(line) or NON_GOOGLE_HEADER.match(line) or NUMPY_PARAMETER.match(line):
                    found.append(line.strip())
    return found


def test_the_checker_sees_numpydoc():
    sample = PACKAGE.parent / "tests" / "_numpydoc_sample.py"
    sample.write_text('def f(x):\n    """Sum.\n\n    Parameters\n    ----------\n    x : int\n        A.\n    """\n')
    try:
        assert numpydoc_lines(sample) == ["Parameters", "----------", "x : int"]
    finally:
        sample.unlink()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_docstrings_are_google_style(path):
    assert numpydoc_lines(path) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_public_functions_and_classes_have_docstrings(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    missing = [node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               and not node.name.startswith("_") and not ast.get_docstring(node)]
    assert missing == []
