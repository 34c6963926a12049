"""teletap's own Datasette plugin(s), registered by ``teletap serve`` (see ``evidence.py``).

A package (not a ``--plugins-dir`` folder) so wheels carry it like any other teletap module.
"""
