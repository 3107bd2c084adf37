"""Models on servers: Ollama (list, pull, show) and several servers of one model behind one `dspy.LM`."""
