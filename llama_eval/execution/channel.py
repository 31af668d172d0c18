"""The sandbox's channel between the checker (trusted) and the candidate: plain values as tagged
JSON, one message a line. Standard library only: launcher.py loads it by path.

The checker calls the candidate's functions by name; arguments and return values cross as
exact builtin values (None, bool, int, float, str, bytes, list, tuple, set, frozenset, dict), so
what the checker compares is its own plain data, never an object the candidate made. An
argument may also be a Ref, a name in the candidate's globals (an MBPP test builds trees from
the solution's own class in the candidate's process and passes them by name).
"""

import collections
import json
import os

MESSAGE_BYTES = 16 << 20  # the largest message either side of the channel accepts
DEPTH = 100  # the deepest nesting of containers a value may have on the channel
DETAIL = 1000  # characters of a failure's message kept in the verdict (it must fit a pipe's buffer)
DICTS = (collections.Counter, collections.OrderedDict, collections.defaultdict)

class Ref:
    """The checker's stand-in for an object of the candidate (a name in its globals); calling it
    calls that object in the candidate's process."""

    def __init__(self, channel: "Channel | None", name: str, callable_: bool):
        self.channel, self.name, self.callable = channel, name, callable_

    def __call__(self, *args, **kwargs):
        if not self.callable:
            raise TypeError("the candidate's %r is not callable" % self.name)
        return self.channel.call(self.name, args, kwargs)

    def __repr__(self):
        return "<the candidate's %s>" % self.name


def encode(value, depth=0):
    """A JSON-able form of a plain value (exact builtin types only; subclasses are refused, so
    no object with its own __eq__ crosses). Tuples, sets, frozensets, dicts with any keys,
    complex numbers and bytes are tagged one-key objects; a Ref is sent as its name. The
    standard library's dict subclasses in DICTS go as dicts (each compares equal to the dict
    with the same items, which is all a test can ask of them here)."""
    if depth > DEPTH:
        raise ValueError("a value nested deeper than %d levels" % DEPTH)
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [encode(item, depth + 1) for item in value]
    if kind in (tuple, set, frozenset):
        return {kind.__name__: [encode(item, depth + 1) for item in value]}
    if kind is dict or kind in DICTS:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is complex:
        return {"complex": [value.real, value.imag]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind is Ref:
        return {"ref": value.name}
    raise TypeError("a %s is not a plain value (only None, bool, int, float, str, bytes, list, tuple, "
                    "set, frozenset and dict cross the sandbox)" % kind.__name__)


def decode(data, resolve=None, depth=0):
    """The value `encode` gave `data`; refs only where `resolve` (name -> object) is given."""
    if depth > DEPTH:
        raise ValueError("a value nested deeper than %d levels" % DEPTH)
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [decode(item, resolve, depth + 1) for item in data]
    if kind is dict and len(data) == 1:
        (tag, body), = data.items()
        if tag == "bytes" and type(body) is str:
            return bytes.fromhex(body)
        if tag == "complex" and type(body) is list and len(body) == 2 and all(type(x) is float for x in body):
            return complex(*body)
        if tag == "ref" and type(body) is str and resolve is not None:
            return resolve(body)
        if type(body) is list:
            items = [decode(item, resolve, depth + 1) for item in body]
            if tag == "tuple":
                return tuple(items)
            if tag == "set":
                return set(items)
            if tag == "frozenset":
                return frozenset(items)
            if tag == "dict" and all(type(pair) is list and len(pair) == 2 for pair in items):
                return {key: value for key, value in items}
    raise ValueError("not a value of the sandbox channel: %.80r" % (data,))


def dumps(message):
    # ensure_ascii: a lone surrogate travels as an escape, and no message holds a raw newline.
    return (json.dumps(message, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


class CandidateGone(Exception):
    """The candidate's process ended or broke the protocol (its exit says why)."""


class CandidateRaised(Exception):
    """A call into the candidate raised; the message is its exception line."""


class Channel:
    """The checker's end: requests out, replies in, every reply decoded strictly."""

    def __init__(self, read_fd, write_fd):
        self.reader = os.fdopen(read_fd, "rb")
        self.write_fd = write_fd

    def send(self, message):
        data = dumps(message)
        try:
            while data:
                data = data[os.write(self.write_fd, data):]
        except (BrokenPipeError, OSError) as error:
            raise CandidateGone("the candidate stopped reading (%s)" % error) from None

    def receive(self):
        line = self.reader.readline(MESSAGE_BYTES + 1)
        if not line:
            raise CandidateGone("the candidate ended")
        if len(line) > MESSAGE_BYTES or not line.endswith(b"\n"):
            raise CandidateGone("the candidate sent more than %d bytes at once" % MESSAGE_BYTES)
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            raise CandidateGone("the candidate sent something that is not a message") from None
        if type(message) is not dict:
            raise CandidateGone("the candidate sent something that is not a message")
        return message

    def bind(self, names):
        """{name: a value or Ref} for each name the candidate defines (missing names are left out)."""
        self.send({"op": "names", "names": list(names)})
        reply = self.receive().get("names")
        if type(reply) is not dict:
            raise CandidateGone("the candidate answered a lookup with something else")
        bound = {}
        for name in names:
            entry = reply.get(name)
            if entry == ["function"] or entry == ["object"]:
                bound[name] = Ref(self, name, entry == ["function"])
            elif type(entry) is list and len(entry) == 2 and entry[0] == "value":
                bound[name] = decode(entry[1])
        return bound

    def call(self, name, args, kwargs):
        self.send({"op": "call", "name": name, "args": encode(list(args)), "kwargs": encode(dict(kwargs))})
        reply = self.receive()
        if "value" in reply:
            try:
                return decode(reply["value"])
            except (ValueError, TypeError, RecursionError) as error:
                raise CandidateRaised("%s returned something that is not a plain value (%s)" % (name, error)) from None
        if "unplain" in reply:
            raise CandidateRaised("%s returned something that is not a plain value: %.200s" % (name, reply["unplain"]))
        raised = reply.get("raised")
        raise CandidateRaised("%s raised %.200s" % (name, raised if type(raised) is str else "something"))


def serve(namespace, read_fd, write_fd):
    """The candidate's end (runs in C after the candidate's code): answer until the checker hangs up."""
    reader, writer = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")

    def reply(message):
        writer.write(dumps(message))
        writer.flush()

    reply({"ready": True})
    for line in iter(lambda: reader.readline(MESSAGE_BYTES + 1), b""):
        request = json.loads(line)
        if request["op"] == "names":
            reply({"names": {name: describe(namespace, name) for name in request["names"]}})
            continue
        try:
            function = namespace[request["name"]]
            args = decode(request["args"], namespace.__getitem__)
            kwargs = decode(request["kwargs"], namespace.__getitem__)
            value = function(*args, **kwargs)
        except Exception as error:
            reply({"raised": "%s: %s" % (type(error).__name__, error)})
            continue
        try:
            reply({"value": encode(value)})
        except (TypeError, ValueError, RecursionError) as error:
            reply({"unplain": str(error)})


def describe(namespace, name):
    if name not in namespace:
        return ["missing"]
    value = namespace[name]
    if callable(value):
        return ["function"]
    try:
        return ["value", encode(value)]
    except (TypeError, ValueError, RecursionError):
        return ["object"]



def check(channel, trusted):
    """{"passed", "detail", "reached"}: reached says whether the candidate's code ran to its end."""
    try:
        first = channel.receive()
    except CandidateGone:
        return {"passed": False, "detail": "", "reached": False}
    if first != {"ready": True}:
        return {"passed": False, "detail": "the program broke the sandbox protocol", "reached": False}
    if trusted["test"] is None:
        return {"passed": True, "detail": "", "reached": True}
    namespace = {"__name__": "__check__"}
    try:
        exec(compile(trusted["setup"], "test_setup.py", "exec"), namespace)
        namespace.update(channel.bind(trusted["names"]))
        exec(compile(trusted["test"], "test.py", "exec"), namespace)
    except CandidateGone as error:
        return {"passed": False, "detail": str(error)[:DETAIL], "reached": True, "gone": True}
    except CandidateRaised as error:
        return {"passed": False, "detail": str(error)[:DETAIL], "reached": True}
    except BaseException as error:  # the test's own verdict: an assertion, or anything else
        detail = "%s: %s" % (type(error).__name__, error) if str(error) else type(error).__name__
        return {"passed": False, "detail": detail[:DETAIL], "reached": True}
    return {"passed": True, "detail": "", "reached": True}


