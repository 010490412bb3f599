"""Pure-torch math of gif: no files, no printing, no imports from the rest of the project."""
