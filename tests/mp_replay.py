"""A local stand-in for the Materials Project API, for tests of the real mp-api client.

Only the HTTP boundary is fake: ``MPReplay`` serves, on 127.0.0.1 and a free
port, documents in the shape the MP API returns (``{"data": [...], "meta":
{...}}``), built from recorded ComputedEntry documents.  It answers the
heartbeat the client checks on start-up, filters by the query parameters the
client sends (``material_ids``, ``chemsys``, ``formula``, ``_fields``,
``_limit``, ``_skip``; on the XAS route also ``task_ids``, ``absorbing_element``,
``edge``, ``spectrum_type``) and logs every request, so a test can see exactly what
the client asked for.  Unknown routes answer 404 and are logged.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pymatgen.core import Composition

DB_VERSION = "2025.09.25"  # reported by the heartbeat; any date-like string works


def docs_from_entries(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Thermo and summary documents (MP API shape) from a JSON list of ComputedEntry dicts.

    Each entry becomes one GGA_GGA+U thermo document whose ``entries`` holds
    the entry under its run type, as the API does, and one summary document
    with the composition-level fields.  Energies per atom are derived from the
    entry (corrected = energy + correction); nothing is invented: fields the
    entries do not have (band gap, structure) are absent.
    """
    entries = json.loads(path.read_text())
    thermo, summary = [], []
    for e in entries:
        comp = Composition(e["composition"])
        n = comp.num_atoms
        mid = e["entry_id"]
        elements = sorted(el.symbol for el in comp.elements)
        common = {
            "material_id": mid,
            "formula_pretty": comp.reduced_formula,
            "composition": e["composition"],
            "chemsys": "-".join(elements),
            "elements": elements,
            "nelements": len(elements),
            "nsites": int(n),
            "energy_per_atom": (e["energy"] + e["correction"]) / n,
            "uncorrected_energy_per_atom": e["energy"] / n,
        }
        thermo.append({
            **common,
            "thermo_id": f"{mid}_GGA_GGA+U",
            "thermo_type": "GGA_GGA+U",
            "is_stable": True,
            "energy_above_hull": 0.0,
            "entries": {e["parameters"]["run_type"]: e},
        })
        summary.append(common)
    return {"materials/thermo": thermo, "materials/summary": summary}


def xas_docs_from_spectrum(path: Path, task_id: str) -> dict[str, list[dict[str, Any]]]:
    """The ``materials/xas`` route: one XAS document (the API's shape) from a pymatgen XAS JSON file.

    emmet's own ``XASDoc.from_spectrum`` builds the document the server would hold (structure
    metadata, spectrum type, edge, absorbing element, the spectrum as pymatgen's dict) and
    pydantic dumps it as JSON, as the API does.  The shared LiCoO2 file names no task, so the
    caller gives the id; the file's pre-2020 key ``absorption_element`` is renamed first.
    """
    import warnings

    from emmet.core.xas import XASDoc
    from pymatgen.analysis.xas.spectrum import XAS

    raw = json.loads(path.read_text())
    if "absorption_element" in raw:
        raw["absorbing_element"] = raw.pop("absorption_element")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = XASDoc.from_spectrum(XAS.from_dict(raw), task_id=task_id)
    return {"materials/xas": [doc.model_dump(mode="json")]}


class MPReplay:
    """Context manager running the replay server in a thread; ``endpoint`` is its base URL."""

    def __init__(self, routes: dict[str, list[dict[str, Any]]]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []  # (method, path, query)
        self.unknown: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def __enter__(self) -> "MPReplay":
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean; we log ourselves
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                replay.requests.append(("GET", parts.path, query))
                status, body = replay.answer(parts.path, query)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- routing -----------------------------------------------------------------------

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        route = path.strip("/")
        if route == "heartbeat":
            return 200, {
                "status": "OK",
                "version": version("emmet-core"),
                "db_version": DB_VERSION,
                "access_controlled_batch_ids": [],
            }
        if route in self.routes:
            return 200, self._search(self.routes[route], query)
        self.unknown.append(path)
        return 404, {"detail": f"replay server has no route {path}"}

    @staticmethod
    def _search(docs: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
        def csv(key: str) -> list[str] | None:
            vals = query.get(key)
            return ",".join(vals).split(",") if vals else None

        selected = docs
        if (ids := csv("task_ids")) is not None:
            selected = [d for d in selected if d.get("task_id") in set(ids)]
        for key in ("absorbing_element", "edge", "spectrum_type"):  # the XAS route's exact-match filters
            if (vals := csv(key)) is not None:
                selected = [d for d in selected if d.get(key) in set(vals)]
        if (ids := csv("material_ids")) is not None:
            selected = [d for d in selected if d["material_id"] in set(ids)]
        if (chemsys := csv("chemsys")) is not None:
            # MP matches a chemical system exactly (element order does not matter)
            want = {"-".join(sorted(c.split("-"))) for c in chemsys}
            selected = [d for d in selected if d["chemsys"] in want]
        if (formulas := csv("formula")) is not None:
            want = {Composition(f).reduced_formula for f in formulas}
            selected = [d for d in selected if d["formula_pretty"] in want]
        total = len(selected)
        skip = int(query.get("_skip", ["0"])[0])
        limit = int(query.get("_limit", [str(total or 1)])[0])
        page = selected[skip : skip + limit]
        fields = csv("_fields")
        if fields and query.get("_all_fields", ["false"])[0].lower() != "true":
            page = [{k: d[k] for k in fields if k in d} for d in page]
        return {"data": page, "meta": {"total_doc": total, "max_limit": 1000, "db_version": DB_VERSION}}
