"""Attacks on the second factor, each answered with the exact refusal, on SQLite and
PostgreSQL:

- brute force: an `mfa_token` gives exactly 5 tries (wrong codes and recovery codes
  alike), then even the right code is refused; fresh mfa_tokens give no fresh tries (the
  per-account limit answers 429 with Retry-After, to the right code too, spending neither
  token nor code); an unknown mfa_token costs the account nothing;
- replay: of 8 parallel uses of one code, recovery code, mfa_token or enrolment exactly
  one wins; 10 parallel wrong codes spend exactly the 5 tries;
- aal forgery: a token signed with the service's own key claiming `aal2` for a session
  whose row never passed the factor is refused on every aal2 route (the row, not the
  claim, is the truth); `aal` and `amr` that disagree are no token;
- confusion: an mfa_token is no bearer token, a JWT no mfa_token, one user's mfa_token
  no login for another; a password reset or change, or disabling the user, voids the
  mfa_tokens opened before; a reset never skips the factor.

Secrets `exposure` cannot see in the traffic (TOTP secrets, recovery codes, mfa_tokens,
reset tokens) are named to it (6-digit codes are too short to scan for). Time is
`mfa_clock` and `clock` (rate limits): no sleeps.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections import Counter
from typing import Any

import pytest
from jose import jwt
from sqlalchemy import func, select

from quart_auth_api import extensions
from quart_auth_api.db import DATABASE
from quart_auth_api.models import RecoveryCode, TotpFactor
from quart_auth_api.services import users
from tests.helpers import mfa
from tests.helpers.attacks import mailed_token, refused
from tests.helpers.http import PASSWORD, bearer, claims_of, login, login_body, problem, register
from tests.helpers.mailbox import deliver_all
from tests.helpers.mfa import Factor, challenge, code, enrol, mfa_token, raced_login

pytestmark = pytest.mark.usefixtures("mfa_clock")

RACERS = 8
NEW_PASSWORD = "a brand new passphrase"
MISSING = object()  #: a claim `forged` leaves out
CHANGE_PASSWORD = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
CHANGE_EMAIL = {"new_email": "thief@example.com", "password": PASSWORD}
#: Every route that needs an aal2 session of a user with a factor, and a body it takes.
AAL2_ROUTES = [
    pytest.param("DELETE", "/auth/mfa/totp", None, id="remove-factor"),
    pytest.param("POST", "/auth/mfa/recovery-codes", None, id="recovery-codes"),
    pytest.param("POST", "/auth/password/change", CHANGE_PASSWORD, id="password-change"),
    pytest.param("POST", "/auth/email/change", CHANGE_EMAIL, id="email-change"),
    pytest.param("DELETE", f"/auth/sessions/{uuid.uuid4()}", None, id="revoke-session"),
    pytest.param("DELETE", "/auth/me", None, id="delete-account"),
]


@pytest.fixture
async def racer(build_app, mfa_clock, exposure) -> tuple[Any, Any, Factor]:
    """An app without rate limits (a race sends more codes than they allow), its
    client, and the factor of its account ada@example.com."""
    app, client = await build_app(rate_limit_enabled=False)
    account = await register(client, email="ada@example.com")
    return app, client, await enrolled(client, account, mfa_clock, exposure)


async def enrolled(client, account, mfa_clock, exposure) -> Factor:
    """`enrol`, naming the factor's secret and recovery codes to `exposure`."""
    factor = await enrol(client, account, mfa_clock)
    exposure.secret(factor.secret, *factor.recovery_codes)
    return factor


async def opened(client, exposure, email: str) -> str:
    """An mfa_token of a login with the password, named to `exposure`."""
    token = await mfa_token(client, email)
    exposure.secret(token)
    return token


def wrong(right: str) -> str:
    return f"{(int(right) + 500_000) % 1_000_000:06d}"


def forged(app, token: str, **changes: Any) -> str:
    """The claims of `token` with a new jti and `changes` (`MISSING` drops a claim),
    signed with the app's own key, as it signs."""
    keys = extensions.token_rules(app)
    body = {**claims_of(token), "jti": uuid.uuid4().hex, **changes}
    body = {name: value for name, value in body.items() if value is not MISSING}
    return jwt.encode(body, keys.secret, algorithm=keys.algorithm, headers={"kid": keys.kid})


async def outcomes(responses) -> Counter[tuple[int, str]]:
    """How many answers of each (status, code); a success counts as `ok`."""
    found: Counter[tuple[int, str]] = Counter()
    for response in responses:
        found[response.status_code, (await response.get_json()).get("code", "ok")] += 1
    return found


# -- brute force --------------------------------------------------------------------------


@pytest.mark.parametrize(("wrong_tries", "voided"), [(4, False), (5, True)])
async def test_an_mfa_token_gives_exactly_five_tries(
    client, account, mfa_clock, exposure, wrong_tries, voided
):
    """Wrong codes and wrong recovery codes spend the same tries; after the fifth even
    the right code is refused, and it was not spent (a new login takes it)."""
    factor = await enrolled(client, account, mfa_clock, exposure)
    token = await opened(client, exposure, account.email)
    right = code(factor.secret, mfa_clock)
    guesses = [{"code": wrong(right)}, {"recovery_code": "aaaa-bbbb-cccc-dddd"}]
    for i in range(wrong_tries):
        await problem(await challenge(client, token, **guesses[i % 2]), 401, "mfa_invalid_code")

    response = await challenge(client, token, code=right)

    if not voided:
        assert response.status_code == 200, await response.get_json()
        return
    await problem(response, 401, "mfa_token_invalid")
    fresh = await opened(client, exposure, account.email)
    assert (await challenge(client, fresh, code=right)).status_code == 200


async def test_fresh_mfa_tokens_give_no_fresh_tries(build_app, mfa_clock, clock, exposure):
    """RATE_LIMIT_MFA=4/hour, the enrolment spent one: three wrong codes on three
    mfa_tokens, then a fourth mfa_token with the right code is 429 until the window
    lets a try through; the refusal spent neither that mfa_token nor the code."""
    _, client = await build_app(rate_limit_mfa="4/hour")
    account = await register(client, email="ada@example.com")
    factor = await enrolled(client, account, mfa_clock, exposure)
    right = code(factor.secret, mfa_clock)
    for _ in range(3):
        token = await opened(client, exposure, account.email)
        await problem(await challenge(client, token, code=wrong(right)), 401, "mfa_invalid_code")
    token = await opened(client, exposure, account.email)

    limited = await challenge(client, token, code=right)

    await problem(limited, 429, "rate_limited")
    retry_after = int(limited.headers["Retry-After"])
    assert 0 < retry_after <= 3601  # whole seconds, strictly after the window
    clock.advance(retry_after // 2)
    for _ in range(5):  # as many as its tries: a refusal spends none
        await problem(await challenge(client, token, code=right), 429, "rate_limited")
    clock.advance(retry_after - retry_after // 2)
    assert (await challenge(client, token, code=right)).status_code == 200


async def test_unknown_mfa_tokens_cost_the_account_nothing(build_app, mfa_clock, exposure):
    """RATE_LIMIT_MFA=2/hour, the enrolment spent one: 20 guessed mfa_tokens later the
    account's one remaining try is still there."""
    _, client = await build_app(rate_limit_mfa="2/hour")
    account = await register(client, email="ada@example.com")
    factor = await enrolled(client, account, mfa_clock, exposure)
    right = code(factor.secret, mfa_clock)
    for guess in (secrets.token_urlsafe(32) for _ in range(20)):
        await problem(await challenge(client, guess, code=right), 401, "mfa_token_invalid")

    token = await opened(client, exposure, account.email)

    assert (await challenge(client, token, code=right)).status_code == 200


# -- replay races (rate limits off: each race sends more than they allow) -----------------


@pytest.mark.parametrize("proof", ["code", "recovery_code"])
async def test_one_proof_on_parallel_mfa_tokens_logs_in_once(racer, mfa_clock, exposure, proof):
    _, client, factor = racer
    tokens = [await opened(client, exposure, "ada@example.com") for _ in range(RACERS)]
    spent = {"code": code(factor.secret, mfa_clock), "recovery_code": factor.recovery_codes[0]}

    responses = await asyncio.gather(
        *(challenge(client, t, **{proof: spent[proof]}) for t in tokens)
    )

    assert await outcomes(responses) == {(200, "ok"): 1, (401, "mfa_invalid_code"): RACERS - 1}


@pytest.mark.parametrize("proofs", ["one-code", "each-its-own"])
async def test_parallel_tries_on_one_mfa_token_open_one_session(racer, mfa_clock, exposure, proofs):
    """The code, the token's single use and its 5 tries each let one through; with a
    proof of its own per racer (the code, 7 recovery codes) only the single use does,
    and the losers' recovery codes stay unspent."""
    app, client, factor = racer
    token = await opened(client, exposure, "ada@example.com")
    right = {"code": code(factor.secret, mfa_clock)}
    own = [right, *({"recovery_code": c} for c in factor.recovery_codes[: RACERS - 1])]
    tries = [right] * RACERS if proofs == "one-code" else own

    found = await outcomes(await asyncio.gather(*(challenge(client, token, **p) for p in tries)))

    assert found[200, "ok"] == 1 and sum(found.values()) == RACERS
    assert set(found) - {(200, "ok")} <= {(401, "mfa_invalid_code"), (401, "mfa_token_invalid")}
    spent = select(func.count()).where(RecoveryCode.used_at.is_not(None))
    async with DATABASE.get(app).sessionmaker() as db:
        assert await db.scalar(spent) <= 1


async def test_parallel_wrong_codes_spend_exactly_five_tries(racer, mfa_clock, exposure):
    _, client, factor = racer
    token = await opened(client, exposure, "ada@example.com")
    bad = wrong(code(factor.secret, mfa_clock))

    responses = await asyncio.gather(*(challenge(client, token, code=bad) for _ in range(10)))

    found = await outcomes(responses)
    assert found == {(401, "mfa_invalid_code"): 5, (401, "mfa_token_invalid"): 5}


async def test_parallel_enrolment_confirmations_confirm_once(build_app, mfa_clock, exposure):
    app, client = await build_app(rate_limit_enabled=False)
    account = await register(client, email="ada@example.com")
    started = await mfa.start_enrolment(client, account.auth)
    exposure.secret(started["secret"])
    body = {"factor_id": started["factor_id"], "code": code(started["secret"], mfa_clock)}

    def verify():
        return client.post("/auth/mfa/totp/verify", headers=account.auth, json=body)

    found = await outcomes(await asyncio.gather(*(verify() for _ in range(RACERS))))

    assert found[200, "ok"] == 1 and sum(found.values()) == RACERS
    assert set(found) - {(200, "ok")} <= {(403, "mfa_invalid_code"), (404, "not_found")}
    confirmed = select(func.count()).where(TotpFactor.confirmed_at.is_not(None))
    async with DATABASE.get(app).sessionmaker() as db:
        assert await db.scalar(confirmed) == 1
        assert await db.scalar(select(func.count()).select_from(RecoveryCode)) == 10


# -- aal forgery: the session's row is the truth ------------------------------------------


@pytest.fixture
async def aal1_session(app, client, account, mfa_clock, exposure) -> tuple[str, Factor]:
    """A user with a factor: the access token of a session opened by a login that raced
    the enrolment (so it never passed the factor), and the factor."""
    before = await login_body(client, account.email)
    factor = await enrolled(client, account, mfa_clock, exposure)
    return await raced_login(app, before["access_token"]), factor


async def test_control_an_aal2_token_forged_alike_is_accepted(app, client, aal1_session, exposure):
    token = forged(app, aal1_session[1].access_token)

    response = await client.post("/auth/mfa/recovery-codes", headers=bearer(token))

    assert response.status_code == 200
    exposure.secret(*(await response.get_json())["recovery_codes"])


@pytest.mark.parametrize(
    ("row", "claims"),
    [
        pytest.param("aal1", {"aal": "aal2", "amr": ["pwd", "otp"]}, id="aal1-row-claims-aal2"),
        pytest.param("aal2", {"aal": "aal1", "amr": ["pwd"]}, id="aal2-row-claims-aal1"),
    ],
)
@pytest.mark.parametrize(("method", "path", "body"), AAL2_ROUTES)
async def test_a_claim_the_sessions_row_contradicts_is_refused_for_aal2(
    app, client, account, aal1_session, row, claims, method, path, body
):
    aal1_token, factor = aal1_session
    token = forged(app, aal1_token if row == "aal1" else factor.access_token, **claims)

    json = {} if body is None else {"json": body}
    response = await client.open(path, method=method, headers=bearer(token), **json)

    await problem(response, 403, "aal2_required")
    assert "mfa_required" in await login_body(client, account.email)  # nothing changed


async def test_an_aal2_claim_of_a_user_without_a_factor_is_mfa_required(app, client, account):
    token = forged(app, account.access_token, aal="aal2", amr=["pwd", "otp"])

    response = await client.post("/auth/mfa/recovery-codes", headers=bearer(token))

    await problem(response, 403, "mfa_required")


#: Access tokens whose `aal` and `amr` do not fit each other or RFC 8176 as minted.
BAD_ASSURANCE = {
    "aal2-with-pwd-alone": ("aal2", ["pwd"]),
    "aal1-with-otp": ("aal1", ["pwd", "otp"]),
    "otp-without-aal": (MISSING, ["pwd", "otp"]),
    "unknown-aal": ("aal3", ["pwd", "otp"]),
    "unknown-amr": ("aal2", ["pwd", "hwk"]),
    "duplicate-otp": ("aal2", ["pwd", "otp", "otp"]),
    "duplicate-pwd": ("aal1", ["pwd", "pwd"]),
    "otp-without-pwd": ("aal2", ["otp"]),
    "recovery-code-without-pwd": ("aal1", ["recovery_code"]),
    "amr-a-string": ("aal2", "pwd otp"),
    "amr-empty": ("aal1", []),
}


@pytest.mark.parametrize(("aal", "amr"), BAD_ASSURANCE.values(), ids=BAD_ASSURANCE.keys())
async def test_aal_and_amr_that_disagree_are_no_token(app, client, aal1_session, aal, amr):
    token = forged(app, aal1_session[1].access_token, aal=aal, amr=amr)

    await refused(await client.get("/auth/me", headers=bearer(token)), "token_invalid")


# -- one token for another ----------------------------------------------------------------


async def test_an_mfa_token_is_not_a_bearer_token(client, account, mfa_clock, exposure):
    await enrolled(client, account, mfa_clock, exposure)
    token = await opened(client, exposure, account.email)

    await refused(await client.get("/auth/me", headers=bearer(token)), "token_invalid")


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
async def test_a_jwt_is_not_an_mfa_token(client, account, mfa_clock, exposure, kind):
    """An aal2 session's own tokens are no mfa_token: the one answer of an unknown one."""
    factor = await enrolled(client, account, mfa_clock, exposure)

    response = await challenge(client, getattr(factor, kind), code=code(factor.secret, mfa_clock))

    await problem(response, 401, "mfa_token_invalid")


async def test_one_users_mfa_token_does_not_log_in_another(client, mfa_clock, exposure):
    """Bob's code or recovery code on Ada's mfa_token is wrong, and stays Bob's."""
    ada = await register(client, email="ada@example.com")
    bob = await register(client, email="bob@example.com")
    ada_factor = await enrolled(client, ada, mfa_clock, exposure)
    bob_factor = await enrolled(client, bob, mfa_clock, exposure)
    token = await opened(client, exposure, ada.email)
    bob_code, bob_recovery = code(bob_factor.secret, mfa_clock), bob_factor.recovery_codes[0]

    for proof in ({"code": bob_code}, {"recovery_code": bob_recovery}):
        await problem(await challenge(client, token, **proof), 401, "mfa_invalid_code")

    passed = await challenge(client, token, code=code(ada_factor.secret, mfa_clock))
    assert (await passed.get_json())["user"]["email"] == ada.email
    for proof in ({"code": bob_code}, {"recovery_code": bob_recovery}):
        mine = await challenge(client, await opened(client, exposure, bob.email), **proof)
        assert (await mine.get_json())["user"]["email"] == bob.email


async def reset_password(mail_app, client, smtp, exposure, email: str) -> None:
    assert (await client.post("/auth/password/forgot", json={"email": email})).status_code == 202
    await deliver_all(mail_app)
    token = mailed_token(smtp, email, "password_reset")
    exposure.secret(token)
    done = await client.post(
        "/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}
    )
    assert done.status_code == 200, await done.get_data(as_text=True)


@pytest.mark.parametrize("meanwhile", ["password-reset", "password-change", "user-disabled"])
async def test_what_ends_a_login_voids_its_open_mfa_token(
    mail_app, mail_client, smtp, mfa_clock, exposure, meanwhile
):
    client = mail_client
    account = await register(client, email="ada@example.com")
    factor = await enrolled(client, account, mfa_clock, exposure)
    token = await opened(client, exposure, account.email)
    if meanwhile == "password-reset":
        await reset_password(mail_app, client, smtp, exposure, account.email)
    elif meanwhile == "password-change":
        changed = await client.post(
            "/auth/password/change", headers=factor.auth, json=CHANGE_PASSWORD
        )
        assert changed.status_code == 200, await changed.get_data(as_text=True)
    else:
        async with DATABASE.get(mail_app).sessionmaker() as db:
            await users.set_active(db, email=account.email, active=False)

    response = await challenge(client, token, code=code(factor.secret, mfa_clock))

    await problem(response, 401, "mfa_token_invalid")


async def test_a_password_reset_never_skips_the_factor(
    mail_app, mail_client, smtp, mfa_clock, exposure
):
    account = await register(mail_client, email="ada@example.com")
    factor = await enrolled(mail_client, account, mfa_clock, exposure)

    await reset_password(mail_app, mail_client, smtp, exposure, account.email)

    response = await login(mail_client, account.email, NEW_PASSWORD)
    body = await response.get_json()
    assert response.status_code == 200 and set(body) == {"mfa_required", "mfa_token", "expires_in"}
    exposure.secret(body["mfa_token"])
    passed = await challenge(mail_client, body["mfa_token"], code=code(factor.secret, mfa_clock))
    assert passed.status_code == 200
