"""Evaluation on questions people wrote: eval sets, FAQ harvesting, the retrieval baseline."""
