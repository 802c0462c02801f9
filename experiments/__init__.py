"""Research scripts, run from the repository root as ``python -m experiments.NAME``; they use only
``bench``'s public API. The suite files here (``NAME.yaml``) link to ``bench/suites/``, where
they ship with the package."""
