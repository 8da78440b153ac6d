"""Small helpers below every other package (they import only torch and the standard library): parameter
groups by name (``param_groups``) and the distributed gather helpers (``dist``)."""
