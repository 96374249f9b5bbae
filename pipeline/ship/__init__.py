"""Ship a trained model: GGUF export, the eval gate, registration (Ollama or the embedded
llama.cpp registry), `doctune serve` and `doctune ask`."""
