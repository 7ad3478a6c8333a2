"""Experiments across a Ray cluster, with DVC as the record (docs/scaling.md, "Across a Ray cluster").

The driver (`python -m digits.cluster`) turns a sweep into trials and submits each as a Ray task; a trial
clones the committed project from the git remote into scratch space on its worker, restores what earlier
stages made from the DVC remote and run cache, runs `dvc exp run` (or `dvc repro` of ensemble members), and
pushes the result back, so that `dvc exp show` on the driver's machine lists every trial.

grammar: `-S` overrides -> trials, names, search spaces · repo: git and DVC operations on either side ·
trial: what runs on a worker · driver: Ray, progress and results.
"""
