"""The money suite: the real ``kkiai-run`` against the independent fake API, counting at the server.

Every scenario asserts what the server saw (creates per distinct version and input, cancels, file
downloads) and the final state in run.json. Run it with::

    .venv/bin/python -m pytest -q tests/money -s

``MONEY_LEGACY=1`` drops the settings a core without them would refuse (see ``helpers.py``).
"""
