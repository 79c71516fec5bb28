"""Which of a model's items may be recommended: one stock filter for batch and online.

The publisher and the online service both build their mask here, so a published list and
the service's answer drop the same items.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jobs.model.artifact import RecModel


def stock_mask(model: RecModel, in_stock: Mapping[str, bool] | None) -> np.ndarray | None:
    """Boolean mask over the model's items, True = may be recommended.

    Items the catalog does not mention count as in stock (the catalog may lag the
    clickstream); ``None`` means no stock information at all.
    """
    if in_stock is None:
        return None
    return np.fromiter(
        (bool(in_stock.get(str(item), True)) for item in model.item_ids),
        dtype=bool,
        count=len(model.item_ids),
    )
