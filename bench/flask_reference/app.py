"""The Flask reference of the benchmark: the same API, as a Flask developer writes it.

Flask, Flask-JWT-Extended and Flask-SQLAlchemy, the way their documentation
shows: a `token_blocklist` table checked by `token_in_blocklist_loader` on every
protected request, the user loaded by `user_lookup_loader`, bcrypt with the
same cost as the service, served by gunicorn sync workers. Same endpoints and
JSON shapes as the service, so one load script drives both; error bodies are
Flask-JWT-Extended's own `{"msg": ...}` (no problem documents).

Environment: DATABASE_URL (sqlite:///... or postgresql://...), JWT_SECRET_KEY,
BCRYPT_ROUNDS (default 12).

    flask --app app:create_app init-db
    gunicorn --workers 2 --bind 127.0.0.1:5001 'app:create_app()'
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import bcrypt
from flask import Blueprint, Flask, jsonify, request
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    current_user,
    get_jti,
    get_jwt,
    jwt_required,
)
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Boolean, DateTime, Integer, String, Uuid, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ACCESS_EXPIRES = timedelta(seconds=900)
REFRESH_EXPIRES = timedelta(days=30)
ISSUER = AUDIENCE = "quart-auth-api"


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
jwt = JWTManager()
auth = Blueprint("auth", __name__, url_prefix="/auth")
main = Blueprint("main", __name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    return (value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(128))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    def to_dict(self) -> dict:
        return {
            "id": str(self.public_id),
            "email": self.email,
            "name": self.name,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class TokenBlocklist(db.Model):
    """Revoked tokens, by jti (Flask-JWT-Extended's "database" blocklist recipe)."""

    __tablename__ = "token_blocklist"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    jti: Mapped[str] = mapped_column(String(36), unique=True)  # the unique index serves lookups
    type: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL and a busy timeout, so several gunicorn workers can share the file."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


# -- JWT callbacks ------------------------------------------------------------------


@jwt.user_identity_loader
def _identity(user: User) -> str:
    return str(user.public_id)


@jwt.user_lookup_loader
def _load_user(_header: dict, payload: dict) -> User | None:
    return db.session.execute(
        select(User).where(User.public_id == uuid.UUID(payload["sub"]), User.is_active)
    ).scalar_one_or_none()


@jwt.token_in_blocklist_loader
def _revoked(_header: dict, payload: dict) -> bool:
    found = db.session.execute(
        select(TokenBlocklist.id).where(TokenBlocklist.jti == payload["jti"])
    ).scalar()
    return found is not None


# -- helpers ------------------------------------------------------------------------


class _Passwords:
    def __init__(self) -> None:
        self.rounds = int(os.environ.get("BCRYPT_ROUNDS", "12"))
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(self.rounds))

    def hash(self, password: str) -> str:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(self.rounds)).decode()

    def check(self, password: str, hashed: str | None) -> bool:
        if hashed is None:  # same cost for an unknown email
            bcrypt.checkpw(password.encode(), self._dummy)
            return False
        return bcrypt.checkpw(password.encode(), hashed.encode())


passwords: _Passwords | None = None


def _error(message: str, status: int):
    return jsonify(msg=message), status


def _body() -> dict | None:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else None


def _tokens(user: User, *, fresh: bool) -> dict:
    """A new access/refresh pair; the access token names its refresh token (`rjti`) so a
    logout revokes both."""
    refresh = create_refresh_token(identity=user)
    access = create_access_token(
        identity=user, fresh=fresh, additional_claims={"rjti": get_jti(refresh)}
    )
    return {
        "user": user.to_dict(),
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": int(ACCESS_EXPIRES.total_seconds()),
    }


def _token_response(body: dict, status: int = 200):
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


# -- routes -------------------------------------------------------------------------


@main.get("/healthz")
def healthz():
    return {"status": "ok"}


@auth.post("/register")
def register():
    data = _body()
    if data is None:
        return _error("Expected a JSON object.", 400)
    email, password, name = data.get("email"), data.get("password"), data.get("name")
    if not isinstance(email, str) or "@" not in email or len(email) > 254:
        return _error("A valid email is required.", 422)
    if not isinstance(password, str) or len(password) < 8 or len(password.encode()) > 72:
        return _error("The password must be 8 characters to 72 bytes.", 422)
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
        return _error("A name of 1 to 100 characters is required.", 422)
    email = email.lower()
    if db.session.execute(select(User.id).where(User.email == email)).scalar() is not None:
        return _error("This email is already registered.", 409)
    user = User(email=email, name=name.strip(), password_hash=passwords.hash(password))
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return _error("This email is already registered.", 409)
    return _token_response(_tokens(user, fresh=True), 201)


@auth.post("/login")
def login():
    data = _body()
    if data is None:
        return _error("Expected a JSON object.", 400)
    email, password = data.get("email"), data.get("password")
    if not isinstance(email, str) or not isinstance(password, str):
        return _error("Email and password are required.", 422)
    user = db.session.execute(
        select(User).where(User.email == email.lower(), User.is_active)
    ).scalar_one_or_none()
    if not passwords.check(password, user.password_hash if user else None) or user is None:
        return _error("Invalid email or password.", 401)
    return _token_response(_tokens(user, fresh=True))


@auth.post("/refresh")
@jwt_required(refresh=True)
def refresh():
    """Rotate: the refresh token used here goes on the blocklist (its unique jti makes
    exactly one of two racing refreshes win)."""
    db.session.add(TokenBlocklist(jti=get_jwt()["jti"], type="refresh"))
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return _error("Token has been revoked", 401)
    body = _tokens(current_user, fresh=False)
    db.session.commit()
    return _token_response(body)


@auth.post("/logout")
@jwt_required()
def logout():
    """Blocklist this access token and its refresh token (unless a refresh already did)."""
    claims = get_jwt()
    jtis = {claims["jti"]: "access"}
    if claims.get("rjti"):
        jtis[claims["rjti"]] = "refresh"
    listed = set(
        db.session.execute(select(TokenBlocklist.jti).where(TokenBlocklist.jti.in_(jtis)))
        .scalars()
        .all()
    )
    db.session.add_all(
        TokenBlocklist(jti=jti, type=kind) for jti, kind in jtis.items() if jti not in listed
    )
    try:
        db.session.commit()
    except IntegrityError:  # a concurrent logout of the same session listed them first
        db.session.rollback()
    return {"message": "Successfully logged out."}


@auth.get("/me")
@jwt_required()
def me():
    return jsonify(current_user.to_dict())


# -- factory ------------------------------------------------------------------------


def create_app() -> Flask:
    global passwords
    app = Flask(__name__)
    database_url = os.environ.get("DATABASE_URL", "sqlite:///reference.db")
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48),
        JWT_SECRET_KEY=os.environ["JWT_SECRET_KEY"],
        JWT_ALGORITHM="HS256",
        JWT_ACCESS_TOKEN_EXPIRES=ACCESS_EXPIRES,
        JWT_REFRESH_TOKEN_EXPIRES=REFRESH_EXPIRES,
        JWT_ENCODE_ISSUER=ISSUER,
        JWT_DECODE_ISSUER=ISSUER,
        JWT_ENCODE_AUDIENCE=AUDIENCE,
        JWT_DECODE_AUDIENCE=AUDIENCE,
        JWT_TOKEN_LOCATION=["headers"],
        SQLALCHEMY_DATABASE_URI=database_url,
        # no pre-ping, as the service (a round trip per request on PostgreSQL)
        SQLALCHEMY_ENGINE_OPTIONS={} if database_url.startswith("sqlite") else {"pool_size": 5},
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    db.init_app(app)
    jwt.init_app(app)
    app.register_blueprint(main)
    app.register_blueprint(auth)
    passwords = _Passwords()

    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the tables."""
        db.create_all()

    return app
