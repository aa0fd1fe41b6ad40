"""The mutation check (tests/mutation/run_mutations.py) cannot silently rot: every mutation still applies
to the current source exactly once, really changes it, leaves valid Python (so its tests fail on behaviour,
not on a syntax error), and names tests that still exist. Fast: nothing is run."""
from __future__ import annotations

import re

import pytest

from mutation.run_mutations import MUTATIONS, REPO, Mutation


def test_mutation_names_are_unique():
    names = [m.name for m in MUTATIONS]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_mutation_applies_to_the_current_source(mutation: Mutation):
    path = REPO / mutation.file
    assert path.is_file(), f"{mutation.file} no longer exists"
    text = path.read_text(encoding="utf-8")
    assert mutation.new != mutation.old
    assert text.count(mutation.old) == 1, (f"{mutation.name}: its snippet occurs {text.count(mutation.old)} times "
                                           f"in {mutation.file}; update tests/mutation/run_mutations.py")
    mutated = mutation.mutated(text)
    assert mutated != text
    compile(mutated, str(path), "exec")  # a syntax error would be "caught" for the wrong reason


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_mutation_names_tests_that_exist(mutation: Mutation):
    assert mutation.tests
    for node in mutation.tests:
        # file.py::test_name[param]: the file must exist and still define the test function.
        file, _, name = node.partition("::")
        path = REPO / file
        assert path.is_file() and name, node
        function = name.split("[")[0]
        assert re.search(rf"^def {re.escape(function)}\(", path.read_text(encoding="utf-8"), re.MULTILINE), node
