"""The command-line interface (argument parsing, progress, exit codes; no logic of its own)."""
