"""The storefront page: a shop built on recflow's client contract (``recflow shop``)."""
