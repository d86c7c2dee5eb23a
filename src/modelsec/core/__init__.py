"""The foundation every layer uses: errors, registries, seeding, progress, option checks, resumable loops, the
version stamp and typed records read back from JSON. Imports nothing else of modelsec."""
