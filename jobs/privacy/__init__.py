"""Privacy: erasure requests and their processing, consent withdrawal, retention."""
