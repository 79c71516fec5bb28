"""Monitoring: what users did with the recommendations, drift, and metrics for alerts.

One module per concern: attribution and the control group's lift (``attribution``,
``lift``), drift statistics and the drift run (``drift``, ``monitor``), and the batch
metrics pushed to Prometheus (``export``). The ``monitor`` DAG orchestrates them.
"""
