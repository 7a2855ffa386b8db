"""Fuzz: the command line. ``python -m ops`` with generated arguments returns an exit code, never a traceback.

Commands and flags come from the parser itself; values are garbage (NUL, undecodable bytes as lone
surrogates, numbers past every limit, stream ids Redis refuses, ``NAME=VALUE`` mix-ups, secrets).
Each argv runs in-process (``ops.__main__.main``) against a namespace of its own that holds a
little of everything (stream entries, a dead letter, a delayed retry, a configuration). Asserted:
an ``int`` comes back; a non-zero exit says why in one printable line (or, for ``inspect``, that
nothing was found); nothing printed needs a terminal to cope with surrogates; no secret is echoed;
and the keys of every other namespace, and of another queue, are exactly as they were.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import uuid

import pytest
import redis
from conftest import FUZZ, SECRET, settings_env
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from ops.__main__ import main, parser
from worker.streams.entry import CallbackEntry
from worker.streams.keys import Keys

SECRET_BODY = SECRET.removeprefix("whsec_")


def _commands() -> dict[str, list[str]]:
    """Each subcommand of the real parser and its option strings."""
    top = parser()
    sub = next(action for action in top._actions if isinstance(action, argparse._SubParsersAction))

    def flags(sp: argparse.ArgumentParser) -> list[str]:  # a command's own and those of its actions (``host``)
        nested = [p for act in sp._actions if isinstance(act, argparse._SubParsersAction) for p in act.choices.values()]
        return sorted({flag for p in (sp, *nested) for act in p._actions for flag in act.option_strings})

    return {name: flags(sp) for name, sp in sub.choices.items()}


COMMANDS = _commands()
tricky = st.sampled_from(
    [
        "-1",
        "0",
        "nan",
        "inf",
        "-inf",
        "1e400",
        "1_0",
        "99999999999999999999-0",
        "1-99999999999999999999",
        "18446744073709551615-18446744073709551615",
        "0-0",
        "1-1",
        "\u0661-0",
        "msg_x",
        "",
        " ",
        "\x00",
        "a\udcff",
        "--",
        "-",
        "=",
        "get",
        "set",
        "unset",
        "9" * 5000,
        "CALLBACK_RATE=5",
        "CALLBACK_RATE=",
        "CALLBACK_RATE=\x00",
        "CALLBACK_RATE=\udcff",
        "NOPE",
        "NOPE=1",
        "IMAGE_STAGES=validate,format",
        "IMAGE_STAGES=sharpen",
        "CALLBACK_IMMEDIATE=maybe",
        f"CALLBACK_SIGNING_SECRET={SECRET}",
        f"CALLBACK_SIGNING_SECRET={SECRET[:-6]}",
        SECRET,
        f"CALLBACK_SIGNING_SECRETS={json.dumps({'https://a.example/': SECRET})}",
        f"CALLBACK_SIGNING_SECRETS={json.dumps({SECRET: 'https://a.example/'})}",
        "CALLBACK_SIGNING_SECRETS={not json",
        "--limit=-1",
        "--older-than=1e400",
        "--json=1",
    ]
)
garbage = st.one_of(tricky, st.text(max_size=20), st.integers().map(str), st.floats().map(repr))


ids = st.one_of(
    st.sampled_from(["msg_fuzz0", "msg_dead", "msg_later", "msg_nowhere", "0-1", "1", "1-0", "1700000000000-0"]),
    tricky,
    garbage,
)
items = st.one_of(
    tricky,
    st.builds(
        lambda name, value: f"{name}={value}",
        st.sampled_from(["CALLBACK_RATE", "CALLBACK_BATCH_SIZE", "IMAGE_STAGES", "CALLBACK_IMMEDIATE", "NOPE", ""]),
        garbage,
    ),
    st.sampled_from(["CALLBACK_RATE", "CALLBACK_HOST_CONCURRENCY", "IMAGE_STAGES", "REDIS_URL"]),  # names to unset
)
numbers = st.one_of(st.sampled_from(["-1", "0", "5", "nan", "inf", "1e400", "abc", ""]), garbage)
FILTERS = ["--reason", "--host", "--older-than", "--newer-than", "--limit"]


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws (integers() would favour 0)."""
    return st.sampled_from([False] * (n - 1) + [True])


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    """Mostly a command and arguments of its shape with garbage values; sometimes a stray or unknown token."""
    if draw(one_in(20)):
        return draw(st.lists(garbage | st.sampled_from(["-h", "--json", "nope"]), max_size=3))
    command = draw(st.sampled_from(sorted(COMMANDS)))
    args: list[str] = []
    if command == "config":
        action = draw(garbage) if draw(one_in(8)) else draw(st.sampled_from(["get", "set", "unset"]))
        args += [action, *draw(st.lists(items, max_size=3))]
    elif command == "inspect":
        args.append(draw(ids))
    elif command == "host":
        action = draw(garbage) if draw(one_in(8)) else draw(st.sampled_from(["list", "pause", "resume"]))
        args.append(action)
        if action != "list" or draw(one_in(8)):
            args.append(draw(st.sampled_from(["127.0.0.1:9", "https://a.example/x?token=t", "a.example"]) | garbage))
        if draw(one_in(3)):
            args += [draw(st.sampled_from(["--for", "--limit"])), draw(numbers)]
    elif command == "replay":
        for flag in draw(st.lists(st.sampled_from(FILTERS), max_size=3)):
            args += [flag, draw(numbers)]
    plain = [flag for flag in COMMANDS[command] if flag not in ("-h", "--help", "--for", "--limit", *FILTERS)]
    args += draw(st.lists(st.sampled_from(plain), max_size=2))
    if draw(one_in(8)):
        args.insert(draw(st.integers(0, len(args))), draw(garbage))
    if draw(one_in(20)):
        args.append("--help")
    return [command, *args]


def _seed(client: redis.Redis, keys: Keys) -> None:
    """A little of everything, so commands find something to show, replay or recover."""
    pipe = client.pipeline()
    for n in range(3):
        entry = CallbackEntry(f"msg_fuzz{n}", "http://127.0.0.1:9/ok?token=x", '{"n": 1}', "t", n, 1, 1)
        pipe.xadd(keys.stream, entry.fields())
    dead = CallbackEntry("msg_dead", "http://127.0.0.1:9/ok", "{}", None, 3, 1, 1)
    pipe.xadd(keys.dead, {**dead.fields(), "reason": "final: HTTP 410", "status": "410", "error": "", "dead_ms": "1"})
    pipe.zadd(keys.delayed, {CallbackEntry("msg_later", "http://127.0.0.1:9/ok", "{}").member(): 1})
    pipe.set(keys.config, json.dumps({"version": 1, "values": {"CALLBACK_RATE": "150"}}))
    pipe.execute()


@pytest.fixture
def bystanders(namespace, redis_url):
    """Keys of other namespaces whose names start like ours (``reset`` matches by pattern): never to be touched."""
    client = redis.Redis.from_url(redis_url)
    others = [f"{namespace}x", f"{namespace}-b"]
    for other in others:
        _seed(client, Keys(other))
        client.rpush(f"{other}:dramatiq:default.DQ", "message")
    names = sorted(name for other in others for name in client.scan_iter(match=f"{other}:*"))
    before = {name: client.dump(name) for name in names}
    yield client, before
    assert {name: client.dump(name) for name in names} == before
    after = sorted(name for other in others for name in client.scan_iter(match=f"{other}:*"))
    assert after == names  # nothing created there either
    client.delete(*names)
    client.close()


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@settings(FUZZ, max_examples=170)
@given(st.lists(argvs(), min_size=6, max_size=6))
def test_any_command_line_gets_an_exit_code_and_at_most_one_line(namespace, redis_url, monkeypatch, bystanders, batch):
    client, _ = bystanders
    for name, value in settings_env(namespace, redis_url, CALLBACK_SIGNING_SECRET=SECRET).items():
        monkeypatch.setenv(name, value)
    _seed(client, Keys(namespace))
    for argv in batch:
        code, out, err = _run(argv)
        assert isinstance(code, int) and code in (0, 1, 2), (argv, code)
        assert "Traceback" not in out + err, (argv, err)
        assert SECRET_BODY[:20] not in out + err, argv
        (out + err).encode()  # no lone surrogate reaches a terminal
        if code != 0:
            if err:
                assert err.count("\n") == 1 and err[:-1].isprintable(), (argv, err)
            else:  # inspect: nothing found is said on stdout
                assert (argv[0] == "inspect" and "not found" in out) or out.strip() == "[]", (argv, out)


def test_the_generated_command_lines_reach_every_command():
    seen: set[str] = set()

    @settings(FUZZ, max_examples=200)
    @given(argvs())
    def collect(argv):
        seen.add(argv[0] if argv else "")

    collect()
    assert set(COMMANDS) <= seen


def test_a_fresh_namespace_is_isolated(redis_url):
    # sanity check of the bystander check itself: another namespace's key is seen by its scan
    client = redis.Redis.from_url(redis_url)
    name = f"t{uuid.uuid4().hex[:10]}x:{{default}}:stream"
    client.xadd(name, {"cid": "keep"})
    try:
        assert list(client.scan_iter(match=name)) == [name.encode()]
    finally:
        client.delete(name)


# Hashes and fields ops reads besides the stream entries and delayed members (which the lead fuzzes).
READ_FIELDS = [
    ("lease_info", "epoch"),
    ("lease_info", "acquired_ms"),
    ("lease_info", "renewed_ms"),
    ("lease_info", "holder"),
    ("stats", "delivered"),
    ("stats", "last_delivered_ms"),
    ("dead", "dead_ms"),
]


@pytest.fixture
def ops_keys(namespace, redis_url, monkeypatch) -> Keys:
    """The environment of ``python -m ops`` for this test's namespace; its keys."""
    for name, value in settings_env(namespace, redis_url).items():
        monkeypatch.setenv(name, value)
    return Keys(namespace)


@settings(FUZZ, max_examples=40, phases=[Phase.generate], report_multiple_bugs=False)  # no shrinking: it fails
@given(st.sampled_from(READ_FIELDS), garbage)
def test_garbage_in_the_fields_ops_reads_gets_one_line(ops_keys, rclient, place, value):
    keys = ops_keys
    key, field = place
    rclient.delete(keys.lease_info, keys.stats, keys.lease, keys.dead)
    rclient.set(keys.lease, "token", px=60_000)
    if key == "dead":
        dead = CallbackEntry("msg_dead", "http://127.0.0.1:9/ok", "{}", None, 3, 1, 1)
        rclient.xadd(keys.dead, {**dead.fields(), "reason": "final: HTTP 410", field: value})
    else:
        rclient.hset(getattr(keys, key), field, value)
    for argv in (["status"], ["recover"], ["replay", "--dry-run"], ["unlock", "--yes"]):
        code, _, err = _run(argv)
        assert "Traceback" not in err and (code == 0 or err.count("\n") == 1)
