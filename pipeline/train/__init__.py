"""Training stage: dataset snapshot, LoRA/QLoRA recipe (child process), evaluation, merge.

Only `spec`, `dataset`, `launch` and `runner` are safe to import in the daemon process; the
other modules import torch and are loaded by the training child alone.
"""
