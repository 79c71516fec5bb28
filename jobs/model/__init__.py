"""The model contract shared by publishing and serving: the artifact, the ranking function,
stock masks and MLflow registry access. It imports no pipeline stage."""
