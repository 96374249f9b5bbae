-- Which registry holds a version: Ollama's model store or doctune's embedded llama.cpp one.
ALTER TABLE registrations ADD COLUMN backend TEXT NOT NULL DEFAULT 'ollama'
    CHECK (backend IN ('ollama', 'llamacpp'));
