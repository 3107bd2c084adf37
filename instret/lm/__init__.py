"""Model strings → `dspy.LM`: backends, routing, servers, Ollama, context size, output recovery."""
