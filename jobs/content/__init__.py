"""Item content: text embeddings of the catalog and what they give items without clicks.

ALS knows an item only through the people who touched it, so a new product has no factors
and is never recommended. Its title, description, category and brand are known the day it
is listed: :mod:`jobs.content.encoder` turns them into a vector with a small embedding model
that ships inside its wheel (no network), :mod:`jobs.content.embeddings` keeps one vector
per catalog item in the lake (recomputed only when the text or the model changes), and
:mod:`jobs.model.content_map` learns at each training how content vectors map onto the ALS
item factors, so a cold item gets factors and is ranked by the one ranking function.
"""
