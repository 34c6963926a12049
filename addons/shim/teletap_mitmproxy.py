from teletap.addon import addons  # noqa: F401  (mitmdump/mitmweb -s "$(teletap mitmproxy-script)")
