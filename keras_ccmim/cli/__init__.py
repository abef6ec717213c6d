"""The command-line programs: absl binaries thin over `keras_ccmim.training`
and `keras_ccmim.evaluation`, each installed as a console script
(`pyproject.toml`) and callable as `python train/<name>.py` or
`python evaluate/<name>.py` from a checkout.

Each module defines its flags at import and `main(argv)`; `run()` is its
console script. Import one program module per process: absl flags are
global, so this package's `__init__` imports none of them.
"""
