"""Network methods: one file per method over the shared base in base.py, one registry."""
