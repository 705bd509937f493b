"""`tunelab rate`: the rating page, a Flask app over a `RatingSession` and a `RatingStore`.

Flask because the page is a handful of server-rendered forms: Jinja2 escapes every value it
prints (model text containing `<script>` or HTML shows as text), werkzeug's threaded server
lets several raters submit at once on one machine, and no JavaScript build is needed: the
keyboard shortcuts are one small static file. Every submission is one SQLite transaction
(WAL), so killing the server loses nothing already acknowledged. The page sends a strict
Content-Security-Policy (scripts only from the server's own static file) and every form
carries the server's random token.

    GET  /                         who rates? (the raters so far and their progress)
    GET  /rate/<rater>             -> the rater's first item not yet rated, skipped or flagged
    GET  /rate/<rater>/<n>         item n: input, outputs A, B, ... (blind), the criteria
    POST /rate/<rater>/<n>         submit | skip | flag -> the next open item
"""

from __future__ import annotations

import errno
import re
import secrets
import socket
from pathlib import Path

from flask import Flask, Response, abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.serving import BaseWSGIServer, make_server

from tunelab.core.errors import TunelabError
from tunelab.human.session import RatingSession
from tunelab.human.store import RatingStore

WEB = Path(__file__).parent / "web"
RATER = re.compile(r"^[\w.@ -]{1,40}$")
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
          "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def check_rater(name: str) -> str:
    name = name.strip()
    if not RATER.match(name):
        raise TunelabError(f"rater {name!r}: use 1-40 letters, digits, spaces or . @ - _")
    return name


def create_app(session: RatingSession, store: RatingStore, rater: str | None = None) -> Flask:
    app = Flask(__name__, template_folder=str(WEB / "templates"),
                static_folder=str(WEB / "static"))
    token = secrets.token_urlsafe(16)
    keys = [item.key for item in session.items]

    def progress(name: str) -> tuple[int, int]:
        return len(store.done(name) & set(keys)), len(keys)

    def next_open(name: str, after: int = -1) -> int | None:
        done = store.done(name)
        order = list(range(after + 1, len(keys))) + list(range(0, after + 1))
        return next((i for i in order if keys[i] not in done), None)

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/favicon.ico")
    def favicon() -> ResponseReturnValue:
        return app.send_static_file("favicon.svg")

    @app.get("/")
    def start() -> ResponseReturnValue:
        raters = sorted({s.rater for s in store.scores()} | {m[0] for m in store.marks()})
        return render_template("start.html", session=session, token=token, rater=rater or "",
                               raters=[(r, *progress(r)) for r in raters], error=None)

    @app.post("/")
    def begin() -> ResponseReturnValue:
        if request.form.get("token") != token:
            abort(403)
        try:
            name = check_rater(request.form.get("rater", ""))
        except TunelabError as err:
            return render_template("start.html", session=session, token=token,
                                   rater=request.form.get("rater", ""), raters=[],
                                   error=str(err)), 400
        return redirect(url_for("resume", name=name))

    @app.get("/rate/<name>")
    def resume(name: str) -> ResponseReturnValue:
        name = valid(name)
        n = next_open(name)
        if n is None:
            return render_template("done.html", session=session, rater=name,
                                   progress=progress(name))
        return redirect(url_for("item", name=name, n=n))

    @app.get("/rate/<name>/<int:n>")
    def item(name: str, n: int) -> ResponseReturnValue:
        name = valid(name)
        return page(name, n, error=None)

    @app.post("/rate/<name>/<int:n>")
    def submit(name: str, n: int) -> ResponseReturnValue:
        name = valid(name)
        if request.form.get("token") != token:
            abort(403)
        shown = session.items[in_range(n)]
        note = request.form.get("note", "").strip()[:2000]
        action = request.form.get("action", "submit")
        if action in ("skip", "flag"):
            store.mark(name, shown.key, action, note)
        elif action == "submit":
            slots = session.slots(name, shown.key)
            scores, missing = [], []
            for slot, system in slots.items():
                for criterion in session.criteria:
                    value = request.form.get(f"s-{slot}-{criterion.name}", "")
                    if value.isdigit() and 1 <= int(value) <= session.scale:
                        scores.append((system, criterion.name, int(value)))
                    else:
                        missing.append(f"{slot} {criterion.name}")
            preferences: list[tuple[str, str, int]] = []
            if session.pairwise:
                choice = request.form.get("preference", "")
                first, second = slots["A"], slots["B"]
                verdict = {"A": -1, "tie": 0, "B": 1}.get(choice)
                if verdict is None:
                    missing.append("which output is better")
                else:
                    preferences.append((first, second, verdict))
            if missing:
                return page(name, n, error="Rate every output on every criterion; missing: "
                                           + ", ".join(missing)), 400
            store.add_judgement(name, shown.key, scores, preferences, note)
        else:
            abort(400)
        following = next_open(name, after=n)
        if following is None:
            return redirect(url_for("resume", name=name))
        return redirect(url_for("item", name=name, n=following))

    def valid(name: str) -> str:
        try:
            return check_rater(name)
        except TunelabError:
            abort(404)

    def in_range(n: int) -> int:
        if not 0 <= n < len(keys):
            abort(404)
        return n

    def page(name: str, n: int, error: str | None) -> str:
        shown = session.items[in_range(n)]
        slots = session.slots(name, shown.key)
        given = store.given(name, shown.key)
        given_scores = given["scores"] if isinstance(given["scores"], dict) else {}
        given_preferences = given["preferences"] if isinstance(given["preferences"], dict) else {}
        chosen = {f"s-{slot}-{c.name}": given_scores.get((system, c.name))
                  for slot, system in slots.items() for c in session.criteria}
        chosen.update({k: int(v) for k, v in request.form.items()
                       if k.startswith("s-") and v.isdigit()})
        preference = None
        if session.pairwise:
            first, second = sorted((slots["A"], slots["B"]))
            stored = given_preferences.get((first, second))
            if stored is not None:
                if first != slots["A"]:
                    stored = -stored
                preference = {-1: "A", 0: "tie", 1: "B"}[stored]
            preference = request.form.get("preference", preference)
        done, total = progress(name)
        return render_template(
            "item.html", session=session, rater=name, n=n, item=shown, token=token,
            slots=[(slot, shown.outputs[system]) for slot, system in slots.items()],
            chosen=chosen, preference=preference, note=request.form.get("note", given["note"]),
            mark=given["mark"], done=done, total=total, error=error,
            percent=round(100 * done / total), scale=range(1, session.scale + 1),
            previous=n - 1 if n > 0 else None)

    return app


def serve(session: RatingSession, store: RatingStore, host: str = "127.0.0.1", port: int = 8765,
          rater: str | None = None) -> BaseWSGIServer:
    """A threaded server for the page, bound but not yet serving (`serve_forever()`). The
    socket is bound here, so a port in use is a one-line error rather than werkzeug's exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only
        listener.bind((host, port))
        listener.listen(128)
    except OSError as err:
        listener.close()
        if err.errno == errno.EADDRINUSE:
            raise TunelabError(f"--port {port}: already in use on {host}; pass another --port "
                               "(0 picks a free one)") from None
        raise TunelabError(f"--host {host} --port {port}: cannot listen there "
                           f"({err.strerror or err}); the default is 127.0.0.1") from None
    try:  # werkzeug duplicates the descriptor
        return make_server(host, port, create_app(session, store, rater), threaded=True,
                           fd=listener.fileno())
    finally:
        listener.close()
