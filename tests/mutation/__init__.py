"""The mutation check: deliberate bugs that the test suite must catch (see ``run_mutations.py``)."""
