"""The teacher stage: build a corpus end to end, one guide per cluster."""
