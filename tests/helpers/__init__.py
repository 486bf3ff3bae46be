"""Helpers the tests import (fixtures live in the conftest files, helpers here).

- `http`: talking to an app through its test client (accounts, tokens, problems);
- `attacks`: the exact refusals the attack suite expects, and a bcrypt counter;
- `processes`: Alembic and `run.py` as child processes, as users run them.
"""
