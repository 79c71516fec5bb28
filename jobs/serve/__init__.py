"""The online service's logic: request/response schemas, answers (known user, fold-in,
popular, similar), the feature source and the Bento build."""
