"""MLflow tracking, the model registry with its release gate, model cards."""
