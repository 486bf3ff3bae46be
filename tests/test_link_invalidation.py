"""What ends a link before it is used: a credential that changed under it. A password
reset or change voids a pending address change (an attacker who asked for one must not
finish it after the owner took the account back), and so does turning a second factor
on; an address change voids the reset links of the old address (a lost mailbox opens
nothing); disabling an account voids every link, so enabling it again brings none back; a
deleted account leaves no mail addressed to it. Mail through a real SMTP server
(aiosmtpd); SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select

from quart_auth_api.db import DATABASE
from quart_auth_api.models import OutboxMessage
from quart_auth_api.services import users
from tests.helpers.http import PASSWORD, login, problem, register
from tests.helpers.mailbox import deliver_all, link_token, text_of, to
from tests.helpers.mfa import enrol

NEW_PASSWORD = "a different passphrase"
NEW_ADDRESS = "ada.new@example.com"


async def mailed_token(app, smtp, address: str, subject: str) -> str:
    await deliver_all(app)
    mails = [m for m in to(smtp, address) if m["Subject"] == subject]
    assert mails, [m["Subject"] for m in to(smtp, address)]
    return link_token(mails[-1])


async def change_link(app, client, smtp, account) -> str:
    asked = await client.post(
        "/auth/email/change",
        headers=account.auth,
        json={"password": PASSWORD, "new_email": NEW_ADDRESS},
    )
    assert asked.status_code == 202, await asked.get_data(as_text=True)
    return await mailed_token(app, smtp, NEW_ADDRESS, "Confirm your new address")


async def reset_link(app, client, smtp, address: str) -> str:
    assert (await client.post("/auth/password/forgot", json={"email": address})).status_code == 202
    return await mailed_token(app, smtp, address, "Reset your password")


async def reset(client, token: str):
    return await client.post(
        "/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}
    )


async def confirm(client, token: str):
    return await client.post("/auth/email/change/confirm", json={"token": token})


async def test_a_password_reset_voids_a_pending_address_change(mail_app, mail_client, smtp):
    ada = await register(mail_client, email="ada@example.com")
    hijack = await change_link(mail_app, mail_client, smtp, ada)  # asked with a stolen session
    taken_back = await reset(mail_client, await reset_link(mail_app, mail_client, smtp, ada.email))
    assert taken_back.status_code == 200

    response = await confirm(mail_client, hijack)

    await problem(response, 400, "invalid_link_token")
    assert (await login(mail_client, ada.email, NEW_PASSWORD)).status_code == 200


async def test_a_password_change_voids_a_pending_address_change(mail_app, mail_client, smtp):
    ada = await register(mail_client, email="ada@example.com")
    hijack = await change_link(mail_app, mail_client, smtp, ada)
    changed = await mail_client.post(
        "/auth/password/change",
        headers=ada.auth,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200

    await problem(await confirm(mail_client, hijack), 400, "invalid_link_token")


async def test_a_change_still_queued_at_a_reset_is_never_mailed(mail_app, mail_client, smtp):
    ada = await register(mail_client, email="ada@example.com")
    token = await reset_link(mail_app, mail_client, smtp, ada.email)
    asked = await mail_client.post(
        "/auth/email/change",
        headers=ada.auth,
        json={"password": PASSWORD, "new_email": NEW_ADDRESS},
    )
    assert asked.status_code == 202  # queued, not sent yet
    assert (await reset(mail_client, token)).status_code == 200

    await deliver_all(mail_app)

    assert to(smtp, NEW_ADDRESS) == []


async def test_turning_a_factor_on_voids_a_pending_address_change(
    mail_app, mail_client, smtp, mfa_clock
):
    ada = await register(mail_client, email="ada@example.com")
    hijack = await change_link(mail_app, mail_client, smtp, ada)  # asked with the password alone
    await enrol(mail_client, ada, mfa_clock)

    await problem(await confirm(mail_client, hijack), 400, "invalid_link_token")


async def test_an_address_change_voids_reset_links_of_the_old_address(mail_app, mail_client, smtp):
    ada = await register(mail_client, email="ada@example.com")
    old_mailbox = await reset_link(mail_app, mail_client, smtp, ada.email)
    moved = await confirm(mail_client, await change_link(mail_app, mail_client, smtp, ada))
    assert moved.status_code == 200

    response = await reset(mail_client, old_mailbox)

    await problem(response, 400, "invalid_link_token")
    assert (await login(mail_client, NEW_ADDRESS, PASSWORD)).status_code == 200


async def test_disabling_voids_every_link_for_good(mail_app, mail_client, smtp):
    ada = await register(mail_client, email="ada@example.com")
    token = await reset_link(mail_app, mail_client, smtp, ada.email)
    async with DATABASE.get(mail_app).sessionmaker() as db:
        await users.set_active(db, email=ada.email, active=False)
    async with DATABASE.get(mail_app).sessionmaker() as db:
        await users.set_active(db, email=ada.email, active=True)

    await problem(await reset(mail_client, token), 400, "invalid_link_token")


async def test_a_deleted_account_leaves_no_mail_addressed_to_it(mail_app, mail_client, smtp):
    ada = await register(mail_client, email="ada@example.com")
    await reset_link(mail_app, mail_client, smtp, ada.email)  # sent, kept until the purge

    assert (await mail_client.delete("/auth/me", headers=ada.auth)).status_code == 204

    async with DATABASE.get(mail_app).sessionmaker() as db:
        left = await db.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.to_address == ada.email)
        )
    assert left == 0


async def test_notices_do_not_tell_their_reader_to_ignore_them(mail_app, mail_client, smtp):
    ada = await register(mail_client, email="ada@example.com")
    changed = await mail_client.post(
        "/auth/password/change",
        headers=ada.auth,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200

    await deliver_all(mail_app)

    [notice] = [m for m in to(smtp, ada.email) if m["Subject"] == "Your password was changed"]
    assert "reset your password now" in text_of(notice)
    assert "ignore" not in text_of(notice).lower()
    [link_mail] = [m for m in to(smtp, ada.email) if m["Subject"] == "Confirm your address"]
    assert "you can ignore this message" in text_of(link_mail)
