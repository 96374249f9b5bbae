"""Training stage: dataset snapshot, LoRA/QLoRA recipe (child process), evaluation, merge.

Only `spec`, `dataset`, `launch` and `runs` are safe to import in the daemon process; the
`recipe` package and the scoring modules import torch and are loaded by the training child.
"""
