"""Research scripts (run from the repository root as ``python -m experiments.NAME``) and the suite
files (``NAME.yaml``, installed with the package). The scripts use only ``bench``'s public API."""
