"""Jenkins job definitions: `jenkins/jobs.yaml` (validated against the published schema)
rendered to the job XML Jenkins stores, through the jinja2 templates in
`jenkins/templates/`, the way Jenkins Job Builder does. Pure: no server involved.

Every rendered folder and job carries MARKER in its description; `heps jenkins sync`
deletes only jobs that carry it, so hand-made jobs on the same server are never touched.

Where credentials live is part of the definition: the global store and each folder name
the credential ids they hold and what each grants. A job marked `merge_request` (it
checks out merge-request content) must load its Jenkinsfile from `trusted_branch`, and
no git-write, registry-push or kubeconfig credential may be in its reach (its folders
and the global store); every id a Jenkinsfile binds must be in its job's reach. Templates
are data (a merge request may change them), rendered by `heps.ci.templating` in a bounded
sandbox; where a job's script comes from is then read from the XML Jenkins would store,
never from what jobs.yaml asked the templates for.
"""

from __future__ import annotations

import difflib
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import defusedxml
import defusedxml.ElementTree

from heps.ci import templating
from heps.core.bounded import read_text
from heps.core.errors import ConfigError
from heps.core.log import map_strings, xml_text
from heps.core.paths import confine, inside
from heps.core.validation import load_yaml, validate

JOBS_FILE = "jenkins/jobs.yaml"
TEMPLATES = "jenkins/templates"
MARKER = "[managed by heps jenkins sync: edits here are overwritten]"
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""One folder or job name of a full name: a plain name, never `.`, `..` or empty."""
TRUSTED_BRANCH = "*/main"
FORBIDDEN = ("git-write", "registry-push", "kubeconfig")
"""What a job running merge-request content must never be able to bind."""
_BINDING = re.compile(r"""credentialsId\s*:\s*(['"])(.*?)\1""")
_PARAMETER = re.compile(r"\$\{params\.([A-Z][A-Z0-9_]*)\}")


def load(repo: Path) -> dict[str, Any]:
    path = repo / JOBS_FILE
    if not path.exists():
        raise ConfigError(f"{JOBS_FILE}: missing; define the Jenkins jobs there")
    path = confine(repo.resolve(), path, file=JOBS_FILE, field="the file itself")
    data = load_yaml(path, JOBS_FILE)
    problems = validate(data, "jobs", path, JOBS_FILE)
    names = [f["name"] for f in data.get("folders") or []] + [j["name"] for j in data["jobs"]]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{JOBS_FILE}: {name}: defined twice; keep one definition")
    folders = {f["name"] for f in data.get("folders") or []}
    for name in names:
        if not all(_SEGMENT.fullmatch(part) for part in name.split("/")):
            problems.append(
                f"{JOBS_FILE}: {name!r}: not a job name; use names of letters, "
                "digits, '.', '_' and '-' joined by '/' (no empty, '.' or '..' parts)"
            )
            continue
        parent = name.rpartition("/")[0]
        if parent and parent not in folders:
            problems.append(
                f"{JOBS_FILE}: {name}: folder '{parent}' is not defined; add it under folders"
            )
    for job in data["jobs"]:
        for p in job.get("parameters") or []:
            if p["type"] == "choice" and not p.get("choices"):
                problems.append(f"{JOBS_FILE}: {job['name']}: {p['name']}: a choice needs choices")
    if not problems:
        problems = _reach(repo, data)
    if problems:
        raise ConfigError(problems)
    # Every string as XML 1.0 can hold it: a control character typed into jobs.yaml
    # shows as an escape, and the job XML stays well-formed. Nothing is masked: job XML
    # is data, and Jenkins stores it as written.
    return map_strings(dict(data), xml_text)


def _reach(repo: Path, data: dict[str, Any]) -> list[str]:
    """Which credentials each job can reach, checked against what it runs and binds."""
    stores = {"": data.get("credentials") or []}
    stores |= {f["name"]: f.get("credentials") or [] for f in data.get("folders") or []}
    problems = []
    for job in data["jobs"]:
        name = job["name"]
        parts = name.split("/")[:-1]
        holders = [""] + ["/".join(parts[: i + 1]) for i in range(len(parts))]
        reach = {
            c["id"]: (c["grants"], h or "the global store") for h in holders for c in stores[h]
        }
        untrusted = job.get("merge_request", False)
        for cid, (grants, holder) in sorted(reach.items()):
            if untrusted and grants in FORBIDDEN:
                where = holder if holder == "the global store" else f"folder {holder}"
                problems.append(
                    f"{JOBS_FILE}: {name}: runs merge-request content, yet {where} holds "
                    f"{cid} ({grants}); move the job to a folder holding no "
                    "git-write, registry-push or kubeconfig credential"
                )
        if data["scm"]["credentials"] not in reach:
            problems.append(
                f"{JOBS_FILE}: {name}: clones with {data['scm']['credentials']}, which no store "
                "in its reach holds; list it under its folder's credentials"
            )
        script = inside(repo, repo / job["jenkinsfile"], f"{JOBS_FILE}: {name}: jenkinsfile")
        if not script.is_file():
            problems.append(f"{JOBS_FILE}: {name}: jenkinsfile {job['jenkinsfile']}: missing")
            continue
        for _, bound in _BINDING.findall(read_text(script, job["jenkinsfile"])):
            ids = _expanded(bound, job)
            if ids is None or ("$" in bound and untrusted):
                problems.append(
                    f"{job['jenkinsfile']}: binds a credential named at run time ({bound}); "
                    f"name the id, or a choice parameter of {name} in it"
                    + (" (it runs merge-request content: name the id)" if untrusted else "")
                )
                continue
            for cid in ids:
                if cid not in reach:
                    problems.append(
                        f"{job['jenkinsfile']}: binds {cid}, which no store in the reach of "
                        f"{name} holds; bind one it holds, or hold it in its folder (never "
                        "push, git-write or kubeconfig where merge-request content runs)"
                    )
    return problems


def _expanded(bound: str, job: dict[str, Any]) -> list[str] | None:
    """The ids `bound` can name: itself, or one per choice of the parameter it names
    (`kubeconfig-${params.OVERLAY}`); None when it depends on anything else."""
    names = _PARAMETER.findall(bound)
    if not names:
        return None if "$" in bound else [bound]
    choices = {p["name"]: p.get("choices") or [] for p in job.get("parameters") or []}
    if len(set(names)) != 1 or not choices.get(names[0]) or "$" in _PARAMETER.sub("", bound):
        return None
    return [_PARAMETER.sub(choice, bound) for choice in choices[names[0]]]


def render(repo: Path) -> dict[str, str]:
    """Full job name -> config.xml, folders first (parents before children)."""
    (rendered,) = render_each([repo])
    if isinstance(rendered, ConfigError):
        raise rendered
    return rendered


def render_each(repos: list[Path]) -> list[dict[str, str] | ConfigError]:
    """`render` of each checkout (a review's head and base), every template rendered by
    one child; each checkout's refusal is its own, returned, not raised."""
    loaded: list[dict[str, Any] | ConfigError] = []
    for repo in repos:
        try:
            loaded.append(load(repo))
        except ConfigError as exc:
            loaded.append(exc)
    sets = [
        (repo / TEMPLATES, TEMPLATES, _requests(data))
        for repo, data in zip(repos, loaded, strict=True)
        if not isinstance(data, ConfigError)
    ]
    rendered = iter(templating.render_sets(sets) if sets else [])
    results: list[dict[str, str] | ConfigError] = []
    for data in loaded:
        if isinstance(data, ConfigError):
            results.append(data)
            continue
        done = next(rendered)
        try:
            results.append(done if isinstance(done, ConfigError) else _checked(data, done))
        except ConfigError as exc:
            results.append(exc)
    return results


def _checked(data: dict[str, Any], rendered: dict[str, str]) -> dict[str, str]:
    """`rendered`, if Jenkins would take every job and folder and each runs its script
    from where jobs.yaml says; ConfigError otherwise."""
    trees = {}
    for name, xml in rendered.items():  # what Jenkins would refuse is refused here
        try:  # one parse keeping comments and PIs: without any, the tree the checks read
            tree = _parse(xml, markup=True)
        except ET.ParseError as exc:
            raise ConfigError(
                f"{TEMPLATES}: job {name}: XML not well-formed ({exc}); fix the template"
            ) from None
        except defusedxml.DefusedXmlException as exc:  # Jenkins refuses a DOCTYPE too
            raise ConfigError(
                f"{TEMPLATES}: job {name}: XML with a DOCTYPE or entity ({exc!r}); "
                "remove it from the template"
            ) from None
        if any(not isinstance(e.tag, str) for e in tree.iter()):  # Comment, PI: functions
            raise ConfigError(
                f"{TEMPLATES}: job {name}: XML with a comment or processing instruction, at "
                "which XML readers split a value differently; remove it from the template"
            )
        trees[name] = tree
    problems = _script_source(data, trees)
    if problems:
        raise ConfigError(problems)
    return rendered


_LISTS = {"parameterDefinitions", "a", "triggers", "userRemoteConfigs", "branches", "extensions"}
"""Elements of the job XML whose children are list items, which may repeat."""
_XSTREAM = {"reference", "id", "resolves-to", "defined-in", "serialization"}
"""Attributes XStream acts on: a `reference` makes an element another one of the
document, whatever it holds."""


def _read_alike(root: ET.Element) -> str | None:
    """Why Jenkins would read `root` otherwise than the checks here, if it would: XStream
    (Jenkins' RobustReflectionConverter) keeps the last of two same-named fields, where
    `find` sees the first (a second `<definition>` with an inline script, a second
    `<properties>` loading a library); it follows `reference` attributes; a `class` on
    the root makes the item another type."""
    if "class" in root.attrib:
        return f"its root <{_shown(root.tag)}> names a class; remove the attribute"
    for element in root.iter():
        xstream = sorted(_XSTREAM & set(element.attrib))
        if xstream:
            return f"<{_shown(element.tag)}> has XStream's attribute {xstream[0]}; remove it"
        if element.tag in _LISTS:
            continue
        tags = [child.tag for child in element]
        twice = next((tag for tag in tags if tags.count(tag) > 1), None)
        if twice is not None:
            return (
                f"<{_shown(twice)}> appears twice in <{_shown(element.tag)}> (Jenkins reads "
                "the last, these checks the first); render it once"
            )
    return None


def _requests(data: dict[str, Any]) -> list[templating.Request]:
    requests: list[templating.Request] = []
    for folder in sorted(data.get("folders") or [], key=lambda f: f["name"].count("/")):
        held = ", ".join(f"{c['id']} ({c['grants']})" for c in folder.get("credentials") or [])
        text = folder.get("description", "") + (
            f"\n\nCredentials held here: {held}" if held else ""
        )
        requests.append(
            (folder["name"], FOLDER_TEMPLATE, {"description": _described(text.strip())})
        )
    for job in data["jobs"]:
        values = {
            "description": _described(job.get("description", "")),
            "jenkinsfile": job["jenkinsfile"],
            "branch": job["branch"],
            "concurrent": job.get("concurrent", False),
            "parameters": job.get("parameters") or [],
            "triggers": job.get("triggers") or {},
            "scm": data["scm"],
        }
        requests.append((job["name"], JOB_TEMPLATE, values))
    return requests


FOLDER_TEMPLATE, JOB_TEMPLATE = "folder.xml.j2", "pipeline.xml.j2"
FOLDER = "com.cloudbees.hudson.plugins.folder.Folder"
"""A plain folder: never a multibranch project or organisation folder, which would find
and run merge requests' Jenkinsfiles themselves."""
_FOLDER_PARTS = {"description", "properties", "healthMetrics", "icon"}
JOB = "flow-definition"
_JOB_PARTS = {
    *("actions", "description", "keepDependencies", "properties", "definition"),
    *("triggers", "disabled"),
}
_JOB_PROPERTIES = {
    "org.jenkinsci.plugins.workflow.job.properties.DisableConcurrentBuildsJobProperty",
    "hudson.model.ParametersDefinitionProperty",
    "org.jenkinsci.plugins.workflow.job.properties.PipelineTriggersJobProperty",
}
"""What a job's XML may hold besides its definition: none of it loads code (a job or
folder property could load a shared library from any revision; `authToken` would let
anyone start a build)."""
_PARAMETERS = {
    "string": "hudson.model.StringParameterDefinition",
    "boolean": "hudson.model.BooleanParameterDefinition",
    "choice": "hudson.model.ChoiceParameterDefinition",
}


def _script_source(data: dict[str, Any], trees: dict[str, ET.Element]) -> list[str]:
    """The rule "a merge-request job's script comes from `trusted_branch`", and that
    every job runs the Jenkinsfile jobs.yaml names (the one whose bindings `_reach`
    checked), on the rendered XML that sync sends, not on what jobs.yaml asked the
    templates for: each folder a plain folder without properties; each job a pipeline
    whose definition is exactly the one `_expected` builds from jobs.yaml (GitSCM, its
    one remote and credentials, one branch, no extension or refspec, the script path, a
    lightweight checkout), with known properties only and the parameters jobs.yaml
    declares. So a template rendering `${MR_REVISION}` into the branch, another script
    or remote, an inline script or a library is refused."""
    trusted = data.get("trusted_branch", TRUSTED_BRANCH)
    problems = []
    for folder in data.get("folders") or []:
        root = trees[folder["name"]]
        if problem := _read_alike(root):
            problems.append(f"{TEMPLATES}/{FOLDER_TEMPLATE}: folder {folder['name']}: {problem}")
            continue
        extra = _extra(root, _FOLDER_PARTS, set())
        if root.tag != FOLDER or extra:
            problems.append(
                f"{TEMPLATES}/{FOLDER_TEMPLATE}: folder {folder['name']}: renders "
                f"{_shown(root.tag)}{' with ' + ', '.join(extra) if extra else ''}; render a "
                f"plain {FOLDER} with empty properties"
            )
    for job in data["jobs"]:
        name, root = job["name"], trees[job["name"]]
        if job.get("merge_request", False) and job["branch"] != trusted:
            problems.append(
                f"{JOBS_FILE}: {name}: runs merge-request content with a Jenkinsfile from "
                f"{job['branch']}; load it from {trusted} and pass the revision as a parameter"
            )
            continue
        where = f"{TEMPLATES}/{JOB_TEMPLATE}: job {name}"
        if problem := _read_alike(root):
            problems.append(f"{where}: {problem}")
            continue
        if root.tag != JOB:
            problems.append(f"{where}: renders {_shown(root.tag)}; render a {JOB}")
            continue
        found, wanted = root.find("definition"), _expected(data["scm"], job)
        if _source(found) != _source(wanted):
            problems.append(
                f"{where}: loads its script as {_source(found)}; jobs.yaml says "
                f"{_source(wanted)}; render the definition from jobs.yaml's values"
            )
        elif _canonical(found) != _canonical(wanted):
            problems.append(
                f"{where}: its definition holds more than jobs.yaml defines (an extension, "
                "refspec or other setting changes what is checked out); remove it"
            )
        extra = _extra(root, _JOB_PARTS, _JOB_PROPERTIES)
        if extra:
            problems.append(
                f"{where}: renders {', '.join(extra)}, which jobs.yaml does not define; "
                "remove it from the template"
            )
        declared = [(_PARAMETERS[p["type"]], p["name"]) for p in job.get("parameters") or []]
        rendered = [
            (p.tag, p.findtext("name") or "")
            for p in root.findall(
                "properties/hudson.model.ParametersDefinitionProperty/parameterDefinitions/*"
            )
        ]
        if rendered != declared:
            problems.append(
                f"{where}: renders parameters {_shown(' '.join(n for _, n in rendered))}; "
                f"jobs.yaml declares {' '.join(n for _, n in declared) or 'none'}; render "
                "those"
            )
    return problems


def _extra(root: ET.Element, parts: set[str], properties: set[str]) -> list[str]:
    """Children of `root`, and of its properties, that are not in the allowed sets."""
    held = root.find("properties")
    found = {part.tag for part in root} - parts
    found |= {p.tag for p in (held if held is not None else [])} - properties
    return [_shown(tag) for tag in sorted(found)]


_DEFINITION = """<definition class="org.jenkinsci.plugins.workflow.cps.CpsScmFlowDefinition">
<scm class="hudson.plugins.git.GitSCM"><configVersion>2</configVersion>
<userRemoteConfigs><hudson.plugins.git.UserRemoteConfig><url/><credentialsId/>
</hudson.plugins.git.UserRemoteConfig></userRemoteConfigs>
<branches><hudson.plugins.git.BranchSpec><name/></hudson.plugins.git.BranchSpec></branches>
<doGenerateSubmoduleConfigurations>false</doGenerateSubmoduleConfigurations>
<submoduleCfg class="empty-list"/><extensions/></scm>
<scriptPath/><lightweight>true</lightweight></definition>"""
"""The one definition a job may have: its script read from its branch by a lightweight
checkout of that file alone."""
_REMOTE = "scm/userRemoteConfigs/hudson.plugins.git.UserRemoteConfig"
_BRANCHES = "scm/branches/hudson.plugins.git.BranchSpec/name"


def _expected(scm: dict[str, Any], job: dict[str, Any]) -> ET.Element:
    definition = _parse(_DEFINITION)
    for path, value in (
        (f"{_REMOTE}/url", scm["url"]),
        (f"{_REMOTE}/credentialsId", scm["credentials"]),
        (_BRANCHES, job["branch"]),
        ("scriptPath", job["jenkinsfile"]),
    ):
        element = definition.find(path)
        assert element is not None, path  # _DEFINITION has each
        element.text = value
    return definition


def _source(definition: ET.Element | None) -> str:
    """Where a definition takes its script from, in words (escaped: template output)."""
    if definition is None:
        return "nothing (no definition)"

    def listed(path: str) -> str:
        return ", ".join(e.text or "" for e in definition.findall(path)) or "none"

    scm = definition.find("scm")
    kinds = [definition.get("class"), None if scm is None else scm.get("class")]
    return _shown(
        f"{listed('scriptPath')} of branch {listed(_BRANCHES)} from {listed(_REMOTE + '/url')} "
        f"with {listed(_REMOTE + '/credentialsId')}, lightweight {listed('lightweight')} "
        f"({', '.join(str(k).rpartition('.')[2] for k in kinds)})"
    )


def _canonical(definition: ET.Element | None) -> str:
    """Canonical text of a definition, plugin versions and whitespace aside."""
    return "" if definition is None else normalized(ET.tostring(definition, encoding="unicode"))


def _shown(text: str) -> str:
    """Text from rendered XML in a message: one line, controls as escapes, cut short."""
    line = ascii(text)[1:-1]
    return line if len(line) <= 200 else line[:200] + "..."


def _described(text: str) -> str:
    return f"{text}\n\n{MARKER}" if text else MARKER


def write(rendered: dict[str, str], out: Path) -> list[Path]:
    """One file per job, as `<folder>/<job>.xml`, every one resolved inside `out`."""
    out.mkdir(parents=True, exist_ok=True)
    targets = {name: inside(out, out / f"{name}.xml", f"job {name}") for name in rendered}
    for name, path in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered[name], encoding="utf-8")
    return list(targets.values())


def _parse(xml: str, markup: bool = False) -> ET.Element:
    """Job XML from us or the server; the declaration goes (expat knows no XML 1.1); a
    DOCTYPE is refused, as Jenkins refuses it (DefusedXmlException). With `markup`,
    comments and processing instructions are kept as elements."""
    builder = ET.TreeBuilder(insert_comments=markup, insert_pis=markup)
    parser = defusedxml.ElementTree.DefusedXMLParser(target=builder, forbid_dtd=True)
    parser.feed(re.sub(r"^<\?xml[^>]*\?>", "", xml.strip()))
    root: ET.Element = parser.close()
    return root


def normalized(xml: str) -> str:
    """Canonical XML without what Jenkins adds on its own (plugin versions, whitespace,
    the XML declaration), for comparing ours with the server's."""
    root = _parse(xml)
    for element in root.iter():
        element.attrib.pop("plugin", None)
    return ET.canonicalize(ET.tostring(root, encoding="unicode"), strip_text=True)


def diff(name: str, before: str | None, after: str | None) -> str:
    """Unified diff of one job's XML, by lines of the pretty-printed canonical form."""

    def lines(xml: str | None) -> list[str]:
        if xml is None:
            return []
        root = _parse(normalized(xml))
        ET.indent(root)
        return (ET.tostring(root, encoding="unicode") + "\n").splitlines(keepends=True)

    return "".join(
        difflib.unified_diff(
            lines(before),
            lines(after),
            f"{name} (before)" if before is not None else "/dev/null",
            f"{name} (after)" if after is not None else "/dev/null",
        )
    )


FOLDER_CREDENTIALS = (
    "com.cloudbees.hudson.plugins.folder.properties.FolderCredentialsProvider_-"
    "FolderCredentialsProperty"
)


def keeping_credentials(rendered: str, live: str) -> str:
    """`rendered` with the credential store of the live folder config, if it has one.

    A folder's credentials live in its config.xml (their secrets encrypted by Jenkins) and
    jobs.yaml names only their ids: writing our XML as is would empty the store."""
    store = _parse(live).find(f"properties/{FOLDER_CREDENTIALS}")
    root = _parse(rendered)
    properties = root.find("properties")
    if store is None or properties is None:
        return rendered
    properties.append(store)
    return "<?xml version='1.1' encoding='UTF-8'?>\n" + ET.tostring(root, encoding="unicode")


def is_ours(xml: str) -> bool:
    return MARKER in (_parse(xml).findtext("description") or "")
