"""The embedded engine for `local/...` models: llama.cpp in this process, its weights catalog and GGUF checks."""
