"""Recipes to pushed images, one stage per module: recipes → graph → fingerprint → plan →
lint → build → smoke → push → report, driven by `run`."""
