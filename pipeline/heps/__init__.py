"""HEPS delivery: build, test, push and pin the analysis platform's images."""

import sys

__version__ = "0.1.0"

# jsonschema imports rfc3987_syntax, when it is installed (jupyterhub's
# jsonschema[format-nongpl] brings it), only for the optional "iri" format check, and
# that module builds a parser at import: 0.75 s on every `heps` command. No schema of
# ours checks formats (jsonschema does not by default), so it is kept out.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
