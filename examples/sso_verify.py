"""The product's side of isvserver's single sign-on: verify the assertion, once. Run it with

    ISV_SSO_ASSERTION_KEY=… gunicorn --chdir examples sso_verify:app --bind 127.0.0.1:9100

and set ISV_SSO_PRODUCT_URL_TEMPLATE=http://127.0.0.1:9100/sso?assertion={assertion} on isvserver.
"""

from __future__ import annotations

import os
import sqlite3
import time
from html import escape

import jwt
from flask import Flask, request

app = Flask(__name__)
KEY = os.environ["ISV_SSO_ASSERTION_KEY"].encode()
AUDIENCE = os.environ.get("ISV_SSO_ASSERTION_AUDIENCE", "product")
ISSUER = os.environ.get("ISV_SSO_ASSERTION_ISSUER", "isvserver")
USED = os.environ.get("SSO_USED_DB", "used_assertions.sqlite3")  # one row per accepted jti


def verify_assertion(token: str, key: bytes, audience: str, issuer: str, used_db: str) -> dict:
    """The assertion's claims: signature, issuer, audience and expiry checked, its jti never seen before."""
    claims = jwt.decode(
        token, key, algorithms=["HS256"], audience=audience, issuer=issuer, leeway=5,
        options={"require": ["exp", "iat", "jti", "aud", "iss", "sub"]},
    )  # fmt: skip
    with sqlite3.connect(used_db) as db:
        db.execute("CREATE TABLE IF NOT EXISTS used (jti TEXT PRIMARY KEY, exp INTEGER NOT NULL)")
        db.execute("DELETE FROM used WHERE exp < ?", (int(time.time()) - 60,))  # expired ones cannot return
        try:
            db.execute("INSERT INTO used (jti, exp) VALUES (?, ?)", (claims["jti"], claims["exp"]))
        except sqlite3.IntegrityError:
            raise jwt.InvalidTokenError("this assertion was already used") from None
    return claims


@app.get("/sso")
def sso() -> tuple[str, int]:
    """Log the user in (here: greet them), or refuse."""
    try:
        user = verify_assertion(request.args.get("assertion", ""), KEY, AUDIENCE, ISSUER, USED)
    except jwt.InvalidTokenError as exc:
        return f"<h1 id='refused'>Sign-in refused: {escape(str(exc))}</h1>", 401
    who = f"{user['name']} ({user['sub']}, {user['role']}, org {user['orgCode']}, tenant {user['tenantId']})"
    return (
        f"<h1 id='welcome'>Welcome {escape(who)}</h1><p id='instance'>{escape(user['instanceId'])}</p>",
        200,
    )
