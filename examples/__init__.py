"""Examples of batchgate applications, importable from the repository root (`--app examples.…`)."""
