"""The test driver: assert-style tests run here, in the pipeline, never in the candidate's process.

MBPP asserts, HumanEval's ``check(candidate)`` and LeetCode's ``check(Solution().method)`` used to run inside the
program's process, where a program can read the expected values (its caller's frame, the test's constants) or
rebind whatever guards the comparison. Here the test code runs in a driver thread of the parent; each name the
tests take from the program (``remove_Occ``, ``Solution``, ``has_close_elements``) is a :class:`Remote`, and using
one sends a request to the sandboxed child, which computes and sends back *data*. The driver compares.

What crosses (``harness._encode``/``_decode`` on the other side), decoded here into builtin types only:

    JSON scalars and lists; {"t": tuple} {"s": set} {"f": frozenset} {"d": [[k, v], ...]} {"b": bytes}
    {"c": [re, im]} {"q": Fraction} {"D": Decimal} {"L": ListNode values} {"T": TreeNode level order} {"r": id} (an object left in the child)

A program object that is not data stays in the child and is a :class:`Remote` here: it can be called, have
attributes read and be indexed (a class instance, ``Solution()``, a bound method), and iterated (``list(gen)``;
the child lists it, so ``len`` and ``in`` are decided on that data). It cannot be compared, hashed or
truth-tested: a test that tries fails ("only data crosses the sandbox"). The program never sees a test line or an
expected value, whatever it does in its own process.

Tests whose code does not parse run in-process as before (``harness._run_assert`` with the guard); each
``TestResult.isolation`` says which way a test ran.
"""

from __future__ import annotations

import ast
import builtins
import decimal
import fractions
import importlib
import json
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from stepcoder.execution.results import TestResult

REPLY_GRACE_S = 2.0  # past a call's own time limit, before the driver stops waiting for the child


class ProgramObjectCompared(AssertionError):
    """A test compared or truth-tested an object of the program's: only data crosses the sandbox."""


class _Stop(BaseException):
    """The child is gone (or the job is over): stop running tests. BaseException: test code must not catch it."""


class _CallTimeout(BaseException):
    pass


class _CallError(BaseException):
    def __init__(self, status: str, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


# ---------------------------------------------------------------- which tests split


@dataclass(frozen=True)
class SplitPlan:
    context: Any  # code object, or None: the prompt's trusted definitions (TestSpec.context)
    setup: Any  # code object, or None
    asserts: tuple  # code objects, one per test
    remote_names: tuple[str, ...]  # names the tests take from the program
    modules: tuple[str, ...]  # stdlib modules the tests use without importing them (the program imported them)


_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))
_BUILTINS = frozenset(dir(builtins))


def _bound_and_loaded(tree: ast.AST) -> tuple[set[str], set[str]]:
    bound, loaded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound, loaded


def _module_level_loads(tree: ast.Module) -> set[str]:
    """Names read by statements that run when the setup is executed (not inside the functions it defines)."""
    out: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes = [*stmt.decorator_list, *stmt.args.defaults, *stmt.args.kw_defaults]
        elif isinstance(stmt, ast.ClassDef):
            nodes = [*stmt.decorator_list, *stmt.bases]
        else:
            nodes = [stmt]
        out |= {n.id for node in nodes if node is not None for n in ast.walk(node)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return out


def _called_first(tree: ast.Module, skip: set[str] = frozenset()) -> set[str]:
    """The function each assert calls first, past the test's own helpers in ``skip`` (``assert sum(10, 15) == 6``
    → sum; ``assert __mbpp_plus_eq__(sum(10, 15), 6.0, ...)`` → sum too)."""
    out = set()
    for stmt in tree.body:
        calls = [n for n in ast.walk(stmt) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                 and n.func.id not in skip]
        if calls:
            out.add(calls[0].func.id)
    return out


@lru_cache(maxsize=8192)
def plan_for(setup: str, asserts: tuple[str, ...], context: str = "") -> SplitPlan | None:
    """How the tests of a spec run in the driver, or None when they must run in-process: test code that does not
    parse (the child reports its syntax error per test, as before), ``global``/``nonlocal`` state, or setup code
    that builds objects of the program's when it runs (MBPP's ``root = Node(1); root.left = Node(2)``: state the
    program and the tests share)."""
    try:
        trees = [ast.parse(context or ""), ast.parse(setup or "")] + [ast.parse(a) for a in asserts]
        codes = [compile(t, "<test>", "exec") for t in trees]
    except (SyntaxError, ValueError, MemoryError, RecursionError, TypeError):
        return None
    bound, loaded = set(), set()
    for t in trees:
        if any(isinstance(n, (ast.Global, ast.Nonlocal)) for n in ast.walk(t)):
            return None
        b, ld = _bound_and_loaded(t)
        bound |= b
        loaded |= ld
    free = loaded - bound - {"__name__", "__file__"}
    modules = tuple(sorted(n for n in free if n in _STDLIB and n not in _BUILTINS))
    remote = {n for n in free if n not in _STDLIB and n not in TRUSTED_CLASSES and n not in _BUILTINS}
    if not remote:  # the tests name nothing of the program's but builtins: it shadows one (MBPP's `def sum(a, b)`)
        remote = {n for t in trees[2:] for n in _called_first(t, bound)} & _BUILTINS
    if remote & _module_level_loads(trees[1]):
        return None
    return SplitPlan(codes[0] if context.strip() else None, codes[1] if setup and setup.strip() else None,
                     tuple(codes[2:]), tuple(sorted(remote)), modules)


# ---------------------------------------------------------------- LeetCode's linked lists and trees, trusted


class ListNode:
    def __init__(self, val=0, next=None):
        self.val, self.next = val, next


class TreeNode:
    def __init__(self, val=0, left=None, right=None):
        self.val, self.left, self.right = val, left, right


TRUSTED_CLASSES = {"ListNode": ListNode, "TreeNode": TreeNode}


# ---------------------------------------------------------------- values across the boundary


class Remote:
    """A name of the program's, or an object that stayed in the child. Usable, never comparable."""

    __slots__ = ("_driver", "_target", "_label")

    def __init__(self, driver: "Driver", target: Any, label: str):
        object.__setattr__(self, "_driver", driver)
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_label", label)

    def __call__(self, *args, **kwargs):
        return self._driver.request("call", self._target, args=args, kwargs=kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._driver.request("getattr", self._target, attr=name)

    def __getitem__(self, key):
        return self._driver.request("getitem", self._target, args=(key,))

    def __iter__(self):
        return iter(self._driver.request("iter", self._target))

    def __len__(self) -> int:
        return len(self._driver.request("iter", self._target))

    def __contains__(self, item) -> bool:
        return item in self._driver.request("iter", self._target)

    def _refuse(self, *_):
        raise ProgramObjectCompared(f"a test compared {self._label}, an object of the program's: only data crosses "
                                    "the sandbox (reward-hack guard)")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = _refuse

    def __hash__(self):
        self._refuse()

    def __repr__(self) -> str:
        return f"<program object {self._label}>"


def encode(x: Any) -> Any:
    """A driver value (trusted) as tagged JSON-able data for the child."""
    t = type(x)
    if x is None or t in (bool, int, float, str):
        return x
    if t is list:
        return [encode(e) for e in x]
    if t is tuple:
        return {"t": [encode(e) for e in x]}
    if t is set:
        return {"s": [encode(e) for e in x]}
    if t is frozenset:
        return {"f": [encode(e) for e in x]}
    if isinstance(x, dict):
        return {"d": [[encode(k), encode(v)] for k, v in x.items()]}
    if t in (bytes, bytearray):
        return {"b": bytes(x).decode("latin-1")}
    if t is complex:
        return {"c": [x.real, x.imag]}
    if t is fractions.Fraction:
        return {"q": [x.numerator, x.denominator]}
    if t is decimal.Decimal:
        return {"D": str(x)}
    if t is Remote:  # an object left in the child, or a name of its module (looked up there)
        return x._target if isinstance(x._target, dict) else {"n": x._target}
    if t is ListNode:
        vals, seen = [], set()
        while x is not None and id(x) not in seen:
            seen.add(id(x))
            vals.append(encode(x.val))
            x = x.next
        return {"L": vals}
    if t is TreeNode:
        out, q = [], [x]
        while q:
            node = q.pop(0)
            out.append(None if node is None else encode(node.val))
            if node is not None:
                q += [node.left, node.right]
        while out and out[-1] is None:
            out.pop()
        return {"T": out}
    if t is type and getattr(builtins, x.__name__, None) is x:  # `remove_datatype(t, int)`
        return {"y": x.__name__}
    if isinstance(x, (int, float, str, list, tuple)):  # IntEnum, namedtuple, ...: their value
        base = next(b for b in (bool, int, float, str, list, tuple) if isinstance(x, b))
        return encode(base(x))
    raise TypeError(f"a test passed a {t.__name__} to the program: only data crosses the sandbox")


class Decoder:
    """The child's data → builtin values (exact types), ListNode/TreeNode (ours) or Remote. Anything else in the
    data is a protocol error: the child is the program's, so this is the only parser of what it sends."""

    def __init__(self, driver: "Driver"):
        self.driver = driver

    def __call__(self, x: Any) -> Any:
        t = type(x)
        if x is None or t in (bool, int, float, str):
            return x
        if t is list:
            return [self(e) for e in x]
        if t is not dict or len(x) != 1:
            raise ValueError(f"bad value from the child: {t.__name__}")
        (tag, v), = x.items()
        if tag == "r" and type(v) is int:
            return Remote(self.driver, {"r": v}, "a program object")
        if tag == "D" and type(v) is str:
            return decimal.Decimal(v)
        if type(v) is not list:
            if tag == "b" and type(v) is str:
                return v.encode("latin-1")
            raise ValueError(f"bad {tag!r} value from the child")
        if tag == "t":
            return tuple(self(e) for e in v)
        if tag == "s":
            return {self(e) for e in v}
        if tag == "f":
            return frozenset(self(e) for e in v)
        if tag == "d":
            return {self(k): self(val) for k, val in (_pair(p) for p in v)}
        if tag == "c" and len(v) == 2 and all(type(e) in (int, float) for e in v):
            return complex(v[0], v[1])
        if tag == "q" and len(v) == 2 and all(type(e) is int for e in v) and v[1] != 0:
            return fractions.Fraction(v[0], v[1])
        if tag == "L":
            head = None
            for val in reversed(v):
                head = ListNode(self(val), head)
            return head
        if tag == "T":
            nodes = [None if e is None else TreeNode(self(e)) for e in v]
            kids = iter(nodes[1:])
            for node in nodes:
                if node is not None:
                    node.left, node.right = next(kids, None), next(kids, None)
            return nodes[0] if nodes else None
        raise ValueError(f"bad tag {tag!r} from the child")


def _pair(p: Any) -> tuple:
    if type(p) is not list or len(p) != 2:
        raise ValueError("bad dict item from the child")
    return p[0], p[1]


def _refill(original: Any, after: Any) -> None:
    """An argument the program mutated in place: the driver's copy gets the new contents."""
    if type(original) is list and type(after) is list:
        original[:] = after
    elif type(original) is dict and type(after) is dict:
        original.clear()
        original.update(after)
    elif type(original) is set and type(after) is set:
        original.clear()
        original.update(after)


# ---------------------------------------------------------------- the driver


class Driver:
    """Runs one job's tests in a thread; ``send(bytes)`` delivers a request line to the child, ``deliver(rec)``
    hands it the child's replies. ``results[i]`` and ``lines`` fill as tests run."""

    def __init__(self, plan: SplitPlan, send: Callable[[bytes], None], *, timeout_s: float, budget_s: float,
                 stop_on_failure: bool, on_result: Callable[[int, TestResult], None]):
        self.plan, self.send, self.on_result = plan, send, on_result
        self.timeout_s, self.stop_on_failure = timeout_s, stop_on_failure
        self.end = time.monotonic() + budget_s
        self.replies: queue.Queue = queue.Queue()
        self.decode = Decoder(self)
        self._seq = 0
        self._test_end = 0.0
        self.thread = threading.Thread(target=self._run, name="stepcoder-test-driver", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def deliver(self, rec: dict) -> None:
        self.replies.put(rec)

    def stop(self) -> None:
        self.replies.put(None)

    # ---- requests
    def request(self, op: str, target: Any, *, args: tuple = (), kwargs: dict | None = None, attr: str = ""):
        left = self._test_end - time.monotonic()
        if left <= 0:
            raise _CallTimeout()
        self._seq += 1
        req = {"q": self._seq, "op": op, "target": target, "attr": attr, "args": [encode(a) for a in args],
               "kwargs": {str(k): encode(v) for k, v in (kwargs or {}).items()}, "s": left}
        self.send(json.dumps(req).encode() + b"\n")
        try:
            rep = self.replies.get(timeout=left + REPLY_GRACE_S)
        except queue.Empty:
            raise _Stop() from None  # stuck in C code: the worker's stall limit kills it
        if rep is None or rep.get("q") != self._seq:
            raise _Stop()
        status = rep.get("status")
        if status == "timeout":
            raise _CallTimeout()
        if status != "ok":
            raise _CallError("fail" if status == "fail" else "runtime_error", str(rep.get("detail", ""))[:300])
        try:
            value = self.decode(rep.get("v"))
            for a, after in zip(args, rep.get("a") or ()):
                if after is not None:
                    _refill(a, self.decode(after))
        except (ValueError, TypeError, RecursionError) as e:
            raise _CallError("runtime_error", f"unreadable result: {e}") from None
        return value

    # ---- the tests
    def _run(self) -> None:
        ns: dict[str, Any] = {"__name__": "__test__", "__builtins__": builtins, **TRUSTED_CLASSES}
        for name in self.plan.modules:
            try:
                ns[name] = importlib.import_module(name)
            except ImportError:
                pass
        try:
            setup_error = ""
            for code in (self.plan.context, self.plan.setup):
                if code is not None and not setup_error:
                    self._test_end = min(time.monotonic() + self.timeout_s, self.end)
                    status, detail, _ = self._exec(code, ns)
                    setup_error = f"test setup: {detail}" if status != "pass" else ""
            for name in self.plan.remote_names:  # the program's, unless the trusted context defined it
                if name not in ns or self.plan.context is None:  # (`from collections import *` binds `deque`)
                    ns[name] = Remote(self, name, name)
            for i, code in enumerate(self.plan.asserts):
                if setup_error:
                    self.on_result(i, TestResult("runtime_error", 0.0, setup_error, "split"))
                    continue
                now = time.monotonic()
                if self.end - now <= 0:
                    self.on_result(i, TestResult("timeout", 0.0, "time budget exhausted", "split"))
                    continue
                self._test_end = min(now + self.timeout_s, self.end)
                status, detail, ms = self._exec(code, ns)
                self.on_result(i, TestResult(status, ms, detail, "split"))
                if status != "pass" and self.stop_on_failure:
                    break
            self.send(b'{"op": "end"}\n')
        except _Stop:
            pass
        except BaseException as e:  # noqa: BLE001 - a driver bug must end the job, not hang it
            self.on_result(-1, TestResult("runtime_error", 0.0, f"test driver: {type(e).__name__}: {e}", "split"))

    def _exec(self, code, ns: dict) -> tuple[str, str, float]:
        t0 = time.perf_counter()
        try:
            exec(code, ns)
            status, detail = "pass", ""
        except _CallTimeout:
            status, detail = "timeout", "time limit exceeded"
        except _CallError as e:
            status, detail = e.status, e.detail
        except AssertionError as e:
            status, detail = "fail", f"AssertionError: {e}"[:300] if str(e) else "AssertionError"
        except _Stop:
            raise
        except Exception as e:  # noqa: BLE001 - the test raised: as in-process, a runtime error
            status, detail = "runtime_error", f"{type(e).__name__}: {e}"[:300]
        return status, detail, (time.perf_counter() - t0) * 1000
