# The engine side of drqueue's submit_callable. It travels with each task as
# `python3 -c <this file> PYTHON CLOUDPICKLE_VERSION CLOUDPICKLE_SOURCE PAYLOAD`
# and must stay self-contained: the engine needs nothing but python3 (no
# drqueue module, no cloudpickle). It loads the pickled call, runs it, and
# prints the pickled result, or the exception with its traceback, on one
# marked line of the task's log, where Job.result() finds it.
import base64
import pickle
import sys
import traceback
import types
import zlib

RESULT_MARK = "DRQUEUE-RESULT:"
ERROR_MARK = "DRQUEUE-ERROR:"


def emit(mark, obj, dumps):
    sys.stdout.flush()
    print(mark + base64.b64encode(dumps(obj)).decode(), flush=True)


def report(e, dumps=pickle.dumps):
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    emit(ERROR_MARK, (type(e).__name__, str(e), tb), dumps)


def load_cloudpickle(version, source):
    """cloudpickle as the submitter had it: its by-value functions refer to
    helpers in cloudpickle.cloudpickle, so this run needs that module. An
    installed copy of the same version is used as is; otherwise the source
    shipped with the task is loaded under the same names."""
    try:
        import cloudpickle

        if getattr(cloudpickle, "__version__", None) == version:
            return cloudpickle
    except ImportError:
        pass
    code = zlib.decompress(base64.b64decode(source)).decode("utf-8")
    package = types.ModuleType("cloudpickle")
    package.__path__ = []
    module = types.ModuleType("cloudpickle.cloudpickle")
    sys.modules["cloudpickle"] = package
    sys.modules["cloudpickle.cloudpickle"] = module
    exec(compile(code, "<cloudpickle %s, sent with the task>" % version, "exec"), module.__dict__)
    for name, value in vars(module).items():
        if not name.startswith("__"):
            setattr(package, name, value)
    package.__version__ = version
    package.cloudpickle = module
    return package


def main(argv):
    if len(argv) != 5:
        print("usage: python3 -c BOOTSTRAP PYTHON CLOUDPICKLE_VERSION SOURCE PAYLOAD",
              file=sys.stderr)
        return 2
    want, cp_version, cp_source, payload = argv[1:]
    have = "%d.%d" % sys.version_info[:2]
    dumps = pickle.dumps
    try:
        if cp_version != "-":
            if have != want:
                raise RuntimeError(
                    "this function travelled by value (cloudpickle) from Python %s, and this "
                    "engine runs Python %s: bytecode does not move between versions. Submit "
                    "from Python %s, or give these engines python3 %s (--require or --pool)"
                    % (want, have, have, want))
            dumps = load_cloudpickle(cp_version, cp_source).dumps
        fn, args, kwargs = pickle.loads(zlib.decompress(base64.b64decode(payload)))
    except Exception as e:  # noqa: BLE001 - told to the caller, not swallowed
        print("drqueue: cannot load the function on this engine (Python %s): %r" % (have, e),
              file=sys.stderr)
        report(e)
        return 1
    try:
        value = fn(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001 - everything goes back to the caller
        traceback.print_exc()
        report(e, dumps)
        return 1
    try:
        emit(RESULT_MARK, value, dumps)
    except Exception as e:  # noqa: BLE001 - an unpicklable return value
        print("drqueue: the function returned a value that cannot be pickled: %r" % e,
              file=sys.stderr)
        report(e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
