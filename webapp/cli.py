"""``vtr serve``, ``vtr search`` and ``vtr demo``: thin click wrappers over the web app and the engine.

They reach the ``vtr`` group through the ``vtr.commands`` entry points (setup.cfg), so the indexer's
CLI never imports the web app. ``python -m webapp.cli`` runs the same commands without the group.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from retrieval.errors import ConfigError, VTRError
from retrieval.settings import flag_help, get_setting, resolve
from webapp.jobs import vtr_command


def engine_options(fn):
    """--home/--db/--model/--checkpoint/--rerank-k, shared by every command that searches."""
    for name in ("rerank_k", "checkpoint", "model", "db", "home"):
        s = get_setting(name)
        kind = click.IntRange(min=0) if name == "rerank_k" else None
        fn = click.option(s.flag, name, type=kind, default=None, help=flag_help(name))(fn)
    return fn


def _setting_option(name: str, **kw):
    s = get_setting(name)
    return click.option(s.flag, name, default=None, help=flag_help(name), **kw)


def _engine(home, db, model, checkpoint, rerank_k):
    from retrieval.engine import SearchEngine
    from retrieval.home import find_home

    return SearchEngine(home=find_home(home), db=db, model=model, checkpoint=checkpoint, rerank_k=rerank_k)


def prepare_home(home, db) -> None:
    """Create the folders and an empty catalog of a new home, so a server can start before anything is indexed."""
    from retrieval.catalog import Catalog, sqlite_file_missing
    from retrieval.home import DataHome, find_home

    h = DataHome(find_home(home))
    url = h.db_url(db)
    if sqlite_file_missing(url):
        h.ensure()
        Catalog(url, create=True).close()


def set_torch_threads(server: bool) -> None:
    """Threads per model call: 1 in a server by default (requests run side by side), else torch's own.

    Why: with N request threads each asking for all cores, OpenMP threads oversubscribe the CPU and
    a busy machine turns 10 ms queries into 500 ms ones; one thread per call degrades gracefully.
    """
    threads = resolve("torch_threads")
    if threads is None and not server:
        return
    import torch

    torch.set_num_threads(max(1, int(threads or 1)))


def _fmt_time(s: float) -> str:
    m, sec = divmod(max(0.0, float(s)), 60)
    return f"{int(m)}:{sec:04.1f}"


def _fmt_score(h: dict) -> str:
    """The readable score: the match probability when the hit has one, else the raw similarity."""
    p = h.get("match_probability")
    if p is not None:
        return f"{100 * p:5.1f}% match"
    return f"{h['score']:6.3f} sim  "


def _print_results(result: dict, hint: str | None = None) -> None:
    hits = result["results"]
    if not hits:
        click.echo("no results" + (f": {hint}" if hint else ""))
        return
    if result.get("no_good_match"):
        click.echo(
            f"no good match: the best hit's match probability is below {result['min_match_probability']:.0%}; "
            "the closest results follow",
            err=True,
        )
    for h in hits:
        if "text_id" in h:
            click.echo(f"{h['rank']:>4}  {_fmt_score(h)}  {h['text']}")
            continue
        click.echo(
            f"{h['rank']:>4}  {_fmt_score(h)}  {h['video_path']}  "
            f"{_fmt_time(h['start'])}-{_fmt_time(h['end'])}  (clip {h['clip_id']})"
        )
        for m in h.get("moments", []):
            click.echo(f"{'':>4}  {_fmt_score(m)}    also {_fmt_time(m['start'])}-{_fmt_time(m['end'])}")
    click.echo(f"({len(hits)} results, {result['took_ms']:.0f} ms, {result['reranked']} re-ranked)", err=True)


@click.command("search")
@click.argument("query", required=False)
@click.option("--video", "video", type=click.Path(dir_okay=False, path_type=Path), help="Search with this video file instead of text.")  # fmt: skip
@click.option("--clip", "clip_id", type=click.IntRange(min=0), help="Search with an indexed clip (its id) instead of text.")  # fmt: skip
@click.option("--target", type=click.Choice(["texts", "clips"]), default=None, help="What a video query finds: captions (texts, default for --video) or similar clips.")  # fmt: skip
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="Number of results.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Results to skip (paging).")
@click.option("--rerank/--no-rerank", default=None, help="Re-rank the top candidates with the matching head (default: when the model's head is trained).")  # fmt: skip
@click.option("--group-by-video", is_flag=True, help="One result per video: its best moment and its other matching moments.")  # fmt: skip
@click.option("--library", default=None, help="Only videos of this library (id or root folder).")
@click.option("--path-prefix", default=None, help="Only videos whose path starts with this.")
@click.option("--min-duration", type=click.FloatRange(min=0), default=None, help="Only videos at least this many seconds long.")  # fmt: skip
@click.option("--max-duration", type=click.FloatRange(min=0), default=None, help="Only videos at most this many seconds long.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON (the API's shape).")
@_setting_option("min_match_probability", type=click.FloatRange(0, 1))
@engine_options
def search(query, video, clip_id, target, k, offset, rerank, group_by_video, library, path_prefix, min_duration, max_duration, as_json, min_match_probability, home, db, model, checkpoint, rerank_k):  # fmt: skip
    """Search the index: `vtr search "a dog catches a frisbee"` or `vtr search --video clip.mp4`."""
    from retrieval.engine import SearchFilters

    given = [x is not None for x in (query, video, clip_id)]
    if sum(given) != 1:
        raise click.UsageError("give exactly one of a text QUERY, --video FILE or --clip ID")
    if query is not None and target is not None:
        raise click.UsageError("--target applies to --video and --clip searches only")
    set_torch_threads(server=False)
    engine = _engine(home, db, model, checkpoint, rerank_k)
    engine.min_match_probability = float(resolve("min_match_probability", min_match_probability))
    filters = SearchFilters(library, path_prefix, min_duration, max_duration)
    opts = {"k": k, "offset": offset, "rerank": rerank, "filters": filters, "group_by_video": group_by_video}
    try:
        if query is not None:
            result = engine.search_text(query, **opts)
        elif video is not None:
            result = engine.search_video(path=video, target=target or "texts", **opts)
        else:
            result = engine.search_video(clip_id=clip_id, target=target or "clips", **opts)
        hint = None
        if not result["results"] and query is None and (target or ("texts" if video else "clips")) == "texts":
            if not engine.catalog.stats().get("texts"):
                hint = (
                    f"the caption corpus of {engine.home.root} is empty. Add captions with "
                    f"`vtr texts add FILE --home {engine.home.root}`, or find similar clips with --target clips"
                )
    finally:
        engine.close()
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        _print_results(result, hint)


def _check_can_listen(host: str, port: int) -> None:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress does
        try:
            s.bind(addr)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host/--port"
            ) from exc


def run_server(app, host: str, port: int, threads: int, sockets=None) -> None:
    """Serve ``app`` with waitress (a production WSGI server: thread pool, no debugger, no reloader).

    ``sockets``: already listening sockets to serve (a ``--workers`` worker) instead of binding
    ``host:port``. The app's engine is closed when the server stops (:func:`webapp.state.close_app`).
    """
    import logging

    from waitress import serve as waitress_serve

    from webapp.state import close_app

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" chatter under load
    where = {"sockets": sockets} if sockets else {"host": host, "port": port}
    if not sockets:
        _check_can_listen(host, port)  # waitress leaks its wake-up pipe when binding fails
    try:
        waitress_serve(app, **where, threads=threads, ident="vtr", channel_timeout=120, clear_untrusted_proxy_headers=True)  # fmt: skip
    except OSError as exc:  # port taken, address not on this machine, privileged port
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host/--port"
        ) from exc
    finally:
        close_app(app)


def _serving_app(home, db, model, checkpoint, rerank_k):
    """Load the engine (model, index, catalog) and build the app around it: once per server process."""
    from webapp import create_app

    set_torch_threads(server=True)
    engine = _engine(home, db, model, checkpoint, rerank_k).load()
    app = create_app({"ENGINE": engine, "HOME": str(engine.home.root), "DB": db, "MODEL": model, "CHECKPOINT": checkpoint, "RERANK_K": engine.rerank_k})  # fmt: skip
    return engine, app


@click.command("serve")
@_setting_option("host")
@_setting_option("port", type=click.IntRange(0, 65535))
@_setting_option("server_threads", type=click.IntRange(1, 256))
@_setting_option("server_workers", type=click.IntRange(1, 64))
@engine_options
def serve(host, port, server_threads, server_workers, home, db, model, checkpoint, rerank_k):
    """Serve the web UI and the JSON API (http://127.0.0.1:8000 by default)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port, threads, workers = (
        resolve("host", host),
        int(resolve("port", port)),
        int(resolve("server_threads", server_threads)),
        int(resolve("server_workers", server_workers)),
    )
    prepare_home(home, db)  # an empty or new home serves too; POST /api/v1/index fills it
    if workers > 1:
        _serve_workers(host, port, threads, workers, (home, db, model, checkpoint, rerank_k))
        return
    engine, app = _serving_app(home, db, model, checkpoint, rerank_k)
    stats = engine.stats()
    click.echo(
        f"vtr: {stats['videos']} videos, {stats['clips']} clips, {stats['texts']} captions, model {engine.model_name}"
        f" (home {engine.home.root})"
    )
    if stats.get("message"):
        click.echo(f"vtr: {stats['message']}")
    click.echo(f"serving on http://{host}:{port}  (Ctrl-C to stop)")
    run_server(app, host, port, threads)


def _serve_workers(host: str, port: int, threads: int, workers: int, engine_args: tuple) -> None:
    """``--workers N``: bind here, fork N processes that each load the engine and serve the socket."""
    from webapp.workers import listen_socket, serve_workers

    try:
        sock = listen_socket(host, port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host/--port"
        ) from exc

    def serve_one(s) -> None:
        _, app = _serving_app(*engine_args)
        run_server(app, host, port, threads, sockets=[s])

    click.echo(f"serving on http://{host}:{port} with {workers} worker processes x {threads} threads  (Ctrl-C to stop)")
    sys.exit(serve_workers(sock, workers, serve_one))


# ---------------------------------------------------------------------------------------------
# demo


def demo_examples(records: list[dict], n: int = 5) -> list[str]:
    """A few distinct captions to try: whole short clips, then one event inside a long video."""
    out: list[str] = []
    for rec in records:
        text = rec.get("caption", "").strip()
        if text and text not in out and rec.get("kind") != "long" and len(out) < n - 1:
            out.append(text)
    events = [e["caption"] for rec in records for e in rec.get("events", [])[1:2]]
    return out + events[:1]


def _moments(records: list[dict], library: Path) -> dict[str, list[tuple[float, float, str]]]:
    """{video path: [(start, end, caption key)]}: what is where in a generated library (None end = whole video)."""
    out: dict[str, list[tuple[float, float, str]]] = {}
    for rec in records:
        path = str(library / rec["path"])
        if rec.get("kind") == "long":
            out[path] = [(e["start"], e["end"], e["key"]) for e in rec["events"]]
        else:
            out[path] = [(0.0, float("inf"), rec["key"])]
    return out


def verified_examples(engine, records: list[dict], library: Path, n: int = 6) -> list[str]:
    """Captions whose search puts a right clip first (same meaning, same moment), spread over the kinds.

    Why: a caption from the corpus always describes something indexed, but a small model may still
    rank another clip first; the examples a new user is shown must work.
    """
    where = _moments(records, library)
    queries: list[tuple[str, str, str]] = []  # (caption, key, kind)
    for rec in records:
        if rec.get("kind") == "long":
            queries += [(e["caption"], e["key"], "event") for e in rec["events"]]
        else:
            queries.append((rec["caption"], rec["key"], rec.get("kind", "")))
    kinds = sorted({k for _, _, k in queries})
    picked: list[str] = []
    for kind in kinds * n:  # one of each kind in turn
        for text, key, k in queries:
            if k != kind or text in picked:
                continue
            top = engine.search_text(text, k=1)["results"]
            if top and any(
                key == kk and s - 1e-3 <= top[0]["start"] < e for s, e, kk in where.get(top[0]["video_path"], [])
            ):
                picked.append(text)
                break
        if len(picked) >= n:
            break
    return picked


def build_demo(root: Path, clips: int, long_videos: int, seed: int, model: str | None, checkpoint: str | None) -> dict:
    """Generate a sample library under ``root/library``, index it into ``root/home``, load its captions.

    Idempotent: an existing library is kept and `vtr index` skips unchanged files, so a second run
    only starts the server again.
    """
    from retrieval.engine import SearchEngine
    from retrieval.home import DataHome
    from retrieval.synth import generate, read_captions

    root = root.absolute()
    library, home = root / "library", DataHome(root / "home")
    short_dir, long_dir = library / "clips", library / "long"
    if not (short_dir / "captions.jsonl").exists():
        click.echo(f"generating {clips} short clips in {short_dir} ...")
        generate(short_dir, clips, seed=seed, split="test")
    if long_videos and not (long_dir / "captions.jsonl").exists():
        click.echo(f"generating {long_videos} long multi-event videos in {long_dir} ...")
        generate(long_dir, long_videos, seed=seed, split="test", long=True)
    click.echo(f"indexing {library} into {home.root} ...")
    # 2-second clips: one per generated event, so a long video's moments can be found one by one
    cmd = [*vtr_command(), "index", str(library), "--home", str(home.root), "--clip-seconds", "2"]
    if model:
        cmd += ["--model", model]
    if checkpoint:
        cmd += ["--checkpoint", str(checkpoint)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise VTRError(f"indexing the demo library failed (exit {proc.returncode}): {' '.join(cmd)}")
    records = read_captions(short_dir) + (
        read_captions(long_dir) if long_dir.joinpath("captions.jsonl").exists() else []
    )
    corpus = []
    for rec in records:
        if rec.get("kind") != "long":  # a long video's caption is its events joined; search the events
            corpus.append(rec["caption"])
        corpus += [e["caption"] for e in rec.get("events", [])]
    engine = SearchEngine(home=home, model=model, checkpoint=checkpoint)
    try:
        ids = engine.add_texts(corpus, source="demo captions")
        stats = engine.stats()
        examples = verified_examples(engine, records, library)
    finally:
        engine.close()
    click.echo(f"caption corpus for video->text search: {len(set(ids))} captions")
    examples = examples or demo_examples(records)
    # the web UI's placeholder and example queries come from here (checked: a right clip first)
    home.examples_path.write_text(json.dumps({"examples": examples, "model": stats["model"]}, indent=1) + "\n")
    return {"home": home.root, "stats": stats, "examples": examples}


def _how_to_run_vtr() -> str:
    """How to type `vtr` in this shell: on PATH, or the virtual environment's full path."""
    import os
    import shutil

    exe = Path(sys.executable).with_name("vtr")
    on_path = shutil.which("vtr")
    if on_path and Path(on_path).resolve() == exe.resolve():
        return "vtr"
    try:
        exe = exe.relative_to(Path.cwd())
    except ValueError:
        pass
    activate = exe.with_name("activate")
    if activate.exists():
        click.echo(f"vtr is not on your PATH: run it as {exe}, or `source {activate}` first (then plain `vtr`)")
    return str(exe) if os.sep in str(exe) else f"./{exe}"


@click.command("demo")
@click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-data"), show_default=True, help="Folder for the demo: the generated library in DIR/library, its index in DIR/home.")  # fmt: skip
@click.option("--clips", type=click.IntRange(min=1), default=96, show_default=True, help="Short generated clips.")
@click.option("--long", "long_videos", type=click.IntRange(min=0), default=6, show_default=True, help="Long multi-event videos.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same library.")
@click.option("--serve/--no-serve", default=True, help="Serve the UI when the library is ready (default) or just build it.")  # fmt: skip
@_setting_option("host")
@_setting_option("port", type=click.IntRange(0, 65535))
@_setting_option("model")
@_setting_option("checkpoint")
def demo(root, clips, long_videos, seed, serve, host, port, model, checkpoint):
    """Generate a sample library, index it with the demo model, and serve the UI."""
    from retrieval.engine import SearchEngine
    from webapp import create_app

    host, port = resolve("host", host), int(resolve("port", port))
    if serve:
        _check_can_listen(host, port)  # before minutes of building, not after
    built = build_demo(root, clips, long_videos, seed, model, checkpoint)
    s = built["stats"]
    click.echo(f"demo ready: {s['videos']} videos, {s['clips']} clips, {s['texts']} captions, model {s['model']}")
    click.echo("try these searches:")
    for q in built["examples"]:
        click.echo(f"  {q}")
    vtr = _how_to_run_vtr()
    click.echo(f'from the command line: {vtr} search --home {built["home"]} "{built["examples"][0]}"')
    if not serve:
        return
    set_torch_threads(server=True)
    engine = SearchEngine(home=built["home"], model=model, checkpoint=checkpoint).load()
    app = create_app({"ENGINE": engine, "HOME": str(built["home"])})
    click.echo(f"open http://{host}:{port}  (Ctrl-C to stop)")
    run_server(app, host, port, int(resolve("server_threads")))


class _Standalone(click.Group):
    """The web app's commands without the `vtr` group (``python -m webapp.cli ...``)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VTRError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)


standalone = _Standalone("webapp", commands={"serve": serve, "search": search, "demo": demo})

if __name__ == "__main__":  # pragma: no cover
    standalone(prog_name="python -m webapp.cli")
