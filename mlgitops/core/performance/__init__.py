"""Model performance: metric names, the deployment gate, the revert decision (pure)."""
