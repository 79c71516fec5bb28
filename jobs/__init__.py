"""recflow: the pipeline logic behind the DAGs, the CLI and the online service.

Everything importable here is testable without Airflow; DAG files only call into it.
"""

__version__ = "0.1.0"
