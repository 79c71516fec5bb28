"""Online features in Feast: definitions, the export of the lake to snapshots, online reads."""
