"""Line plots on a Visdom server, one window per group of :mod:`vidseg.engine.metric_groups`.

The writer keeps every point it was given (a few numbers per logging interval), so a window can always be
redrawn whole: at the start of a resumed run (from the history of ``metrics.jsonl``), after the server came
back, or when a new trace appears. A server that is absent or goes away costs one warning line; the next
write that reaches it again prints one recovery line and redraws every window; the visdom client's own
tracebacks, "waiting" prints and log lines are silenced. Training never stops for Visdom.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from vidseg.engine.metric_groups import GROUPS, Group, split_eval, split_train

__all__ = ["VisdomWriter"]

logger = logging.getLogger("vidseg")

# One point of a window: (x, {trace name: value}).
Point = tuple[float, dict[str, float]]


def _client_class() -> type:
    """A ``visdom.Visdom`` whose posts time out (the stock client waits forever on a hung server). HTTP
    error statuses are not errors here: visdom 0.2.4 answers the client's own ``env/<name>`` post with a
    500 (KeyError 'username') and works all the same."""
    import visdom

    class _Client(visdom.Visdom):
        timeout_s = 5.0

        def _handle_post(self, url: str, data: Any = None) -> str:
            return self.session.post(url, data=data or {}, timeout=self.timeout_s).text

        drawn: frozenset[str] = frozenset()  # per client (set in _connect): windows it drew

        def win_exists(self, win: str, env: str | None = None) -> bool | None:
            # The stock one asks the server before every append, and on a connection error prints "Error
            # connecting to Visdom server!" and returns None; the writer checks one window per write instead.
            if win in self.drawn:
                return True
            e = self._win_exists_wrap(win, env)
            return {"true": True, "false": False}.get(e)

    return _Client


def _trace_order(names: set[str]) -> list[str]:
    return sorted(names, key=lambda n: (n != "total", n))  # the total first, then alphabetical


class VisdomWriter:
    """Windows in env ``env`` (the run's name, the basename of ``OUTPUT_DIR``) on ``server:port``.

    Args:
        server: ``http://host``.
        port: the server's port.
        env: the Visdom environment; window ids are ``{env}:{group key}``, so a resumed run draws into the
            same windows.
        history: ``metrics.jsonl`` records (``{"type": "train"|"eval", "iter", ...}``) of the run so far;
            drawn at the start.
        timeout_s: per-request timeout.
    """

    def __init__(
        self, server: str, port: int, env: str, history: list[dict] | None = None, timeout_s: float = 5.0
    ) -> None:
        self.env, self.server, self.port, self.timeout_s = env, server, int(port), timeout_s
        self.where = f"{server}:{port}"
        self.points: dict[str, list[Point]] = {}  # group key -> points, in order
        self._legends: dict[str, list[str]] = {}  # what each window on the server shows
        self.viz: Any = None
        self.up = False
        self._warned = False
        self._next_try = 0.0  # time.monotonic() before which no reconnection is tried
        self.available = True
        for rec in history or []:
            self._add(rec.get("type"), float(rec.get("iter", 0)), rec)
        try:
            self._client = _client_class()
        except ImportError:
            self.available = False
            logger.warning(
                "Visdom: the 'visdom' package is not installed (pip install 'vidseg[visdom]'); "
                "training goes on without Visdom"
            )
            return
        # The client logs a warning for every client without an incoming socket and for each new HTTP session.
        logging.getLogger("visdom").setLevel(logging.CRITICAL)
        if self._connect():
            logger.info("Visdom: plots of this run at %s/env/%s", self.where, self.env)
            self._redraw()
        if not self.up:
            self._went_away("is unreachable")

    # ------------------------------------------------------------------ state
    @property
    def enabled(self) -> bool:
        """The visdom package is importable (the server may still be down: writes then retry)."""
        return self.available

    def window_id(self, key: str) -> str:
        """The Visdom window id of group ``key`` (stable across resumes: env + group)."""
        return f"{self.env}:{key}"

    def _add(self, kind: Any, x: float, rec: dict) -> list[str]:
        groups = split_train(rec) if kind == "train" else split_eval(rec) if kind == "eval" else {}
        for key, traces in groups.items():
            self.points.setdefault(key, []).append((x, traces))
        return list(groups)

    # ------------------------------------------------------------------ server
    def _connect(self) -> bool:
        """One attempt. A refused connection fails at once and is retried at the next write; one that timed
        out (a host that drops packets) is retried after 30 times the time it took (at least a minute), so a
        dead remote server costs training about 3 % rather than a timeout at every logging interval."""
        if time.monotonic() < self._next_try:
            return False
        t0 = time.monotonic()
        self._client.timeout_s = self.timeout_s  # the constructor posts too
        try:
            client = self._client(
                server=self.server,
                port=self.port,
                env=self.env,
                use_incoming_socket=False,
                raise_exceptions=True,
            )
        except Exception:  # ConnectionError, a bad URL, ...: the server is not there
            took = time.monotonic() - t0
            slow = took > min(1.0, self.timeout_s / 2)
            self._next_try = time.monotonic() + (max(60.0, 30 * took) if slow else 0.0)
            return False
        client.drawn = set()  # windows this client drew: their appends need no existence check
        self.viz, self.up = client, True
        return True

    def _went_away(self, how: str) -> None:
        self.up, self.viz = False, None
        self._legends.clear()
        if not self._warned:
            self._warned = True
            logger.warning(
                "Visdom server %s %s; training goes on, plots are kept and redrawn when it is back",
                self.where,
                how,
            )

    def _opts(self, g: Group, legend: list[str]) -> dict:
        opts = {
            "title": g.title,
            "xlabel": g.xlabel,
            "ylabel": g.ylabel,
            "legend": legend,
            "showlegend": True,
            "width": 520,
            "height": 360,
            "marginleft": 70,
            "marginbottom": 50,
            "margintop": 40,
        }
        if g.log:
            opts["ytype"] = "log"
        return opts

    def _draw(self, key: str) -> None:
        """Replace window ``key`` with all its points."""
        pts = self.points.get(key) or []
        if not pts:
            return
        legend = _trace_order({n for _, tr in pts for n in tr})
        x = np.array([[p[0]] * len(legend) for p in pts], dtype=np.float64)
        y = np.array([[tr.get(n, math.nan) for n in legend] for _, tr in pts], dtype=np.float64)
        if len(legend) == 1:  # visdom takes a single trace as 1-d arrays
            x, y = x[:, 0], y[:, 0]
        g = GROUPS[key]
        self.viz.line(X=x, Y=y, win=self.window_id(key), env=self.env, opts=self._opts(g, legend))
        self._legends[key] = legend
        self.viz.drawn.add(self.window_id(key))

    def _append(self, key: str) -> None:
        legend = self._legends.get(key)
        x, traces = self.points[key][-1]
        if legend is None or any(n not in legend for n in traces):  # a new trace: redraw the window
            self._draw(key)
            return
        # One request per window; a trace without a value this time gets a null point (a gap).
        y = np.array([[traces.get(n, math.nan) for n in legend]], dtype=np.float64)
        xs = np.full_like(y, x)
        if len(legend) == 1:
            xs, y = xs[:, 0], y[:, 0]
        self.viz.line(
            X=xs, Y=y, win=self.window_id(key), env=self.env, update="append", opts={"legend": legend}
        )

    def _redraw(self) -> None:
        try:
            for key in sorted(self.points, key=list(GROUPS).index):
                self._draw(key)
            self.viz.save([self.env])
        except Exception:
            self._went_away("failed")

    def _write(self, kind: str, step: int, rec: dict) -> None:
        if not self.available:
            return
        keys = self._add(kind, float(step), rec)
        if not self.up:
            if not self._connect():
                return
            logger.warning(
                "Visdom server %s is back: windows redrawn (%s/env/%s)", self.where, self.where, self.env
            )
            self._warned = False
            self._redraw()
            return
        try:
            probe = next(iter(self._legends), None)
            if probe is not None and self.viz._win_exists_wrap(self.window_id(probe), self.env) != "true":
                self._redraw()  # a server restarted between two writes: it has lost the windows
                return
            for key in keys:
                self._append(key)
            self.viz.save([self.env])
        except Exception:  # the server went away mid-run
            self._went_away("stopped answering")

    # ------------------------------------------------------------------ writer API
    def write_train(self, step: int, scalars: dict[str, float], epoch: int = 0) -> None:
        self._write("train", step, scalars)

    def write_eval(self, epoch: int, metrics: dict[str, float], step: int = 0) -> None:
        """Evaluation metrics at iteration ``step`` (the x of every window is the iteration)."""
        self._write("eval", step, metrics)

    def close(self) -> None:
        self.viz = None
