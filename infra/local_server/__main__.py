"""The local server in the foreground, told exactly what to serve (TF Serving's flag names).

    python -m infra.local_server --model_config_file PATH --state_dir DIR [--port N] [--rest_api_port N]
        [--monitoring_config_file PATH]

``background.ensure_local_server`` starts this detached. Every path comes from the command line, not
from the child's own settings, so the server serves the config its caller asked for. A port left
out is TF Serving's default (8500, 8501) when that is free, else any free port. A start that
fails ends with one ``START_FAILED`` line saying why (its caller reads it from the log).
"""

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from infra.local_server.background import START_FAILED, serve_foreground
from railyard.runtime import quiet_tensorflow


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.local_server", description=__doc__.splitlines()[0])
    parser.add_argument("--model_config_file", type=Path, required=True)
    parser.add_argument("--state_dir", type=Path, required=True, help="where the state file (pid, ports) goes")
    parser.add_argument("--port", type=int, help="gRPC port (default 8500, any free port if taken; 0 = any free port)")
    parser.add_argument(
        "--rest_api_port", type=int, help="REST port (default 8501, any free port if taken; 0 = any free port)"
    )
    parser.add_argument(
        "--monitoring_config_file",
        type=Path,
        help="a text-format MonitoringConfig (Prometheus metrics on the REST port); "
        "default: monitoring.config in the state folder, written on first use with them enabled",
    )
    args = parser.parse_args(argv)
    quiet_tensorflow()  # at the level of the Railyard process that started this one
    try:
        serve_foreground(
            args.state_dir,
            args.model_config_file,
            args.rest_api_port,
            args.port,
            monitoring_config=args.monitoring_config_file,
        )
    except Exception as error:  # noqa: BLE001 - the traceback for the log, then one line for the caller
        traceback.print_exc()
        print(f"{START_FAILED}{' '.join(str(error).split()) or type(error).__name__}", file=sys.stderr, flush=True)
        sys.exit(1)
    # Stopped and its state file cleared: the interpreter's teardown with TensorFlow loaded takes
    # seconds (which `railyard serve --stop` would wait for) and has nothing left to save.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
