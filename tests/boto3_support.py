"""What the boto3 check scripts (tests/boto3_*.py) share: zips of in-memory files, a runner that
reports each check and goes on after a failure, and two assertions. Imported by the scripts
(their directory is first on sys.path when python3 runs them); not a test itself."""

import io
import sys
import traceback
import zipfile


def zip_of(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn):
        try:
            fn()
        except Exception as e:  # any failure is reported, then the next check runs
            self.failed += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
            traceback.print_exc(limit=3, file=sys.stdout)
        else:
            self.passed += 1
            print("ok   %s" % name)
        sys.stdout.flush()


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def raises(exc_class, fn):
    """Runs fn and asserts it raises exc_class (a client.exceptions member); returns the error."""
    try:
        fn()
    except exc_class as e:
        return e
    except Exception as e:
        raise AssertionError("expected %s, got %s: %s" % (exc_class.__name__, type(e).__name__, e))
    raise AssertionError("expected %s, nothing was raised" % exc_class.__name__)
