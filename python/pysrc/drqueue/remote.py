"""The engine side of ``Client.submit_callable``: ``python3 -m drqueue.remote
PAYLOAD`` unpickles a function with its arguments, calls it, and prints the
pickled result (or the exception with its traceback) on one marked line of
the task's log, where ``Job.result()`` finds it."""

from __future__ import annotations

import base64
import pickle
import sys
import traceback

from . import ERROR_MARK, RESULT_MARK


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 -m drqueue.remote PAYLOAD", file=sys.stderr)
        return 2
    try:
        fn, args, kwargs = pickle.loads(base64.b64decode(argv[1]))
    except Exception as e:  # a module the function needs is missing here
        print(f"drqueue: cannot load the function on this engine: {e!r}", file=sys.stderr)
        report(e)
        return 1
    try:
        value = fn(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001 - everything goes back to the caller
        traceback.print_exc()
        report(e)
        return 1
    sys.stdout.flush()
    print(RESULT_MARK + base64.b64encode(pickle.dumps(value)).decode(), flush=True)
    return 0


def report(e: BaseException) -> None:
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    data = (type(e).__name__, str(e), tb)
    sys.stdout.flush()
    print(ERROR_MARK + base64.b64encode(pickle.dumps(data)).decode(), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
