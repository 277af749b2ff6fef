"""Tests against a real Kubernetes control plane. A package, so that its conftest does not
shadow tests/conftest.py as the top-level module `conftest` (other tests import from it)."""
