"""Ingestion: sources → safe reading → cleaning → chunking → state (see reconcile)."""
