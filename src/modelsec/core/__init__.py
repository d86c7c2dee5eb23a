"""The foundation every layer uses: errors, registries, seeding, progress, option checks, resumable loops and the
version stamp. Imports nothing else of modelsec."""
