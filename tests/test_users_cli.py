"""The operators' commands `quart --app quart_auth_api users ...`: `list` and `show` print
readable tables (never a password hash, never a raw control character a user wrote);
`disable` ends every session at once and refuses login until `enable`; `revoke-sessions`
ends the sessions but not the account; `reset-mfa` removes a lost second factor; an
unknown address is one line of error with exit code 1, never a traceback. The commands
run with Quart's CLI runner in a thread (their `asyncio.run` cannot run inside the test's
loop), and once as a real process. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from typing import Any

import pytest
from click.testing import Result
from quart import Quart
from sqlalchemy import select, update

from quart_auth_api.db import DATABASE
from quart_auth_api.models import User, utcnow
from tests.helpers.http import bearer, claims_of, login, login_body, problem, register
from tests.helpers.mfa import enrol
from tests.helpers.processes import PROJECT_ROOT, service_env

ADDRESSES = ["ada@example.com", "bob@example.com"]
#: How the tables show a time (UTC).
MOMENT = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


async def users_cli(app: Quart, *args: str, exit_code: int = 0) -> str:
    """`quart users <args>` on the app's database; its output (stdout and stderr)."""
    runner = app.test_cli_runner()
    result: Result = await asyncio.to_thread(runner.invoke, args=["users", *args])
    assert result.exit_code == exit_code, (result.output, result.exception)
    assert "Traceback" not in result.output
    assert "$2b$" not in result.output  # no bcrypt hash, whoever's
    return result.output


def columns(table: list[str]) -> list[list[str]]:
    """The cells of an aligned table: each starts where its header does, after a blank."""
    starts = [match.start() for match in re.finditer(r"(?<!\S)\S+(?: \S+)*", table[0])]
    for line in table[1:]:
        assert all(start == 0 or line[start - 1] == " " for start in starts), table
    ends = [*starts[1:], None]
    return [[line[a:b].strip() for a, b in zip(starts, ends, strict=True)] for line in table]


async def me(client: Any, token: str) -> Any:
    return await client.get("/auth/me", headers=bearer(token))


async def test_list_shows_every_user_aligned_with_live_sessions_and_the_total(app, client):
    await register(client, email=ADDRESSES[0], name="Ada Lovelace")
    await login_body(client, ADDRESSES[0])
    await register(client, email=ADDRESSES[1], name="Bob")
    async with DATABASE.get(app).sessionmaker() as db:
        await db.execute(
            update(User).where(User.email == ADDRESSES[1]).values(email_verified_at=utcnow())
        )
        await db.commit()

    *table, total = (await users_cli(app, "list")).splitlines()

    header, *rows = columns(table)
    assert header == ["EMAIL", "NAME", "ACTIVE", "VERIFIED", "LIVE SESSIONS", "CREATED (UTC)"]
    assert [row[:5] for row in rows] == [
        [ADDRESSES[0], "Ada Lovelace", "yes", "no", "2"],
        [ADDRESSES[1], "Bob", "yes", "yes", "1"],
    ]
    assert all(re.fullmatch(MOMENT, row[5]) for row in rows)
    assert total == "users 1-2 of 2"


async def test_list_pages_with_limit_and_offset(app, client):
    for address in ADDRESSES:
        await register(client, email=address)

    second = (await users_cli(app, "list", "--limit", "1", "--offset", "1")).splitlines()
    past_the_end = (await users_cli(app, "list", "--offset", "5")).splitlines()

    assert [line.split()[0] for line in second] == ["EMAIL", "bob@example.com", "users"]
    assert second[-1] == "users 2-2 of 2"
    assert past_the_end == ["users none of 2"]


async def test_show_prints_the_fields_and_each_live_session(app, client):
    ada = await register(client, email=ADDRESSES[0], name="Ada Lovelace")
    firefox = await login_body(client, ADDRESSES[0])
    await client.post("/auth/logout", headers=bearer(firefox["access_token"]))
    second = await login(client, ADDRESSES[0], headers={"User-Agent": "Firefox/128.0 test"})
    assert second.status_code == 200

    output = await users_cli(app, "show", "Ada@Example.com")

    fields = {
        name: value.strip()
        for name, value in (line.split(":", 1) for line in output.splitlines()[:9])
    }
    assert all(re.fullmatch(MOMENT, fields.pop(name)) for name in ("created", "updated"))
    assert fields == {
        "email": ADDRESSES[0],
        "name": "Ada Lovelace",
        "id": ada.user["id"],
        "active": "yes",
        "verified": "no",
        "second factor": "no",
        "live sessions": "2",
    }
    header, *sessions = columns(output.splitlines()[9:])
    assert header == ["ID", "CREATED (UTC)", "LAST USED (UTC)", "IP", "USER AGENT"]
    live = {
        claims_of(ada.access_token)["sid"],
        claims_of((await second.get_json())["access_token"])["sid"],
    }
    assert {session[0] for session in sessions} == live
    assert claims_of(firefox["access_token"])["sid"] not in output  # logged out: not live
    assert sorted(session[4] for session in sessions) == ["Firefox/128.0 test", "Quart"]


async def test_what_a_user_wrote_reaches_the_terminal_without_control_characters(app, client):
    await register(client, email=ADDRESSES[0])
    evil = "curl\x1b]0;owned\x07\x1b[2J"
    assert (await login(client, ADDRESSES[0], headers={"User-Agent": evil})).status_code == 200

    output = await users_cli(app, "show", ADDRESSES[0])

    assert "\x1b" not in output and "\x07" not in output
    assert "curl\\x1b]0;owned" in output


async def test_disable_revokes_every_session_at_once_and_refuses_login(app, client):
    ada = await register(client, email=ADDRESSES[0])
    second = await login_body(client, ADDRESSES[0])
    bob = await register(client, email=ADDRESSES[1])

    output = await users_cli(app, "disable", " ADA@example.com ")

    assert output.strip() == "disabled ada@example.com: 2 sessions revoked"
    for token in (ada.access_token, second["access_token"]):
        await problem(await me(client, token), 401, "token_revoked")
    refresh = await client.post("/auth/refresh", headers=ada.refresh_auth)
    assert refresh.status_code == 401
    await problem(await login(client, ADDRESSES[0]), 401, "invalid_credentials")
    assert (await me(client, bob.access_token)).status_code == 200  # only that user
    assert "active:        no" in await users_cli(app, "show", ADDRESSES[0])


async def test_enable_lets_the_user_log_in_again_with_new_sessions_only(app, client):
    ada = await register(client, email=ADDRESSES[0])
    await users_cli(app, "disable", ADDRESSES[0])

    assert (await users_cli(app, "enable", ADDRESSES[0])).strip() == "enabled ada@example.com"

    again = await login_body(client, ADDRESSES[0])
    assert (await me(client, again["access_token"])).status_code == 200
    await problem(await me(client, ada.access_token), 401, "token_revoked")  # stays revoked


async def test_revoke_sessions_ends_every_token_but_not_the_account(app, client):
    ada = await register(client, email=ADDRESSES[0])
    second = await login_body(client, ADDRESSES[0])
    bob = await register(client, email=ADDRESSES[1])

    output = await users_cli(app, "revoke-sessions", ADDRESSES[0])

    assert output.strip() == "revoked 2 sessions of ada@example.com"
    for token in (ada.access_token, second["access_token"]):
        await problem(await me(client, token), 401, "token_revoked")
    assert (await me(client, bob.access_token)).status_code == 200
    again = await login_body(client, ADDRESSES[0])
    assert (await me(client, again["access_token"])).status_code == 200
    assert (await users_cli(app, "revoke-sessions", ADDRESSES[0])).strip() == (
        "revoked 1 session of ada@example.com"
    )


async def test_reset_mfa_removes_the_factor_and_revokes_every_session(app, client, mfa_clock):
    ada = await register(client, email=ADDRESSES[0])
    factor = await enrol(client, ada, mfa_clock)
    assert "second factor: totp" in await users_cli(app, "show", ADDRESSES[0])

    output = await users_cli(app, "reset-mfa", ADDRESSES[0])

    assert output.strip() == f"removed the second factor of {ADDRESSES[0]}: every session revoked"
    await problem(await me(client, factor.access_token), 401, "token_revoked")
    assert "access_token" in await login_body(client, ADDRESSES[0])  # the password alone again
    again = await users_cli(app, "reset-mfa", ADDRESSES[0], exit_code=1)
    assert again.strip() == f"Error: {ADDRESSES[0]} has no second factor"


@pytest.mark.parametrize("command", ["show", "disable", "enable", "revoke-sessions", "reset-mfa"])
async def test_an_unknown_address_is_a_clear_error_with_exit_code_1(app, client, command):
    await register(client, email=ADDRESSES[0])

    output = await users_cli(app, command, "nobody@example.com", exit_code=1)

    assert output.strip() == "Error: no user has the address nobody@example.com"
    assert "active:        yes" in await users_cli(app, "show", ADDRESSES[0])  # nothing changed


async def test_no_output_holds_the_password_hash(app, client):
    await register(client, email=ADDRESSES[0])
    async with DATABASE.get(app).sessionmaker() as db:
        password_hash = await db.scalar(select(User.password_hash))
    assert password_hash

    outputs = [
        await users_cli(app, *args)
        for args in (
            ("list",),
            ("show", ADDRESSES[0]),
            ("disable", ADDRESSES[0]),
            ("show", ADDRESSES[0]),
            ("enable", ADDRESSES[0]),
            ("revoke-sessions", ADDRESSES[0]),
        )
    ]

    assert all(password_hash not in output for output in outputs)
    assert all(password_hash[7:29] not in output for output in outputs)  # nor its salt


def quart_users(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quart", "--app", "quart_auth_api", "users", *args],
        cwd=PROJECT_ROOT,
        env=service_env(DATABASE_URL=database_url, QUART_ENV="testing"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_commands_run_as_a_real_process(app, client, database_url):
    ada = await register(client, email=ADDRESSES[0])

    disabled = await asyncio.to_thread(quart_users, database_url, "disable", ADDRESSES[0])
    unknown = await asyncio.to_thread(quart_users, database_url, "show", "nobody@example.com")

    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.strip() == "disabled ada@example.com: 1 session revoked"
    line = f"event=user_disabled ip=- user={ada.user['id']} sessions=1 by=operator"
    assert line in disabled.stderr  # the security event, naming the user by public id
    await problem(await me(client, ada.access_token), 401, "token_revoked")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines()[-1] == (
        "Error: no user has the address nobody@example.com"
    )
    assert "Traceback" not in unknown.stderr
