"""Fuzz: the environment boundary. ``Settings.from_env`` gives a :class:`Settings` or a :class:`SettingsError`.

Generated values for every variable in ``VARIABLES`` (garbage text, numbers at and past their edges,
URLs with passwords, JSON of every shape, deep nesting) and unknown ``CALLBACK_*`` names. Nothing
else may come out: no ``ValueError`` of a parser, no ``RecursionError``, no ``TypeError``; and the
message is one printable line that shows no secret (a value of a ``secret=True`` variable, a URL's
password).
"""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.config.settings import Settings
from worker.config.variables import VARIABLES
from worker.errors import SettingsError

FUZZ = settings(
    derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=False
)
# Only ever placed where a secret goes (a URL's password, a secret variable's value). Built at run time:
# Hypothesis feeds the string constants of a test module into its text strategies.
MARK = bytes.fromhex("517837" + "5a736563726574").decode()
SECRET_NAMES = {var.name for var in VARIABLES if var.secret}
NAMES = [var.name for var in VARIABLES]
URL_NAMES = {name for name in NAMES if name.endswith(("_URL", "_URL_PREFIXES"))}
VALID = {  # a working environment: mutations of it reach the cross-field rules
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "WORKER_NAMESPACE": "fuzz",
    "CALLBACK_SIGNING_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "CALLBACK_BATCH_SIZE": "100",
    "CALLBACK_MIN_INTERVAL": "0.5",
    "CALLBACK_TIMEOUT": "2",
}

garbage = st.text(max_size=40) | st.text(alphabet=string.printable, max_size=80)
numberish = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-inf", "1e400", "-0", "0x10", "1_000", "\u0663", "\uff11\uff12", "1e-400", "5e-324"]),
    st.just("9" * 5000),  # past int()'s digit limit
)
words = st.sampled_from(["on", "off", "yes", "No", "TRUE", "2", "", " ", "validate,resize,format", "JPEG,gif"])
password_chars = st.text(alphabet=string.ascii_letters + string.digits + "!$%&'()*+;=~-_.", max_size=12)
password = password_chars.map(lambda tail: MARK + tail)
host = st.sampled_from(["127.0.0.1", "[::1]", "h", "[", "exa\uff03mple", "ho st", ""])
scheme = st.sampled_from(["redis", "rediss", "unix", "http", "https", "postgresql+psycopg2", "sqlite", "ftp", ""])


def _urls(passwords: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda s, user, pw, h, port, tail: f"{s}://{user}:{pw}@{h}{port}{tail}",
        scheme,
        st.sampled_from(["", "app", "u\uff03"]),
        passwords,
        host,
        st.sampled_from(["", ":6379", ":99999", ":x", ":"]),
        st.sampled_from(["", "/0", "/db?token=1", "#frag", "/p,q", "\n"]),
    )


url_with_password = _urls(password)  # for URL variables: their passwords are secrets
url_anywhere = _urls(password_chars)  # in other variables (MEDIA_ROOT=redis://...) it is just a value
url_list = st.lists(url_with_password | garbage, min_size=1, max_size=3).map(",".join)
depth = st.integers(min_value=1, max_value=40) | st.sampled_from([990, 1000, 1100, 20_000])  # past the parser's
nested = st.builds(
    lambda d, pair: pair[0] * d + "1" + pair[1] * d, depth, st.sampled_from([("[", "]"), ('{"a":', "}")])
)
secret_text = st.builds(lambda pre, tail: pre + MARK + tail, st.sampled_from(["whsec_", "", "whsec"]), garbage)


def _json(leaf: st.SearchStrategy[str], key: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | leaf,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(key, inner, max_size=3),
        max_leaves=8,
    ).map(json.dumps)


swapped_secret = secret_text.map(lambda text: "whsec_" + text)  # a secret where a prefix goes is echoed as <redacted>
secrets_by_prefix = st.dictionaries(
    st.sampled_from(["https://a.example/", "http://b.example:8080/x", "https://a.example/?q", ""])
    | url_with_password
    | swapped_secret
    | garbage,
    secret_text | st.just("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    max_size=3,
).map(json.dumps)
value = st.one_of(garbage, numberish, words, url_anywhere, nested, _json(garbage, garbage | url_anywhere))
url_value = st.one_of(garbage, url_with_password, url_list, _json(garbage, garbage | url_anywhere))
secret_value = st.one_of(
    secret_text,
    secrets_by_prefix,
    _json(garbage | secret_text, garbage | url_with_password | swapped_secret),
    nested,
    url_with_password,
)


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    """A valid base with some variables replaced by generated values, sometimes an unknown ``CALLBACK_*``."""
    env = dict(VALID) if draw(st.booleans()) else {}
    for name in draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True)):
        env[name] = draw(_value_for(name))
    if draw(st.integers(0, 9)) == 0:
        env["CALLBACK_" + draw(st.text(alphabet=string.ascii_uppercase + "_\n\x00é", max_size=30))] = "1"
    return env


def _secrets_in(env: dict[str, str]) -> list[str]:
    """MARK, and each secret variable's value unless it is also given as a non-secret value (a coincidence)."""
    others = [value for name, value in env.items() if name not in SECRET_NAMES]
    found = [MARK]
    for name in SECRET_NAMES & set(env):
        raw = env[name].strip()
        if len(raw) >= 8 and not any(raw in other for other in others):
            found.append(raw)
    return found


def _check(env: dict[str, str]) -> None:
    try:
        loaded = Settings.from_env(env, signs=False)
    except SettingsError as e:
        message = str(e)
        assert message.isprintable(), message  # one line: control characters of a value are escaped
        assert len(message) < 4000
        for secret in _secrets_in(env):
            assert secret not in message, message
        assert MARK not in repr(e.args)
    else:
        assert isinstance(loaded, Settings)
        assert MARK not in repr(loaded)  # the repr hides URLs and secrets too


def _value_for(name: str) -> st.SearchStrategy[str]:
    return secret_value if name in SECRET_NAMES else url_value if name in URL_NAMES else value


@settings(FUZZ, max_examples=1000)
@given(st.sampled_from(NAMES).flatmap(lambda name: st.tuples(st.just(name), _value_for(name))))
def test_each_variable_gives_settings_or_a_settings_error(item):
    name, raw = item
    _check({**VALID, name: raw})


@settings(FUZZ, max_examples=500)
@given(environments())
def test_every_environment_gives_settings_or_a_settings_error(env):
    _check(env)


@settings(FUZZ, max_examples=300)
@given(st.sampled_from(NAMES), st.binary(max_size=40))
def test_undecodable_bytes_from_the_os_are_refused_or_accepted_cleanly(name, raw):
    # os.environ carries bytes that are not UTF-8 as lone surrogates (surrogateescape)
    _check({**VALID, name: raw.decode("utf-8", "surrogateescape")})


@pytest.mark.parametrize("name", NAMES)
def test_nesting_past_the_json_parser_is_refused_in_every_variable(name):
    # RecursionError is no ValueError: CALLBACK_SIGNING_SECRETS raised it past from_env before
    _check({**VALID, name: "[" * 20_000 + "]" * 20_000})
