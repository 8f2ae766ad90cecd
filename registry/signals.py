"""Signals other parts of the mirror (statistics) may listen to."""
from django.dispatch import Signal

# Sent after every request the mirror made to an upstream, with the account that made it:
# upstream_id, account_id, username ("" = anonymous), method ("GET"/"HEAD"),
# kind ("manifest", "blob", "tags"), outcome ("ok" or the registry error code).
upstream_request = Signal()
