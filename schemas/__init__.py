"""The shipped templates, as package data: ``structsum.schemas`` in an installed wheel."""
