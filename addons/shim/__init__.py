"""Holds the one-line script that loads teletap into plain mitmproxy (see teletap_mitmproxy.py)."""
