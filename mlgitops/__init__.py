"""mlgitops: GitOps for machine-learning models."""
