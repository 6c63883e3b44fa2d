"""The training library under the recipes (`pipelines.recipes` imports it, never the other way).

config (run YAML), runtime (device, DDP), sampling (data order), optim, state (resume), loop (the
shared step loop), examples (model inputs), bundles (the model a stage trains), session (one process's
runtime, tracker, data and stage folders), datasets, transforms.
"""
