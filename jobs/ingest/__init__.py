"""Landing files into the Delta lake: bronze (raw), silver (typed, deduplicated), gold
(interactions and stats), with quarantine for bad records and Great Expectations gates."""
