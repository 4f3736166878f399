"""The redis store: one Redis shared by every worker of every host behind a load balancer.

Needs ``pip install alloconv_gate[redis]`` (redis-py). Every method is one atomic step
on the server (a single command, a ``MULTI`` transaction or a small Lua script), so that
two hosts racing for the last device of a code, or the one use of a grant, cannot both
win. It needs one Redis (a primary, with replicas if you like), not Redis Cluster: the
scripts touch keys that a cluster could place on different nodes.

Every key starts with ``alloconv_gate:``:

- ``attempt:ID``: a hash, one journal record;
- ``journal``: a sorted set of attempt ids by time, and the same per
  ``journal:gate:GATE``, ``journal:code:CODE_HASH`` and ``journal:outcome:OUTCOME``, so
  that a filtered look-up reads only what it may return;
- ``redemption:CODE_HASH:GATE``: a hash: granted_at, ends_at, devices, prefixes,
  shares_devices_with;
- ``claim:GATE:CODE_HASH``: a hash: set, prefixes, passed_at, completed; ``set:GATE:SET``:
  a sorted set of the set's code hashes by passed_at; ``complete:GATE:SET`` once the set
  is complete (these three expire after SET_TTL);
- ``hit:WINDOW:START:KEY``: a rate-limit counter for the window of WINDOW seconds
  starting at START;
- ``grant:ID``: set once when a support grant is used.

The journal and redemptions never expire, as with sqlite; counters and used grants do,
by Redis TTLs, which only free memory: what the gate decides on comes from the times it
passes in.

A Redis that is down fails at once; one that hangs fails after ``timeout`` seconds (2 by
default), for connecting and for each answer, so that it never holds a request long.
Failures are not retried here: a command whose answer was lost may have run, and running
``add_device`` or ``use_grant`` twice would take from the visitor what they paid for.
A connection the server closed (Redis restarted) is replaced before use, so the same
store works again as soon as Redis is back.
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse

from .base import Attempt, Claim, Redemption, SetState, Store, StoreError

PREFIX = "alloconv_gate:"
TIMEOUT = 2.0
#: How long a used grant is remembered: a grant link expires within an hour, so a few
#: days leaves room for any clock skew between hosts.
GRANT_TTL = 7 * 24 * 3600
#: Rate-limit counters live twice their window, and never less than a minute, so that
#: hosts whose clocks disagree by a few seconds still count in the same key.
MIN_COUNTER_TTL = 60
#: How long sets of codes and their claims are kept: well past a progress cookie's life.
SET_TTL = 7 * 24 * 3600
#: Journal ids read per round trip.
PAGE = 500

_FIELDS = ("id", "time", "gate", "palier", "client", "code_masked", "code_hash")

# KEYS: attempt, journal, gate index, code index, outcome index
# ARGV: id, time, then the attempt's hash as field, value pairs
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
for i = 2, 5 do redis.call('ZADD', KEYS[i], ARGV[2], ARGV[1]) end
return 1
"""

# KEYS: attempt
# ARGV: id, outcome, latency, detail, prefix
# The index keys depend on what the record holds, so they are built here, as _key does.
_COMPLETE = """
local old = redis.call('HMGET', KEYS[1], 'outcome', 'time')
if not old[1] then return 0 end
redis.call('HSET', KEYS[1], 'outcome', ARGV[2], 'latency', ARGV[3], 'detail', ARGV[4])
if old[1] ~= ARGV[2] then
    local index = ARGV[5] .. 'journal:outcome:'
    redis.call('ZREM', index .. old[1], ARGV[1])
    redis.call('ZADD', index .. ARGV[2], old[2], ARGV[1])
end
return 1
"""

# KEYS: redemption; ARGV: gate, code_hash, granted_at, ends_at, prefixes, shares_devices_with
_REDEEM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'gate', ARGV[1], 'code_hash', ARGV[2],
           'granted_at', ARGV[3], 'ends_at', ARGV[4], 'devices', 1, 'prefixes', ARGV[5],
           'shares_devices_with', ARGV[6])
return 1
"""

# The set step of add_to_set, the start of both scripts below: ends with `codes` (the
# set's codes) and `complete`, or returns {'closed'} or {'used'}.
# KEYS: claim, set, complete flag of the set
# ARGV: code_hash, set_id, prefixes, passed_at, since, needed, ttl, claim key prefix,
#       set key prefix (the old set and the other claims are found from the record)
_SET_STEP = """
if redis.call('EXISTS', KEYS[3]) == 1 then return {'closed'} end
local old = redis.call('HMGET', KEYS[1], 'set', 'completed', 'passed_at')
if old[2] == '1' then return {'used'} end
local passed_at = old[3] or ARGV[4]
if old[1] and old[1] ~= ARGV[2] then redis.call('ZREM', ARGV[9] .. old[1], ARGV[1]) end
redis.call('HSET', KEYS[1], 'set', ARGV[2], 'prefixes', ARGV[3], 'passed_at', passed_at,
           'completed', '0')
redis.call('ZADD', KEYS[2], passed_at, ARGV[1])
for i = 1, 2 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
local codes = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[5], '+inf')
local complete = #codes >= tonumber(ARGV[6])
if complete then
    redis.call('SET', KEYS[3], '1', 'EX', ARGV[7])
    for _, code in ipairs(codes) do redis.call('HSET', ARGV[8] .. code, 'completed', '1') end
end
"""

_ADD_TO_SET = (
    _SET_STEP
    + """
if complete then return {'complete', unpack(codes)} end
return {'open', unpack(codes)}
"""
)

# The set step, then _SETTLE's writes, in one script.
# KEYS: _SET_STEP's 3, then the attempt, journal, gate index, code index, index of the
#       new outcome
# ARGV: _SET_STEP's 9, then id, time, outcome, latency, detail, prefix, N, the
#       attempt's N field and value items, then granted_at, ends_at, redemption key
#       prefix, gate (the redemption keys are the codes', known once the set is)
_ADD_TO_SET_AND_SETTLE = (
    _SET_STEP
    + """
local status = 'open'
local detail = ARGV[14] .. '; set ' .. string.sub(ARGV[2], 1, 8) .. ': code ' .. #codes
               .. ' of ' .. ARGV[6]
if complete then
    status = 'complete'
    detail = detail .. ', complete'
    local r = 17 + tonumber(ARGV[16])
    for _, code in ipairs(codes) do
        local key = ARGV[r + 2] .. code .. ':' .. ARGV[r + 3]
        if redis.call('EXISTS', key) == 0 then
            local shared = ''
            if code ~= codes[1] then shared = codes[1] end
            redis.call('HSET', key, 'gate', ARGV[r + 3], 'code_hash', code,
                       'granted_at', ARGV[r], 'ends_at', ARGV[r + 1], 'devices', 1,
                       'prefixes', ARGV[3], 'shares_devices_with', shared)
        end
    end
end
local was = redis.call('HMGET', KEYS[4], 'outcome', 'time')
if was[1] then
    redis.call('HSET', KEYS[4], 'outcome', ARGV[12], 'latency', ARGV[13])
    if was[1] ~= ARGV[12] then
        redis.call('ZREM', ARGV[15] .. 'journal:outcome:' .. was[1], ARGV[10])
        redis.call('ZADD', KEYS[8], was[2], ARGV[10])
    end
else
    redis.call('HSET', KEYS[4], unpack(ARGV, 17, 16 + tonumber(ARGV[16])))
    for i = 5, 8 do redis.call('ZADD', KEYS[i], ARGV[11], ARGV[10]) end
end
redis.call('HSET', KEYS[4], 'detail', detail)
return {status, unpack(codes)}
"""
)

# KEYS: attempt, journal, gate index, code index, outcome index, counter
# ARGV: id, time, limit ('' for none), counter ttl, then the attempt's field, value pairs
_RECORD_COUNTED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local count = redis.call('INCR', KEYS[6])
redis.call('EXPIRE', KEYS[6], ARGV[4])
if ARGV[3] == '' or count <= tonumber(ARGV[3]) then
    redis.call('HSET', KEYS[1], unpack(ARGV, 5))
    for i = 2, 5 do redis.call('ZADD', KEYS[i], ARGV[2], ARGV[1]) end
end
return count
"""

# KEYS: attempt, journal, gate index, code index, index of the new outcome, then one
#       redemption key per redemption
# ARGV: id, time, outcome, latency, detail, prefix, N, then the attempt's N field and
#       value items, then 6 per redemption: gate, code_hash, granted_at, ends_at,
#       prefixes, shares_devices_with
_SETTLE = """
local n = tonumber(ARGV[7])
local r = 8 + n
for i = 6, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 0 then
        redis.call('HSET', KEYS[i], 'gate', ARGV[r], 'code_hash', ARGV[r + 1],
                   'granted_at', ARGV[r + 2], 'ends_at', ARGV[r + 3], 'devices', 1,
                   'prefixes', ARGV[r + 4], 'shares_devices_with', ARGV[r + 5])
    end
    r = r + 6
end
local old = redis.call('HMGET', KEYS[1], 'outcome', 'time')
if old[1] then
    redis.call('HSET', KEYS[1], 'outcome', ARGV[3], 'latency', ARGV[4], 'detail', ARGV[5])
    if old[1] ~= ARGV[3] then
        redis.call('ZREM', ARGV[6] .. 'journal:outcome:' .. old[1], ARGV[1])
        redis.call('ZADD', KEYS[5], old[2], ARGV[1])
    end
else
    redis.call('HSET', KEYS[1], unpack(ARGV, 8, 7 + n))
    for i = 2, 5 do redis.call('ZADD', KEYS[i], ARGV[2], ARGV[1]) end
end
return 1
"""

# KEYS: redemption; ARGV: max_devices
_ADD_DEVICE = """
local devices = redis.call('HGET', KEYS[1], 'devices')
if not devices or tonumber(devices) >= tonumber(ARGV[1]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'devices', 1)
return 1
"""


def redacted(url: str) -> str:
    """``url`` without its password (in the userinfo or a ``password=`` query), for messages."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else pair
        for pair in parts.query.split("&")
        if pair
        for name in [pair.split("=", 1)[0]]
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _key(*parts: object) -> str:
    return PREFIX + ":".join(str(part) for part in parts)


def _journal_keys(attempt: Attempt) -> list[str]:
    """The attempt's hash, then the journal and the indexes that list it."""
    return [
        _key("attempt", attempt.id),
        _key("journal"),
        _key("journal", "gate", attempt.gate),
        _key("journal", "code", attempt.code_hash),
        _key("journal", "outcome", attempt.outcome),
    ]


def _items(attempt: Attempt) -> list[str]:
    """The attempt's hash fields, as name, value, name, value..."""
    fields = {name: getattr(attempt, name) for name in _FIELDS}
    fields["time"] = repr(attempt.time)
    fields["outcome"] = attempt.outcome
    fields["latency"] = "" if attempt.latency is None else repr(attempt.latency)
    fields["detail"] = attempt.detail
    return [item for pair in fields.items() for item in pair]


def _attempt(fields: dict[str, str]) -> Attempt:
    latency = fields.get("latency", "")
    return Attempt(
        id=fields["id"],
        time=float(fields["time"]),
        gate=fields["gate"],
        palier=fields["palier"],
        client=fields["client"],
        code_masked=fields["code_masked"],
        code_hash=fields["code_hash"],
        outcome=fields["outcome"],
        latency=float(latency) if latency else None,
        detail=fields.get("detail", ""),
    )


class RedisStore(Store):
    """The store in one Redis, named by ``redis://[:PASSWORD@]HOST:PORT/DB`` (or
    ``rediss://``, ``unix://``).

    Connects and checks that Redis takes a write at construction: a store that cannot
    work fails at start-up, with a :class:`StoreError` naming the URL (never its
    password) and the reason. ``timeout`` bounds every connection and every answer.
    """

    def __init__(self, url: str, *, timeout: float = TIMEOUT):
        self._where = redacted(url)
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise StoreError(
                f"store = {self._where} needs the redis package: pip install alloconv_gate[redis]"
            ) from None
        self._error = redis.RedisError
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
        except ValueError as error:
            raise StoreError(f"store = {self._where} is not a usable Redis URL: {error}") from None
        self._record = self._client.register_script(_RECORD)
        self._complete = self._client.register_script(_COMPLETE)
        self._redeem = self._client.register_script(_REDEEM)
        self._add_device = self._client.register_script(_ADD_DEVICE)
        self._add_to_set = self._client.register_script(_ADD_TO_SET)
        self._record_counted = self._client.register_script(_RECORD_COUNTED)
        self._settle = self._client.register_script(_SETTLE)
        self._add_to_set_and_settle = self._client.register_script(_ADD_TO_SET_AND_SETTLE)
        try:
            self.ping()
        except StoreError as error:
            self._client.close()
            raise StoreError(f"store = {self._where} cannot be used: {error.__cause__}") from error

    @contextlib.contextmanager
    def _failing(self, doing: str):
        """Turn any Redis failure into a :class:`StoreError` saying what was being done."""
        try:
            yield
        except self._error as error:
            raise StoreError(f"redis store {self._where} could not {doing}: {error}") from error

    # The journal

    def record(self, attempt: Attempt) -> None:
        args = [attempt.id, repr(attempt.time), *_items(attempt)]
        with self._failing(f"record attempt {attempt.id}"):
            added = self._record(keys=_journal_keys(attempt), args=args)
        if not added:
            raise StoreError(f"attempt {attempt.id} is already in the journal")

    def record_counted(self, attempt, key, window, limit=None):
        start = int(attempt.time // window * window)
        keys = [*_journal_keys(attempt), _key("hit", window, start, key)]
        ttl = max(2 * window, MIN_COUNTER_TTL)
        args = [attempt.id, repr(attempt.time), "" if limit is None else limit, ttl]
        with self._failing(f"count and record attempt {attempt.id}"):
            count = self._record_counted(keys=keys, args=[*args, *_items(attempt)])
        if count < 0:
            raise StoreError(f"attempt {attempt.id} is already in the journal")
        return count

    def settle(self, attempt, redemptions=()):
        keys = _journal_keys(attempt)
        keys += [_key("redemption", r.code_hash, r.gate) for r in redemptions]
        latency = "" if attempt.latency is None else repr(attempt.latency)
        items = _items(attempt)
        args = [attempt.id, repr(attempt.time), attempt.outcome, latency, attempt.detail]
        args += [PREFIX, len(items), *items]
        for r in redemptions:
            args += [r.gate, r.code_hash, repr(r.granted_at), repr(r.ends_at)]
            args += [json.dumps(list(r.prefixes)), r.shares_devices_with]
        with self._failing(f"settle attempt {attempt.id}"):
            self._settle(keys=keys, args=args)

    def complete(self, attempt_id: str, outcome: str, latency: float | None, detail: str) -> None:
        latency_field = "" if latency is None else repr(latency)
        with self._failing(f"complete attempt {attempt_id}"):
            found = self._complete(
                keys=[_key("attempt", attempt_id)],
                args=[attempt_id, outcome, latency_field, detail, PREFIX],
            )
        if not found:
            raise StoreError(f"no attempt {attempt_id} in the journal")

    def journal(self, *, since=None, outcome=None, code_hash=None, gate=None, limit=1000):
        """Reads the smallest index the filters allow, newest first, a page at a time,
        and checks the other filters on the records themselves."""
        if code_hash is not None:
            index, exact = _key("journal", "code", code_hash), outcome is None and gate is None
        elif outcome is not None:
            index, exact = _key("journal", "outcome", outcome), gate is None
        elif gate is not None:
            index, exact = _key("journal", "gate", gate), True
        else:
            index, exact = _key("journal"), True
        if limit <= 0:
            return []
        page = min(limit, PAGE) if exact else PAGE
        found: list[Attempt] = []
        with self._failing("read the journal"):
            for attempt in self._newest_first(index, since, page):
                if len(found) >= limit:
                    break
                if (
                    (outcome is None or attempt.outcome == outcome)
                    and (code_hash is None or attempt.code_hash == code_hash)
                    and (gate is None or attempt.gate == gate)
                ):
                    found.append(attempt)
        return found

    def _newest_first(self, index: str, since: float | None, page: int):
        """The attempts of ``index`` from ``since`` on, newest first.

        Pages by time rather than by position, so that records added meanwhile (or moved
        out of an outcome index by ``complete``) neither repeat nor hide others; ids
        already read at the boundary time are skipped on the next page.
        """
        low = "-inf" if since is None else repr(since)
        high = "+inf"
        boundary: float | None = None
        seen_at_boundary: set[str] = set()
        while True:
            count = page + len(seen_at_boundary)
            rows = self._client.zrevrangebyscore(
                index, high, low, start=0, num=count, withscores=True
            )
            fresh = [(id_, score) for id_, score in rows if id_ not in seen_at_boundary]
            if fresh:
                pipe = self._client.pipeline(transaction=False)
                for id_, _score in fresh:
                    pipe.hgetall(_key("attempt", id_))
                for fields in pipe.execute():
                    if fields:
                        yield _attempt(fields)
                last = fresh[-1][1]
                if last != boundary:
                    boundary, seen_at_boundary = last, set()
                seen_at_boundary.update(id_ for id_, score in fresh if score == last)
                high = repr(last)
            if len(rows) < count or not fresh:
                return

    # Redemptions

    def redemption(self, gate: str, code_hash: str) -> Redemption | None:
        with self._failing("read a redemption"):
            fields = self._client.hgetall(_key("redemption", code_hash, gate))
        if not fields:
            return None
        return Redemption(
            gate=fields["gate"],
            code_hash=fields["code_hash"],
            granted_at=float(fields["granted_at"]),
            ends_at=float(fields["ends_at"]),
            devices=int(fields["devices"]),
            prefixes=tuple(json.loads(fields.get("prefixes", "[]"))),
            shares_devices_with=fields.get("shares_devices_with", ""),
        )

    def redeem(self, gate, code_hash, granted_at, ends_at, prefixes=(), shares_devices_with=""):
        args = [gate, code_hash, repr(granted_at), repr(ends_at), json.dumps(list(prefixes))]
        with self._failing("record a redemption"):
            self._redeem(
                keys=[_key("redemption", code_hash, gate)], args=[*args, shares_devices_with]
            )

    def add_device(self, gate: str, code_hash: str, max_devices: int) -> bool:
        with self._failing("count a device"):
            return bool(
                self._add_device(keys=[_key("redemption", code_hash, gate)], args=[max_devices])
            )

    # Sets of codes

    def claim(self, gate: str, code_hash: str) -> Claim | None:
        with self._failing("read a claim"):
            fields = self._client.hgetall(_key("claim", gate, code_hash))
        if not fields:
            return None
        return Claim(
            code_hash=code_hash,
            set_id=fields["set"],
            prefixes=tuple(json.loads(fields["prefixes"])),
            passed_at=float(fields["passed_at"]),
            completed=fields["completed"] == "1",
        )

    def set_codes(self, gate: str, set_id: str, *, since: float) -> tuple[str, ...]:
        with self._failing("read a set"):
            pipe = self._client.pipeline(transaction=True)
            pipe.exists(_key("complete", gate, set_id))
            pipe.zrangebyscore(_key("set", gate, set_id), repr(since), "+inf")
            complete, codes = pipe.execute()
        return () if complete else tuple(codes)

    @staticmethod
    def _set_args(gate, code_hash, set_id, prefixes, passed_at, needed, since) -> list:
        """The ARGV of _ADD_TO_SET (and the first of _ADD_TO_SET_AND_SETTLE)."""
        return [
            code_hash,
            set_id,
            json.dumps(list(prefixes)),
            repr(passed_at),
            repr(since),
            needed,
            SET_TTL,
            _key("claim", gate, ""),
            _key("set", gate, ""),
        ]

    def add_to_set(self, gate, code_hash, set_id, prefixes, passed_at, *, needed, since):
        keys = [
            _key("claim", gate, code_hash),
            _key("set", gate, set_id),
            _key("complete", gate, set_id),
        ]
        args = self._set_args(gate, code_hash, set_id, prefixes, passed_at, needed, since)
        with self._failing("add a code to a set"):
            status, *codes = self._add_to_set(keys=keys, args=args)
        return SetState(status, tuple(codes))

    def add_to_set_and_settle(
        self, gate, code_hash, set_id, prefixes, passed_at, *, needed, since, attempt, ends_at
    ):
        keys = [
            _key("claim", gate, code_hash),
            _key("set", gate, set_id),
            _key("complete", gate, set_id),
            *_journal_keys(attempt),
        ]
        latency = "" if attempt.latency is None else repr(attempt.latency)
        items = _items(attempt)
        args = [
            *self._set_args(gate, code_hash, set_id, prefixes, passed_at, needed, since),
            attempt.id,
            repr(attempt.time),
            attempt.outcome,
            latency,
            attempt.detail,
            PREFIX,
            len(items),
            *items,
            repr(attempt.time),
            repr(ends_at),
            _key("redemption", ""),
            gate,
        ]
        with self._failing(f"add a code to a set and settle attempt {attempt.id}"):
            status, *codes = self._add_to_set_and_settle(keys=keys, args=args)
        return SetState(status, tuple(codes))

    # Rate limits

    def hit(self, key: str, window: int, now: float) -> int:
        start = int(now // window * window)
        counter = _key("hit", window, start, key)
        with self._failing("count a hit"):
            pipe = self._client.pipeline(transaction=True)
            pipe.incr(counter)
            pipe.expire(counter, max(2 * window, MIN_COUNTER_TTL))
            count, _ = pipe.execute()
        return count

    def count(self, key: str, window: int, now: float) -> int:
        counter = _key("hit", window, int(now // window * window), key)
        with self._failing("read a count"):
            value = self._client.get(counter)
        return int(value) if value else 0

    # Support grants

    def use_grant(self, grant_id: str, now: float) -> bool:
        with self._failing("use a grant"):
            return bool(self._client.set(_key("grant", grant_id), repr(now), nx=True, ex=GRANT_TTL))

    # Life

    def ping(self) -> None:
        """A write, not only a PING: a read-only replica or a Redis refusing writes
        (disk full under persistence) must fail here too."""
        with self._failing("write"):
            self._client.set(_key("ping"), "ok", ex=60)

    def close(self) -> None:
        self._client.close()
