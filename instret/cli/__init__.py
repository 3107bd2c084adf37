"""The `instret` command line: argument parsing only, calling the folders below it."""
