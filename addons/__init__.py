"""teletap: an auditing proxy for what Office 365, Windows and third parties send home."""

__version__ = "0.1.0"
