"""Adapters: one external system each (git, MLflow, processes, Evidently).

Each maps its library's exceptions to ``mlgitops.errors`` at the boundary.
May NOT import the controller, the server or the CLI.
"""
