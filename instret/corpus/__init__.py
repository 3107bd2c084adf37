"""An instruction corpus: embed, cluster, store, open and search it (the teacher's part is in `teaching`)."""
