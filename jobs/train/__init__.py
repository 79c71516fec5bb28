"""Training: the trigger, Spark ALS, splits, offline evaluation, plots and the registry gate."""
