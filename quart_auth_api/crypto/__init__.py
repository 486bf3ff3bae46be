"""Pure cryptography: keys, tokens, passwords and digests.

Nothing here imports Quart or the rest of the package (a test checks it): settings come
in as arguments, so every rule can be tested, and reused, without an app.
"""
