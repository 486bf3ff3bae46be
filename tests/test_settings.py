"""settings.py: typed, per-environment, one clear line for a bad value."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta

import pytest

import settings as settings_module
from settings import PROJECT_ROOT, ConfigError, Settings, to_async_url

#: What `secrets.token_urlsafe(30)` gives: many distinct characters, no repeated block.
STRONG = "Qm7vK2pXz9LwR4tNc8bY3hDs6FjA1gEu"
#: The other secret of a production environment.
OTHER = "Zt5nH8qLx2VcW9rMb4kJ7pYd3sGf6aTe"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start from no settings at all, whatever the developer's shell has."""
    for name in list(os.environ):
        if name.startswith(("QUART_", "FLASK_", "JWT_", "BCRYPT_", "DATABASE_")) or name in {
            "SECRET_KEY",
            "PORT",
            "HOST",
            "WEB_CONCURRENCY",
            "LOG_LEVEL",
            "DEBUG",
        }:
            monkeypatch.delenv(name)


def load(**environment: str) -> Settings:
    for name, value in environment.items():
        os.environ[name] = value
    try:
        return Settings.load(_env_file=None)
    finally:
        for name in environment:
            del os.environ[name]


def test_development_defaults():
    settings = load()
    assert settings.env == "development"
    assert settings.database_url == f"sqlite+aiosqlite:///{PROJECT_ROOT / 'instance/app.db'}"
    assert settings.jwt_access_token_expires == timedelta(seconds=900)
    assert settings.jwt_refresh_token_expires == timedelta(days=30)
    assert settings.jwt_refresh_reuse_interval == timedelta(seconds=10)
    assert settings.jwt_algorithm == "HS256"
    assert settings.jwt_issuer == settings.jwt_audience == "quart-auth-api"
    assert settings.bcrypt_rounds == 12
    assert (settings.host, settings.port, settings.web_concurrency) == ("127.0.0.1", 5000, 1)
    assert settings.max_content_length == 64 * 1024


def test_development_secrets_are_random_per_process():
    first, second = load(), load()
    assert len(first.jwt_secret_key.get_secret_value()) >= 32
    assert first.jwt_secret_key != second.jwt_secret_key
    assert first.secrets_generated


def test_testing_uses_cheap_bcrypt():
    assert load(QUART_ENV="testing").bcrypt_rounds == 4


def test_flask_env_is_accepted_as_fallback():
    assert load(FLASK_ENV="testing").env == "testing"
    assert load(FLASK_ENV="testing", QUART_ENV="development").env == "development"


def test_production_with_strong_secrets():
    settings = load(QUART_ENV="production", SECRET_KEY=STRONG, JWT_SECRET_KEY=STRONG + "j")
    assert settings.is_production
    assert settings.web_concurrency == (os.cpu_count() or 1)
    assert not settings.secrets_generated


def test_durations_are_seconds():
    settings = load(JWT_ACCESS_TOKEN_EXPIRES="60", JWT_REFRESH_REUSE_INTERVAL="0")
    assert settings.jwt_access_token_expires == timedelta(seconds=60)
    assert settings.jwt_refresh_reuse_interval == timedelta(0)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
        ("sqlite:///instance/app.db", f"sqlite+aiosqlite:///{PROJECT_ROOT}/instance/app.db"),
        ("postgresql://u:p@db:5432/auth", "postgresql+asyncpg://u:p@db:5432/auth"),
        ("postgres://u@db/auth", "postgresql+asyncpg://u@db/auth"),
        ("postgresql+asyncpg://u@db/auth", "postgresql+asyncpg://u@db/auth"),
    ],
)
def test_sync_urls_map_to_async_drivers(url, expected):
    assert to_async_url(url) == expected


@pytest.mark.parametrize(
    ("environment", "line"),
    [
        ({"PORT": "http"}, "config error: PORT: "),
        ({"PORT": "70000"}, "config error: PORT: "),
        ({"QUART_ENV": "staging"}, "config error: QUART_ENV: "),
        ({"JWT_ACCESS_TOKEN_EXPIRES": "soon"}, "config error: JWT_ACCESS_TOKEN_EXPIRES: "),
        ({"JWT_ACCESS_TOKEN_EXPIRES": "0"}, "config error: JWT_ACCESS_TOKEN_EXPIRES: "),
        ({"BCRYPT_ROUNDS": "3"}, "config error: BCRYPT_ROUNDS: "),
        ({"JWT_ALGORITHM": "none"}, "config error: JWT_ALGORITHM: "),
        ({"DATABASE_URL": "not a url"}, "config error: DATABASE_URL: not a database URL"),
        ({"DATABASE_URL": "mysql://x/y"}, "config error: DATABASE_URL: unsupported database"),
        ({"DOCS_ENABLED": "perhaps"}, "config error: DOCS_ENABLED: "),
        ({"QUART_ENV": "production"}, "config error: SECRET_KEY: required in production"),
        (
            {"QUART_ENV": "production", "SECRET_KEY": STRONG},
            "config error: JWT_SECRET_KEY: required in production",
        ),
        (
            {"QUART_ENV": "production", "SECRET_KEY": STRONG, "JWT_SECRET_KEY": "change-me"},
            "config error: JWT_SECRET_KEY: a placeholder value is refused in production",
        ),
        (
            {"QUART_ENV": "production", "SECRET_KEY": STRONG, "JWT_SECRET_KEY": "x" * 31},
            "config error: JWT_SECRET_KEY: must be at least 32 bytes in production",
        ),
        (
            {
                "QUART_ENV": "production",
                "SECRET_KEY": STRONG,
                "JWT_SECRET_KEY": STRONG,
                "DEBUG": "true",
            },
            "config error: DEBUG: debug mode is refused in production",
        ),
    ],
)
def test_bad_value_stops_with_one_line_naming_the_variable(environment, line):
    with pytest.raises(ConfigError) as raised:
        load(**environment)
    message = str(raised.value)
    assert message.startswith(line), message
    assert "\n" not in message
    for value in environment.values():
        if len(value) >= 31:  # secrets never echoed
            assert value not in message


def test_settings_are_immutable():
    settings = load()
    with pytest.raises(Exception):  # noqa: B017 (pydantic's frozen-instance error)
        settings.port = 1  # type: ignore[misc]


def test_production_refuses_a_sqlite_path_in_a_missing_directory(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load(
            QUART_ENV="production",
            SECRET_KEY=STRONG,
            JWT_SECRET_KEY=STRONG,
            DATABASE_URL=f"sqlite:///{tmp_path}/missing/app.db",
        )
    assert str(raised.value).startswith("config error: DATABASE_URL: SQLite path")


def test_production_on_a_writable_sqlite_path(tmp_path):
    settings = load(
        QUART_ENV="production",
        SECRET_KEY=STRONG,
        JWT_SECRET_KEY=STRONG,
        DATABASE_URL=f"sqlite:///{tmp_path}/app.db",
    )
    assert settings.is_sqlite


def test_cookies_are_secure_by_default_in_production_only():
    assert not load().jwt_cookie_secure
    production = load(QUART_ENV="production", SECRET_KEY=STRONG, JWT_SECRET_KEY=STRONG)
    assert production.jwt_cookie_secure


# -- production refuses what makes it unsafe, and says what it allows ----------------------


def production(**environment: str) -> Settings:
    return load(
        **{"QUART_ENV": "production", "SECRET_KEY": STRONG, "JWT_SECRET_KEY": OTHER, **environment}
    )


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("x" * 32, "fewer than 8 distinct characters"),
        ("abcdabcdabcdabcdabcdabcdabcdabcd", "fewer than 8 distinct characters"),
        ("0123456789" * 4, "a block of it repeats"),
        ("Kq7#Kq7#Kq7#-unique-tail-ZX93mwLp", "a block of it repeats"),
        ("0123456789abcdef0123456789abcdef", "a block of it repeats"),
        ("your-secret-key-your-secret-key-1", "it contains a placeholder"),
        ("prefix-CHANGEME-9f8e7d6c5b4a3z2y", "it contains a placeholder"),
        ("super-secret-0f9e8d7c6b5a4f3e2d1c", "it contains a placeholder"),
        ("Password1234567890!Pass-wZ7q9Xk2", "it contains a placeholder"),
        ("\uff33\uff25\uff23\uff32\uff25\uff34-7Hq2Wz9Lm4Xc8Vb3", "it contains a placeholder"),
        ("testing-only-Qm7vK2pXz9LwR4tNc8bY3hDs6FjA1gEu", "it contains a placeholder"),
        ("abcdefghijklmnopqrstuvwxyz012345", "it holds a run of characters in a row"),
        ("qwertyuiopASDFGHJKLzxcvbnm-7Hq2W", "it holds a run of characters in a row"),
    ],
)
@pytest.mark.parametrize("variable", ["SECRET_KEY", "JWT_SECRET_KEY"])
def test_production_refuses_a_guessable_secret_with_one_line(variable, secret, why):
    environment = {"SECRET_KEY": STRONG, "JWT_SECRET_KEY": OTHER, variable: secret}
    with pytest.raises(ConfigError) as raised:
        load(QUART_ENV="production", **environment)
    message = str(raised.value)
    assert message.startswith(f"config error: {variable}: {why}, refused in production"), message
    assert "secrets.token_urlsafe(48)" in message and "\n" not in message
    assert secret not in message


@pytest.mark.parametrize(
    "maker", [lambda: secrets.token_urlsafe(48), lambda: secrets.token_hex(32)], ids=["url", "hex"]
)
def test_production_accepts_what_the_hint_makes_and_hex_keys(maker):
    for _ in range(20):
        assert production(JWT_SECRET_KEY=maker()).is_production


def test_production_refuses_a_guessable_fallback_or_metrics_token():
    with pytest.raises(ConfigError, match="^config error: JWT_SECRET_KEY_FALLBACKS: fewer"):
        production(JWT_SECRET_KEY_FALLBACKS="y" * 40)
    with pytest.raises(ConfigError, match="^config error: METRICS_TOKEN: a block of it repeats"):
        production(METRICS_ENABLED="true", METRICS_TOKEN="token-1-token-1-token-1-ABCDEFGHIJ")


@pytest.mark.parametrize(
    ("environment", "line"),
    [
        ({"BCRYPT_ROUNDS": "9"}, "config error: BCRYPT_ROUNDS: at least 10 in production"),
        (
            {"JWT_TOKEN_LOCATION": "cookies", "JWT_COOKIE_SECURE": "false"},
            "config error: JWT_COOKIE_SECURE: false is refused in production",
        ),
        (
            {"JWT_TOKEN_LOCATION": "headers,cookies", "JWT_COOKIE_CSRF_PROTECT": "false"},
            "config error: JWT_COOKIE_CSRF_PROTECT: false is refused in production",
        ),
        (
            {"METRICS_ENABLED": "true"},  # HOST does not say where `hypercorn --bind` serves
            "config error: METRICS_TOKEN: required in production when METRICS_ENABLED=true",
        ),
    ],
)
def test_production_refuses_unsafe_knobs_with_one_line(environment, line):
    with pytest.raises(ConfigError) as raised:
        production(**environment)
    assert str(raised.value).startswith(line), raised.value


def test_the_same_knobs_are_a_developers_own_business():
    settings = load(BCRYPT_ROUNDS="4", JWT_TOKEN_LOCATION="cookies", JWT_COOKIE_CSRF_PROTECT="0")
    assert settings.bcrypt_rounds == 4 and not settings.jwt_cookie_csrf_protect
    assert settings.production_warnings() == []


def test_production_names_each_deliberate_choice_in_one_warning_line():
    quiet = production(
        METRICS_ENABLED="true",
        METRICS_TOKEN=STRONG,
        MAIL_BACKEND="smtp",
        SMTP_HOST="mx",
        FRONTEND_URL="https://app.example.com",
    )
    assert quiet.production_warnings() == []
    plain = production(MAIL_BACKEND="smtp", SMTP_HOST="mx", FRONTEND_URL="http://app.example.com")
    assert plain.production_warnings() == [
        "FRONTEND_URL is http://: the links in mail travel unencrypted"
    ]
    loud = production(RATE_LIMIT_ENABLED="false")
    assert loud.production_warnings() == [
        "RATE_LIMIT_ENABLED=false: logins and registrations are not limited",
        "MAIL_BACKEND=none: no mail is sent (set MAIL_BACKEND=smtp)",
    ]


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_production_refuses_a_database_file_others_can_read(tmp_path, suffix):
    database = tmp_path / "app.db"
    database.touch(mode=0o600)
    exposed = tmp_path / f"app.db{suffix}"
    exposed.touch()
    exposed.chmod(0o644)
    with pytest.raises(ConfigError) as raised:
        production(DATABASE_URL=f"sqlite:///{database}")
    assert str(raised.value) == (
        f"config error: DATABASE_URL: {exposed} is open to group or others (mode 644): "
        f"chmod 600 {exposed}"
    )
    exposed.chmod(0o600)
    assert production(DATABASE_URL=f"sqlite:///{database}").is_production


def test_production_refuses_a_database_folder_others_can_write(tmp_path):
    """Whoever can write the folder can plant the WAL file or swap the database."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    (folder / "app.db").touch(mode=0o600)
    with pytest.raises(ConfigError) as raised:
        production(DATABASE_URL=f"sqlite:///{folder / 'app.db'}")
    assert str(raised.value).startswith(
        f"config error: DATABASE_URL: {folder} is writable by group or others (mode 777)"
    )
    folder.chmod(0o700)
    assert production(DATABASE_URL=f"sqlite:///{folder / 'app.db'}").is_production


def test_a_generated_secret_of_either_kind_is_named_as_generated():
    assert load(JWT_SECRET_KEY=OTHER).secrets_generated  # SECRET_KEY is random here
    assert not load(JWT_SECRET_KEY=OTHER, SECRET_KEY=STRONG).secrets_generated


def test_mail_goes_to_the_console_in_development_and_nowhere_by_default_elsewhere():
    assert load().mail_backend == "console"
    assert load(QUART_ENV="testing").mail_backend == "none"
    assert production().mail_backend == "none"
    assert production(MAIL_BACKEND="smtp", SMTP_HOST="mx").smtp_port == 587


@pytest.mark.parametrize(
    ("environment", "line"),
    [
        ({"MAIL_BACKEND": "smtp"}, "config error: SMTP_HOST: required with MAIL_BACKEND=smtp"),
        ({"MAIL_BACKEND": "pigeon"}, "config error: MAIL_BACKEND: "),
        ({"SMTP_SECURITY": "ssl"}, "config error: SMTP_SECURITY: "),
    ],
)
def test_a_bad_mail_setting_stops_start_up_with_one_line(environment, line):
    with pytest.raises(ConfigError, match=f"^{line}"):
        load(**environment)


def test_production_refuses_console_mail():
    with pytest.raises(ConfigError, match="^config error: MAIL_BACKEND: console is refused"):
        production(MAIL_BACKEND="console")


@pytest.mark.parametrize(
    ("environment", "threads"),
    [
        ({}, 1),
        ({"WEB_CONCURRENCY": "1"}, 4),
        ({"WEB_CONCURRENCY": "2"}, 2),
        ({"WEB_CONCURRENCY": "8"}, 1),
    ],
)
def test_bcrypt_threads_default_to_one_hash_per_core_across_the_workers(
    monkeypatch, environment, threads
):
    """More hashes in flight than cores only make each login slower: by default each
    worker gets the cores divided among the workers (at least one; production's default
    is a worker per core). Development's one worker gets every core; a set value stays."""
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 4)
    production = {"QUART_ENV": "production", "SECRET_KEY": STRONG, "JWT_SECRET_KEY": OTHER}
    assert load(**production, **environment).bcrypt_threads == threads
    assert load(**production, **environment, BCRYPT_THREADS="3").bcrypt_threads == 3
    assert load().bcrypt_threads == 4
