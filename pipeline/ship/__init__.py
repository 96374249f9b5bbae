"""Ship a trained model: GGUF export, the eval gate, and Ollama registration."""
