"""Publishing: score every user, upload per-user JSON under an immutable prefix, flip
``latest.json``; the object layout, the stores and the CDN stand-in."""
