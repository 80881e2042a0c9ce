"""hubvram's bundled metadata snapshot: one JSON file per model (see README, "Offline")."""
