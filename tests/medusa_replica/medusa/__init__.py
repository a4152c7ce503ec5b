"""A replica of the parts of pymedusa/Medusa that medusa_v2's integration meets (tests only)."""
