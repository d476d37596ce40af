"""FROM resolution as the Docker builder does it, and FROM pinning that keeps line numbers."""

from __future__ import annotations

from pathlib import Path

from heps.images import dockerfile


def parse(tmp_path: Path, text: str, **args: str) -> dockerfile.Dockerfile:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return dockerfile.parse(path, args, path.name)


def test_multi_stage_with_arg_defaults_platform_and_aliases(tmp_path: Path) -> None:
    parsed = parse(
        tmp_path,
        "# syntax=docker/dockerfile:1\n"
        "ARG REGISTRY=reg.example:5000\n"
        "ARG OWNER=heps\n"
        "ARG PY=3.11\n"
        "FROM --platform=$BUILDPLATFORM python:${PY}-slim AS Builder\n"
        "RUN echo build\n"
        "FROM ${REGISTRY}/${OWNER}/jupyterlab-base\n"
        "COPY --from=builder /x /x\n"
        "FROM builder AS again\n",
        OWNER="site",
    )
    assert [(s.image, s.platform, s.alias, s.previous_stage, s.line) for s in parsed.stages] == [
        ("python:3.11-slim", "$BUILDPLATFORM", "builder", False, 5),
        ("reg.example:5000/site/jupyterlab-base", None, None, False, 7),
        ("builder", None, "again", True, 9),
    ]


def test_substitution_forms() -> None:
    values = {"SET": "x", "EMPTY": ""}
    assert dockerfile.substitute("$SET/${SET}", values, "here") == "x/x"
    assert dockerfile.substitute("${EMPTY:-dflt}/${UNSET:-d2}", values, "here") == "dflt/d2"
    assert dockerfile.substitute("${SET:+alt}${UNSET:+alt}", values, "here") == "alt"


def test_continuations_comments_and_escape_directive(tmp_path: Path) -> None:
    parsed = parse(
        tmp_path,
        "# escape=`\n"
        "FROM base:1 `\n"
        "  AS first\n"
        "RUN a `\n"
        "# a comment inside the continuation\n"
        "  b\n",
    )
    (stage,) = parsed.stages
    assert (stage.image, stage.alias, stage.line, stage.end_line) == ("base:1", "first", 2, 3)
    run = parsed.instructions[1]
    assert (run.keyword, run.value.split(), run.line, run.end_line) == ("RUN", ["a", "b"], 4, 6)


def test_pin_stages_rewrites_only_the_from_and_keeps_line_numbers() -> None:
    text = (
        "ARG REGISTRY=r\n"
        "FROM --platform=linux/amd64 \\\n"
        "     ${REGISTRY}/heps/base AS build\n"
        "RUN make\n"
        "FROM scratch\n"
    )
    pinned = dockerfile.pin_stages(text, {2: "sha256:0123"})
    assert pinned.splitlines() == [
        "ARG REGISTRY=r",
        "FROM --platform=linux/amd64 sha256:0123 AS build",
        "",
        "RUN make",
        "FROM scratch",
    ]


def test_sources_expand_with_each_stages_args_and_envs(tmp_path: Path) -> None:
    parsed = parse(
        tmp_path,
        "ARG G=global\nARG B=default\n"
        "FROM base:1 AS one\n"
        "ARG G\nARG B\nENV E=${G}-env\n"
        'ADD --chown=1 ["$E", "/x"]\n'
        "ADD ${B} ${UNSET} /y\n"
        "FROM base:1\n"
        "ADD $G /z\n"
        "COPY --from=one /a /a\n"
        "RUN --mount=type=bind,from=img:1,target=/m true\n"
        "onbuild add $E /w\n",
        B="given",
    )
    assert [(s.keyword, s.text, s.value, s.line, s.stage) for s in parsed.sources] == [
        ("ADD", "$E", "global-env", 7, 0),
        ("ADD", "${B}", "given", 8, 0),
        ("ADD", "${UNSET}", None, 8, 0),
        ("ADD", "$G", None, 10, 1),  # a global ARG reaches a stage only when declared there
        ("COPY --from", "one", "one", 11, 1),
        ("RUN --mount from", "img:1", "img:1", 12, 1),
        ("ONBUILD ADD", "$E", None, 13, 1),
    ]
    assert parsed.sources[0].flags == ("--chown=1",)
