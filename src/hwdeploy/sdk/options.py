"""Declaring and checking a plugin's options: one schema per backend, raising :class:`hwdeploy.OptionError`.

A plugin must reject a user's bad option with ``OptionError``: hwdeploy passes typed errors through to the
caller, while any other exception from a hook marks the plugin broken. Declare the options once::

    OPTIONS = OptionSchema("acme backend", [
        Option("threads", int, None, "CPU threads of the runtime (default: the cores this process may use)",
               minimum=1, maximum=MAX_THREADS),
        Option("precision", str, "fp32", "numeric precision", choices=("fp32", "fp16")),
        Option("check_finite", bool, True, "refuse NaN/Inf inputs"),
    ])
    settings = OPTIONS.check(options)   # every option present, with defaults; OptionError names what is wrong

``OPTIONS.describe()`` is the table ``--help`` and the docs print.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping

from hwdeploy.errors import OptionError

#: More threads than this is a typo, not a machine (Paddle allocates per-thread buffers up front: 10**9 threads
#: allocated until the kernel killed the process). A constant, so the generated docs are the same everywhere.
MAX_THREADS = 1024

_REQUIRED = object()


@dataclass(frozen=True)
class Option:
    """One option: its name, Python type, default (None: the backend decides), description and limits."""

    name: str
    type: type | tuple[type, ...]
    default: Any
    description: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: None is accepted too (it means "the backend's default").
    nullable: bool = True

    def check(self, owner: str, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        # bool is an int in Python: threads=True must not pass as 1, and "no" must not pass as a bool.
        wrong_type = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if wrong_type:
            wanted = " or ".join(t.__name__ for t in types) + (" or None" if self.nullable else "")
            raise OptionError(f"{owner}: option {self.name!r} must be {wanted}, got {value!r}"
                              f" ({type(value).__name__})")
        if self.choices is not None and value not in self.choices:
            raise OptionError(f"{owner}: option {self.name!r} must be one of {list(self.choices)}, got {value!r}"
                              f" ({self.description})")
        if self.minimum is not None and value < self.minimum or self.maximum is not None and value > self.maximum:
            raise OptionError(f"{owner}: option {self.name!r} must be in [{self.minimum}, {self.maximum}],"
                              f" got {value!r}")
        return value


class OptionSchema:
    """The options one backend or conversion accepts."""

    def __init__(self, owner: str, options: Iterable[Option]):
        self.owner = owner
        self.options = {option.name: option for option in options}

    def check(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared option, from ``options`` or its default; OptionError for unknown or invalid ones."""
        check_options(self.owner, options, self.options)
        return {name: option.check(self.owner, options[name]) if name in options else option.default
                for name, option in self.options.items()}

    @property
    def name(self) -> str:
        """What the schema is for (``"cpu backend"``): unique across plugins (``hwdeploy_option_schemas``)."""
        return self.owner

    def names(self) -> set[str]:
        return set(self.options)

    def describe(self) -> list[dict[str, Any]]:
        """One row per option (name, type, default, description, limits), for help texts and docs."""
        rows = []
        for option in self.options.values():
            types = option.type if isinstance(option.type, tuple) else (option.type,)
            row = {"name": option.name, "type": "/".join(t.__name__ for t in types), "default": option.default,
                   "description": option.description}
            if option.choices is not None:
                row["choices"] = list(option.choices)
            if option.minimum is not None or option.maximum is not None:
                row["range"] = [option.minimum, option.maximum]
            rows.append(row)
        return rows


def check_options(owner: str, options: Mapping[str, Any], known: Collection[str]) -> None:
    """Raise :class:`OptionError` if ``options`` has a key outside ``known``, naming both sets.

    ``owner`` starts the message: ``"cpu backend"``, ``"onnx conversion"``.
    """
    unknown = set(options) - set(known)
    if unknown:
        raise OptionError(f"{owner}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")


THREADS = Option("threads", int, None, "CPU math threads (default: the cores this process may use)",
                 minimum=1, maximum=MAX_THREADS)
CHECK_FINITE = Option("check_finite", bool, True, "refuse NaN/Inf inputs before they reach the runtime",
                      nullable=False)


def parse_option_pairs(pairs: Iterable[str] | None) -> dict[str, Any]:
    """``["threads=2", "precision=fp16"]`` (a command line's ``--option KEY=VALUE``) -> options; JSON values where
    they parse (``2``, ``true``, ``[1, 8]``), else the text. OptionError for an item without ``=``."""
    import json

    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionError(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def check_threads(threads: Any) -> None:
    """Raise :class:`OptionError` unless ``threads`` is None (the backend's default) or an int in [1, MAX_THREADS]."""
    THREADS.check("threads", threads)


def allowed(row: Mapping[str, Any]) -> str:
    """The choices or the range of a :meth:`OptionSchema.describe` row, as text ("" when unconstrained)."""
    if "choices" in row:
        return ", ".join(map(str, row["choices"]))
    if "range" in row:
        low, high = row["range"]
        return f"{'' if low is None else low}..{'' if high is None else high}"
    return ""


MARKDOWN_INTRO = """# Options

Generated by `hwdeploy options --markdown` from the option schemas hwdeploy and its plugins check options with
(`hwdeploy.sdk.options.OptionSchema`); do not edit by hand. Pass them as keyword arguments
(`hwdeploy.predictor(model, device, threads=2)`, `hwdeploy.convert(model, target, opset=17)`) or on the command
line (`hwdeploy run --option threads=2`, `hwdeploy convert --option opset=17`). A value of the wrong type, out of
range, or a name the backend does not know is an `OptionError` naming the option and what is allowed.
"""


def markdown_section(owner: str, schema: OptionSchema) -> str:
    """One schema as a Markdown section: ``## <schema>``, who declares it, one table row per option."""
    lines = [f"## {schema.owner}", "", f"Declared by `{owner}`.", "",
             "| option | type | default | allowed | description |", "|---|---|---|---|---|"]
    for row in schema.describe():
        description = str(row["description"]).replace("|", "\\|")
        lines.append(f"| `{row['name']}` | {row['type']} | `{row['default']!r}` | {allowed(row)} | {description} |")
    return "\n".join(lines) + "\n"


def markdown(schemas: Iterable[tuple[str, OptionSchema]]) -> str:
    """``docs/options.md``: the intro, then one :func:`markdown_section` per ``(owner, schema)``."""
    return "\n".join([MARKDOWN_INTRO] + [markdown_section(owner, schema) for owner, schema in schemas])
