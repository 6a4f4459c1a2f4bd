"""``bisenet-inspect``: what an artifact is, where it came from, and what can run it here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UserError
from .common import Parser, cli_entry

PROG = "bisenet-inspect"

EXAMPLES = """\
examples:
  bisenet-inspect model.int8.onnx        # ModelSpec, tensors, precision, calibration data hash, runners here
  bisenet-inspect model.fp16.engine      # the sidecar's build record and whether this machine can load it
  bisenet-inspect model.pth --json       # detected family, spec and parameter count, as JSON
"""


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Describe a BiSeNet artifact (.onnx, .engine/.plan, .pth) without running it.",
               epilog=EXAMPLES)
    p.add_argument("artifacts", nargs="+", type=Path, help=".onnx, .engine/.plan or .pth files")
    p.add_argument("--json", action="store_true", help="print JSON (one object, or a list for several files)")
    return p


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..inspection import format_inspection, inspect_artifact

    if len(args.artifacts) == 1:  # one file: its error is the run's one line
        infos = [inspect_artifact(args.artifacts[0])]
    else:  # several: one bad file must not hide the others
        infos = []
        for path in args.artifacts:
            try:
                infos.append(inspect_artifact(path))
            except UserError as exc:
                print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
                infos.append({"path": str(path), "error": str(exc)})
    if args.json:
        print(json.dumps(infos[0] if len(infos) == 1 else infos, indent=2, default=str))
    else:
        sys.stdout.write("\n".join(format_inspection(i) for i in infos if "error" not in i))
    if any("error" in i for i in infos):
        return UserError.exit_code
    # Described either way; the status says whether every file can run (a 2-input graph cannot).
    return 1 if any(i.get("problem") for i in infos) else 0


if __name__ == "__main__":
    sys.exit(main())
