"""Untrusted jinja2 templates (`jenkins/templates/`, which a merge request may change)
rendered as data: in jinja2's immutable sandbox (no `__class__`, no call that changes
anything), each template resolved inside its folder, and in a child process bounded in
time, memory and output. jinja2's sandbox bounds `range()` only: nested loops over it,
`"x" * 10**11`, `lipsum(10**9)` or a format width of 10**9 would still hang or exhaust
the host, and a check per operator would never list them all, so the bound is the
process's: RENDER_SECONDS of wall-clock time per set of renderings (the child's timer
stops a set past it; the parent kills the child past every set's budget and one more),
MEMORY_BYTES of address space (an allocation past it is a MemoryError in the child), and
OUTPUT_CHARS of text per template (rendering stops there).

The child gets no environment and reads one request file of sets (a review renders the
jobs of two revisions); it answers one JSON line per template (`{"rendering": ...}`
before, `{"done": ..., "text": ...}` after), or one `{"error": ...}` line that ends its
set, each with the set's index, so a template that runs out of time is named.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from heps.core import process
from heps.core.bounded import read_text
from heps.core.errors import ConfigError
from heps.core.paths import confine

RENDER_SECONDS = 10.0
"""Wall-clock budget of one render of every job (ours take about 0.2 s)."""
MEMORY_BYTES = 256 << 20
"""Address space of the child (Python with jinja2 maps about 30 MB)."""
OUTPUT_CHARS = 1 << 20
"""Most characters one template may render (a job's XML is a few kB)."""

Request = tuple[str, str, dict[str, Any]]
"""One rendering: its name (a job), the template's file name, the values it gets."""
Set = tuple[Path, str, list[Request]]
"""Renderings from one folder of templates: the folder, its name in messages, requests."""


class _Templates(jinja2.BaseLoader):
    """Templates of one folder, each resolved inside it (a symlink to a host file is
    refused, never rendered) and read size-capped."""

    def __init__(self, folder: Path, shown: str) -> None:
        self.root, self.shown = folder.resolve(), shown

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        shown = f"{self.shown}/{template}"
        path = confine(self.root, template, file=shown, field="template")
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        return read_text(path, shown), str(path), lambda: True


def render(folder: Path, shown: str, requests: list[Request]) -> dict[str, str]:
    """name -> rendered text for each request, templates from `folder` (`shown` in
    messages); ConfigError naming the template when one fails or passes a bound."""
    (rendered,) = render_sets([(folder, shown, requests)])
    if isinstance(rendered, ConfigError):
        raise rendered
    return rendered


def render_sets(sets: list[Set]) -> list[dict[str, str] | ConfigError]:
    """`render` of each set, all in one child (one interpreter start and jinja2 import,
    about 0.7 s, for all): each set within its own bounds, its refusal its own (returned,
    not raised), and the sets after a refused one still rendered. Only a child that must
    be killed (a hang the child's own timer cannot stop) or fails to run refuses them all."""
    current = ["(starting)"]

    def follow(line: str) -> None:
        if line.startswith('{"rendering"'):
            current[0] = json.loads(line)["rendering"]

    asked = [{"folder": str(f), "shown": shown, "requests": r} for f, shown, r in sets]
    names = " and ".join(dict.fromkeys(shown for _, shown, _ in sets))
    with tempfile.TemporaryDirectory(prefix="heps-templates-") as tmp:
        request = Path(tmp) / "request.json"
        request.write_text(
            json.dumps({"seconds": RENDER_SECONDS, "sets": asked}),
            encoding="utf-8",
        )
        command = [sys.executable, "-I", "-X", "utf8", "-c", _CHILD, str(request)]
        done = process.run_on_config(
            command,
            timeout=RENDER_SECONDS * (len(sets) + 1),  # the child stops each set in time
            slow=lambda: (
                f"{current[0]}: rendering took more than {RENDER_SECONDS:.0f} s; "
                "bound the template's loops"
            ),
            failed=lambda why: f"{names}: rendering failed ({why}); fix the templates",
            env={},
            on_line=follow,
            limit=sum(len(r) for _, _, r in sets) * 8 * OUTPUT_CHARS + (1 << 20),
        )
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [
        _answered(done, current[0], [a for a in answers if a["set"] == i], len(r))
        for i, (_, _, r) in enumerate(sets)
    ]


def _answered(
    done: process.Completed, last: str, answers: list[dict[str, Any]], asked: int
) -> dict[str, str] | ConfigError:
    """One set's renderings from the child's answers, or its refusal."""
    errors = [a["error"] for a in answers if "error" in a]
    if errors:
        return ConfigError(errors[0])
    rendered = {a["done"]: a["text"] for a in answers if "done" in a}
    if len(rendered) != asked:  # the child ended before this set's end
        return ConfigError(f"{last}: rendering stopped ({done.failure()}); fix the template")
    return rendered


_CHILD = "from heps.ci.templating import child; child()"


def child() -> None:
    """The child's side: limits first, then each set's requests in turn, each set within
    the wall-clock budget the request gives (see the module)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    task = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    seconds, sets = float(task["seconds"]), task["sets"]
    cpu = int(seconds * len(sets)) + 1  # a backstop: each set stops on wall-clock time
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    signal.signal(signal.SIGALRM, _out_of_time)
    for index, one in enumerate(sets):
        _render_set(index, Path(one["folder"]), one["shown"], one["requests"], seconds)


def _render_set(
    index: int, folder: Path, shown: str, requests: list[Request], seconds: float
) -> None:
    """One set's answers; its first refusal ends it."""
    environment = ImmutableSandboxedEnvironment(
        loader=_Templates(folder, shown),
        autoescape=True,  # XML: &, <, > and quotes in values stay text
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    where = shown
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        for name, template, values in requests:
            where = f"{shown}/{template} ({name})"
            _say(rendering=where, set=index)
            text = _bounded(environment, template, values, where, shown)
            _say(done=name, text=text, set=index)
    except _Refused as exc:
        _say(error=str(exc), set=index)
    except _OutOfTime:
        message = f"{where}: rendering took more than {seconds:.0f} s; bound the template's loops"
        _say(error=message, set=index)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class _OutOfTime(BaseException):
    """The set's wall-clock budget is spent (a BaseException: no handler of jinja2's or
    of `_bounded` takes it for the template's own error)."""


def _out_of_time(*_: object) -> None:
    raise _OutOfTime


class _Refused(Exception):
    """One line for the parent."""


def _bounded(
    environment: jinja2.Environment, template: str, values: Any, where: str, shown: str
) -> str:
    """The template's text, stopped past OUTPUT_CHARS; every failure one line."""
    chunks: list[str] = []
    size = 0
    try:
        for chunk in environment.get_template(template).generate(**values):
            size += len(chunk)
            if size > OUTPUT_CHARS:
                raise _Refused(
                    f"{where}: renders more than {OUTPUT_CHARS} characters; "
                    "a job's XML is a few kB, bound the template's output"
                )
            chunks.append(chunk)
    except MemoryError:
        chunks.clear()
        raise _Refused(
            f"{where}: needs more than {MEMORY_BYTES >> 20} MiB of memory to render; "
            "bound the template's strings"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise _Refused(
            f"{shown}/{exc.name}:{exc.lineno}: template error: {exc.message}; fix the template"
        ) from None
    except jinja2.TemplateError as exc:  # e.g. a value it needs and lacks, or unsafe
        raise _Refused(f"{where}: template error: {exc.message}; fix the template") from None
    except ConfigError as exc:  # the loader's confinement
        raise _Refused("; ".join(exc.problems)) from None
    except (ArithmeticError, TypeError, ValueError, RecursionError) as exc:
        raise _Refused(f"{where}: template error: {exc}; fix the template") from None
    return "".join(chunks)


def _say(**answer: str | int) -> None:
    print(json.dumps(answer), flush=True)
