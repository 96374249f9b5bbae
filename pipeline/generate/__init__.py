"""Generation: prompt → LLM (Ollama / OpenAI-compatible) → validated pairs via leased jobs."""
