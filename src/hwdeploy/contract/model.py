"""Finding and checking a Paddle model's files before any runtime touches them."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Literal, Union

from hwdeploy.contract.records import TensorSpec
from hwdeploy.errors import HwdeployError, ModelError, ModelFormatError, ModelNotFoundError

__all__ = ["MODEL_SCHEMES", "Model", "ModelLike", "TensorSpec", "load_model", "model_io", "validate_model"]

PROGRAM_SUFFIXES = {".json": "pir", ".pdmodel": "legacy"}


@dataclass(frozen=True, eq=False)
class Model:
    """A Paddle inference model on disk: program file + parameter file.

    ``format`` is ``"pir"`` (Paddle 3: ``NAME.json``) or ``"legacy"``
    (``NAME.pdmodel``). Build one with :func:`load_model`.
    """

    program: Path
    params: Path | None
    format: Literal["pir", "legacy"]
    name: str = ""
    #: Extra facts from whoever built the model (the zoo sets task, batch range...).
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @cached_property
    def sha256(self) -> str:
        """Content hash of program + params: the key of every cache hwdeploy keeps."""
        digest = hashlib.sha256()
        for path in (self.program, self.params):
            if path is None:
                continue
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")
        return digest.hexdigest()

    @property
    def prefix(self) -> Path:
        return self.program.with_suffix("")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "program": str(self.program), "params": str(self.params) if self.params else None,
                "format": self.format, "sha256": self.sha256}

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.format}, {self.program})"


ModelLike = Union[str, os.PathLike, Model, tuple]

#: ``"SCHEME:NAME"`` model references and what resolves them to a :class:`Model`. The package registers
#: ``"zoo"`` (:mod:`hwdeploy.zoo`); a plugin may add its own (``"acme-hub"``).
MODEL_SCHEMES: dict[str, Callable[[str], Model]] = {}


def load_model(model: ModelLike, params: str | os.PathLike | None = None, *, validate: bool = True) -> Model:
    """Resolve ``model`` to a :class:`Model` and check its files.

    Accepts a directory holding one model, a path prefix (``dir/inference``),
    the program file itself, ``(program, params)``, a :class:`Model`, or
    ``"zoo:NAME"`` for a built-in zoo model.
    """
    if isinstance(model, Model):
        result = model
    elif isinstance(model, tuple):
        if len(model) != 2:
            raise ModelError(f"a model tuple must be (program_file, params_file), got {len(model)} items")
        return load_model(model[0], model[1], validate=validate)
    elif isinstance(model, str) and model.partition(":")[0] in MODEL_SCHEMES:
        scheme, _, name = model.partition(":")
        return MODEL_SCHEMES[scheme](name)
    elif isinstance(model, (str, os.PathLike)):
        with _typed_os_errors(model):
            result = _resolve_path(Path(model), Path(params) if params is not None else None)
    else:
        raise ModelError(f"model must be a path, a (program, params) tuple or a Model, got {type(model).__name__}")
    if validate:
        validate_model(result)
    return result


@contextmanager
def _typed_os_errors(path: Any):
    """An OSError from the file system (a 5,000-character name, a directory where a file should be, no
    permission) as a :class:`ModelError` naming the path and the reason, never a bare OSError."""
    try:
        yield
    except HwdeployError:
        raise
    except IsADirectoryError as exc:
        raise ModelFormatError(f"{str(exc.filename or path)[:200]}: is a directory, not a model file",
                               exc.filename or path) from None
    except OSError as exc:
        name = str(exc.filename or path)
        shown = name if len(name) <= 200 else f"{name[:200]}... ({len(name)} characters)"
        raise ModelError(f"{shown}: cannot use this model path ({exc.strerror or exc})", exc.filename or path) from None


def _resolve_path(path: Path, params: Path | None) -> Model:
    if path.is_dir():
        programs = sorted(p for p in path.iterdir() if p.suffix in PROGRAM_SUFFIXES and p.is_file()
                          and not p.name.startswith("."))
        # A directory exported with both formats holds NAME.json and NAME.pdmodel: prefer PIR.
        stems = {p.stem for p in programs}
        if len(stems) != 1:
            found = ", ".join(p.name for p in programs) or "nothing"
            raise ModelNotFoundError(
                f"{path}: expected exactly one model (NAME.json or NAME.pdmodel + NAME.pdiparams), found {found}", path)
        program = next(p for p in sorted(programs, key=lambda p: p.suffix != ".json"))
    elif path.suffix in PROGRAM_SUFFIXES:
        program = path
    elif path.suffix == ".pdiparams":
        candidates = [path.with_suffix(s) for s in PROGRAM_SUFFIXES if path.with_suffix(s).exists()]
        if not candidates:
            raise ModelNotFoundError(f"{path}: no program file (.json or .pdmodel) beside this parameter file", path)
        program, params = candidates[0], path
    else:  # a prefix
        candidates = [path.with_name(path.name + s) for s in PROGRAM_SUFFIXES]
        existing = [c for c in candidates if c.exists()]
        if not existing:
            raise ModelNotFoundError(
                f"model not found: {path} is not a directory, and neither {candidates[0]} nor {candidates[1]} exists", path)
        program = existing[0]
    if not program.exists():
        raise ModelNotFoundError(f"model program file not found: {program}", program)
    if params is None:
        params = program.with_suffix(".pdiparams")
        if not params.exists():
            if _parameterless_pir(program):  # paddle.jit.save writes no .pdiparams for a model without weights
                params = None
            else:
                raise ModelNotFoundError(f"model parameter file not found: {params} (beside {program.name})", params)
    elif not params.exists():
        raise ModelNotFoundError(f"model parameter file not found: {params}", params)
    name = program.parent.name if program.stem in ("inference", "model") else program.stem
    return Model(program.resolve(), params.resolve() if params else None, PROGRAM_SUFFIXES[program.suffix], name)


def _parameterless_pir(program: Path) -> bool:
    if program.suffix != ".json":
        return False
    from hwdeploy.sdk import paddle_format

    try:
        return not paddle_format.load_pir_program(program).parameters
    except ModelFormatError:
        return False


def validate_model(model: Model) -> None:
    """Check that the files are complete and consistent, naming the bad file if not.

    PIR programs are parsed and their parameter list checked against the
    parameter file tensor by tensor (count, dtype, shape) without Paddle.
    Legacy programs are parsed with Paddle's framework.proto (:mod:`hwdeploy.sdk.legacy_program`): every var
    reference, block reference, attribute type, feed/fetch op and the parameter file are checked.
    """
    with _typed_os_errors(model.program):
        _validate_model(model)


def _validate_model(model: Model) -> None:
    from hwdeploy.sdk import paddle_format

    for path in (model.program, model.params):
        if path is not None and path.is_dir():
            raise ModelFormatError(f"{path}: is a directory, not a model file", path)
        if path is not None and path.stat().st_size == 0:
            raise ModelFormatError(f"{path}: file is empty", path)
    records = paddle_format.scan_params(model.params) if model.params else []
    if model.format == "pir":
        program = paddle_format.load_pir_program(model.program)
        expected = sorted(program.parameters)  # save_combine writes parameters sorted by name
        if len(expected) != len(records):
            raise ModelFormatError(f"{model.params}: holds {len(records)} tensors but {model.program.name} declares"
                                   f" {len(expected)} parameters (mismatched or truncated files)", model.params)
        for (name, dtype, shape), rec in zip(expected, records):
            if tuple(shape) != rec.shape or dtype != rec.dtype:
                raise ModelFormatError(f"{model.params}: parameter {name} is {rec.dtype}{list(rec.shape)} in the file"
                                       f" but {dtype}{list(shape)} in {model.program.name}", model.params)
        if not program.inputs:
            raise ModelFormatError(f"{model.program}: program has no inputs (no pd_op.data op)", model.program)
        if not program.outputs:  # Paddle would load it and run() return [] without a word
            raise ModelFormatError(f"{model.program}: program has no outputs (no pd_op.fetch op)", model.program)
    else:
        data = model.program.read_bytes()
        # A ProgramDesc starts with field 1 (blocks), a length-delimited message: tag 0x0a.
        if data[:1] != b"\x0a":
            raise ModelFormatError(f"{model.program}: not a Paddle ProgramDesc (.pdmodel) file", model.program)
        from hwdeploy.sdk import legacy_program

        if legacy_program.schema_available():  # Paddle's own framework.proto; without Paddle nothing loads it
            legacy_program.validate_legacy_program(model.program, model.params, records if model.params else None)


def model_io(model: Model) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
    """Input/output specs read from a PIR program without Paddle (None for legacy)."""
    if model.format != "pir":
        return None
    from hwdeploy.sdk import paddle_format

    program = paddle_format.load_pir_program(model.program)
    ranges = index_ranges(program)
    inputs = [TensorSpec(n, tuple(s), d, ranges.get(n)) for n, d, s in program.inputs]
    outputs = []
    for op in program.ops:
        if op.type == "pd_op.fetch":
            dtype, shape = op.output_types[0] or ("", ())
            outputs.append(TensorSpec(op.attrs.get("name", f"fetch_{len(outputs)}"), tuple(shape), dtype))
    return inputs, outputs


# Ops whose integer operand indexes rows of a parameter: (op type, index operand, table operand).
_INDEX_OPS = {"pd_op.embedding": (0, 1), "pd_op.lookup_table_v2": (0, 1)}
# Ops an index passes through unchanged on its way from the input (shape changes only).
_PASSTHROUGH = {"pd_op.cast", "pd_op.reshape", "pd_op.unsqueeze", "pd_op.squeeze", "pd_op.flatten",
                "pd_op.transpose", "pd_op.assign"}


def index_ranges(program: Any) -> dict[str, tuple[int, int]]:
    """Input name -> [0, rows) for inputs that index an embedding table (directly or through reshapes/casts).

    Paddle's embedding kernels do not check their ids: -1 or ``rows`` reads out of bounds (NaN or garbage).
    """
    producer = {}
    for op in program.ops:
        for value in op.outputs:
            if value is not None:
                producer[value] = op
    ranges: dict[str, tuple[int, int]] = {}
    for op in program.ops:
        operands = _INDEX_OPS.get(op.type)
        if not operands or max(operands) >= len(op.inputs):
            continue
        table = producer.get(op.inputs[operands[1]])
        table_type = table.output_types[0] if table is not None and table.output_types else None
        if not table_type or len(table_type[1]) != 2 or table_type[1][0] <= 0:
            continue
        source, hops = producer.get(op.inputs[operands[0]]), 0
        while source is not None and source.type in _PASSTHROUGH and source.inputs and hops < 8:
            source, hops = producer.get(source.inputs[0]), hops + 1
        if source is not None and source.type == "pd_op.data" and source.attrs.get("name"):
            name, rows = source.attrs["name"], int(table_type[1][0])
            low, high = ranges.get(name, (0, rows))
            ranges[name] = (low, min(high, rows))
    return ranges
