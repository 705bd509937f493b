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


class RatingPages:
    """What the rating page's routes share: the session, the store, the form token, and how an
    item's page is drawn and a submitted one read."""

    def __init__(self, session: RatingSession, store: RatingStore) -> None:
        self.session, self.store = session, store
        self.token = secrets.token_urlsafe(16)
        self.keys = [item.key for item in session.items]

    def progress(self, name: str) -> tuple[int, int]:
        return len(self.store.done(name) & set(self.keys)), len(self.keys)

    def next_open(self, name: str, after: int = -1) -> int | None:
        """The next item (after `after`, wrapping around) the rater has not judged."""
        done = self.store.done(name)
        order = list(range(after + 1, len(self.keys))) + list(range(0, after + 1))
        return next((i for i in order if self.keys[i] not in done), None)

    def check_token(self) -> None:
        if request.form.get("token") != self.token:
            abort(403)

    @staticmethod
    def valid(name: str) -> str:
        try:
            return check_rater(name)
        except TunelabError:
            abort(404)

    def in_range(self, n: int) -> int:
        if not 0 <= n < len(self.keys):
            abort(404)
        return n

    def judgement(self, name: str, key: str
                  ) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]], list[str]]:
        """(scores, preferences, what is missing) of the submitted form, slots mapped back to
        systems by the server (the page never holds a system name)."""
        session = self.session
        slots = session.slots(name, key)
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
            verdict = {"A": -1, "tie": 0, "B": 1}.get(request.form.get("preference", ""))
            if verdict is None:
                missing.append("which output is better")
            else:
                preferences.append((slots["A"], slots["B"], verdict))
        return scores, preferences, missing

    def page(self, name: str, n: int, error: str | None) -> str:
        """Item n for rater `name`: what they gave before (or just submitted) filled in."""
        session = self.session
        shown = session.items[self.in_range(n)]
        slots = session.slots(name, shown.key)
        given = self.store.given(name, shown.key)
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
        done, total = self.progress(name)
        return render_template(
            "item.html", session=session, rater=name, n=n, item=shown, token=self.token,
            slots=[(slot, shown.outputs[system]) for slot, system in slots.items()],
            chosen=chosen, preference=preference, note=request.form.get("note", given["note"]),
            mark=given["mark"], done=done, total=total, error=error,
            percent=round(100 * done / total), scale=range(1, session.scale + 1),
            previous=n - 1 if n > 0 else None)


def create_app(session: RatingSession, store: RatingStore, rater: str | None = None) -> Flask:
    """The rating page's routes; each is a few lines over `RatingPages`."""
    app = Flask(__name__, template_folder=str(WEB / "templates"),
                static_folder=str(WEB / "static"))
    pages = RatingPages(session, store)

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
        return render_template("start.html", session=session, token=pages.token,
                               rater=rater or "",
                               raters=[(r, *pages.progress(r)) for r in raters], error=None)

    @app.post("/")
    def begin() -> ResponseReturnValue:
        pages.check_token()
        try:
            name = check_rater(request.form.get("rater", ""))
        except TunelabError as err:
            return render_template("start.html", session=session, token=pages.token,
                                   rater=request.form.get("rater", ""), raters=[],
                                   error=str(err)), 400
        return redirect(url_for("resume", name=name))

    @app.get("/rate/<name>")
    def resume(name: str) -> ResponseReturnValue:
        name = pages.valid(name)
        n = pages.next_open(name)
        if n is None:
            return render_template("done.html", session=session, rater=name,
                                   progress=pages.progress(name))
        return redirect(url_for("item", name=name, n=n))

    @app.get("/rate/<name>/<int:n>")
    def item(name: str, n: int) -> ResponseReturnValue:
        return pages.page(pages.valid(name), n, error=None)

    @app.post("/rate/<name>/<int:n>")
    def submit(name: str, n: int) -> ResponseReturnValue:
        name = pages.valid(name)
        pages.check_token()
        shown = session.items[pages.in_range(n)]
        note = request.form.get("note", "").strip()[:2000]
        action = request.form.get("action", "submit")
        if action in ("skip", "flag"):
            store.mark(name, shown.key, action, note)
        elif action == "submit":
            scores, preferences, missing = pages.judgement(name, shown.key)
            if missing:
                return pages.page(name, n, error="Rate every output on every criterion; "
                                                 "missing: " + ", ".join(missing)), 400
            store.add_judgement(name, shown.key, scores, preferences, note)
        else:
            abort(400)
        following = pages.next_open(name, after=n)
        if following is None:
            return redirect(url_for("resume", name=name))
        return redirect(url_for("item", name=name, n=following))

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
