"""Render the Helm chart ``deploy/helm/hfd`` without Helm, into ``deploy/k8s/hfd.yaml``.

No Helm binary or Go toolchain is installed where hfd is built and tested, so the chart's
templates keep to a small subset of Helm's template language, which this module translates to
Jinja2 (the maintained Python templating engine) and renders the way ``helm template`` does:
``{{ .Values.x }}``, ``{{ .Release.Name }}``, ``{{ .Chart.AppVersion }}``, the ``quote``
pipe, ``{{- toYaml X | nindent N }}`` and ``{{- if X }} ... {{- end }}``. Anything else in a
template is an error here, so the chart cannot drift beyond what is checked.

    python deploy/render.py            rewrite deploy/k8s/hfd.yaml
    python deploy/render.py --check    exit 1 when it is stale
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import jinja2
import yaml

DEPLOY = Path(__file__).resolve().parent
CHART = DEPLOY / "helm" / "hfd"
RENDERED = DEPLOY / "k8s" / "hfd.yaml"
RELEASE = "hfd"
HEADER = "# Rendered from deploy/helm/hfd with its default values by deploy/render.py.\n"

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_PATH = r"\.(?:Values|Release|Chart)(?:\.[A-Za-z_][A-Za-z0-9_]*)+"


def _expr(path: str) -> str:
    if not re.fullmatch(_PATH, path):
        raise ValueError(f"unsupported template expression {path!r}")
    return path[1:]


def translate(template: str) -> str:
    """A template in the supported Helm subset, as Jinja2."""

    def action(m: re.Match[str]) -> str:
        left, body, right = m.group(1), m.group(2), m.group(3)
        if body == "end":
            return f"{{%{left} endif {right}%}}"
        if body.startswith("if "):
            return f"{{%{left} if {_expr(body[3:].strip())} {right}%}}"
        to_yaml = re.fullmatch(rf"toYaml ({_PATH}) \| nindent (\d+)", body)
        if to_yaml:
            return f"{{{{{left} {_expr(to_yaml.group(1))} | toyaml | nindent({to_yaml.group(2)}) {right}}}}}"
        quoted = re.fullmatch(rf"({_PATH}) \| quote", body)
        if quoted:
            return f"{{{{{left} {_expr(quoted.group(1))} | quote {right}}}}}"
        return f"{{{{{left} {_expr(body)} {right}}}}}"

    return _ACTION.sub(action, template)


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False).rstrip("\n")


def _nindent(text: str, width: int) -> str:
    pad = " " * width
    return "\n" + "\n".join(pad + line if line else line for line in text.splitlines())


def _quote(value: Any) -> str:
    return json.dumps(str(value))


def render(values: dict[str, Any] | None = None) -> str:
    """Every template of the chart with ``values`` over the chart's defaults, as one stream of
    YAML documents (``helm template hfd deploy/helm/hfd``)."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    merged = _merge(yaml.safe_load((CHART / "values.yaml").read_text()), values or {})
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters.update(toyaml=_to_yaml, nindent=_nindent, quote=_quote)
    context = {
        "Values": merged,
        "Release": {"Name": RELEASE, "Namespace": "default"},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
    }
    docs = []
    for path in sorted((CHART / "templates").glob("*.yaml")):
        text = env.from_string(translate(path.read_text())).render(context)
        docs.append(f"# Source: hfd/templates/{path.name}\n{text.strip()}\n")
    return "---\n" + "---\n".join(docs)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def main(argv: list[str]) -> int:
    text = HEADER + render()
    if "--check" in argv:
        current = RENDERED.read_text() if RENDERED.exists() else ""
        if current != text:
            print(f"{RENDERED} is stale: run python deploy/render.py", file=sys.stderr)
            return 1
        return 0
    RENDERED.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
