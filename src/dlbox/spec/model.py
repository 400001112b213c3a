"""The environment spec (`dlbox.yaml`): parsing and strict validation.

Everything here is pure: a spec is text in, a validated `Spec` out. Errors name the
key, its dotted place in the file and its line, and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from dlbox.errors import UsageError
from dlbox.sizes import parse_duration, parse_size

# Debian suites dlbox can bootstrap, with the Python 3 each one ships.
DEBIAN_PYTHON = {"buster": "3.7", "bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}
DEFAULT_MIRROR = "http://deb.debian.org/debian"

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[int, BeforeValidator(parse_duration)]  # seconds; 0: off
MAX_TEXT = 4096

# Spec strings end up in the Dockerfile, in pip's requirement files and in labels. A newline (or any
# other line or control character) there would end an instruction and start one of the spec's
# choosing, so no string in a spec may hold one; fields that are split on whitespace get a pattern.
_UNPRINTABLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _printable(value: str) -> str:
    import unicodedata

    if len(value) > MAX_TEXT:
        raise ValueError(f"is longer than {MAX_TEXT} characters")
    bad = next((c for c in value if unicodedata.category(c) in _UNPRINTABLE), None)
    if bad is not None:
        raise ValueError(f"must not contain line breaks or control characters (found {bad!r})")
    return value


def _matching(pattern: str, what: str):
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value[:80]!r} is not {what}")
        return value
    return AfterValidator(check)


Text = Annotated[str, AfterValidator(_printable)]
# A single PEP 508 requirement: name, extras, versions, an `@ URL` or a marker; never a pip option
# (` -r`, ` --index-url`), a comment, a line continuation or a `${VAR}` that pip would expand.
_REQ_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQUIREMENT = (rf"{_REQ_NAME}(?:\[\s*{_REQ_NAME}(?:\s*,\s*{_REQ_NAME})*\s*\])?\s*"
                r"(?:@\s*[A-Za-z][A-Za-z0-9+.-]*://[^\s$\\'\"]+|"
                r"(?:\(?\s*(?:===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9*][A-Za-z0-9.*+!_-]*"
                r"(?:\s*,\s*(?:===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9*][A-Za-z0-9.*+!_-]*)*\s*\)?)?)"
                r"(?:\s*;\s*[A-Za-z0-9_.'\"<>=!~ ()]+)?")
Requirement = Annotated[Text, _matching(_REQUIREMENT, "one pip requirement such as 'numpy==1.23.5' "
                                                    "(no options, comments or line breaks)")]
AptPackage = Annotated[Text, _matching(r"[a-z0-9][a-z0-9+.-]*(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+)?",
                                       "a Debian package name (optionally =VERSION)")]
EnvName = Annotated[Text, _matching(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Base(Strict):
    """Where the image starts: a bootstrapped Debian suite or a registry image."""

    debian: Text | None = None
    mirror: Annotated[Text, _matching(r"https?://[^\s$\\'\"`]+", "an http(s) URL")] | None = None
    image: Annotated[Text, _matching(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*", "an image reference")] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Base:
        if bool(self.debian) == bool(self.image):
            raise ValueError("set exactly one of 'debian' (a suite to bootstrap) or 'image' (a registry image)")
        if self.debian and self.debian not in DEBIAN_PYTHON:
            raise ValueError(f"debian: unknown suite {self.debian!r}; allowed: {', '.join(DEBIAN_PYTHON)}")
        if self.mirror and not self.debian:
            raise ValueError("mirror applies only to a 'debian' base")
        return self

    @property
    def effective_mirror(self) -> str:
        return self.mirror or DEFAULT_MIRROR


class User(Strict):
    name: Text = "dl"
    uid: int = Field(default=1000, ge=1000, le=60000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value) or value == "root":
            raise ValueError("must be a lowercase user name other than root")
        return value


class Gpu(Strict):
    """A GPU variant: the base must already carry CUDA (e.g. an nvidia/cuda image)."""

    cuda: Annotated[Text, _matching(r"\d{1,3}(?:\.\d{1,3}){0,2}", "a CUDA version such as '11.2'")]
    capabilities: list[Annotated[Text, _matching(r"[a-z0-9]{1,32}", "an NVIDIA driver capability")]] = \
        ["compute", "utility"]


class Code(Strict):
    src: Text = "."
    dest: Text = "/opt/code"

    @field_validator("dest")
    @classmethod
    def _absolute(cls, value: str) -> str:
        # COPY splits its arguments on whitespace and expands $VARS: a plain path only
        if not re.fullmatch(r"/(?:[A-Za-z0-9._+-]+/?)*", value) or ".." in value.split("/"):
            raise ValueError("must be an absolute path in the image (letters, digits, '.', '_', '+', '-', '/'; "
                             "no '..')")
        return value


class Resources(Strict):
    memory: Size | None = None
    cpus: float | None = Field(default=None, gt=0)
    gpus: Text | int | list[Annotated[Text, _matching(r"[A-Za-z0-9-]{1,64}", "a GPU ID")]] | None = None
    shm_size: Size | None = None
    pids: int | None = Field(default=None, ge=16)

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError("a GPU count must be at least 1")
        if isinstance(value, str) and value != "all":
            raise ValueError("use 'all', a count, or a list of GPU IDs")
        return value


class Defaults(Strict):
    """Workspace or job defaults (`dlbox up` / `dlbox run` use them where no flag is given).

    Mount sources are relative to the spec's directory; resources beyond the machine shrink to fit.
    """

    mounts: list[Text] = []
    resources: Resources = Resources()


class WorkspaceDefaults(Defaults):
    """`workspace:` also says when an idle workspace stops (`dlbox up --idle-stop` overrides it)."""

    idle_stop: Duration | None = None  # seconds (90s, 30m, 2h in YAML); 0/off: never; None: the server's default


# --- the pipeline section (issue 14) -------------------------------------------------------------

MetricName = Annotated[Text, _matching(r"[A-Za-z0-9_.:/-]{1,128}", "a metric name (letters, digits, '_.:/-')")]
ParamValue = Annotated[Text, Field(max_length=4096)]


def _command(value: Any) -> Any:
    """A command as a list of arguments, or one string split as a shell would (no shell runs it)."""
    import shlex

    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into arguments ({exc})") from None
    return value


Command = Annotated[list[Text], BeforeValidator(_command), Field(min_length=1, max_length=256)]


class StageJob(Strict):
    """A stage that runs as a job in the pipeline's image, on the commit's code snapshot."""

    command: Command
    params: dict[Annotated[Text, Field(min_length=1, max_length=128)], ParamValue] = {}
    memory: Text | None = None
    cpus: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    gpus: Text | None = None
    timeout: int = Field(default=6 * 3600, ge=1, le=14 * 24 * 3600)  # seconds; then the job is cancelled


class TestStage(StageJob):
    """`test`: a command in the image; a JUnit XML file it writes to $DLBOX_RUN_DIR/artifacts/junit.xml is read."""

    junit: Annotated[Text, _matching(r"(?:[A-Za-z0-9_.+-]+/)*[A-Za-z0-9_.+-]+", "a relative path")] = "junit.xml"


class Delta(Strict):
    absolute: float | None = Field(default=None, allow_inf_nan=False)
    relative: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _some(self) -> Delta:
        if self.absolute is None and self.relative is None:
            raise ValueError("give absolute and/or relative")
        return self


class Gate(Strict):
    """One metric's gate: bounds, and change against the champion (see docs/pipelines.md)."""

    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    min_delta: Delta | None = None
    greater_is_better: bool = True

    @model_validator(mode="after")
    def _sensible(self) -> Gate:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max: no value can pass")
        return self


class Register(Strict):
    model: Annotated[Text, _matching(r"[a-z0-9][a-z0-9._-]{0,62}", "a model name")] | None = None  # default: spec name
    path: Text = "model"  # in the train run's artifacts
    format: Literal["savedmodel", "files"] = "savedmodel"


class Report(Strict):
    curves: list[MetricName] = Field(default=[], max_length=32)  # the train metrics to plot; default: all with steps


class Deploy(Strict):
    enabled: bool = True  # false: the stage is skipped (deployments following champion still move)


class Scan(Strict):
    """The build stage's gate on the image's scan (`dlbox scan`): the stage fails when a Python advisory is
    at or above `fail_on`. `advisories`: an OSV folder or zip (OSV's PyPI/all.zip) or an OSV API URL, as
    `dlbox scan --advisories` takes (default: $DLBOX_ADVISORIES, else the OSV API)."""

    fail_on: Literal["low", "medium", "high", "critical"] = "high"
    advisories: Annotated[Text, _matching(r"\S.{0,999}", "an OSV folder or zip, or an OSV API URL")] | None = None


class Pipeline(Strict):
    scan: Scan | None = None  # the build stage gates on it when set
    test: TestStage | None = None
    train: StageJob
    evaluate: StageJob
    gate: Annotated[dict[MetricName, Gate], Field(max_length=64)] = {}
    register_: Register = Field(default=Register(), alias="register")  # `register` would shadow ABCMeta's
    report: Report = Report()
    deploy: Deploy = Deploy()


class Spec(Strict):
    name: Text
    base: Base
    python: str | None = None
    apt: list[AptPackage] = []
    pip: list[Requirement] = []
    constraints: list[Requirement] = []  # pip constraints: versions for dependencies not named in pip
    services: list[Literal["jupyter", "ssh"]] = []
    user: User = User()
    gpu: Gpu | None = None
    env: dict[EnvName, Text] = {}
    code: Code | None = None
    workspace: WorkspaceDefaults = WorkspaceDefaults()
    job: Defaults = Defaults()
    pipeline: Pipeline | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lowercase letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)")
        return value

    @field_validator("python", mode="before")
    @classmethod
    def _python(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value)
        if not re.fullmatch(r"3\.\d{1,2}", text):
            raise ValueError("give a Python version like '3.9'")
        return text

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        if self.base.debian:
            shipped = DEBIAN_PYTHON[self.base.debian]
            if self.python is None:
                object.__setattr__(self, "python", shipped)
            elif self.python != shipped:
                raise ValueError(f"python: {self.base.debian} ships Python {shipped}, not {self.python}")
        elif self.python is None:
            raise ValueError("python: required with an 'image' base (the version the image provides)")
        if self.gpu and not self.base.image:
            raise ValueError("gpu: needs an 'image' base that carries CUDA (e.g. nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04)")
        if "jupyter" in self.services and not any(_is_jupyter(req) for req in self.pip):
            raise ValueError("services: 'jupyter' needs a Jupyter server in pip (jupyter_server, notebook or jupyterlab)")
        return self

    def environment_hash(self) -> str:
        """Hash of what defines the image (not workspace/job defaults)."""
        data = self.model_dump(mode="json", exclude={"workspace", "job", "pipeline"})
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _is_jupyter(requirement: str) -> bool:
    name = re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")
    return name in {"jupyter-server", "notebook", "jupyterlab"}


# --- loading, with errors that point into the file -------------------------------------------


def read_text(path: Path, what: str, *, missing: str = "") -> str:
    """The text of a file the user named (`what`: "spec file", "lock file"); a usage error if it cannot be
    read, `missing` added when it is not there."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist{missing}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def load(path: Path) -> Spec:
    text = read_text(path, "spec file", missing=" (create one with `dlbox init --preset NAME`)")
    return parse(text, source=str(path))


def parse(text: str, *, source: str = "dlbox.yaml") -> Spec:
    import yaml

    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except RecursionError:
        raise UsageError(f"{source}: nested too deeply to be a spec") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line, whatever the reader said
        raise UsageError(f"{where}: not valid YAML ({problem[:200]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{source}: a spec is a mapping of keys (name, base, pip, ...)")
    try:
        return Spec.model_validate(data)
    except RecursionError:
        raise UsageError(f"{source}: nested too deeply to be a spec") from None
    except ValidationError as exc:
        raise UsageError(report(exc.errors(), data, root, source)) from None


MAX_ERRORS = 100  # a spec with thousands of bad entries still gets an answer one can read


def report(errors: list[dict], data: Any, root: Any, source: str) -> str:
    """Every validation error, one `file:line: dotted.place: what is wrong` line each, in file order.

    Several errors get a count as the first line; one error is just its line.
    """
    locs = [_data_loc(error, data) for error in errors]
    inner = {tuple(loc[:cut]) for loc in locs for cut in range(len(loc))}  # places some error lies under
    kept, seen = [], set()
    for error, loc in zip(errors, locs):
        # a union tries each member: "not a string" gives way to the errors inside the member the value matched
        if error["type"].endswith("_type") and tuple(loc) in inner:
            continue
        line, place, message = _explain({**error, "loc": loc}, root)
        if place not in seen:
            seen.add(place)
            kept.append((line or 0, place, message))
    kept.sort(key=lambda entry: entry[0])
    lines = [f"{source}:{line}: {place}: {message}" if line else f"{source}: {place}: {message}"
             for line, place, message in kept[:MAX_ERRORS]]
    if len(kept) > MAX_ERRORS:
        lines.append(f"{source}: and {len(kept) - MAX_ERRORS} more errors")
    return "\n".join([f"{source}: {len(kept)} errors", *lines] if len(kept) > 1 else lines)


def _data_loc(error: dict, data: Any) -> list:
    """The error's loc as keys and indexes of the data: pydantic adds union-member and function tags
    ('int', 'function-after[...]', '[key]') that are no place in the file."""
    loc, node, parts = [], data, error["loc"]
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif not (i == len(parts) - 1 and error["type"] in ("missing", "invalid_key")):
            continue  # a missing key, or a key that is no string, is not in the data by its name
        loc.append(part)
    return loc


def _explain(error: dict, root: Any) -> tuple[int | None, str, str]:
    """(line, dotted place, message) for one error."""
    loc = list(error["loc"])
    place = _dotted(loc) or "(top level)"
    line = _line_of(root, loc)
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        near = difflib.get_close_matches(loc[-1], allowed, n=1) if isinstance(loc[-1], str) else []
        hint = f"did you mean `{near[0]}`? " if near else ""
        return line, place, f"unknown key; {hint}allowed here: {', '.join(allowed)}"
    if error["type"] == "missing":
        return line, place, "required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "literal_error":
        message = "must be " + message.removeprefix("Input should be ")
    named = re.match(r"^([a-z_]+): (.*)$", message)
    if named:  # a cross-field check names the key it is about
        key, message = named.groups()
        return _explain({**error, "loc": (*loc, key), "msg": message, "type": "named"}, root)
    return line, place, message


def _dotted(loc: list) -> str:
    text = ""
    for part in loc:
        if isinstance(part, str) and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", part):
            text += f"[{part[:40]!r}]"  # a hostile key is quoted, so the one-line error stays one line
        else:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_of(node: Any, loc: list) -> int | None:
    import yaml

    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                return line
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _allowed_keys(loc: list) -> list[str]:
    """The keys allowed at `loc` (for "did you mean"): walks models, optional members and dict values."""
    import typing

    def models_in(annotation: Any) -> list:
        found = []
        for candidate in (annotation, *typing.get_args(annotation)):
            if typing.get_origin(candidate) is Annotated:
                found += models_in(typing.get_args(candidate)[0])
            elif isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found.append(candidate)
        return found

    def dict_value(annotation: Any) -> Any:
        for candidate in (annotation, *typing.get_args(annotation)):
            if typing.get_origin(candidate) is Annotated:
                candidate = typing.get_args(candidate)[0]
            if typing.get_origin(candidate) is dict:
                return typing.get_args(candidate)[1]
        return None

    model: Any = Spec
    parts = [p for p in loc if not isinstance(p, int)]
    i = 0
    while i < len(parts):
        field = {f.alias or n: f for n, f in model.model_fields.items()}.get(parts[i])
        if field is None:
            break
        value = dict_value(field.annotation)
        if value is not None and i + 1 < len(parts):  # the next part is a key of the dict
            nested, i = models_in(value), i + 2
        else:
            nested, i = models_in(field.annotation), i + 1
        if not nested:
            break
        model = nested[0]
    return [f.alias or n for n, f in model.model_fields.items()]


def to_yaml(spec: Spec) -> str:
    import yaml

    data = spec.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("python", spec.python)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
