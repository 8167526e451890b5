"""Root conftest: make the in-tree package importable without installation."""
