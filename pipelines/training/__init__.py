"""The training library under the recipes: config, runtime, loop, datasets, transforms."""
