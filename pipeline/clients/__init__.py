"""One module per outside system doctune talks to.

- `ollama`: Ollama's HTTP API (chat and generate for generation, asking and smoke tests;
  blobs, create, copy, delete, tags, show for registration).
- `openai_compat`: the OpenAI-compatible API (vLLM, llama.cpp's server, llama-cpp-python).
- `llamacpp`: the llama.cpp engine, llama-cpp-python's server run as a child process.
- `http`: what the model-server clients share (one session, error mapping, the Completion);
- `errors`: the typed errors a generator call ends in (the job queue acts on the class).
"""
