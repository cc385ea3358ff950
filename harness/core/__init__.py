"""The floor every layer stands on: messages, models, decoding, prompts, settings, keys,
registries and small helpers (atomic writes, seeds, timing, parameter checks).

Nothing here imports a layer above it (methods, trainers, collectors, benchmarks, results
or the harness's top: cli, grid, runner); ``lint-imports`` checks it (pyproject.toml).
"""
