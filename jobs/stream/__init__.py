"""Real time: Kafka topics, the consumer that lands them as files, the local broker.

Events reach the lake through the same landing files as the batch imports (the consumer
writes them atomically and commits its offsets only afterwards), so validation,
quarantine, the audit and late handling are the ingest's own, unchanged.
"""
